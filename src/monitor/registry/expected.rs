//! Expected applications: [`Expected`] (a spec, `ID` or `ID @ IP`) and the
//! registry's index of them.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::protocol::{self, split_key, RecordKey};

/// An application the server expects ([`Registry::expect`](super::Registry::expect),
/// `ServerBuilder::expect`, `heartbeat serve --expect`): written `ID`
/// (that id from any host) or `ID @ IP` (only from that host; the text is
/// split on the last `" @ "`, so an id may itself contain `" @ "`).
///
/// An expected application is never dropped: past the drop ratio it stays
/// tracked, CRITICAL. Without any record it is CRITICAL too, in its own
/// `/status?appid=ID` (`CRITICAL - expected application has not reported
/// [ID]`), in the host `/status` and in `/metrics` (`heartbeat_app_up 0`).
/// `hb_done` removes its record like any other, so it is then missing
/// again: an expected application is one that should always run.
///
/// `ID @ IP` specs match records keyed by peer (the default); with
/// `key_by_peer: false` records carry no host and only `ID` specs match.
///
/// ```
/// use heartbeat_sdk::monitor::Expected;
///
/// let any: Expected = "Tetris".parse().unwrap();
/// assert_eq!((any.id(), any.host()), ("Tetris", None));
/// let one: Expected = "kiosk @ 7 @ 10.0.0.5".parse().unwrap();
/// assert_eq!(one.id(), "kiosk @ 7");
/// assert_eq!(one.host(), Some("10.0.0.5".parse().unwrap()));
/// assert_eq!(one.to_string(), "kiosk @ 7 @ 10.0.0.5");
/// assert!("bad|id".parse::<Expected>().is_err());
/// assert!("Tetris @ 10.0.0.256".parse::<Expected>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Expected {
    pub(super) id: protocol::AppId,
    pub(super) host: Option<IpAddr>,
}

impl Expected {
    /// The application `id` from any host, if `id` is a valid application
    /// id ([`protocol::AppId`]).
    ///
    /// # Errors
    /// [`ExpectedError`] when `id` is not a valid application id.
    pub fn any_host(id: &str) -> Result<Expected, ExpectedError> {
        Expected::new(id, None)
    }

    /// The application `id` from `host` only (an IPv4-mapped IPv6 address
    /// is taken as the IPv4 one, as the server sees peers).
    ///
    /// # Errors
    /// [`ExpectedError`] when `id` is not a valid application id.
    pub fn on_host(id: &str, host: IpAddr) -> Result<Expected, ExpectedError> {
        Expected::new(id, Some(host))
    }

    fn new(id: &str, host: Option<IpAddr>) -> Result<Expected, ExpectedError> {
        let id = protocol::AppId::new(id).map_err(|e| ExpectedError {
            reason: format!("invalid application id: {e}"),
        })?;
        Ok(Expected {
            id,
            host: host.map(|ip| ip.to_canonical()),
        })
    }

    /// The application id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host it must report from, or `None` for any host.
    pub fn host(&self) -> Option<IpAddr> {
        self.host
    }
}

impl FromStr for Expected {
    type Err = ExpectedError;

    /// `ID` or `ID @ IP`, split on the last `" @ "`.
    fn from_str(s: &str) -> Result<Expected, ExpectedError> {
        let key = RecordKey::parse(s);
        match key.host() {
            None => Expected::new(s, None),
            Some(host) => match key.host_ip() {
                Some(ip) => Expected::new(key.id(), Some(ip)),
                None => Err(ExpectedError {
                    reason: format!(
                        "{:?} after the last \" @ \" is not an IP address",
                        protocol::printable(host)
                    ),
                }),
            },
        }
    }
}

impl fmt::Display for Expected {
    /// `ID` or `ID @ IP`: the record key it matches.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host {
            None => f.write_str(&self.id),
            Some(ip) => fmt::Display::fmt(&RecordKey::new(&self.id, Some(&ip.to_string())), f),
        }
    }
}

/// Why a text is not an [`Expected`] application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedError {
    reason: String,
}

impl fmt::Display for ExpectedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ExpectedError {}

/// The expected applications of a registry, indexed for the per-ping test
/// (two hash lookups, and none at all when nothing is expected).
#[derive(Debug, Clone, Default)]
pub(crate) struct Expectations {
    /// Every spec, sorted, without duplicates; with the record key an
    /// `ID @ IP` spec matches.
    pub(super) specs: Vec<(Expected, Option<Box<str>>)>,
    /// Ids of the `ID` specs.
    pub(super) by_id: HashSet<Box<str>>,
    /// Record keys of the `ID @ IP` specs.
    pub(super) by_key: HashSet<Box<str>>,
    pub(super) key_by_peer: bool,
}

impl Expectations {
    pub(super) fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Whether the record of `app` under `key` is expected.
    pub(super) fn matches(&self, app: &str, key: &str) -> bool {
        !self.is_empty()
            && (self.by_id.contains(app) || (self.key_by_peer && self.by_key.contains(key)))
    }

    /// Whether the record under `key` is expected.
    pub(crate) fn matches_key(&self, key: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        if !self.key_by_peer {
            return self.by_id.contains(key);
        }
        self.by_key.contains(key) || self.by_id.contains(split_key(key).0)
    }
}

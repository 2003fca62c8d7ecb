//! The set of tracked applications, with an injected clock.
//!
//! Every method takes `now: Instant`; the registry never reads the clock.
//! Times are stored as microsecond offsets from the first `now` it saw.
//!
//! Layout: one `Arc<str>` per key, shared by the lookup map
//! (`HashMap<Arc<str>, Record>`, 16-byte record: last init/ping and granted
//! timeout) and the expiry index (`BTreeSet<(deadline_us, Arc<str>)>`). Each
//! request first pops the expired prefix of the expiry index, so its cost is
//! `O(expired + log n)`, never a scan of all records. Measured: about 160 to
//! 190 heap bytes per app with a 26-byte key, malloc overhead included.
//!
//! The registry answers with typed data ([`AppInfo`], [`AppStatus`],
//! [`HostStatus`]); the wire text is rendered by
//! [`service`](crate::server::service) with the protocol's line functions.
//!
//! Whole-registry replies are rendered from a `Snapshot` ([`Registry`]'s
//! crate-internal `snapshot`): the keys' `Arc`s and 16 bytes per record,
//! copied under the server's lock; sorting and formatting happen after it
//! is released (see [`crate::server::service`]). Sharing the key text is
//! what keeps ten stalled readers of a reply at 100 000 × 1 KiB ids from
//! costing a gigabyte: each holds 3.2 MB of snapshot, not 100 MB of keys.
//! The registry's own layout is unchanged by it.
//!
//! Expected applications ([`Registry::expect`], [`Expected`]) are never
//! dropped: their records stay out of the expiry index, so they cost the
//! expiry pass nothing. Deciding whether a pinged record is expected is
//! two hash lookups, and nothing at all when no application is expected.
//! Which expected ones have no record is kept as a count of records per
//! expected id (`O(expected)` for the host `/status`); a snapshot works it
//! out from its own records, after the lock.
//!
//! Ordering: `/list`, the multiple-applications status line and
//! [`Registry::apps`] all use byte-wise ascending key order (sorted on
//! demand, `O(n log n)` for these `O(n)`-sized replies). Keeping keys
//! ordered was measured and rejected: a `BTreeMap` lookup map costs 25 to
//! 50 % more instructions per ping, growing with the count; a sorted
//! `BTreeSet` index beside the map costs about 35 more bytes per app.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::protocol::{self, whole_ms, State};

/// Default cap on tracked applications (the reference has none); the
/// client's body caps are sized for it ([`protocol::MAX_APPS`]).
pub const DEFAULT_MAX_APPS: usize = protocol::MAX_APPS;

/// Most pending [`Event`]s kept until [`Registry::take_events`]; further
/// events are counted in [`Counters::events_dropped`] and discarded.
pub const EVENT_BUFFER_CAP: usize = 4096;

/// Tuning of a [`Registry`]. [`Default`] gives the reference server's values
/// (1000 ms tolerance, ratios 3/5/6, `ID @ IP` keys) plus a cap of
/// [`DEFAULT_MAX_APPS`] applications.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// Added to every promised timeout to get the granted one.
    pub tolerance: Duration,
    /// Overdue ratio from which an application is WARNING.
    pub warn_ratio: f64,
    /// Overdue ratio from which an application is CRITICAL.
    pub crit_ratio: f64,
    /// Overdue ratio at which a record is dropped (expired), unless it is
    /// expected ([`Registry::expect`]).
    pub drop_ratio: f64,
    /// `true`: records are keyed `"ID @ PEER_IP"` (reference behaviour);
    /// `false`: by the bare id, whatever the peer.
    pub key_by_peer: bool,
    /// Most applications tracked at once; a new one past this is refused.
    pub max_apps: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            tolerance: Duration::from_millis(protocol::TOLERANCE_MS),
            warn_ratio: 3.0,
            crit_ratio: 5.0,
            drop_ratio: 6.0,
            key_by_peer: true,
            max_apps: DEFAULT_MAX_APPS,
        }
    }
}

/// Totals since the registry was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Counters {
    /// Accepted `init` calls.
    pub inits: u64,
    /// Accepted `ping` calls.
    pub pings: u64,
    /// `done` calls, whether or not the id was known.
    pub dones: u64,
    /// Records dropped for being overdue.
    pub expiries: u64,
    /// `init`/`ping` calls refused because the registry was full.
    pub refused: u64,
    /// Events discarded because the event buffer was full.
    pub events_dropped: u64,
}

/// Something that happened to a record, for the HTTP layer to log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new record was created (by `init` or `ping`).
    Constructed(Arc<str>),
    /// An existing record was refreshed (by `init` or `ping`).
    Updated(Arc<str>),
    /// A record was removed by `done`.
    Destroyed(Arc<str>),
    /// A record was dropped for being overdue.
    Expired(Arc<str>),
    /// A new record was refused because the registry was full.
    Refused(Arc<str>),
}

impl Event {
    /// The record key the event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Constructed(k)
            | Event::Updated(k)
            | Event::Destroyed(k)
            | Event::Expired(k)
            | Event::Refused(k) => k,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Constructed(k) => write!(f, "Construction of [{k}]"),
            Event::Updated(k) => write!(f, "Update of [{k}]"),
            Event::Destroyed(k) => write!(f, "Destruction of [{k}]"),
            Event::Expired(k) => write!(f, "Expiry of [{k}]"),
            Event::Refused(k) => write!(f, "Refusal of [{k}]: registry full"),
        }
    }
}

/// A new application was refused because `max_apps` are already tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryFull {
    /// The configured maximum.
    pub max_apps: usize,
}

impl fmt::Display for RegistryFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "registry full: already tracking the maximum of {} applications",
            self.max_apps
        )
    }
}

impl std::error::Error for RegistryFull {}

/// A read-only view of one tracked application.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AppInfo<'a> {
    /// The record key (`"ID @ IP"` or the bare id).
    pub key: &'a str,
    /// Time since the last init/ping divided by the granted timeout.
    pub overdue_ratio: f64,
    /// The timeout the server granted: the promised one plus the tolerance
    /// (whole milliseconds).
    pub granted: Duration,
    /// The state the overdue ratio maps to: [`State::Ok`] below
    /// `warn_ratio`, [`State::Warning`] from it up to `crit_ratio`,
    /// [`State::Critical`] from there on (never [`State::Unknown`]).
    pub state: State,
}

/// The status of one queried application ([`Registry::status`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AppStatus<'a> {
    /// The application is tracked.
    Tracked(AppInfo<'a>),
    /// No record under `key` (the key the query maps to, `"ID @ IP"` or
    /// the bare id).
    NoRecord {
        /// The key looked up.
        key: String,
    },
    /// No record under the key, and the application is expected
    /// ([`Registry::expect`]) and has no record matching this spec at all.
    Missing(&'a Expected),
}

/// The status of the whole host ([`Registry::host_status`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HostStatus<'a> {
    /// No application is tracked.
    NoClients,
    /// Exactly one application is tracked.
    One(AppInfo<'a>),
    /// Two or more are tracked: their keys, in key order.
    Multiple(Vec<&'a str>),
    /// Expected applications ([`Registry::expect`]) have no record: these
    /// specs, in their order (whatever else is tracked).
    Missing(Vec<&'a Expected>),
}

/// An application the server expects ([`Registry::expect`],
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
/// use heartbeat_sdk::server::Expected;
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
    id: String,
    host: Option<IpAddr>,
}

impl Expected {
    /// The application `id` from any host, if `id` is a valid application
    /// id ([`protocol::check_app_id`]).
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
        protocol::check_app_id(id, protocol::MAX_APP_ID_LEN).map_err(|e| ExpectedError {
            reason: format!("invalid application id: {e}"),
        })?;
        Ok(Expected {
            id: id.to_owned(),
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
        match s.rsplit_once(" @ ") {
            None => Expected::new(s, None),
            Some((id, host)) => match host.parse::<IpAddr>() {
                Ok(ip) => Expected::new(id, Some(ip)),
                Err(_) => Err(ExpectedError {
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
            Some(ip) => write!(f, "{} @ {ip}", self.id),
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
    specs: Vec<(Expected, Option<Box<str>>)>,
    /// Ids of the `ID` specs.
    by_id: HashSet<Box<str>>,
    /// Record keys of the `ID @ IP` specs.
    by_key: HashSet<Box<str>>,
    key_by_peer: bool,
}

impl Expectations {
    fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Whether the record of `app` under `key` is expected.
    fn matches(&self, app: &str, key: &str) -> bool {
        !self.is_empty()
            && (self.by_id.contains(app) || (self.key_by_peer && self.by_key.contains(key)))
    }

    /// Whether the record under `key` is expected.
    fn matches_key(&self, key: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        if !self.key_by_peer {
            return self.by_id.contains(key);
        }
        self.by_key.contains(key) || self.by_id.contains(split_key(key).0)
    }
}

pub(crate) use crate::protocol::split_key;

#[derive(Debug, Clone, Copy)]
struct Record {
    last_us: u64,
    granted_ms: u64,
}

/// The tracked applications. Not thread-safe by itself; wrap it in a mutex.
#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    base: Option<Instant>,
    /// The wall-clock time read once, when `base` was set: what
    /// `/metrics`' timestamps count from (monotonic time since then).
    base_wall: Option<SystemTime>,
    apps: HashMap<Arc<str>, Record>,
    deadlines: BTreeSet<(u64, Arc<str>)>,
    counters: Counters,
    events: Vec<Event>,
    /// Shared with the snapshots; changed only by [`Registry::expect`].
    expected: Arc<Expectations>,
    /// How many records each id of an `ID` spec has (expected records are
    /// only removed by `done`, never expired).
    expected_live: HashMap<Box<str>, usize>,
    #[cfg(test)]
    last_sweep_examined: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(RegistryConfig::default())
    }
}

impl Registry {
    /// An empty registry. Ratios are used as given: keep them finite and
    /// ordered `warn <= crit <= drop` for meaningful results.
    pub fn new(config: RegistryConfig) -> Self {
        let expected = Arc::new(Expectations {
            key_by_peer: config.key_by_peer,
            ..Expectations::default()
        });
        Registry {
            config,
            base: None,
            base_wall: None,
            apps: HashMap::new(),
            deadlines: BTreeSet::new(),
            counters: Counters::default(),
            events: Vec::new(),
            expected,
            expected_live: HashMap::new(),
            #[cfg(test)]
            last_sweep_examined: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Expects `app` from now on (see [`Expected`]): its records are never
    /// dropped, and while it has none it is reported missing, CRITICAL.
    /// Records already tracked that match it stop expiring. Expecting the
    /// same spec twice changes nothing. Costs `O(n)` when records are
    /// tracked (meant for start-up).
    pub fn expect(&mut self, app: Expected) {
        let key = app
            .host
            .map(|ip| self.key_for(&app.id, ip).into_boxed_str());
        let expected = Arc::make_mut(&mut self.expected);
        let Err(at) = expected.specs.binary_search_by(|(spec, _)| spec.cmp(&app)) else {
            return;
        };
        match &key {
            Some(key) => {
                expected.by_key.insert(key.clone());
            }
            None => {
                expected.by_id.insert(app.id.clone().into_boxed_str());
                self.expected_live
                    .insert(app.id.clone().into_boxed_str(), 0);
            }
        }
        expected.specs.insert(at, (app, key));
        // records already tracked: take them out of the expiry index, and
        // count them again
        let expected = Arc::clone(&self.expected);
        let live: Vec<(u64, Arc<str>)> = self
            .apps
            .iter()
            .filter(|(key, _)| expected.matches_key(key))
            .map(|(key, record)| (self.deadline_of(record), Arc::clone(key)))
            .collect();
        for count in self.expected_live.values_mut() {
            *count = 0;
        }
        for entry in &live {
            self.deadlines.remove(entry);
            let id = if self.config.key_by_peer {
                split_key(&entry.1).0
            } else {
                &entry.1
            };
            if let Some(count) = self.expected_live.get_mut(id) {
                *count += 1;
            }
        }
    }

    /// The expected applications that have no record (the specs in
    /// order). `O(expected)`.
    pub fn missing(&self) -> Vec<&Expected> {
        self.expected
            .specs
            .iter()
            .filter(|(spec, key)| self.spec_is_missing(spec, key.as_deref()))
            .map(|(spec, _)| spec)
            .collect()
    }

    fn spec_is_missing(&self, spec: &Expected, key: Option<&str>) -> bool {
        match key {
            Some(key) => !self.config.key_by_peer || !self.apps.contains_key(key),
            None => self.expected_live.get(spec.id()).is_none_or(|n| *n == 0),
        }
    }

    /// Registers or refreshes `app` from `peer`, which promises its next
    /// ping within `timeout`; returns the granted timeout (`timeout +
    /// tolerance` in whole milliseconds, sub-millisecond parts dropped,
    /// saturating).
    ///
    /// # Errors
    /// [`RegistryFull`] when `app` is new and `max_apps` are already tracked.
    pub fn init(
        &mut self,
        app: &str,
        peer: IpAddr,
        timeout: Duration,
        now: Instant,
    ) -> Result<Duration, RegistryFull> {
        let granted = self.touch(app, peer, timeout, now)?;
        self.counters.inits += 1;
        Ok(granted)
    }

    /// Same as [`Registry::init`] (an unknown id is registered), counted as a
    /// ping.
    ///
    /// # Errors
    /// [`RegistryFull`] when `app` is new and `max_apps` are already tracked.
    pub fn ping(
        &mut self,
        app: &str,
        peer: IpAddr,
        timeout: Duration,
        now: Instant,
    ) -> Result<Duration, RegistryFull> {
        let granted = self.touch(app, peer, timeout, now)?;
        self.counters.pings += 1;
        Ok(granted)
    }

    /// Removes `app` immediately; returns whether it was tracked.
    pub fn done(&mut self, app: &str, peer: IpAddr, now: Instant) -> bool {
        self.expire(now);
        self.counters.dones += 1;
        let key = self.key_for(app, peer);
        match self.apps.remove_entry(key.as_str()) {
            Some((key, record)) => {
                let deadline = self.deadline_of(&record);
                if !self.deadlines.remove(&(deadline, Arc::clone(&key)))
                    && !self.expected.is_empty()
                {
                    if let Some(count) = self.expected_live.get_mut(app) {
                        *count = count.saturating_sub(1);
                    }
                }
                self.push_event(Event::Destroyed(key));
                self.maybe_shrink();
                true
            }
            None => false,
        }
    }

    /// Expires overdue records, then the keys `/list` shows, in key order.
    pub fn list(&mut self, now: Instant) -> Vec<&str> {
        self.expire(now);
        self.sorted().into_iter().map(|(key, _)| &**key).collect()
    }

    /// Expires overdue records, then the status of `app` as seen from
    /// `peer` (what `/status?appid=APP` shows).
    pub fn status(&mut self, app: &str, peer: IpAddr, now: Instant) -> AppStatus<'_> {
        self.expire(now);
        let now_us = self.offset_us(now);
        let key = self.key_for(app, peer);
        if let Some((key, record)) = self.apps.get_key_value(key.as_str()) {
            return AppStatus::Tracked(info(&self.config, key, record, now_us));
        }
        if !self.expected.is_empty() {
            // an `ID @ IP` spec for this very key first, then an `ID` one
            // that no host satisfies
            let missing = self.expected.specs.iter().find(|(spec, spec_key)| {
                spec.id() == app
                    && match spec_key {
                        Some(spec_key) => self.config.key_by_peer && **spec_key == *key,
                        None => false,
                    }
            });
            let missing = missing.or_else(|| {
                self.expected.specs.iter().find(|(spec, spec_key)| {
                    spec.id() == app && spec_key.is_none() && self.spec_is_missing(spec, None)
                })
            });
            if let Some((spec, _)) = missing {
                return AppStatus::Missing(spec);
            }
        }
        AppStatus::NoRecord { key }
    }

    /// Expires overdue records, then the status of the whole host (what
    /// `/status` without an id shows).
    pub fn host_status(&mut self, now: Instant) -> HostStatus<'_> {
        self.expire(now);
        let now_us = self.offset_us(now);
        if !self.expected.is_empty() {
            let missing = self.missing();
            if !missing.is_empty() {
                return HostStatus::Missing(missing);
            }
        }
        match (self.apps.len(), self.apps.iter().next()) {
            (0, _) | (_, None) => HostStatus::NoClients,
            (1, Some((key, record))) => HostStatus::One(info(&self.config, key, record, now_us)),
            (_, Some(_)) => {
                HostStatus::Multiple(self.sorted().into_iter().map(|(key, _)| &**key).collect())
            }
        }
    }

    /// Drops every record whose overdue ratio reached `drop_ratio` at `now`,
    /// but expected ones ([`Registry::expect`]); returns how many. Costs `O(expired * log n)`: only the expired prefix
    /// of the deadline index is examined. Called by every other method.
    pub fn expire(&mut self, now: Instant) -> usize {
        let now_us = self.offset_us(now);
        let mut expired = 0;
        #[cfg(test)]
        let mut examined = 0;
        while let Some((deadline, _)) = self.deadlines.first() {
            #[cfg(test)]
            {
                examined += 1;
            }
            if *deadline > now_us {
                break;
            }
            let Some((_, key)) = self.deadlines.pop_first() else {
                break;
            };
            self.apps.remove(&key);
            self.counters.expiries += 1;
            self.push_event(Event::Expired(key));
            expired += 1;
        }
        #[cfg(test)]
        {
            self.last_sweep_examined = examined;
        }
        if expired > 0 {
            self.maybe_shrink();
        }
        expired
    }

    /// The tracked applications in key order, as of `now`. Does not expire:
    /// call [`Registry::expire`] first for an up-to-date view.
    pub fn apps(&self, now: Instant) -> impl Iterator<Item = AppInfo<'_>> + '_ {
        let now_us = self.peek_offset_us(now);
        self.sorted()
            .into_iter()
            .map(move |(key, record)| info(&self.config, key, record, now_us))
    }

    /// Expires overdue records, then copies out what a whole-registry reply
    /// needs: per record its key (a reference count bump: the text is
    /// shared with the registry) and 16 bytes. No formatting and no sorting:
    /// this is what runs under the server's lock, the rest
    /// ([`Snapshot::sort`], rendering) runs after it is released.
    pub(crate) fn snapshot(&mut self, now: Instant) -> Snapshot {
        self.expire(now);
        Snapshot {
            records: self
                .apps
                .iter()
                .map(|(key, record)| (Arc::clone(key), *record))
                .collect(),
            now_us: self.offset_us(now),
            counters: self.counters,
            config: self.config.clone(),
            expected: Arc::clone(&self.expected),
            missing: OnceLock::new(),
            base_wall: self.base_wall,
        }
    }

    /// How many keys are also held outside the registry (by the snapshot of
    /// a reply still being rendered or sent); 0 once every reply is gone.
    #[cfg(test)]
    pub(crate) fn keys_held_by_replies(&self) -> usize {
        // the map and the deadline index hold one reference each
        self.apps
            .keys()
            .filter(|k| Arc::strong_count(k) > 2)
            .count()
    }

    /// Number of tracked applications (expired ones included until the next
    /// call that takes `now`).
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    /// Whether no application is tracked.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// Totals since creation.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Takes the events recorded since the last call (at most
    /// [`EVENT_BUFFER_CAP`]).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Number of entries in the deadline index (`len()` less the expected
    /// records, which never expire).
    #[cfg(test)]
    fn deadline_index_len(&self) -> usize {
        self.deadlines.len()
    }

    /// How many deadline-index entries the last expiry pass looked at (one
    /// per deadline compared with `now`): the expired ones plus the first
    /// unexpired one, if any. Counted inside the sweep loop, so a loop that
    /// walked past the due records (a scan of the index) would show it.
    #[cfg(test)]
    fn last_sweep_examined(&self) -> usize {
        self.last_sweep_examined
    }

    /// Capacity of the record table (what `maybe_shrink` gives back).
    #[cfg(test)]
    fn apps_capacity(&self) -> usize {
        self.apps.capacity()
    }

    fn touch(
        &mut self,
        app: &str,
        peer: IpAddr,
        timeout: Duration,
        now: Instant,
    ) -> Result<Duration, RegistryFull> {
        self.expire(now);
        let now_us = self.offset_us(now);
        let granted_ms = whole_ms(timeout).saturating_add(whole_ms(self.config.tolerance));
        let fresh = Record {
            last_us: now_us,
            granted_ms,
        };
        let key = self.key_for(app, peer);
        let existing = self
            .apps
            .get_key_value(key.as_str())
            .map(|(k, r)| (Arc::clone(k), *r));
        // expected records stay out of the expiry index: never dropped
        let expected = self.expected.matches(app, &key);
        let event = match existing {
            Some((key, old)) => {
                if !expected {
                    let old_deadline = self.deadline_of(&old);
                    self.deadlines.remove(&(old_deadline, Arc::clone(&key)));
                    self.deadlines
                        .insert((self.deadline_of(&fresh), Arc::clone(&key)));
                }
                if let Some(record) = self.apps.get_mut(&key) {
                    *record = fresh;
                }
                Event::Updated(key)
            }
            None => {
                let key: Arc<str> = Arc::from(key);
                if self.apps.len() >= self.config.max_apps {
                    self.counters.refused += 1;
                    self.push_event(Event::Refused(key));
                    return Err(RegistryFull {
                        max_apps: self.config.max_apps,
                    });
                }
                if expected {
                    if let Some(count) = self.expected_live.get_mut(app) {
                        *count += 1;
                    }
                } else {
                    self.deadlines
                        .insert((self.deadline_of(&fresh), Arc::clone(&key)));
                }
                self.apps.insert(Arc::clone(&key), fresh);
                Event::Constructed(key)
            }
        };
        self.push_event(event);
        Ok(Duration::from_millis(granted_ms))
    }

    /// The records in key order (`O(n log n)`; only for whole-registry
    /// replies, whose size is `O(n)` anyway).
    fn sorted(&self) -> Vec<(&Arc<str>, &Record)> {
        let mut all: Vec<_> = self.apps.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// Gives memory back once the map is mostly empty (amortised `O(1)`).
    fn maybe_shrink(&mut self) {
        if self.apps.capacity() > 1024 && self.apps.len() * 4 < self.apps.capacity() {
            self.apps.shrink_to(self.apps.len() * 2);
        }
    }

    fn key_for(&self, app: &str, peer: IpAddr) -> String {
        if !self.config.key_by_peer {
            return app.to_owned();
        }
        // `format!("{app} @ {peer}")` without the formatting machinery: it
        // was half the cost of a ping (benches/registry.rs).
        let mut key = String::with_capacity(app.len() + " @ ".len() + 39);
        key.push_str(app);
        key.push_str(" @ ");
        match peer.to_canonical() {
            IpAddr::V4(ip) => push_ipv4(&mut key, ip),
            ip @ IpAddr::V6(_) => {
                use fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(key, "{ip}");
            }
        }
        key
    }

    /// First instant (µs offset) at which the record counts as expired.
    fn deadline_of(&self, record: &Record) -> u64 {
        let granted_us = record.granted_ms.saturating_mul(1000);
        // Float-to-int casts saturate (NaN gives 0): never panics.
        let span = (self.config.drop_ratio * granted_us as f64).ceil() as u64;
        record.last_us.saturating_add(span)
    }

    fn offset_us(&mut self, now: Instant) -> u64 {
        let base = match self.base {
            Some(base) => base,
            None => {
                self.base_wall = Some(SystemTime::now());
                *self.base.insert(now)
            }
        };
        micros_since(base, now)
    }

    fn peek_offset_us(&self, now: Instant) -> u64 {
        self.base.map_or(0, |base| micros_since(base, now))
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() < EVENT_BUFFER_CAP {
            self.events.push(event);
        } else {
            self.counters.events_dropped += 1;
        }
    }
}

/// Durable state (feature `state`): putting stored records back.
impl Registry {
    /// Tracks `key` (a record key as the registry makes it, `"ID @ IP"` or
    /// the bare id) as if it had just reported at `now`, with its `granted`
    /// timeout kept as is (no tolerance added): it then goes WARNING,
    /// CRITICAL and is dropped on the usual schedule unless it reports. An
    /// existing record is refreshed. No event is recorded. For a server
    /// restoring its state at start.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use heartbeat_sdk::server::Registry;
    ///
    /// let mut registry = Registry::default();
    /// let start = Instant::now();
    /// registry.restore("kiosk-7 @ 10.0.0.7", Duration::from_millis(3000), start)?;
    /// assert_eq!(registry.list(start), ["kiosk-7 @ 10.0.0.7"]);
    /// // silent since start-up: dropped at 6 × 3000 ms
    /// assert_eq!(registry.expire(start + Duration::from_millis(18_000)), 1);
    /// # Ok::<(), heartbeat_sdk::server::registry::RegistryFull>(())
    /// ```
    ///
    /// # Errors
    /// [`RegistryFull`] when `key` is new and `max_apps` are already tracked.
    pub fn restore(
        &mut self,
        key: &str,
        granted: Duration,
        now: Instant,
    ) -> Result<(), RegistryFull> {
        let record = Record {
            last_us: self.offset_us(now),
            granted_ms: whole_ms(granted),
        };
        let key: Arc<str> = match self.apps.get_key_value(key) {
            Some((key, old)) => {
                let (key, old) = (Arc::clone(key), *old);
                self.deadlines
                    .remove(&(self.deadline_of(&old), Arc::clone(&key)));
                key
            }
            None if self.apps.len() >= self.config.max_apps => {
                return Err(RegistryFull {
                    max_apps: self.config.max_apps,
                })
            }
            None => Arc::from(key),
        };
        self.deadlines
            .insert((self.deadline_of(&record), Arc::clone(&key)));
        self.apps.insert(key, record);
        Ok(())
    }

    /// The granted timeout of the record under `key`, if tracked (what the
    /// durable state stores with each init or ping).
    #[cfg(feature = "state")]
    pub(crate) fn granted_of(&self, key: &str) -> Option<Duration> {
        self.apps
            .get(key)
            .map(|r| Duration::from_millis(r.granted_ms))
    }
}

/// The view of `record` under `key` at `now_us`: its overdue ratio and the
/// state that maps to.
fn info<'a>(config: &RegistryConfig, key: &'a str, record: &Record, now_us: u64) -> AppInfo<'a> {
    let elapsed = now_us.saturating_sub(record.last_us) as f64;
    let granted_us = record.granted_ms.saturating_mul(1000).max(1) as f64;
    // Compare by multiplication so boundary values are exact.
    let state = if elapsed < config.warn_ratio * granted_us {
        State::Ok
    } else if elapsed < config.crit_ratio * granted_us {
        State::Warning
    } else {
        State::Critical
    };
    AppInfo {
        key,
        overdue_ratio: elapsed / granted_us,
        granted: Duration::from_millis(record.granted_ms),
        state,
    }
}

/// The records of a [`Registry`] as of one instant, for rendering a
/// whole-registry reply (`/list`, the host `/status`, `/metrics`) after the
/// lock is released: see [`Registry::snapshot`] and [`crate::server::service`].
///
/// Keys are the registry's own `Arc<str>`s, so the snapshot costs 32 bytes
/// per record whatever the key length, and any number of snapshots share
/// the key text with the registry (and with each other).
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    records: Vec<(Arc<str>, Record)>,
    now_us: u64,
    counters: Counters,
    config: RegistryConfig,
    expected: Arc<Expectations>,
    /// Worked out from the records on first use, outside the lock.
    missing: OnceLock<Vec<Expected>>,
    base_wall: Option<SystemTime>,
}

impl Snapshot {
    /// Puts the records in key order (byte-wise ascending), as every
    /// whole-registry reply lists them.
    pub(crate) fn sort(&mut self) {
        self.records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Totals as of the snapshot.
    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    /// The key of record `i`.
    pub(crate) fn key(&self, i: usize) -> &str {
        &self.records[i].0
    }

    /// Record `i` as of the snapshot.
    pub(crate) fn app(&self, i: usize) -> AppInfo<'_> {
        let (key, record) = &self.records[i];
        info(&self.config, key, record, self.now_us)
    }

    /// How long before the snapshot record `i` last sent `init` or `ping`.
    pub(crate) fn since_last(&self, i: usize) -> Duration {
        Duration::from_micros(self.now_us.saturating_sub(self.records[i].1.last_us))
    }

    /// The wall-clock time of the snapshot: the registry's wall-clock
    /// anchor plus the monotonic time since (so two snapshots at the same
    /// `now` agree, and a clock step does not move past timestamps).
    pub(crate) fn wall_now(&self) -> SystemTime {
        let base = self.base_wall.unwrap_or(SystemTime::UNIX_EPOCH);
        base.checked_add(Duration::from_micros(self.now_us))
            .unwrap_or(base)
    }

    /// Whether record `i` matches an expected spec (it is never dropped).
    #[cfg(feature = "server")]
    pub(crate) fn is_expected(&self, i: usize) -> bool {
        self.expected.matches_key(&self.records[i].0)
    }

    /// The registry's configuration.
    pub(crate) fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The expected specs no record matches, in spec order. Worked out on
    /// the first call (`O(records + expected)`), after the lock.
    pub(crate) fn missing(&self) -> &[Expected] {
        self.missing.get_or_init(|| {
            let expected = &self.expected;
            if expected.is_empty() {
                return Vec::new();
            }
            let mut ids: HashSet<&str> = HashSet::new();
            let mut keys: HashSet<&str> = HashSet::new();
            for (key, _) in &self.records {
                if expected.key_by_peer {
                    ids.insert(split_key(key).0);
                    keys.insert(key);
                } else {
                    ids.insert(key);
                }
            }
            expected
                .specs
                .iter()
                .filter(|(spec, key)| match key {
                    Some(key) => !expected.key_by_peer || !keys.contains(&**key),
                    None => !ids.contains(spec.id()),
                })
                .map(|(spec, _)| spec.clone())
                .collect()
        })
    }
}

/// Appends `ip` in dotted-decimal form, as its `Display` does.
fn push_ipv4(out: &mut String, ip: Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

fn micros_since(base: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(base).as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::service::{app_status_line, host_status_line, list_body};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// The `/status?appid=APP` body, as the service renders it.
    fn status_text(r: &mut Registry, app: &str, peer: IpAddr, now: Instant) -> String {
        let config = r.config().clone();
        app_status_line(&r.status(app, peer, now), &config)
    }

    /// The `/status` body, as the service renders it.
    fn host_text(r: &mut Registry, now: Instant) -> String {
        let config = r.config().clone();
        host_status_line(&r.host_status(now), &config)
    }

    /// The `/list` body, as the service renders it.
    fn list_text(r: &mut Registry, now: Instant) -> String {
        list_body(&r.list(now))
    }

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4));

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn keys_print_the_peer_as_display_does() {
        let r = Registry::default();
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(r.key_for("T", ip), format!("T @ {ip}"));
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(r.key_for("T", v6), "T @ 2001:db8::1");
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(r.key_for("T", mapped), "T @ 10.0.0.7");
    }

    #[test]
    fn registry_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Registry>();
    }

    #[test]
    fn granted_is_requested_plus_tolerance() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        assert_eq!(r.init("a", LOCAL, d(2000), t0), Ok(d(3000)));
        assert_eq!(r.ping("a", LOCAL, d(0), t0), Ok(d(1000)));
        assert_eq!(r.ping("b", LOCAL, d(u64::MAX), t0), Ok(d(u64::MAX)));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn boundaries_ok_warning_critical_dropped() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("T", LOCAL, d(0), t0).unwrap();
        let line = |r: &mut Registry, at| status_text(r, "T", LOCAL, ms(t0, at));
        let perf = |od: &str| format!("| od={od};3;5;0;6 delay=1000ms;;; ");
        assert_eq!(
            line(&mut r, 2990),
            format!("OK - fine application [T @ 127.0.0.1]{}", perf("2.99"))
        );
        assert_eq!(
            line(&mut r, 3000),
            format!(
                "WARNING - somewhat late application [T @ 127.0.0.1]{}",
                perf("3.00")
            )
        );
        assert_eq!(
            line(&mut r, 4990),
            format!(
                "WARNING - somewhat late application [T @ 127.0.0.1]{}",
                perf("4.99")
            )
        );
        assert_eq!(
            line(&mut r, 5000),
            format!(
                "CRITICAL - quite late application [T @ 127.0.0.1]{}",
                perf("5.00")
            )
        );
        assert_eq!(
            line(&mut r, 5990),
            format!(
                "CRITICAL - quite late application [T @ 127.0.0.1]{}",
                perf("5.99")
            )
        );
        assert_eq!(r.len(), 1);
        assert_eq!(
            line(&mut r, 6000),
            "CRITICAL - no application record for queried ID: [T @ 127.0.0.1]"
        );
        assert_eq!(r.len(), 0);
        assert_eq!(r.counters().expiries, 1);
    }

    #[test]
    fn one_microsecond_before_drop_is_kept() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("T", LOCAL, d(0), t0).unwrap();
        assert_eq!(r.expire(t0 + Duration::from_micros(5_999_999)), 0);
        assert_eq!(r.expire(t0 + Duration::from_micros(6_000_000)), 1);
    }

    #[test]
    fn ping_refreshes_and_init_refreshes() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.ping("T", LOCAL, d(0), t0).unwrap(); // ping registers
        r.init("T", LOCAL, d(2000), ms(t0, 5000)).unwrap(); // init refreshes
        assert!(status_text(&mut r, "T", LOCAL, ms(t0, 6500)).starts_with("OK - fine"));
        assert!(host_text(&mut r, ms(t0, 6500)).contains("od=0.50;3;5;0;6 delay=3000ms"));
        // The old deadline (t0+6s) no longer applies; the new one is 5s+18s.
        assert_eq!(r.expire(ms(t0, 22_999)), 0);
        assert_eq!(r.deadline_index_len(), 1);
        assert_eq!(r.expire(ms(t0, 23_000)), 1);
        let events: Vec<String> = r.take_events().iter().map(ToString::to_string).collect();
        assert_eq!(
            events,
            [
                "Construction of [T @ 127.0.0.1]",
                "Update of [T @ 127.0.0.1]",
                "Expiry of [T @ 127.0.0.1]"
            ]
        );
        assert!(r.take_events().is_empty());
        let c = r.counters();
        assert_eq!((c.inits, c.pings, c.expiries), (1, 1, 1));
    }

    #[test]
    fn done_removes_immediately() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("T", LOCAL, d(1_000_000), t0).unwrap();
        assert!(!r.done("T", OTHER, t0)); // other host's T is unknown
        assert!(r.done("T", LOCAL, t0));
        assert!(!r.done("T", LOCAL, t0));
        assert!(r.is_empty());
        assert_eq!(r.deadline_index_len(), 0);
        assert_eq!(r.counters().dones, 3);
        assert_eq!(
            r.take_events().last(),
            Some(&Event::Destroyed("T @ 127.0.0.1".into()))
        );
    }

    #[test]
    fn host_status_and_list_with_zero_one_several() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        assert_eq!(
            host_text(&mut r, t0),
            "UNKNOWN - no heartbeat clients at the moment..."
        );
        assert_eq!(list_text(&mut r, t0), "");
        r.init("B", OTHER, d(2000), t0).unwrap();
        assert_eq!(
            host_text(&mut r, t0),
            "OK - fine application [B @ 1.2.3.4]| od=0.00;3;5;0;6 delay=3000ms;;; "
        );
        r.init("C", OTHER, d(2000), t0).unwrap();
        r.init("A", OTHER, d(2000), t0).unwrap();
        assert_eq!(
            host_text(&mut r, t0),
            "WARNING - multiple (3) applications: [A @ 1.2.3.4,B @ 1.2.3.4,C @ 1.2.3.4]"
        );
        assert_eq!(
            list_text(&mut r, t0),
            "A @ 1.2.3.4\nB @ 1.2.3.4\nC @ 1.2.3.4\n"
        );
    }

    /// The registry answers with typed data; only the service renders text.
    #[test]
    fn status_and_list_are_typed() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        assert_eq!(r.host_status(t0), HostStatus::NoClients);
        assert_eq!(
            r.status("B", OTHER, t0),
            AppStatus::NoRecord {
                key: "B @ 1.2.3.4".into()
            }
        );
        r.init("B", OTHER, d(2000), t0).unwrap();
        let one = AppInfo {
            key: "B @ 1.2.3.4",
            overdue_ratio: 0.5,
            granted: d(3000),
            state: State::Ok,
        };
        assert_eq!(r.status("B", OTHER, ms(t0, 1500)), AppStatus::Tracked(one));
        assert_eq!(r.host_status(ms(t0, 1500)), HostStatus::One(one));
        let late = r.status("B", OTHER, ms(t0, 9000));
        assert!(matches!(
            late,
            AppStatus::Tracked(AppInfo {
                state: State::Warning,
                ..
            })
        ));
        r.init("A", OTHER, d(2000), t0).unwrap();
        assert_eq!(
            r.host_status(t0),
            HostStatus::Multiple(vec!["A @ 1.2.3.4", "B @ 1.2.3.4"])
        );
        assert_eq!(r.list(t0), ["A @ 1.2.3.4", "B @ 1.2.3.4"]);
    }

    #[test]
    fn same_id_from_two_hosts_is_two_records() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("T", LOCAL, d(0), t0).unwrap();
        r.init("T", OTHER, d(0), t0).unwrap();
        assert_eq!(r.len(), 2);
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert!(status_text(&mut r, "T", mapped, t0).starts_with("OK"));
        r.init("T", IpAddr::V6(Ipv6Addr::LOCALHOST), d(0), t0)
            .unwrap();
        assert!(list_text(&mut r, t0).contains("T @ ::1\n"));
    }

    #[test]
    fn bare_keys_when_not_keyed_by_peer() {
        let t0 = Instant::now();
        let mut r = Registry::new(RegistryConfig {
            key_by_peer: false,
            ..RegistryConfig::default()
        });
        r.init("T", LOCAL, d(0), t0).unwrap();
        r.ping("T", OTHER, d(0), t0).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(list_text(&mut r, t0), "T\n");
        assert!(status_text(&mut r, "T", OTHER, t0).starts_with("OK - fine application [T]| "));
        assert_eq!(
            status_text(&mut r, "U", OTHER, t0),
            "CRITICAL - no application record for queried ID: [U]"
        );
        assert!(r.done("T", LOCAL, t0));
    }

    #[test]
    fn max_apps_refuses_new_but_not_existing() {
        let t0 = Instant::now();
        let mut r = Registry::new(RegistryConfig {
            max_apps: 2,
            ..RegistryConfig::default()
        });
        r.init("a", LOCAL, d(0), t0).unwrap();
        r.init("b", LOCAL, d(100_000), t0).unwrap();
        assert_eq!(
            r.init("c", LOCAL, d(0), t0),
            Err(RegistryFull { max_apps: 2 })
        );
        assert_eq!(
            r.ping("c", LOCAL, d(0), t0),
            Err(RegistryFull { max_apps: 2 })
        );
        assert_eq!(r.ping("a", LOCAL, d(0), t0), Ok(d(1000)));
        assert_eq!(r.counters().refused, 2);
        assert_eq!(r.counters().pings, 1);
        assert!(!list_text(&mut r, t0).contains('c'));
        // Once "a" expires there is room again.
        assert_eq!(r.ping("c", LOCAL, d(0), ms(t0, 6000)), Ok(d(1000)));
        assert_eq!(
            list_text(&mut r, ms(t0, 6000)),
            "b @ 127.0.0.1\nc @ 127.0.0.1\n"
        );
    }

    #[test]
    fn apps_view_and_custom_ratios() {
        let t0 = Instant::now();
        let mut r = Registry::new(RegistryConfig {
            tolerance: Duration::ZERO,
            warn_ratio: 1.5,
            crit_ratio: 2.0,
            drop_ratio: 2.5,
            ..RegistryConfig::default()
        });
        r.init("a", LOCAL, d(1000), t0).unwrap();
        let view: Vec<AppInfo<'_>> = r.apps(ms(t0, 1500)).collect();
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].key, "a @ 127.0.0.1");
        assert_eq!(view[0].granted, d(1000));
        assert_eq!(view[0].state, State::Warning);
        assert!((view[0].overdue_ratio - 1.5).abs() < 1e-9);
        assert_eq!(
            host_text(&mut r, ms(t0, 2000)),
            "CRITICAL - quite late application [a @ 127.0.0.1]| od=2.00;1.5;2;0;2.5 delay=1000ms;;; "
        );
        assert_eq!(r.expire(ms(t0, 2500)), 1);
    }

    #[test]
    fn zero_granted_timeout_never_divides_by_zero() {
        let t0 = Instant::now();
        let mut r = Registry::new(RegistryConfig {
            tolerance: Duration::ZERO,
            ..RegistryConfig::default()
        });
        assert_eq!(r.ping("z", LOCAL, d(0), t0), Ok(d(0)));
        assert!(r.apps(t0).all(|a| a.overdue_ratio.is_finite()));
        assert_eq!(r.len(), 1);
        assert_eq!(
            list_text(&mut r, t0),
            "",
            "expired at once: od is 0/0 >= 6 by convention"
        );
    }

    #[test]
    fn clock_going_backwards_does_not_panic() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("a", LOCAL, d(0), ms(t0, 10_000)).unwrap();
        assert!(status_text(&mut r, "a", LOCAL, t0).starts_with("OK"));
        r.ping("b", LOCAL, d(0), t0).unwrap();
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn event_buffer_is_bounded() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        for i in 0..EVENT_BUFFER_CAP + 10 {
            r.ping(&i.to_string(), LOCAL, d(0), t0).unwrap();
        }
        assert_eq!(r.counters().events_dropped, 10);
        assert_eq!(r.take_events().len(), EVENT_BUFFER_CAP);
    }

    #[test]
    fn mass_removal_shrinks_and_stays_consistent() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        for i in 0..5000 {
            r.init(&format!("{i:04}"), LOCAL, d(0), t0).unwrap();
        }
        let full = r.apps_capacity();
        assert!(full >= 5000, "{full}");
        assert!(!r.is_empty());
        for i in 10..5000 {
            assert!(r.done(&format!("{i:04}"), LOCAL, t0));
        }
        assert!(
            r.apps_capacity() < full / 4,
            "{} of {full}",
            r.apps_capacity()
        );
        assert_eq!(r.len(), 10);
        assert_eq!(r.deadline_index_len(), 10);
        assert!(list_text(&mut r, t0).starts_with("0000 @ 127.0.0.1\n0001 @ "));
        assert_eq!(r.expire(ms(t0, 6000)), 10);
        assert!(r.is_empty());
    }

    #[test]
    fn expiry_examines_only_expired_records() {
        const N: u64 = 100_000;
        let t0 = Instant::now();
        let mut r = Registry::new(RegistryConfig {
            max_apps: N as usize,
            ..RegistryConfig::default()
        });
        // App i pinged at t0 + i µs with granted 1000 ms: its deadline is
        // t0 + 6 s + i µs.
        let us = |n: u64| t0 + Duration::from_micros(n);
        for i in 0..N {
            r.ping(&format!("app{i}"), LOCAL, d(0), us(i)).unwrap();
            // the first deadline, compared and found in the future (none
            // before the first record)
            assert_eq!(r.last_sweep_examined(), usize::from(i > 0));
        }
        assert_eq!(r.len(), N as usize);
        assert_eq!(r.deadline_index_len(), N as usize);
        r.take_events();
        // At t0 + 6 s + 9 µs, apps 0..=9 are due: their 10 deadlines and
        // the first one still in the future (app 10) are compared, no more.
        let at = us(6_000_009);
        assert!(status_text(&mut r, "app50000", LOCAL, at).starts_with("CRITICAL - quite"));
        assert_eq!(r.last_sweep_examined(), 11);
        assert_eq!(r.len(), N as usize - 10);
        // A request with nothing due compares one deadline, the first.
        r.ping("app50000", LOCAL, d(0), at).unwrap();
        assert_eq!(r.last_sweep_examined(), 1);
        assert_eq!(r.deadline_index_len(), r.len());
        assert_eq!(r.counters().expiries, 10);
    }

    #[test]
    fn a_mass_expiry_gives_the_table_back_at_once() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        for i in 0..5000 {
            let timeout = if i < 10 { 60_000 } else { 0 };
            r.init(&format!("{i:04}"), LOCAL, d(timeout), t0).unwrap();
        }
        let full = r.apps_capacity();
        assert_eq!(r.expire(ms(t0, 6000)), 4990);
        assert!(
            r.apps_capacity() < full / 4,
            "{} of {full}",
            r.apps_capacity()
        );
        assert_eq!(r.len(), 10);
    }

    #[test]
    fn restore_tracks_refreshes_and_respects_the_cap() {
        let t0 = Instant::now();
        let mut r = Registry::new(RegistryConfig {
            max_apps: 2,
            ..RegistryConfig::default()
        });
        r.restore("a @ 10.0.0.1", d(2000), t0).unwrap();
        r.restore("b", d(1000), t0).unwrap();
        assert_eq!(list_text(&mut r, t0), "a @ 10.0.0.1\nb\n");
        assert_eq!(
            r.restore("c", d(1000), t0),
            Err(RegistryFull { max_apps: 2 })
        );
        // refreshing a known key is not a new record, cap or not
        r.restore("b", d(4000), ms(t0, 5000)).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.deadline_index_len(), 2);
        // a was dropped at 6 × 2000 ms; b, refreshed at 5 s with 4 s, lives
        // until 5 + 24 s
        assert_eq!(r.expire(ms(t0, 12_000)), 1);
        assert_eq!(list_text(&mut r, ms(t0, 28_999)), "b\n");
        assert_eq!(r.expire(ms(t0, 29_000)), 1);
        assert!(r
            .take_events()
            .iter()
            .all(|e| matches!(e, Event::Expired(_))));
    }

    #[cfg(feature = "state")]
    #[test]
    fn granted_of_is_the_stored_grant() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("a", LOCAL, d(2500), t0).unwrap();
        assert_eq!(r.granted_of("a @ 127.0.0.1"), Some(d(3500)));
        assert_eq!(r.granted_of("a"), None);
    }

    #[test]
    fn events_name_their_record_key() {
        let t0 = Instant::now();
        let mut r = Registry::new(RegistryConfig {
            max_apps: 1,
            ..RegistryConfig::default()
        });
        r.init("a", LOCAL, d(0), t0).unwrap();
        r.ping("a", LOCAL, d(0), t0).unwrap();
        assert!(r.init("b", OTHER, d(0), t0).is_err());
        assert!(r.done("a", LOCAL, t0));
        r.init("c", LOCAL, d(0), t0).unwrap();
        r.expire(ms(t0, 6000));
        let keys: Vec<String> = r.take_events().iter().map(|e| e.key().to_owned()).collect();
        assert_eq!(
            keys,
            [
                "a @ 127.0.0.1",
                "a @ 127.0.0.1",
                "b @ 1.2.3.4",
                "a @ 127.0.0.1",
                "c @ 127.0.0.1",
                "c @ 127.0.0.1"
            ]
        );
    }

    #[test]
    fn a_bad_expected_spec_says_why() {
        let err = "a @ host".parse::<Expected>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"host\" after the last \" @ \" is not an IP address"
        );
        let err = "a|b".parse::<Expected>().unwrap_err();
        assert!(
            err.to_string().starts_with("invalid application id: "),
            "{err}"
        );
    }

    fn expecting(specs: &[&str]) -> Registry {
        let mut r = Registry::default();
        for spec in specs {
            r.expect(spec.parse().unwrap());
        }
        r
    }

    #[test]
    fn expected_specs_parse_on_the_last_separator() {
        let e: Expected = "a @ b @ ::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(e.id(), "a @ b");
        assert_eq!(e.host(), Some("10.0.0.7".parse().unwrap()));
        assert_eq!(e.to_string(), "a @ b @ 10.0.0.7");
        let e: Expected = "Tetris".parse().unwrap();
        assert_eq!((e.id(), e.host()), ("Tetris", None));
        for bad in ["", "a|b", "a\nb", " @ 1.2.3.4", "a @ host", "a @ 1.2.3"] {
            assert!(bad.parse::<Expected>().is_err(), "{bad:?}");
        }
        assert_eq!(split_key("a @ b @ 1.2.3.4"), ("a @ b", Some("1.2.3.4")));
        assert_eq!(split_key("a"), ("a", None));
    }

    /// Never started: missing; starts: tracked; dies: never dropped;
    /// `done`: missing again.
    #[test]
    fn an_expected_app_is_never_dropped() {
        let t0 = Instant::now();
        let mut r = expecting(&["T", "H @ 1.2.3.4"]);
        let missing = |r: &Registry| {
            r.missing()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(missing(&r), ["H @ 1.2.3.4", "T"]);
        assert_eq!(
            status_text(&mut r, "T", LOCAL, t0),
            "CRITICAL - expected application has not reported [T]"
        );
        assert_eq!(
            status_text(&mut r, "H", OTHER, t0),
            "CRITICAL - expected application has not reported [H @ 1.2.3.4]"
        );
        // asked from another host, `H @ 1.2.3.4` is not this key's spec
        let elsewhere = status_text(&mut r, "H", LOCAL, t0);
        assert!(elsewhere.contains("[H @ 127.0.0.1]"), "{elsewhere}");
        assert!(!elsewhere.contains("expected"), "{elsewhere}");
        // H from another host does not satisfy `H @ 1.2.3.4`
        r.init("H", LOCAL, d(0), t0).unwrap();
        assert_eq!(
            status_text(&mut r, "H", OTHER, t0),
            "CRITICAL - expected application has not reported [H @ 1.2.3.4]"
        );
        assert_eq!(
            host_text(&mut r, t0),
            "CRITICAL - 2 expected applications have not reported: [H @ 1.2.3.4,T]"
        );
        r.init("T", OTHER, d(0), t0).unwrap();
        r.init("H", OTHER, d(0), t0).unwrap();
        assert!(missing(&r).is_empty());
        // T is reported from 1.2.3.4: from here it is an ordinary unknown key
        assert_eq!(
            status_text(&mut r, "T", LOCAL, t0),
            "CRITICAL - no application record for queried ID: [T @ 127.0.0.1]"
        );
        assert!(host_text(&mut r, t0).starts_with("WARNING - multiple (3)"));
        // an hour later the unexpected H @ 127.0.0.1 is gone, the others stay
        let later = ms(t0, 3_600_000);
        assert_eq!(r.expire(later), 1);
        assert_eq!(r.list(later), ["H @ 1.2.3.4", "T @ 1.2.3.4"]);
        assert_eq!(r.deadline_index_len(), 0);
        assert!(status_text(&mut r, "T", OTHER, later)
            .starts_with("CRITICAL - quite late application [T @ 1.2.3.4]| od=3600.00;"));
        assert!(r.done("T", OTHER, later));
        assert_eq!(missing(&r), ["T"]);
        assert_eq!(
            host_text(&mut r, later),
            "CRITICAL - expected application has not reported [T]"
        );
        r.ping("T", OTHER, d(0), later).unwrap();
        assert!(missing(&r).is_empty());
        assert!(host_text(&mut r, later).starts_with("WARNING - multiple (2)"));
    }

    #[test]
    fn expecting_a_tracked_app_stops_its_expiry() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("T", LOCAL, d(0), t0).unwrap();
        r.init("U", LOCAL, d(0), t0).unwrap();
        r.expect("T".parse().unwrap());
        r.expect("T".parse().unwrap());
        assert!(r.missing().is_empty());
        assert_eq!(r.deadline_index_len(), 1);
        assert_eq!(r.expire(ms(t0, 60_000)), 1);
        assert_eq!(r.list(ms(t0, 60_000)), ["T @ 127.0.0.1"]);
        assert!(r.done("T", LOCAL, t0));
        assert_eq!(r.missing().len(), 1);
    }

    #[test]
    fn snapshot_knows_expected_and_missing() {
        let t0 = Instant::now();
        let mut r = expecting(&["T", "M", "X @ 1.2.3.4"]);
        r.init("T", OTHER, d(0), t0).unwrap();
        r.init("U", OTHER, d(0), t0).unwrap();
        let mut snap = r.snapshot(t0);
        snap.sort();
        assert_eq!((snap.key(0), snap.is_expected(0)), ("T @ 1.2.3.4", true));
        assert_eq!((snap.key(1), snap.is_expected(1)), ("U @ 1.2.3.4", false));
        let missing: Vec<String> = snap.missing().iter().map(ToString::to_string).collect();
        assert_eq!(missing, ["M", "X @ 1.2.3.4"]);
        // X reports from its host: no longer missing
        r.init("X", OTHER, d(0), t0).unwrap();
        let snap = r.snapshot(t0);
        let missing: Vec<String> = snap.missing().iter().map(ToString::to_string).collect();
        assert_eq!(missing, ["M"]);
        // bare keys: `ID @ IP` specs never match, `ID` ones do
        let mut r = Registry::new(RegistryConfig {
            key_by_peer: false,
            ..RegistryConfig::default()
        });
        assert!("a @ b".parse::<Expected>().is_err(), "b is no IP address");
        r.expect(Expected::any_host("a @ b").unwrap());
        r.expect("X @ 1.2.3.4".parse().unwrap());
        r.init("a @ b", OTHER, d(0), t0).unwrap();
        r.init("X", OTHER, d(0), t0).unwrap();
        let mut snap = r.snapshot(ms(t0, 60_000));
        snap.sort();
        assert_eq!((snap.key(0), snap.is_expected(0)), ("a @ b", true));
        let missing: Vec<String> = snap.missing().iter().map(ToString::to_string).collect();
        assert_eq!(missing, ["X @ 1.2.3.4"]);
        assert_eq!(snap.len(), 1, "X is not expected and expired");
    }
}

//! Who may ask what ([`Access`]): the `Host` names the operator's views
//! answer to (`--allowed-host`), and (feature `web-config`) the basic-auth
//! users of a web config file, with what they protect (`--protect`).
//!
//! The reference's paths (the beat commands, `hb_fail`, `/list`,
//! `/status`) stay open unless [`Protect::All`]: the reference's clients
//! send no credentials. The operator's views (`/`, `/dashboard.js`,
//! `/api/*`, `/metrics`) are the ones a stranger must not read.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(feature = "web-config")]
use super::web_config::AuthCheck;
use crate::monitor::{Event, EventSink, Registry};
use crate::protocol::command::Command;

/// What basic auth protects, when a web config file has users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protect {
    /// The operator's views (`/`, `/dashboard.js`, `/api/*`, `/metrics`);
    /// the reference's paths stay open for its clients (the default).
    #[default]
    OperatorViews,
    /// Every path, the reference's too (`heartbeat serve --protect
    /// reference`): its clients must then send credentials.
    All,
}

/// `views` or `reference` (the values of `heartbeat serve --protect`).
///
/// ```
/// use heartbeat_sdk::server::Protect;
///
/// assert_eq!("reference".parse::<Protect>(), Ok(Protect::All));
/// assert_eq!("views".parse::<Protect>(), Ok(Protect::OperatorViews));
/// assert!("everything".parse::<Protect>().is_err());
/// ```
impl std::str::FromStr for Protect {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "views" => Ok(Protect::OperatorViews),
            "reference" => Ok(Protect::All),
            other => Err(format!(
                "{:?}: expected `views` or `reference`",
                crate::protocol::printable(other)
            )),
        }
    }
}

/// Why a request was refused before it reached the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `421`: an operator's view asked under a `Host` that is not served.
    ForeignHost,
    /// `401`: no valid credentials.
    Unauthorized,
}

/// A peer's failures are logged once per burst: the first, then nothing
/// until it has been quiet this long (the next line says how many were
/// not logged).
const FAILURE_BURST_GAP: Duration = Duration::from_secs(60);
/// Most peers whose bursts are remembered; past it, the quiet ones are
/// forgotten first, then all.
const TRACKED_FAILING_PEERS: usize = 4096;

/// The access rules of one server, and their counters.
#[derive(Debug, Default)]
pub(super) struct Access {
    /// Lower-case host names (no port) operator views answer to; empty:
    /// any.
    allowed_hosts: Vec<Box<str>>,
    protect: Protect,
    #[cfg(feature = "web-config")]
    users: Option<Arc<super::web_config::Authenticator>>,
    /// `http_server_config.headers`: added to every reply.
    pub(super) headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    pub(super) stats: Arc<AccessStats>,
}

impl Access {
    pub(super) fn new(allowed_hosts: &[String], protect: Protect) -> Access {
        Access {
            allowed_hosts: allowed_hosts
                .iter()
                .map(|host| host.trim().to_ascii_lowercase().into_boxed_str())
                .collect(),
            protect,
            ..Access::default()
        }
    }

    /// The users and headers of a web config file.
    #[cfg(feature = "web-config")]
    pub(super) fn with_web_config(mut self, config: &super::web_config::WebConfig) -> Access {
        self.users = config.authenticator().map(Arc::new);
        self.headers = config.headers().to_vec();
        self
    }

    /// Whether `command` (`None`: a request that did not parse) may be
    /// answered for `peer`, which reached `local` (the server's address on
    /// that connection) with these `Host` and `Authorization` headers.
    pub(super) async fn check(
        &self,
        command: Option<&Command>,
        host: Option<&[u8]>,
        authorization: Option<&[u8]>,
        peer: IpAddr,
        local: IpAddr,
    ) -> Result<(), Refusal> {
        let operator_view = command.is_some_and(Command::is_operator_view);
        if operator_view && !self.host_allowed(host, local) {
            self.stats.foreign_hosts.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "request refused: an operator view under a Host not served (--allowed-host)");
            return Err(Refusal::ForeignHost);
        }
        let protected = operator_view || self.protect == Protect::All;
        if protected && !self.authorized(authorization).await {
            self.stats
                .failed(peer, authorization.is_some(), Instant::now());
            return Err(Refusal::Unauthorized);
        }
        Ok(())
    }

    /// `host` (the `Host` header) names one of the allowed hosts, or the
    /// address the request came in on; always true without
    /// `--allowed-host`.
    fn host_allowed(&self, host: Option<&[u8]>, local: IpAddr) -> bool {
        if self.allowed_hosts.is_empty() {
            return true;
        }
        let Some(name) = host
            .and_then(|h| std::str::from_utf8(h).ok())
            .map(host_name)
        else {
            return false;
        };
        let name = name.to_ascii_lowercase();
        self.allowed_hosts.iter().any(|allowed| **allowed == name)
            || name
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.to_canonical() == local.to_canonical())
    }

    #[cfg(feature = "web-config")]
    async fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        match &self.users {
            Some(users) => match users.check(authorization) {
                AuthCheck::Allowed => true,
                AuthCheck::Denied => false,
                // bcrypt: off the async workers, a few at a time
                AuthCheck::NeedsVerify(pending) => users.verify(pending).await,
            },
            None => true,
        }
    }

    #[cfg(not(feature = "web-config"))]
    async fn authorized(&self, _authorization: Option<&[u8]>) -> bool {
        true
    }

    /// Whether requests need credentials at all.
    pub(super) fn has_users(&self) -> bool {
        #[cfg(feature = "web-config")]
        return self.users.is_some();
        #[cfg(not(feature = "web-config"))]
        false
    }
}

/// The host of a `Host` header's value: without its port, an IPv6
/// literal without its brackets.
fn host_name(value: &str) -> &str {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    value.rsplit_once(':').map_or(value, |(name, _)| name)
}

/// The refusals [`Access`] counted, in `/metrics`; and the per-peer bursts
/// of failed authorisations, so that a guessing peer is logged once per
/// burst.
#[derive(Debug, Default)]
pub(super) struct AccessStats {
    /// Requests with no `Authorization` header that needed one.
    missing: AtomicU64,
    /// Requests whose credentials were wrong or malformed.
    wrong: AtomicU64,
    foreign_hosts: AtomicU64,
    bursts: Mutex<HashMap<IpAddr, Burst>>,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    last: Instant,
    unlogged: u64,
}

impl AccessStats {
    /// A failed authorisation from `peer` (`sent`: it sent credentials).
    fn failed(&self, peer: IpAddr, sent: bool, now: Instant) {
        let counter = if sent { &self.wrong } else { &self.missing };
        counter.fetch_add(1, Ordering::Relaxed);
        if !sent {
            // a browser's first request, or a client not configured: not
            // an attack, not worth a line each
            tracing::debug!(%peer, "request refused: credentials required");
            return;
        }
        let Ok(mut bursts) = self.bursts.lock() else {
            return;
        };
        if let Some(burst) = bursts.get_mut(&peer) {
            if now.saturating_duration_since(burst.last) < FAILURE_BURST_GAP {
                burst.last = now;
                burst.unlogged += 1;
                return;
            }
            let unlogged = burst.unlogged;
            *burst = Burst {
                last: now,
                unlogged: 0,
            };
            tracing::warn!(%peer, unlogged_before = unlogged, "request refused: wrong credentials; further failures from this peer until it is quiet for 60 s are counted, not logged");
            return;
        }
        if bursts.len() >= TRACKED_FAILING_PEERS {
            bursts.retain(|_, b| now.saturating_duration_since(b.last) < FAILURE_BURST_GAP);
            if bursts.len() >= TRACKED_FAILING_PEERS {
                bursts.clear();
            }
        }
        bursts.insert(
            peer,
            Burst {
                last: now,
                unlogged: 0,
            },
        );
        tracing::warn!(%peer, "request refused: wrong credentials; further failures from this peer until it is quiet for 60 s are counted, not logged");
    }

    /// How many failures from `peer` the current burst has not logged.
    #[cfg(test)]
    fn unlogged(&self, peer: IpAddr) -> Option<u64> {
        self.bursts.lock().ok()?.get(&peer).map(|b| b.unlogged)
    }
}

/// The counters in `/metrics`, as a sink of no events.
impl EventSink for AccessStats {
    fn deliver(&self, _: &[Event], _: &Registry, _: Instant) {}

    fn metrics(&self, out: &mut String) {
        const AUTH: &str = "heartbeat_auth_failures_total";
        const HOSTS: &str = "heartbeat_foreign_host_refusals_total";
        let _ = write!(
            out,
            "# HELP {AUTH} Requests refused 401: credentials missing (missing) or wrong (wrong).\n\
             # TYPE {AUTH} counter\n\
             {AUTH}{{reason=\"missing\"}} {}\n\
             {AUTH}{{reason=\"wrong\"}} {}\n\
             # HELP {HOSTS} Operator views refused 421 for a Host not served (--allowed-host).\n\
             # TYPE {HOSTS} counter\n\
             {HOSTS} {}\n",
            self.missing.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
            self.foreign_hosts.load(Ordering::Relaxed),
        );
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::ForeignHost => "this server does not answer for that host name",
            Refusal::Unauthorized => "credentials required",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        assert_eq!(host_name("example.org:8888"), "example.org");
        assert_eq!(host_name("example.org"), "example.org");
        assert_eq!(host_name("[::1]:8888"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name(" 10.0.0.1:80 "), "10.0.0.1");
    }

    #[test]
    fn only_allowed_hosts_and_the_local_address_pass() {
        let access = Access::new(&["Monitor.Example".to_owned()], Protect::default());
        let allowed = |host: &str| access.host_allowed(Some(host.as_bytes()), LOCAL);
        assert!(allowed("monitor.example:8888"));
        assert!(allowed("MONITOR.example"));
        assert!(allowed("10.0.0.1:8888"), "the address it was reached on");
        assert!(!allowed("evil.example"));
        assert!(!allowed("monitor.example.evil.example"));
        assert!(!allowed("10.0.0.2"));
        assert!(
            !access.host_allowed(None, LOCAL),
            "no Host: not known to be ours"
        );
        assert!(!access.host_allowed(Some(b"\xff"), LOCAL));
        let open = Access::new(&[], Protect::default());
        assert!(open.host_allowed(Some(b"evil.example"), LOCAL));
        assert!(open.host_allowed(None, LOCAL));
    }

    #[tokio::test]
    async fn a_foreign_host_is_refused_for_operator_views_only() {
        let access = Access::new(&["monitor".to_owned()], Protect::default());
        let check = |target: &'static str| {
            let command = crate::protocol::command::parse_command(target, None).unwrap();
            let access = &access;
            async move {
                access
                    .check(Some(&command), Some(b"evil:80"), None, LOCAL, LOCAL)
                    .await
            }
        };
        for view in [
            "/",
            "/dashboard.js",
            "/metrics",
            "/api/v1/apps",
            "/api/v1/events?app=x",
        ] {
            assert_eq!(check(view).await, Err(Refusal::ForeignHost), "{view}");
        }
        for reference in [
            "/hb_ping?1000&appid=x",
            "/list",
            "/status",
            "/hb_fail?1&appid=x",
        ] {
            assert_eq!(check(reference).await, Ok(()), "{reference}");
        }
        let mut metrics = String::new();
        access.stats.metrics(&mut metrics);
        assert!(
            metrics.contains("heartbeat_foreign_host_refusals_total 5\n"),
            "{metrics}"
        );
    }

    #[test]
    fn failures_are_counted_each_and_logged_once_per_burst() {
        let stats = AccessStats::default();
        let (a, b) = (LOCAL, IpAddr::from([10, 0, 0, 2]));
        let start = Instant::now();
        stats.failed(a, true, start);
        stats.failed(a, true, start + Duration::from_secs(30));
        stats.failed(a, true, start + Duration::from_secs(89));
        assert_eq!(
            stats.unlogged(a),
            Some(2),
            "one burst: only the first logged"
        );
        stats.failed(b, true, start);
        assert_eq!(stats.unlogged(b), Some(0));
        // quiet for the gap: a new burst, logged again
        stats.failed(a, true, start + Duration::from_secs(150));
        assert_eq!(stats.unlogged(a), Some(0));
        stats.failed(a, false, start);
        assert_eq!(
            stats.unlogged(a),
            Some(0),
            "a missing header is not a guess"
        );
        let mut metrics = String::new();
        stats.metrics(&mut metrics);
        assert!(metrics.contains("heartbeat_auth_failures_total{reason=\"missing\"} 1\n"));
        assert!(metrics.contains("heartbeat_auth_failures_total{reason=\"wrong\"} 5\n"));
    }

    #[test]
    fn remembered_failing_peers_are_bounded() {
        let stats = AccessStats::default();
        let start = Instant::now();
        for i in 0..(TRACKED_FAILING_PEERS as u32 + 10) {
            stats.failed(IpAddr::from(i.to_be_bytes()), true, start);
        }
        assert!(stats.bursts.lock().unwrap().len() <= TRACKED_FAILING_PEERS);
    }
}

//! The set of tracked applications, with an injected clock: the protocol's
//! state machine, no I/O.
//!
//! Every method takes `now: Instant`; the registry never reads the clock.
//! Times are stored as microsecond offsets from the first `now` it saw.
//!
//! Layout: one `Arc<str>` per key, shared by the lookup map (`HashMap`,
//! a 24-byte [`Record`]) and the crossing index (`BTreeSet<(due_us, key)>`),
//! which holds each record's **next** threshold crossing: WARNING while it
//! is OK, CRITICAL while it is WARNING, the drop while it is CRITICAL
//! (expected records are never dropped, so a CRITICAL one leaves the
//! index). [`Registry::advance`] pops the due prefix of the index and
//! emits each crossing as an [`Event`] with the instant it was due; every
//! other method advances first, so a ping costs `O(due + log n)`, never a
//! scan of all records.
//!
//! Reads answer from the overdue ratio at `now` (the reference's
//! arithmetic, byte for byte); events tell consumers when a state changed.
//! Both use the same boundaries: a crossing is due at the first
//! microsecond whose ratio reaches the threshold.
//!
//! Expected applications ([`Registry::expect`], [`Expected`]): a record
//! carries whether it matches a spec (two hash lookups when created, none
//! when nothing is expected); which specs have no record is kept as a count
//! of records per `ID` spec, and a snapshot works it out from its own
//! records, after the lock.
//!
//! Ordering: `/list`, the multiple-applications status line and
//! [`Registry::apps`] all use byte-wise ascending key order, sorted on
//! demand (`O(n log n)` for these `O(n)`-sized replies).

mod expected;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub(crate) use self::expected::Expectations;
pub use self::expected::{Expected, ExpectedError};
pub(crate) use self::snapshot::{KeyOrder, Snapshot};
pub use super::events::{Event, EventKind};
use crate::protocol::{self, peer_key, split_key, whole_ms, State};

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
    /// The longest timeout an application may promise: a longer one is
    /// granted as this (plus the tolerance; the reply says so). `None`:
    /// any (the reference's behaviour).
    pub max_timeout: Option<Duration>,
    /// The longest timeout an expected application may promise
    /// ([`DEFAULT_MAX_EXPECTED_TIMEOUT`], 24 h, unless set): without it,
    /// one `hb_init` with a timeout of 49 days from any host would keep an
    /// expected application "OK" for months.
    pub max_expected_timeout: Duration,
    /// Most applications one host (the `IP` of `ID @ IP` records) may
    /// have tracked at once: a new one past it is refused for that host
    /// alone, so one flooding host cannot lock the others out of a full
    /// registry. `None` (the default): no share, only
    /// [`max_apps`](Self::max_apps). Needs [`key_by_peer`](Self::key_by_peer)
    /// (a bare-id record has no host); expected applications are not
    /// held to it (they still count in `max_apps`).
    pub max_apps_per_host: Option<usize>,
}

/// [`RegistryConfig::max_expected_timeout`]'s default: 24 hours.
pub const DEFAULT_MAX_EXPECTED_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            tolerance: Duration::from_millis(protocol::TOLERANCE_MS),
            warn_ratio: 3.0,
            crit_ratio: 5.0,
            drop_ratio: 6.0,
            key_by_peer: true,
            max_apps: DEFAULT_MAX_APPS,
            max_timeout: None,
            max_expected_timeout: DEFAULT_MAX_EXPECTED_TIMEOUT,
            max_apps_per_host: None,
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
    /// `hb_fail` calls (failed runs), whether or not the id was known.
    #[cfg_attr(feature = "serde", serde(default))]
    pub fails: u64,
    /// Records dropped for being overdue.
    pub expiries: u64,
    /// `init`/`ping` calls refused because the registry was full.
    pub refused: u64,
    /// `init`/`ping` calls refused because the caller's host had its
    /// share ([`RegistryConfig::max_apps_per_host`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub refused_host_share: u64,
    /// Events discarded because the event buffer was full.
    pub events_dropped: u64,
}

/// The counters as the JSON API's `counters` object (`refused` is its
/// `refusals`; `events_dropped` is not in it).
impl From<Counters> for crate::protocol::apps::Totals {
    fn from(c: Counters) -> Self {
        crate::protocol::apps::Totals {
            inits: c.inits,
            pings: c.pings,
            dones: c.dones,
            expiries: c.expiries,
            refusals: c.refused + c.refused_host_share,
            fails: c.fails,
        }
    }
}

/// A new application was refused: `max_apps` are already tracked, or its
/// host already has its share ([`RegistryConfig::max_apps_per_host`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryFull {
    /// The configured maximum.
    pub max_apps: usize,
    /// `Some(share)` when the refusal is the host's: it already has
    /// `share` applications tracked (the registry itself may have room).
    pub host_share: Option<usize>,
}

impl RegistryFull {
    /// The registry holds `max_apps` applications.
    pub(crate) fn full(max_apps: usize) -> Self {
        RegistryFull {
            max_apps,
            host_share: None,
        }
    }
}

impl fmt::Display for RegistryFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_share {
            Some(share) => write!(
                f,
                "host share full: this host already has the maximum of {share} applications"
            ),
            None => write!(
                f,
                "registry full: already tracking the maximum of {} applications",
                self.max_apps
            ),
        }
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
    /// [`State::Critical`] from there on (never [`State::Unknown`]);
    /// always [`State::Critical`] for a failed run.
    pub state: State,
    /// The exit code of the failed run ([`Registry::fail`]), until the
    /// next init or ping.
    pub failed: Option<u8>,
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

/// How far along its thresholds a record is: the state whose crossing was
/// emitted last (reads work the state out from the ratio at `now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Ok,
    Warning,
    Critical,
}

impl Phase {
    fn state(self) -> State {
        match self {
            Phase::Ok => State::Ok,
            Phase::Warning => State::Warning,
            Phase::Critical => State::Critical,
        }
    }
}

/// One tracked application: when it last reported, what it was granted,
/// which crossing it is at, and whether it matches an expected spec.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    pub(crate) last_us: u64,
    pub(crate) granted_ms: u64,
    phase: Phase,
    pub(crate) expected: bool,
    /// The exit code of a failed run: CRITICAL, no crossing, never dropped.
    pub(crate) failed: Option<u8>,
}

/// The tracked applications. Not thread-safe by itself: wrap it in a mutex,
/// or use [`SharedRegistry`](super::SharedRegistry).
#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    base: Option<Instant>,
    /// The wall-clock time read once, when `base` was set: what
    /// `/metrics`' timestamps count from (monotonic time since then).
    base_wall: Option<SystemTime>,
    apps: HashMap<Arc<str>, Record>,
    /// Each record's next crossing (µs offset), but a CRITICAL expected
    /// one's and a failed run's (they have none).
    crossings: BTreeSet<(u64, Arc<str>)>,
    counters: Counters,
    events: Vec<Event>,
    /// Shared with the snapshots; changed only by [`Registry::expect`].
    expected: Arc<Expectations>,
    /// How many records each id of an `ID` spec has.
    expected_live: HashMap<Box<str>, usize>,
    /// Specs added by [`Registry::expect`] whose absence the next advance
    /// reports (`expect` has no `now` to date the event with).
    unannounced: Vec<Expected>,
    /// Changes whenever a key is added to `apps` or removed from it (the
    /// map's iteration order can change only then), so that a snapshot's
    /// key order can be reused by the next one ([`KeyOrder`]).
    layout: u64,
    key_order: Arc<KeyOrder>,
    /// How many records each host has, kept only under
    /// [`RegistryConfig::max_apps_per_host`].
    per_host: HashMap<Box<str>, usize>,
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
            crossings: BTreeSet::new(),
            counters: Counters::default(),
            events: Vec::new(),
            expected,
            expected_live: HashMap::new(),
            unannounced: Vec::new(),
            layout: 0,
            key_order: Arc::default(),
            per_host: HashMap::new(),
            #[cfg(test)]
            last_sweep_examined: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Expects `app` from now on (see [`Expected`]): its records are never
    /// dropped, and while it has none it is reported missing, CRITICAL (an
    /// [`EventKind::ExpectedMissing`] at the next call that takes `now`).
    /// Records already tracked that match it stop expiring. Expecting the
    /// same spec twice changes nothing. Costs `O(n)` when records are
    /// tracked (meant for start-up); many at once: [`Registry::expect_all`].
    pub fn expect(&mut self, app: Expected) {
        self.expect_all([app]);
    }

    /// [`Registry::expect`] for each of `apps`, with one pass over the
    /// tracked records for all of them: `O(n + e log e)` for `n` records
    /// and `e` specs (a start-up with 100 000 stored records and 10 000
    /// expected ids does not pay 10⁹ lookups).
    ///
    /// ```
    /// use heartbeat_sdk::monitor::{Expected, Registry};
    ///
    /// let mut registry = Registry::default();
    /// let specs = ["backup", "projector @ 10.0.0.5"].map(|s| s.parse::<Expected>().unwrap());
    /// registry.expect_all(specs);
    /// assert_eq!(registry.missing().len(), 2);
    /// ```
    pub fn expect_all(&mut self, apps: impl IntoIterator<Item = Expected>) {
        let mut fresh: Vec<(Expected, Option<Box<str>>)> = Vec::new();
        let mut named = std::collections::BTreeSet::new();
        for app in apps {
            let known = self
                .expected
                .specs
                .binary_search_by(|(spec, _)| spec.cmp(&app))
                .is_ok();
            if known || !named.insert(app.clone()) {
                continue;
            }
            let key = app
                .host
                .map(|ip| self.key_for(&app.id, ip).into_boxed_str());
            fresh.push((app, key));
        }
        if fresh.is_empty() {
            return;
        }
        let expected = Arc::make_mut(&mut self.expected);
        for (app, key) in &fresh {
            match key {
                Some(key) => {
                    expected.by_key.insert(key.clone());
                }
                None => {
                    expected.by_id.insert(Box::from(app.id.as_str()));
                    self.expected_live.insert(Box::from(app.id.as_str()), 0);
                }
            }
            self.unannounced.push(app.clone());
        }
        expected.specs.extend(fresh);
        expected.specs.sort_by(|(a, _), (b, _)| a.cmp(b));
        // records already tracked: mark them, re-index them (a CRITICAL
        // one leaves the index), and count them again
        let expected = Arc::clone(&self.expected);
        let keys: Vec<Arc<str>> = self
            .apps
            .keys()
            .filter(|key| expected.matches_key(key))
            .cloned()
            .collect();
        for count in self.expected_live.values_mut() {
            *count = 0;
        }
        for key in keys {
            let Some(record) = self.apps.get(&key).copied() else {
                continue;
            };
            self.unindex(&key, &record);
            if !record.expected {
                // out of its host's share, as expected ones are
                self.host_removed(&key);
            }
            let record = Record {
                expected: true,
                ..record
            };
            self.index(&key, &record);
            self.apps.insert(Arc::clone(&key), record);
            if let Some(count) = self.expected_live.get_mut(self.id_of(&key)) {
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
        let Some((key, record)) = self.apps.remove_entry(key.as_str()) else {
            return false;
        };
        self.layout += 1;
        if !record.expected {
            self.host_removed(&key);
        }
        self.unindex(&key, &record);
        let at = now;
        self.push_event(Event {
            kind: EventKind::Done,
            key: Arc::clone(&key),
            previous: Some(self.state_at(&record, now)),
            at,
            granted: None,
            peer: Some(peer),
        });
        if record.expected {
            let live = self.expected_live.get_mut(app).map(|count| {
                *count = count.saturating_sub(1);
                *count
            });
            // the specs this record satisfied and nothing else does now
            let expected = Arc::clone(&self.expected);
            for (spec, spec_key) in &expected.specs {
                let gone = match spec_key {
                    Some(spec_key) => **spec_key == *key,
                    None => spec.id() == app && live == Some(0),
                };
                if gone {
                    self.push_event(Event {
                        kind: EventKind::ExpectedMissing,
                        key: Arc::from(spec.to_string()),
                        previous: None,
                        at,
                        granted: None,
                        peer: None,
                    });
                }
            }
        }
        self.maybe_shrink();
        true
    }

    /// Records that `app`'s run failed with exit `code` (the `hb_fail`
    /// extension): the record goes CRITICAL at once
    /// ([`EventKind::Failed`]) and stays so, never dropped, until its next
    /// init or ping (which recovers it) or its done. An id without a
    /// record is registered first ([`EventKind::Created`], granted the
    /// tolerance alone), so a run that fails before its init is not lost.
    /// A second failure with the same code changes nothing.
    ///
    /// ```
    /// use std::net::{IpAddr, Ipv4Addr};
    /// use std::time::{Duration, Instant};
    /// use heartbeat_sdk::monitor::{EventKind, Registry};
    /// use heartbeat_sdk::State;
    ///
    /// let mut registry = Registry::default();
    /// let (now, peer) = (Instant::now(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    /// registry.init("backup", peer, Duration::from_secs(60), now).unwrap();
    /// registry.fail("backup", peer, 3, now).unwrap();
    /// let app = registry.apps(now).next().unwrap();
    /// assert_eq!((app.state, app.failed), (State::Critical, Some(3)));
    /// let kinds: Vec<_> = registry.take_events().iter().map(|e| e.kind).collect();
    /// assert_eq!(kinds, [EventKind::Created, EventKind::Failed(3)]);
    /// ```
    ///
    /// # Errors
    /// [`RegistryFull`] when `app` is new and `max_apps` are already tracked.
    pub fn fail(
        &mut self,
        app: &str,
        peer: IpAddr,
        code: u8,
        now: Instant,
    ) -> Result<(), RegistryFull> {
        self.expire(now);
        self.counters.fails += 1;
        let key = self.key_for(app, peer);
        if !self.apps.contains_key(key.as_str()) {
            self.touch(app, peer, Duration::ZERO, now)?;
        }
        let Some((key, old)) = self.record(&key) else {
            return Ok(());
        };
        if old.failed == Some(code) {
            return Ok(());
        }
        let previous = self.state_at(&old, now);
        self.mark_failed(&key, old, code);
        let at = self.instant_of(self.peek_offset_us(now));
        self.push_event(Event {
            kind: EventKind::Failed(code),
            key,
            previous: Some(previous),
            at,
            granted: None,
            peer: Some(peer),
        });
        Ok(())
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

    /// Emits every crossing due at `now` ([`Registry::advance`]) and
    /// returns how many records were dropped (expected ones never are).
    /// Called by every other method that takes `now`.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.counters.expiries;
        self.advance(now, usize::MAX);
        // at most the number of records: fits
        usize::try_from(self.counters.expiries - before).unwrap_or(usize::MAX)
    }

    /// Emits the crossings due at `now`, in the order they were due, each
    /// an [`Event`] dated the instant it was due: OK → WARNING → CRITICAL
    /// → dropped ([`EventKind::Expired`]; expected records stay
    /// CRITICAL), plus [`EventKind::ExpectedMissing`] for specs added
    /// since the last call that have no record. Stops once it has emitted
    /// `max_events` (at least one) and returns whether crossings are still
    /// due, so a caller can hand the events on in batches. Costs
    /// `O(due × log n)`: only the due prefix of the index is examined.
    pub fn advance(&mut self, now: Instant, max_events: usize) -> bool {
        let now_us = self.offset_us(now);
        let max_events = max_events.max(1);
        let mut emitted = 0;
        if !self.unannounced.is_empty() {
            let at = self.instant_of(now_us);
            for spec in std::mem::take(&mut self.unannounced) {
                let key = spec.host.map(|ip| self.key_for(&spec.id, ip));
                if self.spec_is_missing(&spec, key.as_deref()) {
                    self.push_event(Event {
                        kind: EventKind::ExpectedMissing,
                        key: Arc::from(spec.to_string()),
                        previous: None,
                        at,
                        granted: None,
                        peer: None,
                    });
                    emitted += 1;
                }
            }
        }
        #[cfg(test)]
        let mut examined = 0;
        let mut dropped = false;
        let more = loop {
            let Some((due, _)) = self.crossings.first() else {
                break false;
            };
            #[cfg(test)]
            {
                examined += 1;
            }
            if *due > now_us {
                break false;
            }
            if emitted >= max_events {
                break true;
            }
            let Some((due, key)) = self.crossings.pop_first() else {
                break false;
            };
            let Some(record) = self.apps.get(&key).copied() else {
                continue;
            };
            let at = self.instant_of(due);
            let (kind, next) = match record.phase {
                Phase::Ok => (EventKind::Warning, Some(Phase::Warning)),
                Phase::Warning => (EventKind::Critical, Some(Phase::Critical)),
                Phase::Critical => (EventKind::Expired, None),
            };
            match next {
                Some(phase) => {
                    let record = Record { phase, ..record };
                    self.index(&key, &record);
                    self.apps.insert(Arc::clone(&key), record);
                }
                None => {
                    self.apps.remove(&key);
                    self.layout += 1;
                    self.host_removed(&key);
                    self.counters.expiries += 1;
                    dropped = true;
                }
            }
            self.push_event(Event {
                kind,
                key,
                previous: Some(record.phase.state()),
                at,
                granted: None,
                peer: None,
            });
            emitted += 1;
        };
        #[cfg(test)]
        {
            self.last_sweep_examined = examined;
        }
        if dropped {
            self.maybe_shrink();
        }
        more
    }

    /// When the next crossing is due, if any record has one.
    pub fn next_due(&self) -> Option<Instant> {
        let (due, _) = self.crossings.first()?;
        self.base?.checked_add(Duration::from_micros(*due))
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
    /// shared with the registry) and 24 bytes. No formatting and no
    /// sorting: this is what runs under the server's lock, the rest
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
            missing: std::sync::OnceLock::new(),
            base_wall: self.base_wall,
            layout: self.layout,
            key_order: Arc::clone(&self.key_order),
            sorted: false,
        }
    }

    /// How many keys are also held outside the registry (by the snapshot of
    /// a reply still being rendered or sent); 0 once every reply is gone.
    #[cfg(test)]
    pub(crate) fn keys_held_by_replies(&self) -> usize {
        // the map holds one reference, the crossing index one more for
        // every record in it
        self.apps
            .iter()
            .filter(|(k, r)| {
                Arc::strong_count(k) > 1 + usize::from(self.next_crossing(r).is_some())
            })
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
    /// [`EVENT_BUFFER_CAP`]; the rest are counted in
    /// [`Counters::events_dropped`]).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Number of records in the crossing index (`len()` less the expected
    /// CRITICAL records, which have no crossing left).
    #[cfg(test)]
    fn deadline_index_len(&self) -> usize {
        self.crossings.len()
    }

    /// How many index entries the last advance looked at (one per due
    /// instant compared with `now`): the due ones plus the first one not
    /// due, if any. Counted inside the sweep loop, so a loop that walked
    /// past the due records (a scan of the index) would show it.
    #[cfg(test)]
    fn last_sweep_examined(&self) -> usize {
        self.last_sweep_examined
    }

    /// Capacity of the record table (what `maybe_shrink` gives back).
    #[cfg(test)]
    fn apps_capacity(&self) -> usize {
        self.apps.capacity()
    }

    /// `timeout` within [`RegistryConfig::max_timeout`], and within
    /// [`RegistryConfig::max_expected_timeout`] when `expected`.
    fn capped(&self, timeout: Duration, expected: bool) -> Duration {
        let mut timeout = timeout.min(self.config.max_timeout.unwrap_or(Duration::MAX));
        if expected {
            timeout = timeout.min(self.config.max_expected_timeout);
        }
        timeout
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
        let key = self.key_for(app, peer);
        let expected = self.expected.matches(app, &key);
        let timeout = self.capped(timeout, expected);
        let granted_ms = whole_ms(timeout).saturating_add(whole_ms(self.config.tolerance));
        let granted = Duration::from_millis(granted_ms);
        let existing = self.record(&key);
        let at = self.instant_of(now_us);
        let event = match existing {
            Some((key, old)) => {
                let fresh = Record {
                    last_us: now_us,
                    granted_ms,
                    phase: Phase::Ok,
                    expected: old.expected,
                    failed: None,
                };
                self.unindex(&key, &old);
                self.index(&key, &fresh);
                if let Some(record) = self.apps.get_mut(&key) {
                    *record = fresh;
                }
                let kind = match old.phase {
                    Phase::Ok => EventKind::Updated,
                    Phase::Warning | Phase::Critical => EventKind::Recovered,
                };
                Event {
                    kind,
                    key,
                    previous: Some(old.phase.state()),
                    at,
                    granted: Some(granted),
                    peer: Some(peer),
                }
            }
            None => {
                let key: Arc<str> = Arc::from(key);
                if let Err(refusal) = self.room_for(&key, expected) {
                    let kind = if refusal.host_share.is_some() {
                        self.counters.refused_host_share += 1;
                        EventKind::RefusedHostShare
                    } else {
                        self.counters.refused += 1;
                        EventKind::Refused
                    };
                    self.push_event(Event {
                        kind,
                        key,
                        previous: None,
                        at,
                        granted: None,
                        peer: Some(peer),
                    });
                    return Err(refusal);
                }
                // the record an expected application was missing
                let mut was_missing = false;
                if expected {
                    if self.expected.by_key.contains(&*key) {
                        was_missing = true;
                    }
                    if let Some(count) = self.expected_live.get_mut(app) {
                        was_missing |= *count == 0;
                        *count += 1;
                    }
                }
                let fresh = Record {
                    last_us: now_us,
                    granted_ms,
                    phase: Phase::Ok,
                    expected,
                    failed: None,
                };
                self.index(&key, &fresh);
                self.apps.insert(Arc::clone(&key), fresh);
                self.layout += 1;
                if !expected {
                    self.host_added(&key);
                }
                Event {
                    kind: EventKind::Created,
                    key,
                    previous: was_missing.then_some(State::Critical),
                    at,
                    granted: Some(granted),
                    peer: Some(peer),
                }
            }
        };
        self.push_event(event);
        Ok(granted)
    }

    /// The records in key order (`O(n log n)`; only for whole-registry
    /// replies, whose size is `O(n)` anyway).
    fn sorted(&self) -> Vec<(&Arc<str>, &Record)> {
        let mut all: Vec<_> = self.apps.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// Gives memory back once the map is mostly empty (amortised `O(1)`).
    /// Whether a new record under `key` fits: [`RegistryConfig::max_apps`]
    /// in all and [`RegistryConfig::max_apps_per_host`] for its host.
    /// Expected applications are held to the first only.
    fn room_for(&self, key: &str, expected: bool) -> Result<(), RegistryFull> {
        // an expected app counts in `max_apps` like any other: a bare
        // expected id from any address makes a record that is never
        // dropped, so exempting it would let anyone fill the registry
        if self.apps.len() >= self.config.max_apps {
            return Err(RegistryFull::full(self.config.max_apps));
        }
        if expected {
            return Ok(());
        }
        if let (Some(share), Some(host)) = (self.config.max_apps_per_host, self.host_of(key)) {
            if self.per_host.get(host).is_some_and(|&count| count >= share) {
                return Err(RegistryFull {
                    max_apps: self.config.max_apps,
                    host_share: Some(share),
                });
            }
        }
        Ok(())
    }

    /// The host part of `key` when records are keyed by peer and hosts
    /// are counted ([`RegistryConfig::max_apps_per_host`]).
    fn host_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        if self.config.max_apps_per_host.is_some() && self.config.key_by_peer {
            split_key(key).1
        } else {
            None
        }
    }

    /// Counts a new record under `key` in its host's share (an expected
    /// application's is not: the operator asked for it).
    fn host_added(&mut self, key: &str) {
        if let Some(host) = self.host_of(key) {
            match self.per_host.get_mut(host) {
                Some(count) => *count += 1,
                None => {
                    self.per_host.insert(host.into(), 1);
                }
            }
        }
    }

    /// Takes a removed record under `key` out of its host's share.
    fn host_removed(&mut self, key: &str) {
        if let Some(host) = self.host_of(key) {
            if let Some(count) = self.per_host.get_mut(host) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_host.remove(host);
                }
            }
        }
    }

    fn maybe_shrink(&mut self) {
        if self.apps.capacity() > 1024 && self.apps.len() * 4 < self.apps.capacity() {
            self.apps.shrink_to(self.apps.len() * 2);
        }
    }

    fn key_for(&self, app: &str, peer: IpAddr) -> String {
        if self.config.key_by_peer {
            peer_key(app, peer)
        } else {
            app.to_owned()
        }
    }

    /// The application id of a record key.
    fn id_of<'k>(&self, key: &'k str) -> &'k str {
        if self.config.key_by_peer {
            split_key(key).0
        } else {
            key
        }
    }

    /// The µs offset at which `record` reaches `ratio` of its granted
    /// timeout: the first instant whose overdue ratio is at least `ratio`.
    fn due_at(record: &Record, ratio: f64) -> u64 {
        let granted_us = record.granted_ms.saturating_mul(1000);
        // Float-to-int casts saturate (NaN gives 0): never panics.
        let span = (ratio * granted_us as f64).ceil() as u64;
        record.last_us.saturating_add(span)
    }

    /// When `record` crosses its next threshold; `None` for an expected
    /// record that is CRITICAL already (it is never dropped) and for a
    /// failed one (CRITICAL until it reports again).
    fn next_crossing(&self, record: &Record) -> Option<u64> {
        if record.failed.is_some() {
            return None;
        }
        let ratio = match record.phase {
            Phase::Ok => self.config.warn_ratio,
            Phase::Warning => self.config.crit_ratio,
            Phase::Critical if record.expected => return None,
            Phase::Critical => self.config.drop_ratio,
        };
        Some(Self::due_at(record, ratio))
    }

    fn index(&mut self, key: &Arc<str>, record: &Record) {
        if let Some(due) = self.next_crossing(record) {
            self.crossings.insert((due, Arc::clone(key)));
        }
    }

    fn unindex(&mut self, key: &Arc<str>, record: &Record) {
        if let Some(due) = self.next_crossing(record) {
            self.crossings.remove(&(due, Arc::clone(key)));
        }
    }

    /// The state of `record` at `now` by its overdue ratio (what a read
    /// says).
    fn state_at(&self, record: &Record, now: Instant) -> State {
        info(&self.config, "", record, self.peek_offset_us(now)).state
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

    /// The instant of µs offset `us` (set once any `now` was seen).
    fn instant_of(&self, us: u64) -> Instant {
        let base = self.base.unwrap_or_else(Instant::now);
        base.checked_add(Duration::from_micros(us)).unwrap_or(base)
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() < EVENT_BUFFER_CAP {
            self.events.push(event);
        } else {
            self.counters.events_dropped += 1;
        }
    }
}

/// Durable state: putting stored records back.
impl Registry {
    /// Tracks `key` (a record key as the registry makes it, `"ID @ IP"` or
    /// the bare id) as if it had just reported at `now`, OK, with its
    /// `granted` timeout kept as is (no tolerance added): it then goes
    /// WARNING, CRITICAL and is dropped on the usual schedule unless it
    /// reports. An existing record is refreshed. No event is recorded. For
    /// a server restoring its state at start.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use heartbeat_sdk::monitor::Registry;
    ///
    /// let mut registry = Registry::default();
    /// let start = Instant::now();
    /// registry.restore("kiosk-7 @ 10.0.0.7", Duration::from_millis(3000), start)?;
    /// assert_eq!(registry.list(start), ["kiosk-7 @ 10.0.0.7"]);
    /// // silent since start-up: dropped at 6 × 3000 ms
    /// assert_eq!(registry.expire(start + Duration::from_millis(18_000)), 1);
    /// # Ok::<(), heartbeat_sdk::monitor::RegistryFull>(())
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
        let last_us = self.offset_us(now);
        let (key, expected) = match self.apps.get_key_value(key) {
            Some((key, old)) => {
                let (key, old) = (Arc::clone(key), *old);
                self.unindex(&key, &old);
                (key, old.expected)
            }
            None if self.apps.len() >= self.config.max_apps => {
                return Err(RegistryFull::full(self.config.max_apps))
            }
            None => {
                let expected = self.expected.matches_key(key);
                // a stored record is put back even past its host's share
                // (the share may have been lowered since): counted, so
                // that the host's new ones are refused until it is under
                if !expected {
                    self.host_added(key);
                }
                if expected {
                    if let Some(count) = self.expected_live.get_mut(self.id_of(key)) {
                        *count += 1;
                    }
                }
                (Arc::from(key), expected)
            }
        };
        let record = Record {
            last_us,
            granted_ms: whole_ms(granted),
            phase: Phase::Ok,
            expected,
            failed: None,
        };
        self.index(&key, &record);
        self.apps.insert(key, record);
        self.layout += 1;
        Ok(())
    }

    /// The exit code of the failed run of the record under `key`, if it
    /// is one ([`Registry::fail`]).
    pub fn failed_of(&self, key: &str) -> Option<u8> {
        self.apps.get(key).and_then(|r| r.failed)
    }

    /// Marks the restored record under `key` as a failed run with `code`
    /// (CRITICAL, never dropped, until it reports); no event. Returns
    /// whether `key` is tracked.
    pub fn restore_failure(&mut self, key: &str, code: u8) -> bool {
        let Some((key, old)) = self.record(key) else {
            return false;
        };
        self.mark_failed(&key, old, code);
        true
    }

    /// The record under `key` and its shared key, copied out.
    fn record(&self, key: &str) -> Option<(Arc<str>, Record)> {
        self.apps
            .get_key_value(key)
            .map(|(k, r)| (Arc::clone(k), *r))
    }

    /// `old`, the record under `key`, becomes a failed run: CRITICAL, out
    /// of the deadline index.
    fn mark_failed(&mut self, key: &Arc<str>, old: Record, code: u8) {
        self.unindex(key, &old);
        let failed = Record {
            phase: Phase::Critical,
            failed: Some(code),
            ..old
        };
        self.apps.insert(Arc::clone(key), failed);
    }

    /// The granted timeout of the record under `key`, if tracked.
    pub fn granted_of(&self, key: &str) -> Option<Duration> {
        self.apps
            .get(key)
            .map(|r| Duration::from_millis(r.granted_ms))
    }
}

/// The view of `record` under `key` at `now_us`: its overdue ratio and the
/// state that maps to.
pub(crate) fn info<'a>(
    config: &RegistryConfig,
    key: &'a str,
    record: &Record,
    now_us: u64,
) -> AppInfo<'a> {
    let elapsed = now_us.saturating_sub(record.last_us) as f64;
    let granted_us = record.granted_ms.saturating_mul(1000).max(1) as f64;
    // Compare by multiplication so boundary values are exact.
    let state = if record.failed.is_some() {
        State::Critical
    } else if elapsed < config.warn_ratio * granted_us {
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
        failed: record.failed,
    }
}

fn micros_since(base: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(base).as_micros()).unwrap_or(u64::MAX)
}

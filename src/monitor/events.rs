//! What happens to records ([`Event`]), and the seam that hands every
//! event to its consumers ([`EventSink`]): the log ([`LogSink`]), the
//! durable state, and whatever an embedding program adds.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::Registry;
use crate::protocol::notification::Change;
use crate::protocol::State;

/// What happened to a record.
///
/// The state changes (`Created`, `Warning`, `Critical`, `Recovered`,
/// `Done`, `Expired`, `ExpectedMissing`) are emitted when they happen:
/// the registry keeps each record's next threshold crossing in its
/// deadline index, and a sweep ([`Registry::advance`], driven by the
/// server's sweeper or by any request) emits the crossing with the instant
/// it was due, not when somebody reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A new record (by `init` or `ping`): OK. `previous` is CRITICAL when
    /// it is the record an expected application was missing.
    Created,
    /// A known OK record was refreshed by `init` or `ping`: no state change.
    Updated,
    /// The record's overdue ratio reached the warning ratio: WARNING.
    Warning,
    /// The record's overdue ratio reached the critical ratio: CRITICAL.
    Critical,
    /// A WARNING or CRITICAL record was refreshed by `init` or `ping`: OK.
    Recovered,
    /// The record was removed by `done`.
    Done,
    /// The record was dropped at the drop ratio (expected ones never are).
    Expired,
    /// An expected application has no record (at start, or after the
    /// `done` of its last one): CRITICAL. The event's key is the spec
    /// ([`Expected`](super::Expected)'s text, `ID` or `ID @ IP`).
    ExpectedMissing,
    /// A new record was refused because the registry was full.
    Refused,
    /// A new record was refused because its host had its share
    /// ([`RegistryConfig::max_apps_per_host`](super::RegistryConfig::max_apps_per_host)).
    RefusedHostShare,
    /// The application's run failed with this exit code (`hb_fail`):
    /// CRITICAL until its next init or ping.
    Failed(u8),
}

impl EventKind {
    /// The record's state after the event: `None` when it has no record
    /// (done, expired, refused).
    pub fn state(self) -> Option<State> {
        match self {
            EventKind::Created | EventKind::Updated | EventKind::Recovered => Some(State::Ok),
            EventKind::Warning => Some(State::Warning),
            EventKind::Critical | EventKind::ExpectedMissing | EventKind::Failed(_) => {
                Some(State::Critical)
            }
            EventKind::Done
            | EventKind::Expired
            | EventKind::Refused
            | EventKind::RefusedHostShare => None,
        }
    }

    /// Whether the event changes the record's state (everything but
    /// [`EventKind::Updated`] and the refusals).
    pub fn is_state_change(self) -> bool {
        !matches!(
            self,
            EventKind::Updated | EventKind::Refused | EventKind::RefusedHostShare
        )
    }

    /// A lower-case name: `created`, `updated`, `warning`, `critical`,
    /// `recovered`, `done`, `expired`, `expected-missing`, `refused`,
    /// `refused-host-share`, `failed` (for a state change, its
    /// [`Change`]'s name).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Updated => "updated",
            EventKind::Refused => "refused",
            EventKind::RefusedHostShare => "refused-host-share",
            kind => kind.change().map_or("unknown", Change::name),
        }
    }

    /// The state change this is, as notifications and the history name it;
    /// `None` for an update or a refusal.
    pub fn change(self) -> Option<Change> {
        Some(match self {
            EventKind::Created => Change::Created,
            EventKind::Warning => Change::Warning,
            EventKind::Critical => Change::Critical,
            EventKind::Recovered => Change::Recovered,
            EventKind::Done => Change::Done,
            EventKind::Expired => Change::Expired,
            EventKind::ExpectedMissing => Change::ExpectedMissing,
            EventKind::Failed(_) => Change::Failed,
            EventKind::Updated | EventKind::Refused | EventKind::RefusedHostShare => return None,
        })
    }

    /// The exit code of a failed run ([`EventKind::Failed`]).
    pub fn exit_code(self) -> Option<u8> {
        match self {
            EventKind::Failed(code) => Some(code),
            _ => None,
        }
    }
}

/// Something that happened to one record, at one instant.
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use std::time::{Duration, Instant};
/// use heartbeat_sdk::monitor::{EventKind, Registry};
/// use heartbeat_sdk::State;
///
/// let mut registry = Registry::default();
/// let start = Instant::now();
/// let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// registry.init("kiosk", peer, Duration::from_millis(2000), start).unwrap();
/// // no read: a sweep 10 s later emits the crossings at their instants
/// registry.advance(start + Duration::from_secs(10), usize::MAX);
/// let events = registry.take_events();
/// let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
/// assert_eq!(kinds, [EventKind::Created, EventKind::Warning]);
/// assert_eq!(events[1].at, start + Duration::from_millis(9000)); // 3 × 3000 ms
/// assert_eq!(events[1].previous, Some(State::Ok));
/// assert_eq!(&*events[1].key, "kiosk @ 127.0.0.1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The record key (`ID @ IP` or the bare id; for
    /// [`EventKind::ExpectedMissing`] the expected spec).
    pub key: Arc<str>,
    /// The state before (`None`: there was no record).
    pub previous: Option<State>,
    /// When it happened on the registry's clock: the request's `now`, or
    /// for a crossing (warning, critical, expiry) the instant it was due.
    pub at: Instant,
    /// The granted timeout after `init` or `ping` (created, updated,
    /// recovered).
    pub granted: Option<Duration>,
    /// The peer of the request that caused it (none for a crossing).
    pub peer: Option<IpAddr>,
}

impl Event {
    /// The record key the event is about.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The state after the event ([`EventKind::state`]).
    pub fn state(&self) -> Option<State> {
        self.kind.state()
    }
}

impl fmt::Display for Event {
    /// The log line (the key as it is: log it through
    /// [`printable`](crate::protocol::printable)).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_line(f, &self.key)
    }
}

impl Event {
    /// The log line with `k` written for the key ([`LogSink`] writes a
    /// bounded one).
    pub(crate) fn write_line(&self, f: &mut impl fmt::Write, k: &str) -> fmt::Result {
        match self.kind {
            EventKind::Created => write!(f, "Construction of [{k}]"),
            EventKind::Updated => write!(f, "Update of [{k}]"),
            EventKind::Warning => write!(f, "Lateness of [{k}]: WARNING"),
            EventKind::Critical => write!(f, "Lateness of [{k}]: CRITICAL"),
            EventKind::Recovered => write!(f, "Recovery of [{k}]: OK"),
            EventKind::Done => write!(f, "Destruction of [{k}]"),
            EventKind::Expired => write!(f, "Expiry of [{k}]"),
            EventKind::ExpectedMissing => {
                write!(f, "Absence of expected application [{k}]: CRITICAL")
            }
            EventKind::Refused => write!(f, "Refusal of [{k}]: registry full"),
            EventKind::RefusedHostShare => write!(f, "Refusal of [{k}]: host share full"),
            EventKind::Failed(code) => {
                write!(f, "Failure of [{k}] with exit code {code}: CRITICAL")
            }
        }
    }
}

/// A consumer of the registry's events, registered with
/// [`SharedRegistry::add_sink`](super::SharedRegistry::add_sink) (or
/// `ServerBuilder::event_sink`).
///
/// Every event reaches every sink once, in the registry's order: the
/// methods are called under the registry's lock, so a ping and a `done` of
/// one app from two connections cannot swap. That also means a sink must
/// be quick (a channel send, a counter): anything slow (I/O, a network
/// call) belongs on a task of its own that the sink feeds.
///
/// Nothing is dropped silently: when more events happened at once than the
/// registry buffers ([`EVENT_BUFFER_CAP`](super::registry::EVENT_BUFFER_CAP)
/// in one call of a [`Registry`] used directly; the shared registry hands
/// sweeps over in batches and never overflows), [`missed`](Self::missed)
/// says how many were lost and gives the registry to resynchronise from.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Instant;
/// use heartbeat_sdk::monitor::{Event, EventKind, EventSink, ManualClock, Registry, RegistryConfig, SharedRegistry};
///
/// #[derive(Debug, Default)]
/// struct Changes(Mutex<Vec<EventKind>>);
///
/// impl EventSink for Changes {
///     fn deliver(&self, events: &[Event], _: &Registry, _: Instant) {
///         let changes = events.iter().filter(|e| e.kind.is_state_change());
///         self.0.lock().unwrap().extend(changes.map(|e| e.kind));
///     }
/// }
///
/// let clock = ManualClock::new();
/// let mut shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(clock.clone()));
/// let changes = Arc::new(Changes::default());
/// shared.add_sink(changes.clone());
/// let peer = "127.0.0.1".parse().unwrap();
/// assert_eq!(shared.handle("/hb_init?2000&appid=kiosk", None, peer).body, "3000");
/// clock.advance(std::time::Duration::from_secs(20));
/// shared.sweep(); // what the server's sweeper does; no read needed
/// assert_eq!(
///     *changes.0.lock().unwrap(),
///     [EventKind::Created, EventKind::Warning, EventKind::Critical, EventKind::Expired]
/// );
/// ```
pub trait EventSink: fmt::Debug + Send + Sync {
    /// The events of one operation (a request, a sweep), in order;
    /// `registry` is as it is after them, at `now`.
    fn deliver(&self, events: &[Event], registry: &Registry, now: Instant);

    /// `count` more events happened after the last [`deliver`](Self::deliver)
    /// and were lost (the registry's buffer was full): `registry` as it is
    /// now, with all of them applied, to resynchronise from. The default
    /// does nothing.
    fn missed(&self, count: u64, registry: &Registry, now: Instant) {
        let _ = (count, registry, now);
    }

    /// Prometheus text (`# HELP`, `# TYPE` and samples) appended to
    /// `/metrics`: the sink's own totals. The default adds nothing.
    fn metrics(&self, out: &mut String) {
        let _ = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_their_state() {
        use EventKind::*;
        let all = [
            Created,
            Updated,
            Warning,
            Critical,
            Recovered,
            Done,
            Expired,
            ExpectedMissing,
            Refused,
            RefusedHostShare,
        ];
        let names: Vec<_> = all.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "created",
                "updated",
                "warning",
                "critical",
                "recovered",
                "done",
                "expired",
                "expected-missing",
                "refused",
                "refused-host-share"
            ]
        );
        let changes: Vec<_> = all.iter().filter(|k| k.is_state_change()).collect();
        assert_eq!(changes.len(), 7);
        assert_eq!(Warning.state(), Some(State::Warning));
        assert_eq!(ExpectedMissing.state(), Some(State::Critical));
        assert_eq!(Recovered.state(), Some(State::Ok));
        assert_eq!(Expired.state(), None);
    }
}

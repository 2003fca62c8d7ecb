//! [`SharedRegistry`]: the registry behind a lock, with its clock and its
//! event sinks; what the HTTP server and the mock transport both answer
//! from.

use crate::monitor::metrics::PerAppMetrics;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::clock::{Clock, SystemClock};
use super::events::EventSink;
use super::history::HistorySink;
use super::log::LogSink;
use super::registry::{Registry, RegistryConfig, EVENT_BUFFER_CAP};
use super::service::{parse, prepare, Answer, Reply};
use crate::protocol::command::Command;
use crate::protocol::printable;

/// Called when the earliest crossing moved earlier (a new record, a
/// shorter timeout), so a sweeper sleeping until the old one wakes up.
type Wake = Box<dyn Fn() + Send + Sync>;

/// A [`Registry`] shared between connections, with the clock it runs on
/// and the [`EventSink`]s its events go to.
///
/// Every request goes through [`SharedRegistry::handle`]: decode (outside
/// the lock), update and reply (under it), and every event the request
/// caused goes to every sink, in order, under the same lock. A
/// [`LogSink`] is there from the start: constructions, destructions,
/// state changes and refusals at info, updates (a ping or init of a known
/// app) at debug, ids through [`printable`]; then the [`HistorySink`].
///
/// State changes happen on the clock, not on requests:
/// [`sweep`](Self::sweep) emits the crossings due now. The server runs it
/// from a sweeper task that sleeps until the next crossing; with a
/// [`ManualClock`](super::ManualClock), call it after advancing the clock.
pub struct SharedRegistry {
    registry: Mutex<Registry>,
    clock: Arc<dyn Clock>,
    history: Arc<HistorySink>,
    sinks: Vec<Arc<dyn EventSink>>,
    wake: Option<Wake>,
    per_app_metrics: PerAppMetrics,
}

impl std::fmt::Debug for SharedRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRegistry")
            .field("registry", &self.registry)
            .field("clock", &self.clock)
            .field("sinks", &self.sinks)
            .finish_non_exhaustive()
    }
}

impl SharedRegistry {
    /// A registry with `config` running on `clock`, logging its events.
    pub fn new(config: RegistryConfig, clock: Arc<dyn Clock>) -> Self {
        let history = Arc::new(HistorySink::new(Arc::clone(&clock)));
        Self {
            registry: Mutex::new(Registry::new(config)),
            clock,
            sinks: vec![Arc::new(LogSink::new()), history.clone()],
            history,
            wake: None,
            per_app_metrics: PerAppMetrics::All,
        }
    }

    /// Which applications get per-application series in `/metrics`
    /// (default [`PerAppMetrics::All`]).
    pub fn set_per_app_metrics(&mut self, mode: PerAppMetrics) {
        self.per_app_metrics = mode;
    }

    /// The history of state changes (`GET /api/v1/events`), a sink every
    /// shared registry has, right after the log.
    pub fn history(&self) -> &HistorySink {
        &self.history
    }

    /// Hands every event from now on to `sink` too (after the ones added
    /// before it).
    pub fn add_sink(&mut self, sink: Arc<dyn EventSink>) {
        self.sinks.push(sink);
    }

    /// Calls `wake` whenever an operation made the next crossing earlier
    /// than it was (for a sweeper sleeping until it).
    #[cfg(feature = "server")]
    pub(crate) fn set_wake(&mut self, wake: Wake) {
        self.wake = Some(wake);
    }

    /// The clock the registry runs on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Answer one request (`target` is `/path?query`). Whole-registry
    /// replies (`/list`, the host `/status`, `/metrics`, the JSON API, the
    /// dashboard) are rendered from a snapshot after the lock is released.
    pub fn handle(&self, target: &str, form_body: Option<&[u8]>, peer: IpAddr) -> Reply {
        self.answer(target, form_body, peer).into_reply()
    }

    /// [`handle`](Self::handle), leaving a whole-registry reply unrendered:
    /// the lock is held only to apply the command and take the snapshot.
    pub(crate) fn answer(&self, target: &str, form_body: Option<&[u8]>, peer: IpAddr) -> Answer {
        match Self::parse(target, form_body, peer) {
            Ok(command) => self.answer_command(command, peer),
            Err(reply) => Answer::Ready(reply),
        }
    }

    /// The first half of [`answer`](Self::answer): the request decoded, or
    /// the refusal to send (logged).
    pub(crate) fn parse(
        target: &str,
        form_body: Option<&[u8]>,
        peer: IpAddr,
    ) -> Result<Command, Reply> {
        parse(target, form_body).inspect_err(|reply| {
            tracing::info!(%peer, status = reply.status, "request refused: {}", printable(&reply.body));
        })
    }

    /// The second half of [`answer`](Self::answer): `command` applied.
    pub(crate) fn answer_command(&self, command: Command, peer: IpAddr) -> Answer {
        if let Command::Events(query) = &command {
            return Answer::Ready(Reply::json(&self.history.query(query)));
        }
        let answer = self.operate(|registry, now| prepare(registry, command, peer, now));
        match answer {
            Answer::Streamed(streamed) if streamed.is_metrics() => {
                let mut trailer = String::new();
                for sink in &self.sinks {
                    sink.metrics(&mut trailer);
                }
                Answer::Streamed(
                    streamed
                        .with_trailer(trailer)
                        .per_app_metrics(self.per_app_metrics),
                )
            }
            Answer::Streamed(streamed) => {
                Answer::Streamed(streamed.with_history(Arc::clone(&self.history)))
            }
            answer => answer,
        }
    }

    /// Emits the crossings due now (warning, critical, expiry) to the
    /// sinks, without a request; returns when the next one is due.
    pub fn sweep(&self) -> Option<Instant> {
        self.operate(|registry, _| registry.next_due())
    }

    /// Run `f` on the registry at the clock's current time (for inspection
    /// in tests and tools). Events `f` causes go to the sinks too.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry, Instant) -> R) -> R {
        self.operate(f)
    }

    /// Under the lock: the crossings due now, in batches of at most
    /// [`EVENT_BUFFER_CAP`] (so none is ever dropped), then `f`, each
    /// batch of events handed to the sinks as it is made; past the buffer
    /// (only `f` can get there), the sinks hear how many were lost.
    fn operate<R>(&self, f: impl FnOnce(&mut Registry, Instant) -> R) -> R {
        let now = self.clock.now();
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let due_before = registry.next_due();
        let dropped_before = registry.counters().events_dropped;
        while registry.advance(now, EVENT_BUFFER_CAP) {
            self.deliver(&mut registry, now);
        }
        let result = f(&mut registry, now);
        self.deliver(&mut registry, now);
        let missed = registry.counters().events_dropped - dropped_before;
        if missed > 0 {
            for sink in &self.sinks {
                sink.missed(missed, &registry, now);
            }
        }
        if let Some(wake) = &self.wake {
            let due_after = registry.next_due();
            if due_after.is_some() && (due_before.is_none() || due_after < due_before) {
                wake();
            }
        }
        result
    }

    fn deliver(&self, registry: &mut Registry, now: Instant) {
        let events = registry.take_events();
        if events.is_empty() {
            return;
        }
        for sink in &self.sinks {
            sink.deliver(&events, registry, now);
        }
    }
}

impl Default for SharedRegistry {
    fn default() -> Self {
        Self::new(RegistryConfig::default(), Arc::new(SystemClock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::clock::ManualClock;
    use crate::monitor::events::{Event, EventKind};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Whole-registry replies leave the locked section as a snapshot, not
    /// as text: the registry is free while they are rendered and sent, and
    /// what changes meanwhile does not show in them.
    #[test]
    fn big_replies_are_rendered_after_the_lock_is_released() {
        let shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(ManualClock::new()));
        let ok = |target: &str| assert_eq!(shared.handle(target, None, LOCAL).status, 200);
        for i in 0..200 {
            ok(&format!("/hb_init?1000&appid=app{i:03}"));
        }
        for target in ["/list", "/status", "/metrics"] {
            let whole = shared.handle(target, None, LOCAL).body;
            let Answer::Streamed(streamed) = shared.answer(target, None, LOCAL) else {
                panic!("{target} was rendered under the lock");
            };
            assert!(shared.registry.try_lock().is_ok());
            let mut chunks = streamed.chunks(100);
            let mut body = chunks.next().unwrap_or_default();
            // half sent: the registry is free and changes under the reply
            assert!(shared.registry.try_lock().is_ok());
            ok("/hb_init?1000&appid=new");
            ok("/hb_done?0&appid=app000");
            body.extend(chunks.flatten());
            assert!(body == whole.as_bytes(), "{target}: the reply changed");
            assert_ne!(shared.handle(target, None, LOCAL).body, whole);
            ok("/hb_done?0&appid=new");
            ok("/hb_init?1000&appid=app000");
        }
    }

    /// Records every event and every `missed` call; adds a metrics line.
    #[derive(Debug, Default)]
    struct Recorder {
        events: Mutex<Vec<Event>>,
        missed: Mutex<Vec<u64>>,
    }

    impl EventSink for Recorder {
        fn deliver(&self, events: &[Event], _: &Registry, _: Instant) {
            self.events.lock().unwrap().extend_from_slice(events);
        }
        fn missed(&self, count: u64, _: &Registry, _: Instant) {
            self.missed.lock().unwrap().push(count);
        }
        fn metrics(&self, out: &mut String) {
            out.push_str("recorder_seen 1\n");
        }
    }

    fn recorded(config: RegistryConfig) -> (SharedRegistry, ManualClock, Arc<Recorder>) {
        let clock = ManualClock::new();
        let mut shared = SharedRegistry::new(config, Arc::new(clock.clone()));
        let recorder = Arc::new(Recorder::default());
        shared.add_sink(recorder.clone());
        (shared, clock, recorder)
    }

    /// A mass expiry larger than the registry's event buffer reaches the
    /// sinks whole, in batches, with nothing missed: the sweep hands the
    /// crossings over before they overflow.
    #[test]
    fn sweeps_hand_over_more_events_than_the_buffer_holds() {
        let n = EVENT_BUFFER_CAP * 2 + 10;
        let config = RegistryConfig {
            max_apps: n,
            ..RegistryConfig::default()
        };
        let (shared, clock, recorder) = recorded(config);
        for i in 0..n {
            let target = format!("/hb_init?0&appid=a{i}");
            assert_eq!(shared.handle(&target, None, LOCAL).status, 200);
        }
        clock.advance(Duration::from_secs(60));
        assert_eq!(shared.sweep(), None);
        let events = recorder.events.lock().unwrap();
        let count = |kind| events.iter().filter(|e| e.kind == kind).count();
        assert_eq!(count(EventKind::Created), n);
        assert_eq!(count(EventKind::Warning), n);
        assert_eq!(count(EventKind::Critical), n);
        assert_eq!(count(EventKind::Expired), n);
        assert!(recorder.missed.lock().unwrap().is_empty());
        // in the order they were due: every warning before every critical
        let last_warning = events.iter().rposition(|e| e.kind == EventKind::Warning);
        let first_critical = events.iter().position(|e| e.kind == EventKind::Critical);
        assert!(last_warning < first_critical);
    }

    /// A direct use of the registry that overflows its buffer is reported
    /// to the sinks as missed events, with the count.
    #[test]
    fn overflow_inside_one_operation_is_reported_as_missed() {
        let (shared, clock, recorder) = recorded(RegistryConfig::default());
        shared.with_registry(|registry, now| {
            for i in 0..EVENT_BUFFER_CAP + 7 {
                let peer = LOCAL;
                registry
                    .init(&format!("b{i}"), peer, Duration::ZERO, now)
                    .unwrap();
            }
        });
        assert_eq!(*recorder.missed.lock().unwrap(), [7]);
        assert_eq!(recorder.events.lock().unwrap().len(), EVENT_BUFFER_CAP);
        clock.advance(Duration::from_secs(1));
    }

    /// Sinks contribute their own lines to `/metrics`, after the registry's.
    #[test]
    fn sinks_append_their_metrics() {
        let (shared, _clock, _recorder) = recorded(RegistryConfig::default());
        let body = shared.handle("/metrics", None, LOCAL).body;
        assert!(body.ends_with("recorder_seen 1\n"), "{body}");
        assert_eq!(body.matches("recorder_seen").count(), 1);
    }

    /// The wake hook fires when a request makes the next crossing earlier,
    /// and not for one that leaves it later.
    #[test]
    fn wake_fires_when_the_next_crossing_moves_earlier() {
        let clock = ManualClock::new();
        let mut shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(clock.clone()));
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&woken);
        shared.set_wake(Box::new(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        let woken = || woken.load(std::sync::atomic::Ordering::SeqCst);
        shared.handle("/hb_init?60000&appid=slow", None, LOCAL);
        assert_eq!(woken(), 1);
        shared.handle("/hb_init?60000&appid=slow2", None, LOCAL);
        assert_eq!(woken(), 1, "a later crossing needs no wake-up");
        shared.handle("/hb_init?0&appid=fast", None, LOCAL);
        assert_eq!(woken(), 2);
    }
}

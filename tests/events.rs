//! State changes are events at the instant they happen (issue 18): OK →
//! WARNING → CRITICAL → expiry, recovery, sign-off and an expected app
//! going missing reach every `EventSink`, in order, driven by sweeps of the
//! manual clock (no `/status`, `/list` or `/metrics` read in between), and
//! by the server's own sweeper.
#![cfg(feature = "server")]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heartbeat_sdk::monitor::{
    Clock, Event, EventKind, EventSink, ManualClock, Registry, RegistryConfig, SharedRegistry,
};
use heartbeat_sdk::server::Server;
use heartbeat_sdk::State;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Only a guard against hanging: every wait below ends on an event.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Every event delivered, and every report of missed ones.
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
}

impl Recorder {
    /// (kind, key, previous state, instant as an offset from `t0`) of the
    /// events since the last call.
    fn take(&self, t0: Instant) -> Vec<(EventKind, String, Option<State>, Duration)> {
        std::mem::take(&mut *self.events.lock().unwrap())
            .into_iter()
            .map(|e| (e.kind, e.key.to_string(), e.previous, e.at - t0))
            .collect()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A shared registry on a manual clock with a recorder as its sink.
fn recorded() -> (SharedRegistry, ManualClock, Arc<Recorder>, Instant) {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let mut shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(clock.clone()));
    let recorder = Arc::new(Recorder::default());
    shared.add_sink(recorder.clone());
    (shared, clock, recorder, t0)
}

/// WARNING at 3 × granted, CRITICAL at 5 ×, back to OK on a ping, late
/// again and dropped at 6 ×: each event dated at its crossing, not at the
/// sweep that found it, with only sweeps in between.
#[test]
fn crossings_are_events_without_a_read() {
    let (shared, clock, recorder, t0) = recorded();
    let key = "kiosk @ 127.0.0.1".to_owned();
    // granted 2000 ms: WARNING at 6 s, CRITICAL at 10 s, dropped at 12 s
    assert_eq!(
        shared.handle("/hb_init?1000&appid=kiosk", None, LOCAL).body,
        "2000"
    );
    assert_eq!(
        recorder.take(t0),
        [(EventKind::Created, key.clone(), None, ms(0))]
    );
    clock.advance(ms(5_999));
    assert_eq!(shared.sweep(), Some(t0 + ms(6_000)), "the next crossing");
    assert!(
        recorder.take(t0).is_empty(),
        "nothing is due before 3 × granted"
    );
    clock.advance(ms(2_501)); // 8.5 s: swept late, dated at the crossing
    assert_eq!(shared.sweep(), Some(t0 + ms(10_000)));
    assert_eq!(
        recorder.take(t0),
        [(EventKind::Warning, key.clone(), Some(State::Ok), ms(6_000))]
    );
    clock.advance(ms(1_500)); // 10 s
    shared.sweep();
    assert_eq!(
        recorder.take(t0),
        [(
            EventKind::Critical,
            key.clone(),
            Some(State::Warning),
            ms(10_000)
        )]
    );
    // a ping brings it back (granted 1000 ms from 10 s)
    assert_eq!(
        shared.handle("/hb_ping?0&appid=kiosk", None, LOCAL).body,
        "1000"
    );
    assert_eq!(
        recorder.take(t0),
        [(
            EventKind::Recovered,
            key.clone(),
            Some(State::Critical),
            ms(10_000)
        )]
    );
    // one sweep long after: all three crossings, in order, each at its instant
    clock.advance(ms(60_000));
    assert_eq!(shared.sweep(), None, "nothing is left to cross");
    assert_eq!(
        recorder.take(t0),
        [
            (EventKind::Warning, key.clone(), Some(State::Ok), ms(13_000)),
            (
                EventKind::Critical,
                key.clone(),
                Some(State::Warning),
                ms(15_000)
            ),
            (
                EventKind::Expired,
                key.clone(),
                Some(State::Critical),
                ms(16_000)
            ),
        ]
    );
    assert!(recorder.missed.lock().unwrap().is_empty());
    shared.with_registry(|registry, _| assert!(registry.is_empty()));
}

/// A ping of a late app is a recovery, a ping of a fine one an update, a
/// sign-off is `Done` with the state it had, and each names its peer.
#[test]
fn requests_are_events_with_their_peer() {
    let (shared, clock, recorder, t0) = recorded();
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
    shared.handle("/hb_init?0&appid=a", None, other);
    shared.handle("/hb_ping?0&appid=a", None, other);
    clock.advance(ms(3_000));
    shared.handle("/hb_done?0&appid=a", None, other);
    let events = std::mem::take(&mut *recorder.events.lock().unwrap());
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.kind, e.previous, e.peer, e.at - t0))
        .collect();
    assert_eq!(
        seen,
        [
            (EventKind::Created, None, Some(other), ms(0)),
            (EventKind::Updated, Some(State::Ok), Some(other), ms(0)),
            (EventKind::Warning, Some(State::Ok), None, ms(3_000)),
            (
                EventKind::Done,
                Some(State::Warning),
                Some(other),
                ms(3_000)
            ),
        ]
    );
    assert!(events.iter().all(|e| e.key() == "a @ 10.0.0.9"));
    assert_eq!(events[0].granted, Some(ms(1_000)));
}

/// An expected app is missing until it reports, and again at once when
/// it signs off; its record is `Created` from CRITICAL; an expected
/// record is never dropped, however late.
#[test]
fn expected_apps_go_missing_as_events() {
    let (shared, clock, recorder, t0) = recorded();
    shared.with_registry(|registry, _| registry.expect("pos".parse().unwrap()));
    shared.handle("/hb_init?0&appid=pos", None, LOCAL);
    shared.handle("/hb_done?0&appid=pos", None, LOCAL);
    let key = "pos @ 127.0.0.1".to_owned();
    assert_eq!(
        recorder.take(t0),
        [
            (EventKind::ExpectedMissing, "pos".to_owned(), None, ms(0)),
            (
                EventKind::Created,
                key.clone(),
                Some(State::Critical),
                ms(0)
            ),
            (EventKind::Done, key.clone(), Some(State::Ok), ms(0)),
            (EventKind::ExpectedMissing, "pos".to_owned(), None, ms(0)),
        ]
    );
    shared.handle("/hb_ping?0&appid=pos", None, LOCAL);
    assert_eq!(
        recorder.take(t0),
        [(
            EventKind::Created,
            key.clone(),
            Some(State::Critical),
            ms(0)
        )]
    );
    clock.advance(ms(3_600_000));
    assert_eq!(shared.sweep(), None);
    assert_eq!(
        recorder.take(t0),
        [
            (EventKind::Warning, key.clone(), Some(State::Ok), ms(3_000)),
            (
                EventKind::Critical,
                key.clone(),
                Some(State::Warning),
                ms(5_000)
            ),
        ]
    );
    shared.with_registry(|registry, _| assert_eq!(registry.len(), 1));
}

/// The server's always-on sweeper: with no request at all after the init,
/// an app on the manual clock goes WARNING, CRITICAL and is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sweeps_without_being_asked() {
    #[derive(Debug)]
    struct Channel(Mutex<mpsc::Sender<(EventKind, Duration)>>, Instant);
    impl EventSink for Channel {
        fn deliver(&self, events: &[Event], _: &Registry, _: Instant) {
            let tx = self.0.lock().unwrap();
            for event in events {
                let _ = tx.send((event.kind, event.at - self.1));
            }
        }
    }
    let clock = ManualClock::new();
    let t0 = clock.now();
    let (tx, rx) = mpsc::channel();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .event_sink(Arc::new(Channel(Mutex::new(tx), t0)))
        .start()
        .await
        .unwrap();
    let reply = server.registry().handle("/hb_init?0&appid=x", None, LOCAL);
    assert_eq!(reply.body, "1000");
    let next = move || rx.recv_timeout(HANG_GUARD).expect("an event");
    let next = tokio::task::spawn_blocking(move || {
        let first = next();
        clock.advance(ms(7_000));
        [first, next(), next(), next()]
    });
    assert_eq!(
        next.await.unwrap(),
        [
            (EventKind::Created, ms(0)),
            (EventKind::Warning, ms(3_000)),
            (EventKind::Critical, ms(5_000)),
            (EventKind::Expired, ms(6_000)),
        ]
    );
    assert!(server
        .registry()
        .with_registry(|registry, _| registry.is_empty()));
    server.shutdown().await;
}

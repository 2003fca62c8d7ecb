//! Keep-alive corners with no test elsewhere: a server whose registry is
//! full (`503`), a client with a `RetryPolicy` under the keep-alive, and
//! `shutdown()` while paused. All on tokio's paused clock with the mock
//! transport: the times below are exact, and nothing waits for real.
#![cfg(all(feature = "keepalive", feature = "mock"))]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heartbeat_sdk::server::RegistryConfig;
use heartbeat_sdk::testing::{MockFailure, MockTransport};
use heartbeat_sdk::transport;
use heartbeat_sdk::{
    Error, HeartbeatClient, KeepAlive, KeepAliveHandle, KeepAliveState, RetryPolicy, Transport,
};
use tokio::time::Instant;

const APP: &str = "edge";
const GOODBYE: &str = "So Long, and Thanks for All the Fish!";
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The mock, and when (tokio time since the start) each request was sent,
/// with its command (`init`, `ping`, `done`).
#[derive(Clone)]
struct Recorded {
    mock: MockTransport,
    start: Instant,
    sent: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Recorded {
    fn new(mock: MockTransport) -> Recorded {
        Recorded {
            mock,
            start: Instant::now(),
            sent: Arc::default(),
        }
    }

    fn client(&self, retry: RetryPolicy) -> HeartbeatClient {
        let me = self.clone();
        let transport = transport::from_fn(move |request| {
            let command = request.target()[1..]
                .split('?')
                .next()
                .unwrap()
                .trim_start_matches("hb_")
                .to_owned();
            me.sent.lock().unwrap().push((me.start.elapsed(), command));
            let mock = me.mock.clone();
            async move { mock.send(request).await }
        });
        HeartbeatClient::builder_with_transport(transport)
            .app_id(APP)
            .retry(retry)
            .build()
            .unwrap()
    }

    fn sent(&self) -> Vec<(Duration, String)> {
        self.sent.lock().unwrap().clone()
    }

    fn commands(&self) -> Vec<String> {
        self.sent()
            .into_iter()
            .map(|(_, command)| command)
            .collect()
    }
}

/// Wait on the paused clock (no real time) for `done`; fail after ten
/// minutes of virtual time.
async fn wait(
    handle: &KeepAliveHandle,
    done: impl FnMut(&KeepAliveState) -> bool,
) -> KeepAliveState {
    let mut states = handle.subscribe();
    let state = tokio::time::timeout(Duration::from_secs(600), states.wait_for(done))
        .await
        .unwrap_or_else(|_| panic!("never got there: {:?}", handle.state()))
        .unwrap()
        .clone();
    state
}

/// A full registry answers `503`: the keep-alive keeps trying, each try an
/// init, backing off exponentially (jittered to between half and all of
/// `interval × 2^(n-1)`, capped at `max_backoff`); its state shows the
/// failures and the `503`. Once a slot is free, the next try registers.
#[tokio::test(start_paused = true)]
async fn a_full_registry_503_is_retried_with_backoff_and_shown_in_the_state() {
    let mock = MockTransport::with_config(RegistryConfig {
        max_apps: 1,
        ..RegistryConfig::default()
    });
    let taken = mock
        .registry()
        .handle("/hb_init?600000&appid=first", None, LOCAL);
    assert_eq!(taken.status, 200);
    let recorded = Recorded::new(mock.clone());
    let handle = recorded
        .client(RetryPolicy::none())
        .keep_alive(KeepAlive::every(ms(1000)).max_backoff(ms(4000)));

    let state = wait(&handle, |s| s.beats_failed >= 5).await;
    assert_eq!((state.beats_ok, state.consecutive_failures), (0, 5));
    assert!(
        matches!(
            state.last_error.as_deref(),
            Some(Error::Status { status: 503, .. })
        ),
        "{:?}",
        state.last_error
    );
    let sent = recorded.sent();
    assert!(
        sent.iter().all(|(_, c)| c == "init"),
        "re-init each try: {sent:?}"
    );
    // the waits after failures 1..4: 1 s, 2 s, 4 s, 4 s (the cap), jittered
    for (n, pair) in sent.windows(2).enumerate() {
        let gap = pair[1].0 - pair[0].0;
        let full = ms(1000 * (1 << n)).min(ms(4000));
        assert!(
            gap >= full / 2 && gap <= full,
            "wait {} after failure {}: {gap:?}, not in [{:?}, {full:?}]",
            n + 1,
            n + 1,
            full / 2
        );
    }
    let counters = mock.registry().with_registry(|r, _| r.counters());
    assert_eq!(counters.refused, 5, "the server refused each one");

    // a slot frees up: the next try registers, the failure stays on record
    mock.registry()
        .handle("/hb_done?0&appid=first", None, LOCAL);
    let state = wait(&handle, |s| s.beats_ok >= 1).await;
    assert_eq!((state.inits_ok, state.consecutive_failures), (1, 0));
    assert_eq!(state.beats_failed, 5);
    assert!(state.last_error.is_some(), "the last failure is kept");
    assert_eq!(mock.registry().with_registry(|r, now| r.list(now).len()), 1);
    assert_eq!(handle.shutdown().await.unwrap(), GOODBYE);
}

/// A client `RetryPolicy` under the keep-alive: the retries happen inside
/// one beat, so failures the retries absorb are not keep-alive failures,
/// and the cadence still counts from the beat's start; failures past the
/// last attempt are one failed beat, then the keep-alive's own backoff.
#[tokio::test(start_paused = true)]
async fn a_retry_policy_retries_within_each_beat() {
    let mock = MockTransport::new();
    let recorded = Recorded::new(mock.clone());
    let retry = RetryPolicy::new(3)
        .initial_backoff(ms(100))
        .max_backoff(ms(100));
    let handle = recorded
        .client(retry)
        .keep_alive(KeepAlive::every(ms(1000)));

    // two refusals: the third attempt of the first beat succeeds
    mock.fail_next(2, MockFailure::Refused);
    let state = wait(&handle, |s| s.beats_ok >= 2).await;
    assert_eq!((state.beats_failed, state.inits_ok), (0, 1), "{state:?}");
    let sent = recorded.sent();
    assert_eq!(recorded.commands(), ["init", "init", "init", "ping"]);
    assert!(sent[2].0 <= ms(200), "retried within the beat: {sent:?}");
    assert_eq!(
        sent[3].0,
        ms(1000),
        "the next beat one interval after the first began"
    );

    // four refusals: the next beat's three attempts fail, then the
    // keep-alive backs off and re-inits (one more refusal, then success)
    mock.fail_next(4, MockFailure::Refused);
    let state = wait(&handle, |s| s.inits_ok >= 2).await;
    assert_eq!(
        state.beats_failed, 1,
        "three failed attempts are one failed beat"
    );
    assert!(state.last_error.as_deref().is_some_and(Error::is_connect));
    assert_eq!(
        recorded.commands()[4..],
        ["ping", "ping", "ping", "init", "init"]
    );
    let sent = recorded.sent();
    let backoff = sent[7].0 - sent[6].0;
    assert!(
        backoff >= ms(500) && backoff <= ms(1000),
        "the keep-alive's backoff after the failed beat: {backoff:?}"
    );
    assert_eq!(handle.shutdown().await.unwrap(), GOODBYE);
}

/// `shutdown()` while paused (`set_interval(ZERO)`, or started paused)
/// sends `hb_done` and returns at once: no timer has to fire first.
#[tokio::test(start_paused = true)]
async fn shutdown_while_paused_sends_done_at_once() {
    let mock = MockTransport::new();
    let recorded = Recorded::new(mock.clone());
    let handle = recorded
        .client(RetryPolicy::none())
        .keep_alive(KeepAlive::every(ms(1000)));
    wait(&handle, |s| s.beats_ok >= 1).await;
    handle.set_interval(Duration::ZERO);
    wait(&handle, |s| s.interval.is_zero()).await;
    tokio::time::sleep(Duration::from_secs(60)).await; // virtual: paused
    let before = Instant::now();
    assert_eq!(handle.shutdown().await.unwrap(), GOODBYE);
    assert_eq!(before.elapsed(), Duration::ZERO, "no timer in the way");
    assert_eq!(recorded.commands(), ["init", "done"]);
    assert!(mock.registry().with_registry(|r, _| r.is_empty()));

    // started paused: nothing sent, then done alone
    let recorded = Recorded::new(mock.clone());
    let handle = recorded
        .client(RetryPolicy::none())
        .keep_alive(KeepAlive::every(Duration::ZERO));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = Instant::now();
    assert_eq!(handle.shutdown().await.unwrap(), GOODBYE);
    assert_eq!(before.elapsed(), Duration::ZERO);
    assert_eq!(recorded.commands(), ["done"]);
}

/// A beat that takes exactly one interval: the next is one interval after
/// it ended (beats are skipped, never sent back to back), not at once.
#[tokio::test(start_paused = true)]
async fn a_beat_as_long_as_the_interval_pushes_the_next_one_back() {
    let mock = MockTransport::new();
    let start = Instant::now();
    let sent: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let seen = Arc::clone(&sent);
    let transport = transport::from_fn(move |request| {
        seen.lock().unwrap().push(start.elapsed());
        let mock = mock.clone();
        async move {
            tokio::time::sleep(ms(1000)).await;
            mock.send(request).await
        }
    });
    let client = HeartbeatClient::builder_with_transport(transport)
        .app_id(APP)
        .build()
        .unwrap();
    let handle = client.keep_alive(KeepAlive::every(ms(1000)));
    assert_eq!(handle.state().interval, ms(1000), "state from the start");
    wait(&handle, |s| s.beats_ok >= 3).await;
    let times = sent.lock().unwrap()[..3].to_vec();
    assert_eq!(times, [ms(0), ms(2000), ms(4000)]);
    handle.shutdown().await.unwrap();
}

/// Dropping the handle stops the task at once: a beat in flight is
/// abandoned (it never reaches the server), and nothing follows, no done.
#[tokio::test(start_paused = true)]
async fn a_dropped_handle_abandons_the_beat_in_flight_and_stops() {
    let mock = MockTransport::new();
    let delivered = mock.clone();
    let transport = transport::from_fn(move |request| {
        let mock = mock.clone();
        async move {
            // each request takes 500 ms on its way to the server
            tokio::time::sleep(ms(500)).await;
            mock.send(request).await
        }
    });
    let client = HeartbeatClient::builder_with_transport(transport)
        .app_id(APP)
        .build()
        .unwrap();
    let config = KeepAlive::every(ms(1000));
    assert_eq!(config.interval(), ms(1000));
    let handle = client.keep_alive(config);
    wait(&handle, |s| s.beats_ok >= 2).await; // init at 0 s, ping at 1 s
                                              // the next ping leaves at 2 s and would arrive at 2.5 s: drop between
    tokio::time::sleep_until(tokio::time::Instant::now() + ms(750)).await;
    drop(handle);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let arrived: Vec<String> = delivered
        .requests()
        .iter()
        .map(|r| r.target().split('?').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        arrived,
        ["/hb_init", "/hb_ping"],
        "nothing arrived after the drop"
    );
}

/// Stopped before its task ever ran (a wrapped command that exits at
/// once): the stop is seen all the same, at once, and the farewell is
/// the one asked for (a race that made `wrap` time out after 9 s).
#[tokio::test(start_paused = true)]
async fn a_stop_before_the_first_beat_is_not_missed() {
    for fail in [false, true] {
        let mock = MockTransport::new();
        let recorded = Recorded::new(mock.clone());
        let handle = recorded
            .client(RetryPolicy::none())
            .keep_alive(KeepAlive::every(ms(1000)));
        let started = Instant::now();
        let farewell = if fail {
            handle.fail(3).await
        } else {
            handle.shutdown().await
        };
        assert!(farewell.is_ok(), "{farewell:?}");
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "at once, on the paused clock"
        );
        let last = if fail { "fail" } else { "done" };
        assert_eq!(recorded.commands(), [last]);
    }
}

//! Keep-alive: cadence, promise, interval changes, pause, failures and
//! re-init, no burst after a stall, shutdown and drop. The mock-transport
//! tests run on tokio's paused clock, so every time below is exact and no
//! test waits for real; the embedded-server tests use real time and poll
//! with bounded deadlines.
#![cfg(all(feature = "keepalive", feature = "mock"))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use heartbeat_sdk::testing::{MockFailure, MockTransport};
use heartbeat_sdk::transport::{self, HttpResponse};
use heartbeat_sdk::{
    HeartbeatClient, KeepAlive, KeepAliveHandle, KeepAliveState, Transport, TransportError,
};
use tokio::time::Instant;

const APP: &str = "kiosk";

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// One request seen by [`Timed`]: when (on tokio's clock, from the test's
/// start), which command, and the timeout it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    at: Duration,
    command: String,
    timeout_ms: u64,
}

/// The mock transport, plus the tokio instant of every request.
#[derive(Debug, Clone)]
struct Timed {
    mock: MockTransport,
    start: Instant,
    at: Arc<Mutex<Vec<Duration>>>,
}

impl Timed {
    fn new() -> Timed {
        Timed {
            mock: MockTransport::new(),
            start: Instant::now(),
            at: Arc::default(),
        }
    }

    /// Every request so far: the mock's records, with their times.
    fn seen(&self) -> Vec<Seen> {
        let at = self.at.lock().unwrap().clone();
        let requests = self.mock.requests();
        assert_eq!(at.len(), requests.len());
        at.into_iter()
            .zip(requests)
            .map(|(at, request)| {
                let (path, query) = request.target().split_once('?').unwrap();
                assert!(path.starts_with("/hb_"), "a heartbeat command: {path}");
                let timeout = query.split('&').next().unwrap();
                Seen {
                    at,
                    command: path.trim_start_matches("/hb_").to_owned(),
                    timeout_ms: timeout.parse().unwrap(),
                }
            })
            .collect()
    }

    fn client(&self) -> HeartbeatClient {
        HeartbeatClient::builder_with_transport(self.transport())
            .app_id(APP)
            .build()
            .unwrap()
    }

    /// The mock as a transport that notes the time of every request.
    fn transport(&self) -> impl Transport + Clone + 'static {
        let timed = self.clone();
        transport::from_fn(move |request| {
            timed.at.lock().unwrap().push(timed.start.elapsed());
            let mock = timed.mock.clone();
            async move { mock.send(request).await }
        })
    }

    fn registered(&self) -> bool {
        self.mock
            .registry()
            .with_registry(|registry, _| !registry.is_empty())
    }
}

fn seen(at: u64, command: &str, timeout_ms: u64) -> Seen {
    Seen {
        at: ms(at),
        command: command.to_owned(),
        timeout_ms,
    }
}

/// Wait (on the paused clock, so at no real cost) until `done` holds;
/// fail after a minute of virtual time.
async fn wait(
    handle: &KeepAliveHandle,
    done: impl FnMut(&KeepAliveState) -> bool,
) -> KeepAliveState {
    let mut states = handle.subscribe();
    let state = tokio::time::timeout(Duration::from_secs(60), states.wait_for(done))
        .await
        .expect("the keep-alive never got there")
        .unwrap()
        .clone();
    state
}

#[tokio::test(start_paused = true)]
async fn inits_then_pings_every_interval_promising_twice_it_and_signs_off() {
    let timed = Timed::new();
    let handle = timed.client().keep_alive(KeepAlive::every(ms(1000)));
    let state = wait(&handle, |s| s.beats_ok >= 4).await;
    assert_eq!(state.inits_ok, 1);
    assert_eq!(state.beats_failed, 0);
    assert_eq!(
        state.granted,
        Some(ms(3000)),
        "2000 promised + 1000 tolerance"
    );
    assert!(timed.registered());

    let goodbye = handle.shutdown().await.unwrap();
    assert_eq!(goodbye, "So Long, and Thanks for All the Fish!");
    assert_eq!(
        timed.seen(),
        [
            seen(0, "init", 2000),
            seen(1000, "ping", 2000),
            seen(2000, "ping", 2000),
            seen(3000, "ping", 2000),
            seen(3000, "done", 0),
        ]
    );
    assert!(!timed.registered(), "done removed the record");
}

#[tokio::test(start_paused = true)]
async fn a_margin_sets_the_promise_and_done_carries_its_timeout() {
    let timed = Timed::new();
    let config = KeepAlive::every(ms(1000))
        .margin(ms(250))
        .done_timeout(ms(700));
    let handle = timed.client().keep_alive(config);
    wait(&handle, |s| s.beats_ok >= 2).await;
    handle.shutdown().await.unwrap();
    assert_eq!(
        timed.seen(),
        [
            seen(0, "init", 1250),
            seen(1000, "ping", 1250),
            seen(1000, "done", 700)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn set_interval_beats_at_once_then_at_the_new_rate() {
    let timed = Timed::new();
    let handle = timed.client().keep_alive(KeepAlive::every(ms(1000)));
    wait(&handle, |s| s.beats_ok >= 2).await; // t = 1000
    tokio::time::sleep(ms(400)).await; // virtual: t = 1400, between two beats
    handle.set_interval(ms(300));
    assert_eq!(handle.interval(), ms(300));
    let state = wait(&handle, |s| s.beats_ok >= 5).await;
    assert_eq!(state.interval, ms(300));
    assert_eq!(
        timed.seen(),
        [
            seen(0, "init", 2000),
            seen(1000, "ping", 2000),
            seen(1400, "ping", 600), // at once, promising twice the new interval
            seen(1700, "ping", 600),
            seen(2000, "ping", 600),
        ]
    );
    drop(handle);
}

#[tokio::test(start_paused = true)]
async fn zero_pauses_and_a_new_interval_resumes_at_once() {
    let timed = Timed::new();
    let handle = timed.client().keep_alive(KeepAlive::every(ms(1000)));
    wait(&handle, |s| s.beats_ok >= 1).await; // t = 0
    handle.set_interval(Duration::ZERO);
    wait(&handle, |s| s.interval.is_zero()).await;
    tokio::time::sleep(Duration::from_secs(30)).await; // virtual
    assert_eq!(
        timed.seen(),
        [seen(0, "init", 2000)],
        "nothing sent while paused"
    );

    handle.set_interval(ms(500));
    wait(&handle, |s| s.beats_ok >= 3).await;
    assert_eq!(
        timed.seen(),
        [
            seen(0, "init", 2000),
            seen(30_000, "ping", 1000),
            seen(30_500, "ping", 1000)
        ]
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn starting_paused_sends_nothing_until_an_interval_is_set() {
    let timed = Timed::new();
    let handle = timed.client().keep_alive(KeepAlive::every(Duration::ZERO));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(timed.seen().is_empty());
    handle.set_interval(ms(1000));
    wait(&handle, |s| s.beats_ok >= 1).await;
    assert_eq!(
        timed.seen(),
        [seen(10_000, "init", 2000)],
        "the first beat is an init"
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn survives_failures_with_jittered_backoff_and_re_inits_on_recovery() {
    let timed = Timed::new();
    let handle = timed.client().keep_alive(KeepAlive::every(ms(1000)));
    wait(&handle, |s| s.beats_ok >= 2).await; // init at 0, ping at 1000
    timed.mock.fail_next(3, MockFailure::Refused);
    let state = wait(&handle, |s| s.beats_ok >= 4).await;

    assert_eq!(state.beats_failed, 3);
    assert_eq!(state.consecutive_failures, 0);
    assert_eq!(
        state.inits_ok, 2,
        "the first success after the failures is an init"
    );
    assert!(state
        .last_error
        .as_deref()
        .is_some_and(heartbeat_sdk::Error::is_connect));

    let seen = timed.seen();
    let commands: Vec<&str> = seen.iter().map(|s| s.command.as_str()).collect();
    // ping fails; every beat after a failure is an init; then pings again
    assert_eq!(
        commands,
        ["init", "ping", "ping", "init", "init", "init", "ping"]
    );
    assert_eq!(seen[2].at, ms(2000));
    // backoff after failure n: interval × 2^(n-1), jittered into [half, all]
    let gap = |i: usize| seen[i + 1].at - seen[i].at;
    for (i, full) in [(2, 1000), (3, 2000), (4, 4000)] {
        assert!(
            gap(i) >= ms(full / 2) && gap(i) <= ms(full),
            "gap after failure {i}: {:?}",
            gap(i)
        );
    }
    assert_eq!(gap(5), ms(1000), "back to the interval after the recovery");
    assert!(timed.registered());
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped_by_max_backoff() {
    let timed = Timed::new();
    let config = KeepAlive::every(ms(1000)).max_backoff(ms(3000));
    let handle = timed.client().keep_alive(config);
    timed.mock.fail_next(8, MockFailure::Timeout);
    wait(&handle, |s| s.beats_ok >= 1).await;
    let seen = timed.seen();
    assert_eq!(seen.len(), 9);
    for pair in seen.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap <= ms(3000), "gap {gap:?} over the cap");
    }
    assert!(
        seen.iter().all(|s| s.command == "init"),
        "never pinged before a success"
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_burst_of_catch_up_beats_after_a_stall() {
    let timed = Timed::new();
    let handle = timed.client().keep_alive(KeepAlive::every(ms(1000)));
    wait(&handle, |s| s.beats_ok >= 1).await; // t = 0
                                              // the clock jumps ten intervals while the task is asleep
    tokio::time::advance(Duration::from_secs(10)).await;
    wait(&handle, |s| s.beats_ok >= 3).await;
    assert_eq!(
        timed.seen(),
        [
            seen(0, "init", 2000),
            seen(10_000, "ping", 2000),
            seen(11_000, "ping", 2000)
        ],
        "one beat after the stall, then the normal cadence"
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_slow_beat_skips_the_missed_slot_instead_of_bursting() {
    let timed = Timed::new();
    let mock = timed.transport();
    // the mock, with every reply delayed by 2.5 intervals
    let slow = transport::from_fn(move |request| {
        let mock = mock.clone();
        async move {
            let reply = mock.send(request).await;
            tokio::time::sleep(ms(2500)).await;
            reply
        }
    });
    let client = HeartbeatClient::builder_with_transport(slow)
        .app_id(APP)
        .build()
        .unwrap();
    let handle = client.keep_alive(KeepAlive::every(ms(1000)));
    wait(&handle, |s| s.beats_ok >= 3).await;
    let at: Vec<Duration> = timed.seen().iter().map(|s| s.at).collect();
    // each beat ends 2500 after it started: the next is due an interval later
    assert_eq!(at, [ms(0), ms(3500), ms(7000)]);
    drop(handle);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_aborts_without_done() {
    let timed = Timed::new();
    let handle = timed.client().keep_alive(KeepAlive::every(ms(1000)));
    wait(&handle, |s| s.beats_ok >= 2).await;
    drop(handle);
    tokio::time::sleep(Duration::from_secs(10)).await; // virtual
    assert_eq!(
        timed.seen(),
        [seen(0, "init", 2000), seen(1000, "ping", 2000)]
    );
    assert!(
        timed.registered(),
        "no done: the server is left to see the app go late"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_reports_a_failed_done() {
    let timed = Timed::new();
    let handle = timed.client().keep_alive(KeepAlive::every(ms(1000)));
    wait(&handle, |s| s.beats_ok >= 1).await;
    timed.mock.fail_next(1, MockFailure::status(500, "boom"));
    let err = handle.shutdown().await.unwrap_err();
    assert!(
        matches!(err, heartbeat_sdk::Error::Status { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(timed.seen().last().unwrap().command, "done");
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_bounded_when_the_server_never_answers() {
    let hang =
        transport::from_fn(|_| std::future::pending::<Result<HttpResponse, TransportError>>());
    let client = HeartbeatClient::builder_with_transport(hang)
        .build()
        .unwrap();
    let handle = client.keep_alive(KeepAlive::every(ms(1000)).shutdown_timeout(ms(2000)));
    tokio::time::sleep(ms(100)).await; // the init is in flight, forever
    let start = Instant::now();
    let err = handle.shutdown().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // its own variant, not a transport error with some URL
    assert!(
        matches!(err, heartbeat_sdk::Error::ShutdownTimeout { timeout } if timeout == ms(2000)),
        "{err:?}"
    );
    assert!(err.transport_error().is_none(), "{err:?}");
    assert_eq!(start.elapsed(), ms(2000));
}

/// Issue 13: a keep-alive task that died is [`Error::Task`], not a
/// transport failure of some URL.
#[tokio::test(start_paused = true)]
async fn shutdown_after_the_task_died_says_so() {
    let panics = transport::from_fn(|_| async {
        panic!("a transport bug");
        #[allow(unreachable_code)]
        Err::<HttpResponse, TransportError>(TransportError::other("unreachable"))
    });
    let client = HeartbeatClient::builder_with_transport(panics)
        .build()
        .unwrap();
    let handle = client.keep_alive(KeepAlive::every(ms(1000)));
    tokio::time::sleep(ms(100)).await; // the init has panicked the task
    let err = handle.shutdown().await.unwrap_err();
    assert!(matches!(err, heartbeat_sdk::Error::Task { .. }), "{err:?}");
    assert!(
        err.transport_error().is_none() && !err.is_timeout(),
        "{err:?}"
    );
    assert!(err.to_string().contains("keep-alive task"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_a_beat_in_flight_before_done() {
    let timed = Timed::new();
    let mock = timed.transport();
    // replies after 500 ms, so a shutdown lands mid-beat
    let slow = transport::from_fn(move |request| {
        let mock = mock.clone();
        async move {
            tokio::time::sleep(ms(500)).await;
            mock.send(request).await
        }
    });
    let client = HeartbeatClient::builder_with_transport(slow)
        .app_id(APP)
        .build()
        .unwrap();
    let handle = client.keep_alive(KeepAlive::every(ms(1000)));
    tokio::time::sleep(ms(100)).await; // the init is in flight
    handle.shutdown().await.unwrap();
    // the init reached the server before the done, never after it
    assert_eq!(
        timed.seen(),
        [seen(500, "init", 2000), seen(1000, "done", 0)]
    );
    assert!(!timed.registered());
}

#[cfg(all(feature = "server", feature = "reqwest"))]
mod real_server {
    use std::net::SocketAddr;
    use std::time::Duration;

    use heartbeat_sdk::server::{RegistryConfig, Server, ServerHandle};
    use heartbeat_sdk::{
        ErrorPolicy, HeartbeatClient, KeepAlive, KeepAliveHandle, KeepAliveState, State,
    };
    use tokio::time::Instant;

    /// No server tolerance, so a missed beat shows up fast: with a 400 ms
    /// interval (800 ms promised and granted) the app is WARNING after
    /// 2.4 s without a beat.
    fn strict() -> RegistryConfig {
        RegistryConfig {
            tolerance: Duration::ZERO,
            ..RegistryConfig::default()
        }
    }

    async fn start(addr: SocketAddr) -> ServerHandle {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Server::builder(addr).config(strict()).start().await {
                Ok(server) => return server,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("bind {addr}: {e}, retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        }
    }

    fn client(url: &str, app: &str) -> HeartbeatClient {
        HeartbeatClient::builder()
            .url(url)
            .app_id(app)
            .request_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    }

    /// Wait for `done` in real time, up to `limit`.
    async fn wait(
        handle: &KeepAliveHandle,
        limit: Duration,
        done: impl FnMut(&KeepAliveState) -> bool,
    ) {
        let mut states = handle.subscribe();
        tokio::time::timeout(limit, states.wait_for(done))
            .await
            .unwrap_or_else(|_| panic!("not reached within {limit:?}: {:?}", handle.state()))
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_app_stays_ok_while_running_and_is_gone_after_shutdown() {
        let server = start("127.0.0.1:0".parse().unwrap()).await;
        let app = "ka-real-ok";
        let key = format!("{app} @ 127.0.0.1");
        let client = client(&server.url(), app);
        // Issue 14: a 400 ms interval, so that only a stall of the
        // keep-alive longer than 2.4 s (not a slow wake-up on a loaded
        // machine) turns the app WARNING
        let handle = client.keep_alive(KeepAlive::every(Duration::from_millis(400)));
        wait(&handle, Duration::from_secs(10), |s| s.beats_ok >= 1).await;
        assert_eq!(handle.state().granted, Some(Duration::from_millis(800)));

        // sample for 3.2 s, past the 2.4 s after which a stopped app is WARNING
        for _ in 0..16 {
            let status = client.status(Some(app), ErrorPolicy::Raise).await.unwrap();
            assert_eq!(status.state(), State::Ok, "{status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(client
            .list(ErrorPolicy::Raise)
            .await
            .unwrap()
            .contains(&key));
        assert!(handle.state().beats_ok >= 5, "{:?}", handle.state());

        let goodbye = handle.shutdown().await.unwrap();
        assert_eq!(goodbye, "So Long, and Thanks for All the Fish!");
        assert!(!client
            .list(ErrorPolicy::Raise)
            .await
            .unwrap()
            .contains(&key));
        let dones = server.registry().with_registry(|r, _| r.counters().dones);
        assert_eq!(dones, 1);
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn re_inits_after_the_server_restarts_on_the_same_address() {
        let first = start("127.0.0.1:0".parse().unwrap()).await;
        let addr = first.local_addr();
        let app = "ka-real-restart";
        let client = client(&first.url(), app);
        let interval = Duration::from_millis(200);
        let handle = client.keep_alive(KeepAlive::every(interval));
        wait(&handle, Duration::from_secs(10), |s| s.beats_ok >= 2).await;
        assert_eq!(handle.state().inits_ok, 1);

        first.shutdown().await;
        wait(&handle, Duration::from_secs(10), |s| s.beats_failed >= 1).await;
        // read while no server listens, so no init can succeed meanwhile
        let recovered = handle.state().inits_ok + 1;

        let second = start(addr).await;
        wait(&handle, Duration::from_secs(10), |s| {
            s.inits_ok >= recovered
        })
        .await;
        // Issue 14: no timing window (the wait above is bounded); what
        // matters is what came back: one init, counted by the new server
        let inits = second.registry().with_registry(|r, _| r.counters().inits);
        assert_eq!(inits, 1, "the new server saw an init, not just pings");
        let status = client.status(Some(app), ErrorPolicy::Raise).await.unwrap();
        assert_eq!(status.state(), State::Ok, "{status}");

        handle.shutdown().await.unwrap();
        assert!(client.list(ErrorPolicy::Raise).await.unwrap().is_empty());
        second.shutdown().await;
    }
}

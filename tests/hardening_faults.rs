//! Faults the client must ride out (issue 7):
//!
//! - a server that closes idle kept-alive connections sooner than the ping
//!   interval, or just as the next request arrives: no failed ping, because
//!   a `GET` whose connection was closed under it is sent once more;
//! - the server restarted under a running keep-alive: between two beats,
//!   the next beat puts the app back with no failed beat; across a beat,
//!   the failed beat is followed by an `hb_init` the new server counts;
//! - Ctrl+C (the stop future) while a demo request is in flight: `hb_done`
//!   is still sent.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heartbeat_sdk::transport::{self, HttpRequest, HttpResponse, Method};
use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient, TransportError, TransportErrorKind};

/// Fails its first `failures` requests with `kind` (each after `stall`, on
/// tokio's clock), then answers `3000`; records the method and timeout of
/// every request. The transport is a closure over it ([`client_over`]).
#[derive(Debug)]
struct FailingFirst {
    failures: AtomicUsize,
    kind: TransportErrorKind,
    stall: Duration,
    seen: Mutex<Vec<(Method, Duration)>>,
}

impl FailingFirst {
    fn new(failures: usize, kind: TransportErrorKind) -> Arc<Self> {
        Self::stalling(failures, kind, Duration::ZERO)
    }

    fn stalling(failures: usize, kind: TransportErrorKind, stall: Duration) -> Arc<Self> {
        Arc::new(FailingFirst {
            failures: AtomicUsize::new(failures),
            kind,
            stall,
            seen: Mutex::default(),
        })
    }

    fn seen(&self) -> Vec<(Method, Duration)> {
        self.seen.lock().unwrap().clone()
    }

    /// The reply to `request`, and how long to stall before giving it.
    fn answer(&self, request: &HttpRequest) -> (Result<HttpResponse, TransportError>, Duration) {
        self.seen
            .lock()
            .unwrap()
            .push((request.method(), request.timeout()));
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            let error = TransportError::new(self.kind, "scripted failure");
            return (Err(error), self.stall);
        }
        (Ok(HttpResponse::new(200, "3000")), Duration::ZERO)
    }
}

fn client_over(script: Arc<FailingFirst>) -> HeartbeatClient {
    let transport = transport::from_fn(move |request| {
        let (reply, stall) = script.answer(&request);
        async move {
            if !stall.is_zero() {
                tokio::time::sleep(stall).await;
            }
            reply
        }
    });
    HeartbeatClient::builder_with_transport(transport)
        .app_id("app")
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// The rule itself, transport-agnostic: a `GET` closed under it is sent
/// once more, once, within what is left of its timeout; nothing else is.
/// On tokio's paused clock, so the time the first try took is exact.
#[tokio::test(start_paused = true)]
async fn a_get_closed_under_it_is_sent_once_more_and_only_a_get_only_once() {
    let ping = |client: HeartbeatClient| async move {
        client
            .ping(Duration::from_secs(1), ErrorPolicy::Raise)
            .await
    };

    // the first try is cut off after 700 ms of the 2 s request timeout
    let stall = Duration::from_millis(700);
    let transport = FailingFirst::stalling(1, TransportErrorKind::Closed, stall);
    let started = tokio::time::Instant::now();
    let granted = ping(client_over(transport.clone())).await.unwrap();
    assert_eq!(granted, Duration::from_millis(3000));
    assert_eq!(started.elapsed(), stall, "the resend goes out at once");
    let seen = transport.seen();
    assert_eq!(
        seen,
        [
            (Method::Get, Duration::from_secs(2)),
            (Method::Get, Duration::from_secs(2) - stall)
        ],
        "the second try gets only what is left of the timeout"
    );

    let transport = FailingFirst::new(2, TransportErrorKind::Closed);
    let err = ping(client_over(transport.clone())).await.unwrap_err();
    assert!(
        err.transport_error().is_some_and(TransportError::is_closed),
        "{err:?}"
    );
    assert_eq!(transport.seen().len(), 2, "a single retry, not a loop");

    // list, status and raw GETs are retried like pings
    let transport = FailingFirst::new(1, TransportErrorKind::Closed);
    let client = client_over(transport.clone());
    assert_eq!(
        client.get("/anything", ErrorPolicy::Raise).await.unwrap(),
        "3000"
    );
    assert_eq!(transport.seen().len(), 2);

    // POSTs (init, done) are not repeated by the client
    for post in ["init", "done"] {
        let transport = FailingFirst::new(1, TransportErrorKind::Closed);
        let client = client_over(transport.clone());
        let err = match post {
            "init" => client
                .init(Duration::from_secs(1), ErrorPolicy::Raise)
                .await
                .unwrap_err(),
            _ => client.done_now(ErrorPolicy::Raise).await.unwrap_err(),
        };
        assert!(
            err.transport_error().is_some_and(TransportError::is_closed),
            "{err:?}"
        );
        assert_eq!(
            transport.seen(),
            [(Method::Post, Duration::from_secs(2))],
            "{post}"
        );
    }

    // other failures are not "closed under it": no immediate retry
    for kind in [
        TransportErrorKind::Connect,
        TransportErrorKind::Timeout,
        TransportErrorKind::Other,
    ] {
        let transport = FailingFirst::new(1, kind);
        let err = ping(client_over(transport.clone())).await.unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert_eq!(transport.seen().len(), 1, "{kind:?}");
    }
}

#[cfg(any(feature = "reqwest", feature = "surf"))]
mod dropped_connections {
    use super::*;
    use common::raw_http::{Closing, KeepAliveServer, Received};
    use heartbeat_sdk::transport::Transport;
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::time::Instant;

    /// Poll `count` until it reaches `at_least`, for at most 5 s.
    async fn until(count: &AtomicUsize, at_least: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while count.load(SeqCst) < at_least {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {at_least}",
                count.load(SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn client_of(transport: impl Transport + 'static, url: &str) -> HeartbeatClient {
        HeartbeatClient::builder_with_transport(transport)
            .url(url)
            .app_id("kept-alive")
            .request_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    }

    /// The request target without its cache buster: the command itself.
    fn command(target: &str) -> &str {
        target
            .split_once("cache_buster=")
            .map_or(target, |(command, _)| command)
    }

    /// Proof, from the server's own log, that every request cut off
    /// unanswered was sent again and answered: the next request is the same
    /// command, on another connection, answered. `by_the_client`: the
    /// client's resend (a fresh cache buster), not the backend's (curl
    /// resends the very same bytes).
    fn assert_each_cut_off_was_resent(log: &[Received], by_the_client: bool) {
        for (i, cut) in log.iter().enumerate().filter(|(_, r)| !r.answered) {
            let again = log
                .get(i + 1)
                .unwrap_or_else(|| panic!("request {i} cut off and never sent again: {log:#?}"));
            assert!(again.answered, "{log:#?}");
            assert_ne!(again.connection, cut.connection, "{log:#?}");
            assert_eq!(command(&again.target), command(&cut.target), "{log:#?}");
            if by_the_client {
                assert_ne!(again.target, cut.target, "a fresh cache buster: {log:#?}");
            }
        }
    }

    /// `posts_reconnect`: the backend itself resends a request whose reused
    /// connection died before any reply (curl does; hyper does not).
    async fn no_ping_fails(transport: impl Transport + Clone + 'static, posts_reconnect: bool) {
        // The server closes every connection 100 ms after its last reply;
        // the client pings every time the server has just done so, before
        // the server's FIN reached it: pings 2 and 3 go out on a connection
        // the server has closed.
        let server = KeepAliveServer::start("3000", Closing::AfterIdle(Duration::from_millis(100)));
        let client = client_of(transport.clone(), &server.url);
        for beat in 1..=3 {
            let granted = client
                .ping(Duration::from_secs(2), ErrorPolicy::Raise)
                .await;
            assert_eq!(granted.unwrap(), Duration::from_millis(3000), "ping {beat}");
            until(
                &server.closed_idle,
                beat,
                "idle connections closed by the server",
            )
            .await;
        }
        let log = server.received();
        assert_eq!(server.answered.load(SeqCst), 3, "{log:#?}");
        assert_eq!(
            server.cut_off.load(SeqCst),
            2,
            "pings 2 and 3 met an idle-closed connection: {log:#?}"
        );
        assert_eq!(log.len(), 5, "{log:#?}");
        assert_each_cut_off_was_resent(&log, !posts_reconnect);

        // a POST on the idle-closed connection is not resent by the client;
        // curl resends it itself (the same bytes)
        let init = client
            .init(Duration::from_secs(2), ErrorPolicy::Raise)
            .await;
        let log = server.received();
        let counts = (server.answered.load(SeqCst), server.cut_off.load(SeqCst));
        if posts_reconnect {
            assert_eq!(init.unwrap(), Duration::from_millis(3000));
            assert_eq!(counts, (4, 3), "{log:#?}");
        } else {
            let err = init.unwrap_err();
            assert!(
                err.transport_error().is_some_and(TransportError::is_closed),
                "{err:?}"
            );
            assert_eq!(
                counts,
                (3, 3),
                "a POST is not resent by the client: {log:#?}"
            );
            assert!(
                log.last().unwrap().target.starts_with("/hb_init?"),
                "{log:#?}"
            );

            // the fault is real: below the client, a GET on the stale
            // connection fails, and is reported as closed under it
            let get = |url: &str| {
                HttpRequest::new(Method::Get, url, "/hb_ping?1&appid=x")
                    .with_timeout(Duration::from_secs(2))
                    .with_body_limit(1024)
            };
            let server =
                KeepAliveServer::start("3000", Closing::AfterIdle(Duration::from_millis(100)));
            transport.send(get(&server.url)).await.unwrap();
            until(&server.closed_idle, 1, "the idle connection closed").await;
            let err = transport.send(get(&server.url)).await.unwrap_err();
            assert!(err.is_closed(), "{err:?}");
        }

        // The same race made certain: the server closes each kept-alive
        // connection as the next request arrives on it, unanswered.
        let server = KeepAliveServer::start("3000", Closing::OnNextRequest);
        let client = client_of(transport.clone(), &server.url);
        for beat in 1..=5 {
            let granted = client
                .ping(Duration::from_secs(2), ErrorPolicy::Raise)
                .await;
            assert_eq!(granted.unwrap(), Duration::from_millis(3000), "ping {beat}");
        }
        assert_eq!(
            client.get("/list", ErrorPolicy::Raise).await.unwrap(),
            "3000"
        );
        // Each request after the first meets a closed connection when the
        // client reuses its pooled one; back to back on a loaded machine
        // the pool may not have it ready yet and opens a new one instead
        // (no cut-off then). So: every request answered exactly once, at
        // least one cut off, and each cut-off one resent.
        let log = server.received();
        let cut_off = server.cut_off.load(SeqCst);
        assert_eq!(server.answered.load(SeqCst), 6, "{log:#?}");
        assert!((1..=5).contains(&cut_off), "{cut_off} cut off: {log:#?}");
        assert_eq!(log.len(), 6 + cut_off, "{log:#?}");
        assert_each_cut_off_was_resent(&log, !posts_reconnect);
    }

    #[cfg(feature = "reqwest")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reqwest_no_ping_fails_when_the_server_drops_kept_alive_connections() {
        no_ping_fails(
            heartbeat_sdk::transport::ReqwestTransport::new().unwrap(),
            false,
        )
        .await;
    }

    #[cfg(feature = "surf")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn surf_no_ping_fails_when_the_server_drops_kept_alive_connections() {
        no_ping_fails(
            heartbeat_sdk::transport::SurfTransport::new().unwrap(),
            true,
        )
        .await;
    }
}

#[cfg(all(feature = "server", feature = "keepalive", feature = "reqwest"))]
mod restart {
    use super::*;
    use heartbeat_sdk::server::{Server, ServerHandle};
    use heartbeat_sdk::{KeepAlive, KeepAliveHandle, KeepAliveState, State};
    use std::net::SocketAddr;
    use tokio::time::Instant;

    /// Start a server on `addr`; a port that was ours a moment ago can take
    /// a few tries to bind again.
    async fn start(addr: SocketAddr) -> ServerHandle {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Server::builder(addr).start().await {
                Ok(server) => return server,
                Err(e) if Instant::now() < deadline => eprintln!("binding {addr}: {e}"),
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether `server` tracks `key`.
    fn tracks(server: &ServerHandle, key: &str) -> bool {
        server
            .registry()
            .with_registry(|r, now| r.apps(now).any(|a| a.key == key))
    }

    /// The commands `server` has run: (inits, pings, dones).
    fn commands(server: &ServerHandle) -> (u64, u64, u64) {
        let c = server.registry().with_registry(|r, _| r.counters());
        (c.inits, c.pings, c.dones)
    }

    /// Wait (real time, 10 s at most) until the keep-alive's state satisfies `done`.
    async fn wait(
        handle: &KeepAliveHandle,
        done: impl FnMut(&KeepAliveState) -> bool,
    ) -> KeepAliveState {
        let mut states = handle.subscribe();
        let limit = Duration::from_secs(10);
        let state = tokio::time::timeout(limit, states.wait_for(done))
            .await
            .unwrap_or_else(|_| panic!("not within {limit:?}: {:?}", handle.state()))
            .unwrap()
            .clone();
        state
    }

    /// Two restarts under a running keep-alive. Between two beats: the next
    /// beat (a ping, which registers an unknown id) puts the app back, no
    /// beat fails. Across a beat: that beat fails, and the next one is an
    /// `hb_init`, which the new server counts. Counts and order, no timing:
    /// the interval is wide enough for a restart on a loaded machine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_server_restart_the_next_beat_puts_the_app_back_and_a_failed_one_re_inits() {
        let interval = Duration::from_secs(2);
        let first = start("127.0.0.1:0".parse().unwrap()).await;
        let addr = first.local_addr();
        let app = "restarted-under-me";
        let key = format!("{app} @ 127.0.0.1");
        let client = HeartbeatClient::builder()
            .url(first.url())
            .app_id(app)
            .request_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let handle = client.keep_alive(KeepAlive::every(interval));

        // restart right after a beat: the new server starts empty
        wait(&handle, |s| s.beats_ok >= 2).await;
        assert_eq!(commands(&first), (1, 1, 0));
        first.shutdown().await;
        let second = start(addr).await;
        let before = handle.state();
        assert!(!tracks(&second, &key));
        let after = wait(&handle, |s| s.beats_ok > before.beats_ok).await;
        assert!(tracks(&second, &key), "the next beat put it back");
        let (inits, pings, _) = commands(&second);
        assert_eq!(inits, 0, "no failure, so no init: the ping registered it");
        assert!(pings >= 1);
        assert_eq!(
            (after.beats_failed, after.inits_ok),
            (0, 1),
            "no beat failed across the restart: {after:?}"
        );
        let status = client.status(Some(app), ErrorPolicy::Raise).await.unwrap();
        assert_eq!(status.state(), State::Ok, "{status}");

        // down across a beat: it fails; the first beat the new server gets
        // is an hb_init
        second.shutdown().await;
        let failed = wait(&handle, |s| s.beats_failed >= 1).await;
        assert_eq!(failed.inits_ok, 1);
        let third = start(addr).await;
        let back = wait(&handle, |s| s.beats_ok > failed.beats_ok).await;
        assert!(tracks(&third, &key));
        let (inits, _, _) = commands(&third);
        assert_eq!(inits, 1, "the keep-alive re-inits after a failed beat");
        assert_eq!((back.inits_ok, back.consecutive_failures), (2, 0));
        let status = client.status(Some(app), ErrorPolicy::Raise).await.unwrap();
        assert_eq!(status.state(), State::Ok, "{status}");

        handle.shutdown().await.unwrap();
        assert!(!tracks(&third, &key), "done reached the new server");
        assert_eq!(commands(&third).2, 1);
        third.shutdown().await;
    }
}

#[cfg(all(feature = "server", feature = "reqwest"))]
mod demo_interrupted {
    use super::*;
    use heartbeat_sdk::demo::{run, DemoOptions};
    use heartbeat_sdk::server::Server;
    use heartbeat_sdk::transport::ReqwestTransport;
    use heartbeat_sdk::transport::Transport;
    use tokio::sync::Notify;
    use tokio::time::Instant;

    /// What the stalling transport tells the test.
    #[derive(Debug, Clone, Default)]
    struct Stalls {
        in_flight: Arc<Notify>,
        paths: Arc<Mutex<Vec<String>>>,
        finished_pings: Arc<AtomicUsize>,
    }

    /// Sends through reqwest, except that every `hb_ping` stalls like a
    /// server that stopped answering, after announcing itself.
    fn stalling_pings(inner: ReqwestTransport, stalls: Stalls) -> impl Transport {
        transport::from_fn(move |request: HttpRequest| {
            let (inner, stalls) = (inner.clone(), stalls.clone());
            async move {
                let path = request.target().split('?').next().unwrap().to_owned();
                stalls.paths.lock().unwrap().push(path.clone());
                if path == "/hb_ping" {
                    stalls.in_flight.notify_one();
                    tokio::time::sleep(request.timeout()).await;
                    stalls.finished_pings.fetch_add(1, Ordering::SeqCst);
                    return Err(TransportError::timeout("stalled"));
                }
                inner.send(request).await
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ctrl_c_while_a_ping_is_in_flight_still_sends_done() {
        let server = Server::builder("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        // another app, so that a /list that failed (the demo's fallback is
        // an empty list) cannot pass for the list after done
        server.registry().with_registry(|r, now| {
            let localhost = "127.0.0.1".parse().unwrap();
            r.init("bystander", localhost, Duration::from_secs(3600), now)
                .unwrap();
        });
        let transport = Stalls::default();
        // long, so that "abandoned, not waited for" (a quarter of it) has
        // a wide margin on a loaded machine
        let request_timeout = Duration::from_secs(60);
        let client = HeartbeatClient::builder_with_transport(stalling_pings(
            ReqwestTransport::new().unwrap(),
            transport.clone(),
        ))
        .url(server.url())
        .app_id("demo-interrupted")
        .request_timeout(request_timeout)
        .build()
        .unwrap();
        let options = DemoOptions {
            min_timeout: Duration::from_millis(10),
            max_timeout: Duration::from_millis(20),
            max_sleep_factor: 1,
            max_beats: None,
        };
        let in_flight = transport.in_flight.clone();
        let stop = async move { in_flight.notified().await }; // "Ctrl+C" once a ping hangs
        let started = Instant::now();
        let report = run(&client, &options, stop).await.unwrap();
        let took = started.elapsed();

        assert!(
            took < request_timeout / 4,
            "the stalled ping was abandoned, not waited for: {took:?}"
        );
        assert_eq!(transport.finished_pings.load(Ordering::SeqCst), 0);
        assert_eq!(report.beats, 1);
        assert_eq!(
            report.list_before,
            ["bystander @ 127.0.0.1", "demo-interrupted @ 127.0.0.1"]
        );
        assert_eq!(report.goodbye, "So Long, and Thanks for All the Fish!");
        assert_eq!(report.list_after, ["bystander @ 127.0.0.1"]);
        let paths = transport.paths.lock().unwrap().clone();
        assert_eq!(
            paths,
            ["/hb_init", "/hb_ping", "/list", "/status", "/hb_done", "/list", "/status"]
        );
        let counters = server.registry().with_registry(|r, _| r.counters());
        assert_eq!((counters.inits, counters.dones), (2, 1));
        assert_eq!(server.registry().with_registry(|r, _| r.len()), 1);
        server.shutdown().await;
    }
}

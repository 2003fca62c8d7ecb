//! The blocking client: the same calls, synchronous, and no panic when it is
//! created, used or dropped from a plain thread, from `spawn_blocking`, or
//! directly inside a multi-thread or current-thread tokio runtime (where
//! `reqwest::blocking` panics).
#![cfg(all(feature = "blocking", feature = "mock"))]

use std::time::{Duration, Instant};

use heartbeat_sdk::blocking::{HeartbeatClient, KeepAliveHandle};
use heartbeat_sdk::testing::{MockFailure, MockTransport};
use heartbeat_sdk::{Error, ErrorPolicy, KeepAlive, KeepAliveState, State};

const GOODBYE: &str = "So Long, and Thanks for All the Fish!";

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Poll the handle's state (real time) until `done` holds, for at most 10 s.
fn wait(handle: &KeepAliveHandle, mut done: impl FnMut(&KeepAliveState) -> bool) -> KeepAliveState {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = handle.state();
        if done(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "not reached within 10 s: {state:?}"
        );
        std::thread::sleep(ms(5));
    }
}

/// Every call and a keep-alive over the mock, checked against its registry.
fn exercise_mock(app: &str) {
    let mock = MockTransport::new();
    let client = heartbeat_sdk::HeartbeatClient::builder_with_transport(mock.clone())
        .app_id(app)
        .build_blocking()
        .unwrap();
    let key = format!("{app} @ 127.0.0.1");
    assert_eq!(client.init(ms(500), ErrorPolicy::Raise).unwrap(), ms(1500));
    assert_eq!(client.ping(ms(2000), ErrorPolicy::Raise).unwrap(), ms(3000));
    assert_eq!(client.list(ErrorPolicy::Raise).unwrap(), [key.as_str()]);
    let status = client.status(Some(app), ErrorPolicy::Raise).unwrap();
    assert_eq!(status.state(), State::Ok, "{status}");
    assert_eq!(
        client.status(None, ErrorPolicy::Raise).unwrap().state(),
        State::Ok
    );
    assert_eq!(
        client.get("/list", ErrorPolicy::Raise).unwrap(),
        format!("{key}\n")
    );
    assert_eq!(client.done(ms(5), ErrorPolicy::Raise).unwrap(), GOODBYE);
    assert!(client.list(ErrorPolicy::Raise).unwrap().is_empty());
    let form = format!("appid={app}");
    let reply = client
        .post(&format!("/hb_init?100&{form}"), &form, ErrorPolicy::Raise)
        .unwrap();
    assert_eq!(reply, "1100");
    assert_eq!(client.done_now(ErrorPolicy::Raise).unwrap(), GOODBYE);

    // failures keep their types, and fallbacks apply
    mock.fail_next(1, MockFailure::Refused);
    assert!(client
        .ping(ms(1), ErrorPolicy::Raise)
        .unwrap_err()
        .is_connect());
    mock.fail_next(1, MockFailure::status(500, "boom"));
    assert_eq!(
        client.ping(ms(1), ErrorPolicy::Fallback(ms(7))).unwrap(),
        ms(7)
    );

    // the keep-alive runs on the worker while this thread blocks
    let keep_alive = client.keep_alive(KeepAlive::every(ms(20)));
    let state = wait(&keep_alive, |s| s.beats_ok >= 3);
    assert_eq!(state.inits_ok, 1);
    assert!(!client.list(ErrorPolicy::Raise).unwrap().is_empty());
    keep_alive.set_interval(ms(10));
    assert_eq!(keep_alive.interval(), ms(10));
    assert_eq!(keep_alive.shutdown().unwrap(), GOODBYE);
    assert!(client.list(ErrorPolicy::Raise).unwrap().is_empty());
    drop(client);
}

/// `status_all` and `apps`, which the blocking client mirrors from the
/// async one: the same answers, and the policy applied to a failure.
#[test]
fn status_all_and_apps_mirror_the_async_client() {
    use heartbeat_sdk::protocol::AppAnswer;
    let mock = MockTransport::new();
    let client = |app: &str| {
        heartbeat_sdk::HeartbeatClient::builder_with_transport(mock.clone())
            .app_id(app)
            .build_blocking()
            .unwrap()
    };
    let (a, b) = (client("a"), client("b"));
    a.init(ms(500), ErrorPolicy::Raise).unwrap();
    b.init(ms(500), ErrorPolicy::Raise).unwrap();
    let checks = a.status_all(ErrorPolicy::Raise).unwrap();
    let keys: Vec<&str> = checks.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["a @ 127.0.0.1", "b @ 127.0.0.1"]);
    for check in &checks {
        match &check.answer {
            Ok(AppAnswer::Status(status)) => assert_eq!(status.state(), State::Ok, "{status}"),
            other => panic!("{}: {other:?}", check.key),
        }
    }
    #[cfg(feature = "serde")]
    {
        let apps = a.apps(ErrorPolicy::Raise).unwrap();
        let keys: Vec<&str> = apps.apps.iter().map(|app| app.key.as_str()).collect();
        assert_eq!(keys, ["a @ 127.0.0.1", "b @ 127.0.0.1"]);
        mock.fail_next(1, MockFailure::Refused);
        assert!(a.apps(ErrorPolicy::Raise).is_err());
    }
    // a failed /list fails the call, or gives the fallback
    mock.fail_next(1, MockFailure::Refused);
    assert!(a.status_all(ErrorPolicy::Raise).unwrap_err().is_connect());
    mock.fail_next(1, MockFailure::Refused);
    assert!(a
        .status_all(ErrorPolicy::Fallback(Vec::new()))
        .unwrap()
        .is_empty());
}

#[test]
fn works_from_a_plain_thread() {
    std::thread::spawn(|| exercise_mock("plain-thread"))
        .join()
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn works_directly_inside_a_current_thread_runtime() {
    // created, used and dropped on the runtime's only thread
    exercise_mock("current-thread-direct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_directly_inside_a_multi_thread_runtime() {
    exercise_mock("multi-thread-direct");
}

#[tokio::test(flavor = "current_thread")]
async fn works_inside_spawn_blocking_of_a_current_thread_runtime() {
    tokio::task::spawn_blocking(|| exercise_mock("current-thread-spawn-blocking"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_inside_spawn_blocking_of_a_multi_thread_runtime() {
    tokio::task::spawn_blocking(|| exercise_mock("multi-thread-spawn-blocking"))
        .await
        .unwrap();
}

/// Signals when it is dropped: held by a transport, it tells when the last
/// clone of the client using that transport (a keep-alive task's included)
/// is gone, after which nothing more can be sent through it.
struct DropSignal(std::sync::mpsc::SyncSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// `mock` as a transport holding a [`DropSignal`], and the receiver that
/// hears of its drop.
fn signalling(
    mock: &MockTransport,
) -> (
    impl heartbeat_sdk::Transport + 'static,
    std::sync::mpsc::Receiver<()>,
) {
    let (tx, gone) = std::sync::mpsc::sync_channel(1);
    let signal = std::sync::Arc::new(DropSignal(tx));
    let mock = mock.clone();
    let transport = heartbeat_sdk::transport::from_fn(move |request| {
        let _held = &signal;
        let mock = mock.clone();
        async move { heartbeat_sdk::Transport::send(&mock, request).await }
    });
    (transport, gone)
}

fn dones(mock: &MockTransport) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.target().starts_with("/hb_done"))
        .count()
}

#[tokio::test(flavor = "current_thread")]
async fn created_in_a_runtime_and_dropped_in_another_context() {
    let mock = MockTransport::new();
    let (transport, transport_gone) = signalling(&mock);
    let client = heartbeat_sdk::HeartbeatClient::builder_with_transport(transport)
        .build_blocking()
        .unwrap();
    let keep_alive = client.keep_alive(KeepAlive::every(ms(10)));
    // the client goes first; the keep-alive's worker lives on without it
    drop(client);
    let state = wait(&keep_alive, |s| s.beats_ok >= 2);
    assert_eq!(state.beats_failed, 0);
    // dropped from another thread, no done sent
    std::thread::spawn(move || drop(keep_alive)).join().unwrap();
    // Wait until the last clone of the client (the aborted task's) is
    // gone, with the worker's runtime: a done sent after the drop, however
    // late, is in the mock's records by then.
    transport_gone
        .recv_timeout(Duration::from_secs(10))
        .expect("the worker still holds the client 10 s after the last handle was dropped");
    assert_eq!(dones(&mock), 0, "{:?}", mock.requests());
}

/// Dropping a keep-alive handle while the client lives on: once the task is
/// gone (its state channel closed), still no done, ever; the record stays.
#[test]
fn a_dropped_keep_alive_never_sends_done_later() {
    let mock = MockTransport::new();
    let client = heartbeat_sdk::HeartbeatClient::builder_with_transport(mock.clone())
        .app_id("dropped")
        .build_blocking()
        .unwrap();
    let keep_alive = client.keep_alive(KeepAlive::every(ms(10)));
    wait(&keep_alive, |s| s.beats_ok >= 2);
    let states = keep_alive.subscribe();
    drop(keep_alive);
    // the task holds the state's sender: closed once the task is gone
    let deadline = Instant::now() + Duration::from_secs(10);
    while states.has_changed().is_ok() {
        assert!(
            Instant::now() < deadline,
            "the keep-alive task still runs 10 s after its handle was dropped"
        );
        std::thread::sleep(ms(5));
    }
    assert_eq!(dones(&mock), 0, "{:?}", mock.requests());
    assert!(!states.borrow().stopped, "the task never got to stop");
    assert_eq!(
        client.list(ErrorPolicy::Raise).unwrap(),
        ["dropped @ 127.0.0.1"],
        "no done: the record stays"
    );
}

#[test]
fn a_client_made_from_an_async_one_keeps_its_settings() {
    let mock = MockTransport::new();
    let inner = heartbeat_sdk::HeartbeatClient::builder_with_transport(mock.clone())
        .url("10.1.2.3:99")
        .app_id("wrapped")
        .retry(heartbeat_sdk::RetryPolicy::new(3).initial_backoff(ms(1)))
        .build()
        .unwrap();
    let client = HeartbeatClient::from_async(inner).unwrap();
    assert_eq!(client.url(), "http://10.1.2.3:99");
    assert_eq!(client.app_id(), "wrapped");
    assert_eq!(client.as_async().app_id(), "wrapped");
    mock.fail_next(2, MockFailure::Refused);
    client.init(ms(100), ErrorPolicy::Raise).unwrap();
    assert_eq!(mock.requests().len(), 3, "the retry policy came along");
}

#[test]
fn builder_errors_are_reported_not_panicked() {
    let builder = || heartbeat_sdk::HeartbeatClient::builder_with_transport(MockTransport::new());
    assert!(matches!(
        builder().app_id("").build_blocking(),
        Err(Error::InvalidAppId { .. })
    ));
    assert!(matches!(
        builder().url("ftp://x").build_blocking(),
        Err(Error::InvalidUrl { .. })
    ));
}

/// `build_blocking` takes every setting of the async builder: the same
/// builder, not a copy of its setters.
#[test]
fn build_blocking_keeps_every_setting_of_the_async_builder() {
    let mock = MockTransport::new();
    let client = heartbeat_sdk::HeartbeatClient::builder_with_transport(mock.clone())
        .url("10.9.8.7:6")
        .app_id("from-builder")
        .body_limit(4)
        .retry(heartbeat_sdk::RetryPolicy::new(2).initial_backoff(ms(1)))
        .build_blocking()
        .unwrap();
    assert_eq!(client.url(), "http://10.9.8.7:6");
    assert_eq!(client.app_id(), "from-builder");
    mock.fail_next(1, MockFailure::Refused);
    // the retry policy: the refused attempt is retried; the body limit: a
    // granted timeout of 4 digits ("1500") fits, a goodbye does not
    assert_eq!(client.init(ms(500), ErrorPolicy::Raise).unwrap(), ms(1500));
    assert_eq!(mock.requests().len(), 2);
    let too_big = client.done_now(ErrorPolicy::Raise).unwrap_err();
    assert!(
        too_big
            .transport_error()
            .is_some_and(|e| e.is_body_too_large()),
        "{too_big:?}"
    );
}

#[cfg(all(feature = "server", feature = "reqwest"))]
#[path = "support/refusing.rs"]
mod refusing;

#[cfg(all(feature = "server", feature = "reqwest"))]
mod real_server {
    use super::*;
    use heartbeat_sdk::server::Server;
    use refusing::Refusing;

    /// Every call and a keep-alive over reqwest against the embedded server.
    fn exercise_server(url: &str, app: &str) {
        let client = heartbeat_sdk::HeartbeatClient::builder()
            .url(url)
            .app_id(app)
            .build_blocking()
            .unwrap();
        let key = format!("{app} @ 127.0.0.1");
        assert_eq!(client.init(ms(500), ErrorPolicy::Raise).unwrap(), ms(1500));
        assert_eq!(client.ping(ms(500), ErrorPolicy::Raise).unwrap(), ms(1500));
        let status = client.status(Some(app), ErrorPolicy::Raise).unwrap();
        assert_eq!(status.state(), State::Ok, "{status}");
        assert!(client.list(ErrorPolicy::Raise).unwrap().contains(&key));
        assert_eq!(client.done_now(ErrorPolicy::Raise).unwrap(), GOODBYE);
        assert!(!client.list(ErrorPolicy::Raise).unwrap().contains(&key));

        let keep_alive = client.keep_alive(KeepAlive::every(ms(50)));
        wait(&keep_alive, |s| s.beats_ok >= 2);
        assert!(client.list(ErrorPolicy::Raise).unwrap().contains(&key));
        assert_eq!(keep_alive.shutdown().unwrap(), GOODBYE);
        assert!(!client.list(ErrorPolicy::Raise).unwrap().contains(&key));
    }

    #[test]
    fn against_a_real_server_from_a_plain_thread() {
        // the server runs on its own runtime's worker threads
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let server = runtime
            .block_on(Server::builder("127.0.0.1:0".parse().unwrap()).start())
            .unwrap();
        let url = server.url();
        std::thread::spawn(move || exercise_server(&url, "blocking-plain"))
            .join()
            .unwrap();
        runtime.block_on(server.shutdown());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn against_a_real_server_from_spawn_blocking_in_a_current_thread_runtime() {
        // the server shares this one thread; spawn_blocking leaves it free
        let server = Server::builder("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let url = server.url();
        tokio::task::spawn_blocking(move || exercise_server(&url, "blocking-ct"))
            .await
            .unwrap();
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn against_a_real_server_from_spawn_blocking_in_a_multi_thread_runtime() {
        let server = Server::builder("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let url = server.url();
        tokio::task::spawn_blocking(move || exercise_server(&url, "blocking-mt"))
            .await
            .unwrap();
        server.shutdown().await;
    }

    #[test]
    fn an_unreachable_server_is_an_error_or_the_fallback() {
        let refusing = Refusing::new();
        let client = heartbeat_sdk::HeartbeatClient::builder()
            .url(refusing.url())
            .build_blocking()
            .unwrap();
        assert!(client
            .ping(ms(100), ErrorPolicy::Raise)
            .unwrap_err()
            .is_connect());
        assert_eq!(
            client.ping(ms(100), ErrorPolicy::Fallback(ms(1))).unwrap(),
            ms(1)
        );
    }
}

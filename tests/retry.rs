//! The client's retry policy, counted through the mock transport's request
//! records, on tokio's paused clock (backoffs cost no real time).
#![cfg(feature = "mock")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use heartbeat_sdk::testing::{MockFailure, MockTransport};
use heartbeat_sdk::transport;
use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient, RetryPolicy, Transport, TransportError};
use tokio::time::Instant;

#[path = "support/timed.rs"]
mod timed;
use timed::Timed;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn setup(policy: RetryPolicy) -> (HeartbeatClient, Timed) {
    let timed = Timed::default();
    let client = HeartbeatClient::builder_with_transport(timed.transport())
        .app_id("retry")
        .request_timeout(Duration::from_secs(4))
        .retry(policy)
        .build()
        .unwrap();
    (client, timed)
}

fn attempts(timed: &Timed) -> usize {
    timed.mock.requests().len()
}

#[tokio::test(start_paused = true)]
async fn off_by_default_one_attempt() {
    let timed = Timed::default();
    let client = HeartbeatClient::builder_with_transport(timed.transport())
        .build()
        .unwrap();
    timed.mock.fail_next(1, MockFailure::Refused);
    assert!(client
        .ping(ms(1000), ErrorPolicy::Raise)
        .await
        .unwrap_err()
        .is_connect());
    assert_eq!(attempts(&timed), 1);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_and_5xx_are_retried_until_success() {
    let (client, timed) = setup(RetryPolicy::new(4));
    timed.mock.fail_next(1, MockFailure::Refused);
    timed.mock.fail_next(1, MockFailure::Timeout);
    timed.mock.fail_next(1, MockFailure::status(503, "busy"));
    let granted = client.init(ms(1000), ErrorPolicy::Raise).await.unwrap();
    assert_eq!(granted, ms(2000));
    assert_eq!(attempts(&timed), 4);
    // every attempt is the same command
    let requests = timed.mock.requests();
    assert!(requests
        .iter()
        .all(|r| r.target().starts_with("/hb_init?1000&appid=retry")));
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_bad_replies_are_not_retried() {
    let (client, timed) = setup(RetryPolicy::new(5));
    timed.mock.fail_next(
        1,
        MockFailure::status(400, "ERROR: cannot process your request: [/x]"),
    );
    let err = client.ping(ms(1000), ErrorPolicy::Raise).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 400, .. }), "{err:?}");
    assert_eq!(attempts(&timed), 1);

    timed.mock.fail_next(1, MockFailure::status(404, "no"));
    assert!(client.list(ErrorPolicy::Raise).await.is_err());
    assert_eq!(attempts(&timed), 2);

    timed.mock.fail_next(1, MockFailure::body("not a number"));
    let err = client.ping(ms(1000), ErrorPolicy::Raise).await.unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    assert_eq!(attempts(&timed), 3);

    // an invalid argument is refused before anything is sent
    let err = client
        .ping(Duration::MAX, ErrorPolicy::Raise)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTimeout { .. }), "{err:?}");
    assert_eq!(attempts(&timed), 3);
}

#[tokio::test(start_paused = true)]
async fn the_error_policy_applies_after_the_last_attempt() {
    let (client, timed) = setup(RetryPolicy::new(3));
    timed.mock.fail_next(10, MockFailure::Timeout);
    let err = client.ping(ms(1000), ErrorPolicy::Raise).await.unwrap_err();
    assert!(err.is_timeout(), "the last attempt's error: {err:?}");
    assert_eq!(attempts(&timed), 3);

    let fallback = client
        .ping(ms(1000), ErrorPolicy::Fallback(ms(42)))
        .await
        .unwrap();
    assert_eq!(fallback, ms(42));
    assert_eq!(
        attempts(&timed),
        6,
        "the fallback is returned only after all attempts"
    );
}

/// Waits on the library's tokio timer, which a build without `reqwest`,
/// `keepalive` and `server` does not have (its retries do not wait).
#[cfg(any(feature = "reqwest", feature = "keepalive", feature = "server"))]
#[tokio::test(start_paused = true)]
async fn backoff_doubles_with_jitter_up_to_the_cap() {
    let policy = RetryPolicy::new(5)
        .initial_backoff(ms(100))
        .max_backoff(ms(300));
    let (client, timed) = setup(policy);
    timed.mock.fail_next(4, MockFailure::Refused);
    client.ping(ms(1000), ErrorPolicy::Raise).await.unwrap();
    let at = timed.at();
    assert_eq!(at.len(), 5);
    for (i, full) in [100, 200, 300, 300].into_iter().enumerate() {
        let gap = at[i + 1] - at[i];
        assert!(
            gap >= ms(full / 2) && gap <= ms(full),
            "wait {i}: {gap:?}, expected {full} ms jittered"
        );
    }
}

/// Waits on the library's tokio timer, which a build without `reqwest`,
/// `keepalive` and `server` does not have (its retries do not wait).
#[cfg(any(feature = "reqwest", feature = "keepalive", feature = "server"))]
#[tokio::test(start_paused = true)]
async fn the_budget_bounds_the_whole_call_and_each_attempt() {
    let policy = RetryPolicy::new(10)
        .initial_backoff(ms(100))
        .max_backoff(ms(100))
        .budget(ms(250));
    let (client, timed) = setup(policy);
    timed.mock.fail_next(100, MockFailure::Timeout);
    let start = Instant::now();
    let err = client.ping(ms(1000), ErrorPolicy::Raise).await.unwrap_err();
    let took = start.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(took <= ms(250), "the call took {took:?}, over its budget");
    // waits of 50..=100 ms fit 2 to 5 times in 250 ms: far fewer than 10 attempts
    let n = attempts(&timed);
    assert!((3..=6).contains(&n), "{n} attempts");

    // each attempt's timeout is what is left of the budget, never the 4 s default
    let requests = timed.mock.requests();
    let at = timed.at();
    assert_eq!(requests[0].timeout(), ms(250));
    for (request, at) in requests.iter().zip(at) {
        assert_eq!(request.timeout(), ms(250) - (at - start), "{request:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_budget_shorter_than_the_first_backoff_means_one_attempt() {
    let policy = RetryPolicy::new(10)
        .initial_backoff(ms(500))
        .max_backoff(ms(500))
        .budget(ms(200));
    let (client, timed) = setup(policy);
    timed.mock.fail_next(10, MockFailure::Refused);
    let start = Instant::now();
    assert!(client.list(ErrorPolicy::Raise).await.is_err());
    assert_eq!(attempts(&timed), 1);
    assert_eq!(start.elapsed(), Duration::ZERO, "no pointless wait");
}

/// Retry also works outside tokio: a plain thread timer does the waiting.
#[test]
fn retries_without_a_tokio_runtime() {
    let (client, timed) = setup(
        RetryPolicy::new(3)
            .initial_backoff(ms(1))
            .max_backoff(ms(2)),
    );
    timed
        .mock
        .fail_next(2, MockFailure::status(502, "bad gateway"));
    let granted = futures_executor_block_on(client.ping(ms(1000), ErrorPolicy::Raise)).unwrap();
    assert_eq!(granted, ms(2000));
    assert_eq!(attempts(&timed), 3);
}

/// A minimal executor (no tokio context): poll, park until woken.
fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}

/// The `cache_buster` value of a request URL.
fn buster(url: &str) -> &str {
    let (_, rest) = url.split_once("cache_buster=").expect("a cache buster");
    rest.split('&').next().unwrap_or(rest)
}

/// The URL without its cache buster: the command itself.
fn command(url: &str) -> &str {
    url.split_once("cache_buster=")
        .map_or(url, |(command, _)| command)
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_a_fresh_cache_buster() {
    let (client, timed) = setup(RetryPolicy::new(3));
    for call in ["init", "ping", "list", "status", "get", "post", "done"] {
        timed.mock.clear_requests();
        timed.mock.fail_next(2, MockFailure::status(503, "busy"));
        match call {
            "init" => {
                client.init(ms(1000), ErrorPolicy::Raise).await.unwrap();
            }
            "ping" => {
                client.ping(ms(1000), ErrorPolicy::Raise).await.unwrap();
            }
            "list" => {
                client.list(ErrorPolicy::Raise).await.unwrap();
            }
            "status" => {
                client
                    .status(Some("retry"), ErrorPolicy::Raise)
                    .await
                    .unwrap();
            }
            "get" => {
                client.get("/list", ErrorPolicy::Raise).await.unwrap();
            }
            "post" => {
                client
                    .post("/list", "x=1", ErrorPolicy::Raise)
                    .await
                    .unwrap();
            }
            _ => {
                client.done_now(ErrorPolicy::Raise).await.unwrap();
            }
        }
        let urls: Vec<String> = timed.mock.requests().iter().map(|r| r.url()).collect();
        assert_eq!(urls.len(), 3, "{call}: {urls:?}");
        assert!(
            urls.iter().all(|url| command(url) == command(&urls[0])),
            "{call}: every attempt is the same command: {urls:?}"
        );
        let busters: std::collections::HashSet<&str> = urls.iter().map(|u| buster(u)).collect();
        assert_eq!(busters.len(), 3, "{call}: one buster per attempt: {urls:?}");
    }
}

/// Closes the connection under the first `closes` requests, then answers
/// from the mock; records every URL it is sent.
fn closed_first(closes: usize, urls: Arc<Mutex<Vec<String>>>) -> impl Transport {
    let (mock, closes) = (MockTransport::new(), Mutex::new(closes));
    transport::from_fn(move |request| {
        urls.lock().unwrap().push(request.url());
        let closed = {
            let mut closes = closes.lock().unwrap();
            let closed = *closes > 0;
            *closes = closes.saturating_sub(1);
            closed
        };
        let mock = mock.clone();
        async move {
            if closed {
                return Err(TransportError::closed("connection reset"));
            }
            mock.send(request).await
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_get_sent_again_after_a_closed_connection_gets_a_fresh_cache_buster() {
    let urls = Arc::new(Mutex::new(Vec::new()));
    let client = HeartbeatClient::builder_with_transport(closed_first(3, urls.clone()))
        .app_id("retry")
        .retry(RetryPolicy::new(2))
        .build()
        .unwrap();
    // attempt 1: closed, sent again, closed; attempt 2: closed, sent again, answered
    let granted = client.ping(ms(1000), ErrorPolicy::Raise).await.unwrap();
    assert_eq!(granted, ms(2000));
    let urls = urls.lock().unwrap().clone();
    assert_eq!(urls.len(), 4, "{urls:?}");
    assert!(urls
        .iter()
        .all(|url| command(url).ends_with("/hb_ping?1000&appid=retry&")));
    let busters: std::collections::HashSet<&str> = urls.iter().map(|u| buster(u)).collect();
    assert_eq!(busters.len(), 4, "no two requests share a buster: {urls:?}");
}

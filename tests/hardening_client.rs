//! Client hardening (issue 7): bad server URLs, bad app ids, timeouts the
//! protocol cannot carry or must round, and bad replies (empty, negative,
//! non-numeric, non-UTF-8, over the body cap, dripped slower than the
//! timeout), each with its typed error, under every transport compiled in.
//!
//! The basics are in `conformance.rs` and `transport_wire.rs`; this file
//! adds the edges and runs them through the same harnesses.
#![cfg(any(feature = "reqwest", feature = "surf", feature = "mock"))]

mod common;

use std::time::Duration;

use common::{Harness, Recorder, Reply, Seen, APP_ENC};
use heartbeat_sdk::protocol::{encode_component, MAX_APP_ID_LEN, MAX_TIMEOUT_MS};
use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient, Status, Transport};

/// Server URLs a builder must refuse, and a word its reason must contain.
const BAD_URLS: &[(&str, &str)] = &[
    ("", "empty host"),
    ("   ", "empty host"),
    ("http://", "empty host"),
    ("http://:8888", "empty host"),
    ("https://:443/", "empty host"),
    ("ftp://host:21", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("ws://host:1", "scheme"),
    ("gopher://host", "scheme"),
    ("http://host:0", "port 0"),
    ("http://host:65536", "port"),
    ("http://host:99999999999", "port"),
    ("http://host:-1", "port"),
    ("host:70000", "port"),
    ("127.0.0.1:65536", "port"),
    ("http://host:port", "port"),
    ("http://[::1", "IPv6"),
    ("http://exa mple.org", "domain"),
    ("http://host:1/?q=1", "query"),
    ("http://host:1/#top", "fragment"),
];

/// App ids a builder must refuse.
fn bad_app_ids() -> Vec<String> {
    vec![
        String::new(),
        "x".repeat(10_000),
        "x".repeat(MAX_APP_ID_LEN + 1),
        "é".repeat(MAX_APP_ID_LEN / 2 + 1), // the limit counts bytes
        "a\nb".to_owned(),
        "nul\0".to_owned(),
        "tab\t".to_owned(),
    ]
}

/// The builder refuses every bad URL and app id with a typed error, and
/// accepts ids right at the limit, whatever the transport.
fn bad_configuration_is_refused<T: Transport + 'static>(make: impl Fn() -> T) {
    for (url, why) in BAD_URLS {
        let err = HeartbeatClient::builder_with_transport(make())
            .url(*url)
            .build()
            .unwrap_err();
        match &err {
            Error::InvalidUrl {
                url: echoed,
                reason,
            } => {
                assert_eq!(echoed, url.trim(), "the URL is echoed as given");
                assert!(
                    reason.contains(why),
                    "{url:?}: reason {reason:?} should mention {why:?}"
                );
            }
            other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
        }
    }
    for app in bad_app_ids() {
        let err = HeartbeatClient::builder_with_transport(make())
            .app_id(app.clone())
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidAppId { .. }),
            "{:?}: {err:?}",
            &app[..app.len().min(20)]
        );
    }
    for app in ["x".repeat(MAX_APP_ID_LEN), "é".repeat(MAX_APP_ID_LEN / 2)] {
        HeartbeatClient::builder_with_transport(make())
            .app_id(app)
            .build()
            .unwrap();
    }
}

async fn seen(recorder: &dyn Recorder) -> Vec<Seen> {
    recorder.seen().await
}

/// The query before `&cache_buster=`.
fn query_head(seen: &Seen) -> &str {
    seen.query.split("&cache_buster=").next().unwrap()
}

/// Ids checked per call are refused before sending; ids at the limit go
/// out whole.
async fn app_id_arguments(h: &dyn Harness) {
    let (client, recorder) = h
        .client_replying(Reply::Text(200, "OK - fine application [x]"))
        .await;
    for app in bad_app_ids() {
        let err = client
            .status(Some(&app), ErrorPolicy::Raise)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidAppId { .. }), "{err:?}");
        let fallback = Status::parse("UNKNOWN - offline").unwrap();
        let got = client
            .status(Some(&app), ErrorPolicy::Fallback(fallback.clone()))
            .await
            .unwrap();
        assert_eq!(got, fallback);
    }
    assert!(
        seen(&*recorder).await.is_empty(),
        "nothing reaches the wire"
    );

    let longest = "é".repeat(MAX_APP_ID_LEN / 2);
    client
        .status(Some(&longest), ErrorPolicy::Raise)
        .await
        .unwrap();
    let requests = seen(&*recorder).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        query_head(&requests[0]),
        format!("0&appid={}", encode_component(&longest))
    );
}

/// Timeouts past `u32::MAX` ms are refused before sending, for every
/// command; sub-millisecond ones are rounded up on the wire.
async fn timeout_arguments(h: &dyn Harness) {
    let (client, recorder) = h.client_replying(Reply::Text(200, "1000")).await;
    let too_long = [
        Duration::from_millis(MAX_TIMEOUT_MS + 1),
        Duration::from_millis(MAX_TIMEOUT_MS) + Duration::from_nanos(1),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ];
    for timeout in too_long {
        for command in ["init", "ping", "done"] {
            let result = match command {
                "init" => client.init(timeout, ErrorPolicy::Raise).await.map(drop),
                "ping" => client.ping(timeout, ErrorPolicy::Raise).await.map(drop),
                _ => client.done(timeout, ErrorPolicy::Raise).await.map(drop),
            };
            match result.unwrap_err() {
                Error::InvalidTimeout { requested, max_ms } => {
                    assert_eq!((requested, max_ms), (timeout, MAX_TIMEOUT_MS), "{command}");
                }
                other => panic!("{command} {timeout:?}: expected InvalidTimeout, got {other:?}"),
            }
        }
        let got = client
            .ping(timeout, ErrorPolicy::Fallback(Duration::from_millis(7)))
            .await
            .unwrap();
        assert_eq!(got, Duration::from_millis(7));
    }
    assert!(
        seen(&*recorder).await.is_empty(),
        "nothing reaches the wire"
    );

    let on_the_wire = [
        (Duration::ZERO, "0"),
        (Duration::from_nanos(1), "1"),
        (Duration::from_nanos(999_999), "1"),
        (Duration::from_millis(1), "1"),
        (Duration::from_nanos(1_000_001), "2"),
        (Duration::from_micros(1_500), "2"),
        (
            Duration::from_millis(MAX_TIMEOUT_MS) - Duration::from_nanos(1),
            "4294967295",
        ),
        (Duration::from_millis(MAX_TIMEOUT_MS), "4294967295"),
    ];
    for (timeout, _) in on_the_wire {
        client.ping(timeout, ErrorPolicy::Raise).await.unwrap();
    }
    client
        .done(Duration::from_nanos(1), ErrorPolicy::Raise)
        .await
        .unwrap(); // any goodbye text
    let requests = seen(&*recorder).await;
    assert_eq!(requests.len(), on_the_wire.len() + 1);
    for (request, (timeout, ms)) in requests.iter().zip(on_the_wire) {
        assert_eq!(
            query_head(request),
            format!("{ms}&appid={APP_ENC}"),
            "{timeout:?}"
        );
    }
    assert_eq!(
        query_head(requests.last().unwrap()),
        format!("1&appid={APP_ENC}")
    );
}

/// Which call a bad reply is fed to.
#[derive(Debug, Clone, Copy)]
enum Call {
    Init,
    Ping,
    Done,
    List,
    Status,
    Get,
}

async fn call(client: &HeartbeatClient, call: Call) -> Result<String, Error> {
    let t = Duration::from_millis(1000);
    match call {
        Call::Init => client
            .init(t, ErrorPolicy::Raise)
            .await
            .map(|d| format!("{d:?}")),
        Call::Ping => client
            .ping(t, ErrorPolicy::Raise)
            .await
            .map(|d| format!("{d:?}")),
        Call::Done => client.done_now(ErrorPolicy::Raise).await,
        Call::List => client
            .list(ErrorPolicy::Raise)
            .await
            .map(|l| l.len().to_string()),
        Call::Status => client
            .status(None, ErrorPolicy::Raise)
            .await
            .map(|s| s.to_string()),
        Call::Get => client.get("/list", ErrorPolicy::Raise).await,
    }
}

/// Every kind of bad reply gets its typed error, the body kept for the user.
async fn bad_replies(h: &dyn Harness) {
    let parse_errors: &[(Call, &'static str, &str)] = &[
        (Call::Ping, "", "empty"),
        (Call::Ping, " \r\n\t", "empty"),
        (Call::Init, "", "empty"),
        (Call::Ping, "-1000", "non-negative"),
        (Call::Ping, "-0", "non-negative"),
        (Call::Init, "-1", "non-negative"),
        (Call::Ping, "+1000", "decimal"),
        (Call::Ping, "1e3", "decimal"),
        (Call::Ping, "3000ms", "decimal"),
        (Call::Ping, "0x10", "decimal"),
        (Call::Ping, "NaN", "decimal"),
        (Call::Ping, "3 000", "decimal"),
        (Call::Ping, "٣٠٠٠", "decimal"), // Arabic-Indic digits
        (Call::Ping, "99999999999999999999999", "64 bits"),
        (Call::Status, "", "empty"),
        (Call::Status, "| od=1", ""),
        (Call::Status, "OK | od=NaN", ""),
    ];
    for (call_kind, body, why) in parse_errors {
        let (client, _server) = h.client_replying(Reply::Text(200, body)).await;
        match call(&client, *call_kind).await {
            Err(Error::Parse {
                reason, body: kept, ..
            }) => {
                assert_eq!(&kept, body, "{call_kind:?}: the body is kept");
                assert!(
                    reason.contains(why),
                    "{call_kind:?} {body:?}: {reason:?} should mention {why:?}"
                );
            }
            other => panic!("{call_kind:?} {body:?}: expected a parse error, got {other:?}"),
        }
    }

    // not UTF-8: a parse error for every call that reads text
    for call_kind in [
        Call::Init,
        Call::Ping,
        Call::Done,
        Call::List,
        Call::Status,
        Call::Get,
    ] {
        let (client, _server) = h
            .client_replying(Reply::Bytes(b"3000\xff\xfe\xc3".to_vec()))
            .await;
        match call(&client, call_kind).await {
            Err(Error::Parse { reason, body, .. }) => {
                assert!(reason.contains("UTF-8"), "{call_kind:?}: {reason}");
                assert!(
                    body.starts_with("3000"),
                    "{call_kind:?}: lossy body kept: {body:?}"
                );
            }
            other => panic!("{call_kind:?}: expected a parse error, got {other:?}"),
        }
    }

    // done takes any goodbye, even none
    let (client, _server) = h.client_replying(Reply::Text(200, "")).await;
    assert_eq!(client.done_now(ErrorPolicy::Raise).await.unwrap(), "");

    // one byte over the 64 KiB default cap is a transport error of its own kind ...
    let cap = 64 * 1024;
    let (client, _server) = h.client_replying(Reply::Bytes(vec![b'1'; cap + 1])).await;
    let err = client
        .ping(Duration::from_secs(1), ErrorPolicy::Raise)
        .await
        .unwrap_err();
    let source = err.transport_error().unwrap_or_else(|| panic!("{err:?}"));
    assert!(source.is_body_too_large(), "{err:?}");
    assert!(!err.is_timeout() && !err.is_connect(), "{err:?}");
    let got = client
        .list(ErrorPolicy::Fallback(vec!["f".into()]))
        .await
        .unwrap();
    assert_eq!(got, ["f"]);
    // ... while a reply of exactly the cap is read whole
    let (client, _server) = h
        .client_replying(Reply::Bytes(b"a\n".repeat(cap / 2)))
        .await;
    assert_eq!(
        client.list(ErrorPolicy::Raise).await.unwrap().len(),
        cap / 2
    );
}

async fn bad_input(h: &dyn Harness) {
    app_id_arguments(h).await;
    timeout_arguments(h).await;
    bad_replies(h).await;
}

#[cfg(any(feature = "reqwest", feature = "surf"))]
mod http {
    use super::*;
    use common::raw_http::{http10, serve_head_then_drip};
    use std::time::Instant;

    /// A reply whose head arrives at once and whose body then drips one
    /// byte per second: the total request timeout must still fire.
    pub async fn dripped_replies_hit_the_total_timeout<T: Transport + 'static>(
        make: impl Fn() -> T,
    ) {
        let timeout = Duration::from_millis(1200);
        let pause = Duration::from_secs(1);
        let http11 =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\n".to_vec();
        let mut cases = Vec::new();
        for head in [http11, http10("")] {
            let url = serve_head_then_drip(head, b"3000".to_vec(), pause, 1);
            let client = HeartbeatClient::builder_with_transport(make())
                .url(url)
                .request_timeout(timeout)
                .build()
                .unwrap();
            cases.push(async move {
                let started = Instant::now();
                let result = client
                    .ping(Duration::from_secs(1), ErrorPolicy::Raise)
                    .await;
                (result, started.elapsed())
            });
        }
        for (result, took) in futures_join(cases).await {
            let err = result.unwrap_err();
            assert!(err.is_timeout(), "{err:?}");
            assert!(
                took >= timeout - Duration::from_millis(50),
                "fired early: {took:?}"
            );
            assert!(
                took < timeout + Duration::from_millis(800),
                "fired late: {took:?}"
            );
        }
    }

    /// Run the futures concurrently (they each wait out a timeout).
    async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.await.unwrap());
        }
        out
    }
}

#[cfg(feature = "reqwest")]
mod reqwest {
    use super::*;
    use common::wiremock_harness::WiremockHarness;
    use heartbeat_sdk::transport::ReqwestTransport;

    fn make() -> ReqwestTransport {
        ReqwestTransport::new().unwrap()
    }

    #[test]
    fn bad_configuration() {
        bad_configuration_is_refused(make);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_arguments_and_replies() {
        bad_input(&WiremockHarness(make)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dripped_replies() {
        http::dripped_replies_hit_the_total_timeout(make).await;
    }
}

#[cfg(feature = "surf")]
mod surf {
    use super::*;
    use common::wiremock_harness::WiremockHarness;
    use heartbeat_sdk::transport::SurfTransport;

    fn make() -> SurfTransport {
        SurfTransport::new().unwrap()
    }

    #[test]
    fn bad_configuration() {
        bad_configuration_is_refused(make);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_arguments_and_replies() {
        bad_input(&WiremockHarness(make)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dripped_replies() {
        http::dripped_replies_hit_the_total_timeout(make).await;
    }
}

#[cfg(feature = "mock")]
mod mock {
    use super::*;
    use common::mock_harness::MockHarness;
    use heartbeat_sdk::transport::MockTransport;

    #[test]
    fn bad_configuration() {
        bad_configuration_is_refused(MockTransport::new);
    }

    #[tokio::test]
    async fn bad_arguments_and_replies() {
        bad_input(&MockHarness).await;
    }
}

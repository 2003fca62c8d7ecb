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
use heartbeat_sdk::protocol::{
    encode_component, max_host_status_body, max_list_body, MAX_APP_ID_LEN, MAX_KEY_LEN,
    MAX_TIMEOUT_MS,
};
use heartbeat_sdk::{ClientBuilder, Error, ErrorPolicy, HeartbeatClient, State, Status, Transport};

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
        "next line\u{85}".to_owned(),
        // issue 10: ids that would forge perfdata or fake a line
        "kiosk| od=0.00;3;5;0;6 delay=86400000ms;;; ".to_owned(),
        "|".to_owned(),
        "a\u{2028}Tetris @ 10.0.0.5".to_owned(),
        "a\u{2029}b".to_owned(),
        "\u{202e}kcir".to_owned(),
        "a\u{202a}b".to_owned(),
        "\u{2066}x\u{2069}".to_owned(),
    ]
}

/// Ids that look odd but corrupt nothing: accepted, and sent whole.
fn odd_but_good_app_ids() -> Vec<String> {
    vec![
        "x".repeat(MAX_APP_ID_LEN),
        "é".repeat(MAX_APP_ID_LEN / 2),
        "a+b".to_owned(),
        "C++ [kiosk] ]7[".to_owned(),
        "zero\u{200b}width".to_owned(),
        "שלום".to_owned(),
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
    for app in odd_but_good_app_ids() {
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

    let good = odd_but_good_app_ids();
    for app in &good {
        client.status(Some(app), ErrorPolicy::Raise).await.unwrap();
    }
    let requests = seen(&*recorder).await;
    assert_eq!(requests.len(), good.len());
    for (request, app) in requests.iter().zip(&good) {
        assert_eq!(
            query_head(request),
            format!("0&appid={}", encode_component(app))
        );
    }
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

    // issue 10: the state word alone decides; perfdata that does not parse
    // is kept, not an error (an old server printing a forged id's perfdata)
    for (body, state) in [
        ("OK | od=NaN", State::Ok),
        (
            "CRITICAL - quite late application [kiosk| od=0.00;3;5;0;6 delay=86400000ms;;;  @ 127.0.0.1]| od=5.10;3;5;0;6 delay=3000ms;;; ",
            State::Critical,
        ),
        ("WARNING - x]| 'unterminated=1", State::Warning),
    ] {
        let (client, _server) = h.client_replying(Reply::Text(200, body)).await;
        let status = client.status(None, ErrorPolicy::Raise).await.unwrap();
        assert_eq!(status.state(), state, "{body}");
        assert!(!status.unparsed_perfdata().is_empty(), "{body}");
        assert_eq!(status.raw(), body);
    }

    // done takes any goodbye, even none
    let (client, _server) = h.client_replying(Reply::Text(200, "")).await;
    assert_eq!(client.done_now(ErrorPolicy::Raise).await.unwrap(), "");

    // one byte over the 64 KiB cap of the small replies (init, ping, done,
    // one app's status) is a transport error of its own kind ...
    let cap = 64 * 1024;
    let (client, _server) = h.client_replying(Reply::Bytes(vec![b'1'; cap + 1])).await;
    let err = client
        .ping(Duration::from_secs(1), ErrorPolicy::Raise)
        .await
        .unwrap_err();
    assert!(is_body_too_large(&err), "{err:?}");
    assert!(!err.is_timeout() && !err.is_connect(), "{err:?}");
    for result in [
        client
            .init(Duration::ZERO, ErrorPolicy::Raise)
            .await
            .map(drop),
        client.done_now(ErrorPolicy::Raise).await.map(drop),
        client.status(Some("x"), ErrorPolicy::Raise).await.map(drop),
    ] {
        assert!(result.as_ref().is_err_and(is_body_too_large), "{result:?}");
    }
    let got = client
        .done_now(ErrorPolicy::Fallback("f".into()))
        .await
        .unwrap();
    assert_eq!(got, "f");
    // ... while a reply of exactly the cap is read whole
    let (client, _server) = h.client_replying(Reply::Bytes(vec![b'1'; cap])).await;
    assert_eq!(
        client.done_now(ErrorPolicy::Raise).await.unwrap().len(),
        cap
    );
}

fn is_body_too_large(err: &Error) -> bool {
    err.transport_error()
        .is_some_and(heartbeat_sdk::TransportError::is_body_too_large)
}

/// 5 000 apps with 200-byte ids: `/list` is 1.1 MB and the host status
/// 1.1 MB, 17 times the old 64 KiB cap.
const MANY: usize = 5_000;

fn many_keys() -> Vec<String> {
    (0..MANY)
        .map(|i| format!("{i:05}-{} @ 127.0.0.1", "k".repeat(194)))
        .collect()
}

/// Issue 10: `list` and the host `status` grow with the registry, and are
/// read whole far past 64 KiB (their caps are sized for
/// `protocol::MAX_APPS` apps); a reply one byte over a call's own cap is
/// still refused, for every transport.
async fn replies_that_grow_with_the_registry(h: &dyn Harness) {
    let keys = many_keys();
    let list: String = keys.iter().map(|k| format!("{k}\n")).collect();
    assert!(list.len() > 16 * 64 * 1024, "{}", list.len());
    let (client, _server) = h
        .client_replying(Reply::Bytes(list.clone().into_bytes()))
        .await;
    assert_eq!(client.list(ErrorPolicy::Raise).await.unwrap(), keys);
    assert_eq!(client.get("/list", ErrorPolicy::Raise).await.unwrap(), list);

    let host = format!(
        "WARNING - multiple ({MANY}) applications: [{}]",
        keys.join(",")
    );
    assert!(host.len() > 16 * 64 * 1024, "{}", host.len());
    let (client, _server) = h
        .client_replying(Reply::Bytes(host.clone().into_bytes()))
        .await;
    let status = client.status(None, ErrorPolicy::Raise).await.unwrap();
    assert_eq!(status.state(), State::Warning);
    assert_eq!(status.app(), Some(keys.join(",").as_str()));
    assert_eq!(status.raw(), host);
    // one application's status cannot be that long: its cap stays small
    let err = client
        .status(Some("x"), ErrorPolicy::Raise)
        .await
        .unwrap_err();
    assert!(is_body_too_large(&err), "{err:?}");

    // the caps are per call, from the documented constants: with max_apps
    // 10, a list of 10 longest lines is read, one byte more is refused
    fn ten(builder: ClientBuilder) -> ClientBuilder {
        builder.max_apps(10)
    }
    let list_cap = max_list_body(10);
    let status_cap = max_host_status_body(10);
    assert_eq!(list_cap, 10 * (MAX_KEY_LEN + 1));
    assert_eq!(list_cap % 2, 0);
    let (client, _server) = h
        .client_replying_with(Reply::Bytes(b"a\n".repeat(list_cap / 2)), ten)
        .await;
    assert_eq!(
        client.list(ErrorPolicy::Raise).await.unwrap().len(),
        list_cap / 2
    );
    let mut over = b"a\n".repeat(list_cap / 2);
    over.push(b'b');
    let (client, _server) = h.client_replying_with(Reply::Bytes(over), ten).await;
    let err = client.list(ErrorPolicy::Raise).await.unwrap_err();
    assert!(is_body_too_large(&err), "{err:?}");

    let exact = format!("OK {}", "x".repeat(status_cap - 3)).into_bytes();
    let (client, _server) = h.client_replying_with(Reply::Bytes(exact), ten).await;
    let status = client.status(None, ErrorPolicy::Raise).await.unwrap();
    assert_eq!(
        (status.state(), status.raw().len()),
        (State::Ok, status_cap)
    );
    let over = format!("OK {}", "x".repeat(status_cap - 2)).into_bytes();
    let (client, _server) = h.client_replying_with(Reply::Bytes(over), ten).await;
    let result = client.status(None, ErrorPolicy::Raise).await;
    assert!(
        result.as_ref().is_err_and(is_body_too_large),
        "{:?}",
        result.map(drop)
    );
    let got = client
        .status(
            None,
            ErrorPolicy::Fallback(Status::parse("UNKNOWN - f").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(got.state(), State::Unknown);
    // a raw get or post may ask for anything: the larger of the two caps
    let raw_cap = status_cap.max(64 * 1024);
    let (client, _server) = h
        .client_replying_with(Reply::Bytes(vec![b'g'; raw_cap]), ten)
        .await;
    assert_eq!(
        client.get("/x", ErrorPolicy::Raise).await.unwrap().len(),
        raw_cap
    );
    let (client, _server) = h
        .client_replying_with(Reply::Bytes(vec![b'g'; raw_cap + 1]), ten)
        .await;
    let result = client.get("/x", ErrorPolicy::Raise).await;
    assert!(
        result.as_ref().is_err_and(is_body_too_large),
        "{:?}",
        result.map(drop)
    );
    let result = client.post("/x", "a=b", ErrorPolicy::Raise).await;
    assert!(
        result.as_ref().is_err_and(is_body_too_large),
        "{:?}",
        result.map(drop)
    );
}

async fn bad_input(h: &dyn Harness) {
    app_id_arguments(h).await;
    timeout_arguments(h).await;
    bad_replies(h).await;
    replies_that_grow_with_the_registry(h).await;
}

#[cfg(any(feature = "reqwest", feature = "surf"))]
mod http {
    use super::*;
    use common::raw_http::{http10, serve_head_then_drip};
    use std::time::Instant;

    /// A reply whose head arrives at once and whose body then drips one
    /// byte a second: the 3 s total request timeout must still fire. A
    /// per-read timeout of 3 s never would (each byte comes a second after
    /// the last), and the whole 20-byte body takes 20 s: the call must fail
    /// with a timeout, not before the timeout, and well before the body
    /// could have been complete (wide margins, no tight window).
    pub async fn dripped_replies_hit_the_total_timeout<T: Transport + 'static>(
        make: impl Fn() -> T,
    ) {
        let timeout = Duration::from_secs(3);
        let pause = Duration::from_secs(1);
        let body = b"00000000000000003000";
        let http11 = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        let mut cases = Vec::new();
        for head in [http11, http10("")] {
            let url = serve_head_then_drip(head, body.to_vec(), pause, 1);
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
            // `started` is taken before the call starts its clock
            assert!(took >= timeout, "fired early: {took:?}");
            assert!(
                took < Duration::from_secs(15),
                "fired late (the body takes 20 s): {took:?}"
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
    use heartbeat_sdk::testing::MockTransport;

    #[test]
    fn bad_configuration() {
        bad_configuration_is_refused(MockTransport::new);
    }

    #[tokio::test]
    async fn bad_arguments_and_replies() {
        bad_input(&MockHarness).await;
    }
}

/// Issue 10: every call puts its own body cap on its request, computed
/// from the documented constants (the mock records the requests).
#[cfg(feature = "mock")]
#[tokio::test]
async fn each_call_carries_its_own_body_cap() {
    use heartbeat_sdk::protocol::{MAX_APPS, MAX_HOST_STATUS_BODY, MAX_LIST_BODY, STATUS_OVERHEAD};
    use heartbeat_sdk::testing::MockTransport;
    use heartbeat_sdk::transport::DEFAULT_BODY_LIMIT;

    assert_eq!(
        MAX_APPS,
        heartbeat_sdk::server::RegistryConfig::default().max_apps
    );
    assert_eq!(MAX_LIST_BODY, MAX_APPS * (MAX_KEY_LEN + 1));
    assert_eq!(MAX_HOST_STATUS_BODY, MAX_LIST_BODY + STATUS_OVERHEAD);
    assert_eq!(MAX_KEY_LEN, MAX_APP_ID_LEN + " @ ".len() + 45);

    async fn caps(client: &HeartbeatClient, mock: &MockTransport) -> Vec<usize> {
        let t = Duration::from_millis(100);
        client.init(t, ErrorPolicy::Raise).await.unwrap();
        client.ping(t, ErrorPolicy::Raise).await.unwrap();
        client.status(Some("x"), ErrorPolicy::Raise).await.unwrap();
        client.list(ErrorPolicy::Raise).await.unwrap();
        client.status(None, ErrorPolicy::Raise).await.unwrap();
        client.get("/list", ErrorPolicy::Raise).await.unwrap();
        client.post("/list", "", ErrorPolicy::Raise).await.unwrap();
        client.done_now(ErrorPolicy::Raise).await.unwrap();
        let caps = mock.requests().iter().map(|r| r.body_limit()).collect();
        mock.clear_requests();
        caps
    }

    let mock = MockTransport::new();
    let client = HeartbeatClient::builder_with_transport(mock.clone())
        .build()
        .unwrap();
    let small = DEFAULT_BODY_LIMIT;
    let (list, host) = (MAX_LIST_BODY, MAX_HOST_STATUS_BODY);
    assert_eq!(
        caps(&client, &mock).await,
        [small, small, small, list, host, host, host, small]
    );

    let client = HeartbeatClient::builder_with_transport(mock.clone())
        .body_limit(100)
        .max_apps(1_000_000)
        .build()
        .unwrap();
    let (list, host) = (max_list_body(1_000_000), max_host_status_body(1_000_000));
    assert_eq!(list, 1_000_000 * (MAX_KEY_LEN + 1));
    assert_eq!(
        caps(&client, &mock).await,
        [100, 100, 100, list, host, host, host, 100]
    );
}

/// Issue 10: the embedded server with many apps, read whole by the real
/// client over every transport: `list` names them all, the host status is
/// the WARNING line with every key.
#[cfg(any(feature = "server", feature = "mock"))]
mod big_registry {
    use super::*;
    use heartbeat_sdk::server::SharedRegistry;
    #[cfg(all(feature = "server", any(feature = "reqwest", feature = "surf")))]
    use heartbeat_sdk::server::{Server, ServerHandle};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Instant;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// 5 000 apps with 100-byte ids: `/list` and the host status are about
    /// 570 KB each, 9 times the old 64 KiB cap.
    const MANY: usize = 5_000;
    /// The embedded server's default cap.
    const ALL: usize = heartbeat_sdk::protocol::MAX_APPS;

    fn id(i: usize, len: usize) -> String {
        let head = format!("kiosk-{i:06}-");
        format!("{head}{}", "x".repeat(len - head.len()))
    }

    fn fill(registry: &SharedRegistry, apps: usize, id_len: usize) {
        registry.with_registry(|r, now| {
            for i in 0..apps {
                r.init(&id(i, id_len), LOCAL, Duration::from_secs(3600), now)
                    .unwrap();
            }
            r.take_events();
        });
    }

    #[cfg(all(feature = "server", any(feature = "reqwest", feature = "surf")))]
    async fn server_with(apps: usize, id_len: usize) -> ServerHandle {
        let server = Server::builder("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        fill(server.registry(), apps, id_len);
        server
    }

    async fn reads_them_all(client: &HeartbeatClient, apps: usize, id_len: usize) {
        let started = Instant::now();
        let list = client.list(ErrorPolicy::Raise).await.unwrap();
        assert_eq!(list.len(), apps);
        for i in [0, apps / 2, apps - 1] {
            assert_eq!(list[i], format!("{} @ 127.0.0.1", id(i, id_len)));
        }
        let bytes: usize = list.iter().map(|k| k.len() + 1).sum();
        let status = client.status(None, ErrorPolicy::Raise).await.unwrap();
        assert_eq!(status.state(), State::Warning);
        assert_eq!(status.state().exit_code(), 1);
        assert!(status
            .message()
            .starts_with(&format!("WARNING - multiple ({apps}) applications: [")));
        assert_eq!(status.app().unwrap().split(',').count(), apps);
        println!(
            "{apps} apps: list {bytes} bytes and host status {} bytes read in {:?}",
            status.raw().len(),
            started.elapsed()
        );
        assert!(bytes > 8 * 64 * 1024 || apps < MANY, "{bytes}");
    }

    #[cfg(all(feature = "server", any(feature = "reqwest", feature = "surf")))]
    async fn over_http(transport: impl Transport + 'static, apps: usize, id_len: usize) {
        let server = server_with(apps, id_len).await;
        let client = HeartbeatClient::builder_with_transport(transport)
            .url(server.url())
            .request_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        reads_them_all(&client, apps, id_len).await;
        server.shutdown().await;
    }

    #[cfg(feature = "mock")]
    async fn over_the_mock(apps: usize, id_len: usize) {
        let mock = heartbeat_sdk::testing::MockTransport::new();
        fill(mock.registry(), apps, id_len);
        let client = HeartbeatClient::builder_with_transport(mock)
            .build()
            .unwrap();
        reads_them_all(&client, apps, id_len).await;
    }

    #[cfg(all(feature = "server", feature = "reqwest"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reqwest_reads_5000_apps() {
        over_http(
            heartbeat_sdk::transport::ReqwestTransport::new().unwrap(),
            MANY,
            100,
        )
        .await;
    }

    #[cfg(all(feature = "server", feature = "surf"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn surf_reads_5000_apps() {
        over_http(
            heartbeat_sdk::transport::SurfTransport::new().unwrap(),
            MANY,
            100,
        )
        .await;
    }

    #[cfg(feature = "mock")]
    #[tokio::test]
    async fn mock_reads_5000_apps() {
        over_the_mock(MANY, 100).await;
    }

    /// The server at its own default limit: 100 000 apps with 40-byte ids.
    #[cfg(all(feature = "server", feature = "reqwest"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reqwest_reads_100_000_apps() {
        over_http(
            heartbeat_sdk::transport::ReqwestTransport::new().unwrap(),
            ALL,
            40,
        )
        .await;
    }

    #[cfg(all(feature = "server", feature = "surf"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn surf_reads_100_000_apps() {
        over_http(
            heartbeat_sdk::transport::SurfTransport::new().unwrap(),
            ALL,
            40,
        )
        .await;
    }

    #[cfg(feature = "mock")]
    #[tokio::test]
    async fn mock_reads_100_000_apps() {
        over_the_mock(ALL, 40).await;
    }
}

/// Issue 13: the deadline and the body cap are enforced above the
/// transports, so a transport that enforces neither (here a closure) is
/// still held to both, with the per-call caps of issue 10.
mod enforced_above_the_transport {
    use super::*;
    use heartbeat_sdk::transport::{self, HttpResponse};

    /// A transport that never answers ends at the request's deadline, as a
    /// timeout, on the paused clock (exactly at the deadline). Needs tokio's
    /// timer in the library (see `transport` module docs for other builds).
    #[cfg(any(feature = "reqwest", feature = "keepalive", feature = "server"))]
    #[tokio::test(start_paused = true)]
    async fn a_transport_that_never_answers_times_out_at_the_deadline() {
        let silent = transport::from_fn(|_| {
            std::future::pending::<Result<HttpResponse, heartbeat_sdk::TransportError>>()
        });
        let client = HeartbeatClient::builder_with_transport(silent)
            .request_timeout(Duration::from_millis(700))
            .build()
            .unwrap();
        let started = tokio::time::Instant::now();
        // the guard only turns a hang into a failure
        let err = tokio::time::timeout(
            Duration::from_secs(60),
            client.ping(Duration::from_secs(1), ErrorPolicy::Raise),
        )
        .await
        .expect("the client must end the request at its deadline")
        .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(700));
    }

    /// A transport that returns more than the cap is refused, per call:
    /// `list` carries a cap of its own, far above the small one.
    #[tokio::test]
    async fn an_oversized_body_from_any_transport_is_too_large() {
        let body = "x\n".repeat(500); // 1000 bytes
        let big = transport::from_fn(move |_| {
            std::future::ready(Ok(HttpResponse::new(200, body.clone())))
        });
        let client = HeartbeatClient::builder_with_transport(big)
            .body_limit(999)
            .build()
            .unwrap();
        let err = client
            .ping(Duration::from_secs(1), ErrorPolicy::Raise)
            .await
            .unwrap_err();
        assert!(is_body_too_large(&err), "{err:?}");
        let list = client.list(ErrorPolicy::Raise).await.unwrap();
        assert_eq!(list.len(), 500);
    }

    /// The mock no longer checks the cap itself: the client does.
    #[cfg(feature = "mock")]
    #[tokio::test]
    async fn a_scripted_mock_reply_over_the_cap_is_too_large() {
        use heartbeat_sdk::testing::{MockFailure, MockTransport};
        let mock = MockTransport::new();
        let client = HeartbeatClient::builder_with_transport(mock.clone())
            .body_limit(4)
            .build()
            .unwrap();
        mock.fail_next(1, MockFailure::body("30000"));
        let err = client
            .ping(Duration::from_secs(1), ErrorPolicy::Raise)
            .await
            .unwrap_err();
        assert!(is_body_too_large(&err), "{err:?}");
        mock.fail_next(1, MockFailure::body("3000"));
        let granted = client
            .ping(Duration::from_secs(1), ErrorPolicy::Raise)
            .await
            .unwrap();
        assert_eq!(granted, Duration::from_millis(3000));
    }
}

/// A hostile server's error body is kept as a bounded excerpt, not whole:
/// a 500 or an unparsable 200 of 3 MiB costs the caller about 1 KiB in the
/// error, and the error says how much there was.
#[tokio::test]
async fn error_bodies_are_kept_as_a_bounded_excerpt() {
    use heartbeat_sdk::protocol::MAX_EXCERPT;
    use heartbeat_sdk::transport::{self, HttpResponse};
    let huge = vec![0xffu8; 3 << 20];
    for status in [500u16, 200] {
        let body = huge.clone();
        let server = transport::from_fn(move |_| {
            std::future::ready(Ok(HttpResponse::new(status, body.clone())))
        });
        let client = HeartbeatClient::builder_with_transport(server)
            .body_limit(4 << 20)
            .build()
            .unwrap();
        let err = client
            .ping(Duration::from_secs(1), ErrorPolicy::Raise)
            .await
            .unwrap_err();
        let body = match &err {
            heartbeat_sdk::Error::Status { body, .. }
            | heartbeat_sdk::Error::Parse { body, .. } => body,
            other => panic!("{status}: {other:?}"),
        };
        // each invalid byte decodes to U+FFFD (3 bytes): at most 3 KiB and the note
        assert!(
            body.len() <= 3 * MAX_EXCERPT + 40,
            "{status}: {}",
            body.len()
        );
        assert!(
            body.ends_with(&format!("({} bytes in all)", 3 << 20)),
            "{status}"
        );
        assert!(err.to_string().len() < 16 * MAX_EXCERPT, "{status}");
    }
}

//! Shared test harness: one conformance scenario, run for every transport.
//!
//! A [`Harness`] sets up "the next request gets this reply" for one
//! transport (wiremock for the HTTP backends, scripting for the mock
//! transport) and reports what reached the server, so the same assertions
//! hold for all of them.
#![allow(dead_code)]

use std::time::Duration;

use async_trait::async_trait;
use heartbeat_sdk::{ClientBuilder, Error, ErrorPolicy, HeartbeatClient, State};

#[cfg(feature = "mock")]
pub mod mock_harness;
pub mod raw_http;
#[path = "../support/refusing.rs"]
pub mod refusing;
pub mod wiremock_harness;

/// What the server does with the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer this status and body.
    Text(u16, &'static str),
    /// Answer these raw body bytes with 200.
    Bytes(Vec<u8>),
    /// Nothing listens at the address.
    Refused,
    /// Answer only after the client's timeout.
    Slow,
    /// Answer this 3xx status with `Location: location` and an empty body
    /// (the mock transport, which has no headers, answers the bare status).
    Redirect(u16, String),
}

/// A request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub form: Option<String>,
    pub content_type: Option<String>,
}

/// The client's request timeout in the scenario; `Reply::Slow` must exceed it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(1000);

/// How one transport is driven by the scenario.
///
/// Keep the returned [`Recorder`] alive while the client is used: it owns
/// the server (wiremock hands a dropped `MockServer` to the next test).
#[async_trait]
pub trait Harness: Send + Sync {
    /// A client (app id `APP`) whose requests all get `reply`.
    async fn client_replying(&self, reply: Reply) -> (HeartbeatClient, Box<dyn Recorder>) {
        self.client_replying_with(reply, |builder| builder).await
    }

    /// The same, its builder passed through `configure` before `build()`.
    async fn client_replying_with(
        &self,
        reply: Reply,
        configure: fn(ClientBuilder) -> ClientBuilder,
    ) -> (HeartbeatClient, Box<dyn Recorder>);
}

/// What reached the server.
#[async_trait]
pub trait Recorder: Send + Sync {
    async fn seen(&self) -> Vec<Seen>;
}

pub const APP: &str = "app id&x=1?#%+Zürich";
pub const APP_ENC: &str = "app%20id%26x%3D1%3F%23%25%2BZ%C3%BCrich";

const OK_LINE: &str = "OK - fine application [ID]| od=0.52;3;5;0;6 delay=3000ms;;; ";
const WARNING_LINE: &str =
    "WARNING - somewhat late application [ID]| od=3.10;3;5;0;6 delay=3000ms;;; ";
const CRITICAL_LINE: &str =
    "CRITICAL - quite late application [ID]| od=5.07;3;5;0;6 delay=3000ms;;; ";
const MISSING_LINE: &str = "CRITICAL - no application record for queried ID: [ID]";
const NONE_LINE: &str = "UNKNOWN - no heartbeat clients at the moment...";
const MANY_LINE: &str = "WARNING - multiple (3) applications: [A,B,C]";
const GOODBYE: &str = "So Long, and Thanks for All the Fish!";

/// Split a `cache_buster=...` off the end of a query, checking it is non-empty.
fn strip_buster(query: &str) -> (String, String) {
    let (head, buster) = query
        .rsplit_once("cache_buster=")
        .unwrap_or_else(|| panic!("no cache_buster in {query:?}"));
    assert!(!buster.is_empty(), "empty cache_buster in {query:?}");
    (head.trim_end_matches('&').to_owned(), buster.to_owned())
}

async fn one_request(recorder: &dyn Recorder) -> (Seen, String) {
    let seen = recorder.seen().await;
    assert_eq!(seen.len(), 1, "expected exactly one request, got {seen:?}");
    let seen = seen.into_iter().next().unwrap();
    let (query, buster) = strip_buster(&seen.query);
    (Seen { query, ..seen }, buster)
}

fn expect(seen: &Seen, method: &str, path: &str, query: &str, form: Option<&str>) {
    assert_eq!(seen.method, method, "{seen:?}");
    assert_eq!(seen.path, path, "{seen:?}");
    assert_eq!(seen.query, query, "{seen:?}");
    assert_eq!(seen.form.as_deref(), form, "{seen:?}");
    if form.is_some() {
        assert_eq!(
            seen.content_type.as_deref(),
            Some("application/x-www-form-urlencoded"),
            "{seen:?}"
        );
    }
}

/// The conformance scenario: every command's request on the wire and reply
/// parsed, then every failure under both policies.
pub async fn scenario(h: &dyn Harness) {
    commands_go_out_as_the_protocol_says(h).await;
    replies_are_parsed(h).await;
    failures_are_typed_and_fallbacks_returned(h).await;
    redirects_are_never_followed(h).await;
    cache_busters_differ(h).await;
}

/// Issue 10: a redirect would carry the app id (query and form) to any
/// origin the server names, and its reply would be taken for the server's.
/// Every transport returns the 3xx as it is, an `Error::Status`, for the
/// `POST`s (init, done) and the `GET`s (ping, list, status) alike, and the
/// other origin receives nothing.
async fn redirects_are_never_followed(h: &dyn Harness) {
    use wiremock::{matchers::any, Mock, MockServer, ResponseTemplate};

    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("86400000"))
        .mount(&elsewhere)
        .await;
    for status in [301, 302, 303, 307, 308] {
        let location = format!("{}/stolen?x=1", elsewhere.uri());
        let (client, rec) = h
            .client_replying(Reply::Redirect(status, location.clone()))
            .await;
        let t = Duration::from_millis(500);
        let results = [
            ("init", client.init(t, ErrorPolicy::Raise).await.map(drop)),
            ("ping", client.ping(t, ErrorPolicy::Raise).await.map(drop)),
            ("done", client.done_now(ErrorPolicy::Raise).await.map(drop)),
            ("list", client.list(ErrorPolicy::Raise).await.map(drop)),
            (
                "status",
                client.status(None, ErrorPolicy::Raise).await.map(drop),
            ),
        ];
        for (call, result) in results {
            match result {
                Err(Error::Status { status: got, .. }) => assert_eq!(got, status, "{call}"),
                other => panic!("{status} to {call}: expected Error::Status, got {other:?}"),
            }
        }
        let fallback = Duration::from_millis(7);
        let got = client
            .init(t, ErrorPolicy::Fallback(fallback))
            .await
            .unwrap();
        assert_eq!(got, fallback, "{status}");
        assert_eq!(rec.seen().await.len(), 6, "{status}: each call sent once");
    }
    let stolen = elsewhere.received_requests().await.unwrap_or_default();
    assert!(
        stolen.is_empty(),
        "the redirect target received {} requests, e.g. {:?}",
        stolen.len(),
        stolen.first().map(|r| r.url.as_str())
    );
}

async fn commands_go_out_as_the_protocol_says(h: &dyn Harness) {
    let form = format!("appid={APP_ENC}");

    let (client, rec) = h.client_replying(Reply::Text(200, "1500")).await;
    let granted = client
        .init(Duration::from_millis(500), ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(granted, Duration::from_millis(1500));
    let (seen, _) = one_request(&*rec).await;
    expect(
        &seen,
        "POST",
        "/hb_init",
        &format!("500&appid={APP_ENC}"),
        Some(&form),
    );

    let (client, rec) = h.client_replying(Reply::Text(200, "2000")).await;
    let granted = client
        .ping(Duration::from_millis(1000), ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(granted, Duration::from_millis(2000));
    let (seen, _) = one_request(&*rec).await;
    expect(
        &seen,
        "GET",
        "/hb_ping",
        &format!("1000&appid={APP_ENC}"),
        None,
    );

    let (client, rec) = h.client_replying(Reply::Text(200, GOODBYE)).await;
    let bye = client
        .done(Duration::from_millis(2), ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(bye, GOODBYE);
    let (seen, _) = one_request(&*rec).await;
    expect(
        &seen,
        "POST",
        "/hb_done",
        &format!("2&appid={APP_ENC}"),
        Some(&form),
    );

    let (client, rec) = h.client_replying(Reply::Text(200, GOODBYE)).await;
    client.done_now(ErrorPolicy::Raise).await.unwrap();
    let (seen, _) = one_request(&*rec).await;
    expect(
        &seen,
        "POST",
        "/hb_done",
        &format!("0&appid={APP_ENC}"),
        Some(&form),
    );

    let (client, rec) = h.client_replying(Reply::Text(200, "")).await;
    assert!(client.list(ErrorPolicy::Raise).await.unwrap().is_empty());
    let (seen, _) = one_request(&*rec).await;
    expect(&seen, "GET", "/list", "0", None);

    let (client, rec) = h.client_replying(Reply::Text(200, NONE_LINE)).await;
    client.status(None, ErrorPolicy::Raise).await.unwrap();
    let (seen, _) = one_request(&*rec).await;
    expect(&seen, "GET", "/status", "0", None);

    let (client, rec) = h.client_replying(Reply::Text(200, OK_LINE)).await;
    client
        .status(Some("other app"), ErrorPolicy::Raise)
        .await
        .unwrap();
    let (seen, _) = one_request(&*rec).await;
    expect(&seen, "GET", "/status", "0&appid=other%20app", None);

    let (client, rec) = h.client_replying(Reply::Text(200, "raw")).await;
    assert_eq!(
        client.get("/list", ErrorPolicy::Raise).await.unwrap(),
        "raw"
    );
    let (seen, _) = one_request(&*rec).await;
    expect(&seen, "GET", "/list", "", None);

    let (client, rec) = h.client_replying(Reply::Text(200, GOODBYE)).await;
    let reply = client
        .post("/hb_done?0&appid=x", "appid=x", ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(reply, GOODBYE);
    let (seen, _) = one_request(&*rec).await;
    expect(&seen, "POST", "/hb_done", "0&appid=x", Some("appid=x"));
}

async fn replies_are_parsed(h: &dyn Harness) {
    for (body, expected) in [
        ("", vec![]),
        ("Tetris @ 127.0.0.1\n", vec!["Tetris @ 127.0.0.1"]),
        (
            "A @ 127.0.0.1\nB @ 127.0.0.1\nC @ 10.0.0.2\n",
            vec!["A @ 127.0.0.1", "B @ 127.0.0.1", "C @ 10.0.0.2"],
        ),
    ] {
        let (client, _server) = h.client_replying(Reply::Text(200, body)).await;
        assert_eq!(client.list(ErrorPolicy::Raise).await.unwrap(), expected);
    }
    for (line, state, od) in [
        (OK_LINE, State::Ok, Some(0.52)),
        (WARNING_LINE, State::Warning, Some(3.10)),
        (CRITICAL_LINE, State::Critical, Some(5.07)),
        (MISSING_LINE, State::Critical, None),
        (NONE_LINE, State::Unknown, None),
        (MANY_LINE, State::Warning, None),
    ] {
        let (client, _server) = h.client_replying(Reply::Text(200, line)).await;
        let status = client.status(Some("ID"), ErrorPolicy::Raise).await.unwrap();
        assert_eq!(status.state(), state, "{line}");
        assert_eq!(status.overdue_ratio(), od, "{line}");
        assert_eq!(
            status.to_string(),
            line,
            "Display must give the line back byte for byte"
        );
    }
}

/// Run `ping` against `reply` under both policies and return the raised error.
async fn ping_fails(h: &dyn Harness, reply: Reply) -> Error {
    let (client, _server) = h.client_replying(reply.clone()).await;
    let fallback = Duration::from_millis(4242);
    let got = client
        .ping(Duration::from_millis(1000), ErrorPolicy::Fallback(fallback))
        .await
        .unwrap_or_else(|e| panic!("fallback policy must not raise ({reply:?}): {e}"));
    assert_eq!(got, fallback, "{reply:?}");
    client
        .ping(Duration::from_millis(1000), ErrorPolicy::Raise)
        .await
        .expect_err("raise policy must raise")
}

async fn failures_are_typed_and_fallbacks_returned(h: &dyn Harness) {
    let err = ping_fails(h, Reply::Refused).await;
    assert!(err.is_connect(), "nothing listening: {err:?}");
    assert!(!err.is_timeout(), "{err:?}");

    let err = ping_fails(h, Reply::Slow).await;
    assert!(err.is_timeout(), "slow reply: {err:?}");

    let err = ping_fails(h, Reply::Text(500, "boom")).await;
    assert!(
        matches!(&err, Error::Status { status: 500, body, .. } if body == "boom"),
        "{err:?}"
    );

    let err = ping_fails(
        h,
        Reply::Text(400, "ERROR: cannot process your request: [/x]"),
    )
    .await;
    assert!(matches!(&err, Error::Status { status: 400, .. }), "{err:?}");

    let err = ping_fails(h, Reply::Text(200, "<html>not a number</html>")).await;
    assert!(
        matches!(&err, Error::Parse { body, .. } if body == "<html>not a number</html>"),
        "{err:?}"
    );

    let err = ping_fails(h, Reply::Bytes(vec![0xff, 0xfe, b'1'])).await;
    assert!(matches!(&err, Error::Parse { .. }), "{err:?}");

    // the other calls honour their fallbacks too
    let (client, _server) = h.client_replying(Reply::Text(500, "boom")).await;
    let policy = ErrorPolicy::Fallback(vec!["fallback".to_owned()]);
    assert_eq!(client.list(policy).await.unwrap(), ["fallback"]);
    let bye = client
        .done_now(ErrorPolicy::Fallback("no".into()))
        .await
        .unwrap();
    assert_eq!(bye, "no");
    let fallback = heartbeat_sdk::Status::parse("UNKNOWN - offline").unwrap();
    let status = client
        .status(None, ErrorPolicy::Fallback(fallback.clone()))
        .await
        .unwrap();
    assert_eq!(status, fallback);
    assert!(client.get("/x", ErrorPolicy::Raise).await.is_err());
    assert_eq!(
        client
            .get("/x", ErrorPolicy::Fallback("f".into()))
            .await
            .unwrap(),
        "f"
    );
    assert_eq!(
        client
            .post("/x", "a=b", ErrorPolicy::Fallback("f".into()))
            .await
            .unwrap(),
        "f"
    );
}

async fn cache_busters_differ(h: &dyn Harness) {
    let (client, rec) = h.client_replying(Reply::Text(200, "1000")).await;
    for _ in 0..20 {
        client
            .ping(Duration::ZERO, ErrorPolicy::Raise)
            .await
            .unwrap();
    }
    let busters: std::collections::HashSet<String> = rec
        .seen()
        .await
        .iter()
        .map(|s| strip_buster(&s.query).1)
        .collect();
    assert_eq!(busters.len(), 20);
}

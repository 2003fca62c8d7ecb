//! Wire-level behaviour every HTTP transport must share: HTTP/1.0
//! close-delimited replies (how the reference server answers), the body
//! cap, a reply dripped slower than the timeout, and exact raw queries.

mod common;

use std::time::Duration;

use common::raw_http::{http10, serve_dripping, serve_raw};
use heartbeat_sdk::transport::{HttpRequest, Method, Transport};
use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient, State};
use wiremock::{Match, Mock, MockServer, ResponseTemplate};

/// Matches the raw query before `&cache_buster=`: `query_param` cannot tell
/// `?1000` from `?1000=`, this can.
struct RawQuery(&'static str);

impl Match for RawQuery {
    fn matches(&self, request: &wiremock::Request) -> bool {
        request
            .url
            .query()
            .and_then(|q| q.split_once("&cache_buster="))
            .is_some_and(|(head, buster)| head == self.0 && !buster.is_empty())
    }
}

async fn reads_http10_close_delimited_replies(transport: impl Transport + 'static) {
    let status = "OK - fine application [x @ 127.0.0.1]| od=0.52;3;5;0;6 delay=3000ms;;; ";
    let url = serve_raw(http10("3000"), 1);
    let client = HeartbeatClient::builder_with_transport(transport).url(url).build().unwrap();
    let granted = client.ping(Duration::from_secs(2), ErrorPolicy::Raise).await.unwrap();
    assert_eq!(granted, Duration::from_millis(3000));

    let url = serve_raw(http10(status), 1);
    let client = client_at(&client, url);
    let got = client.status(Some("x"), ErrorPolicy::Raise).await.unwrap();
    assert_eq!(got.state(), State::Ok);
    assert_eq!(got.to_string(), status);
}

fn client_at(like: &HeartbeatClient, url: String) -> HeartbeatClient {
    let _ = like;
    HeartbeatClient::builder_with_transport(default_like())
        .url(url)
        .build()
        .unwrap()
}

#[cfg(feature = "reqwest")]
fn default_like() -> heartbeat_sdk::transport::ReqwestTransport {
    heartbeat_sdk::transport::ReqwestTransport::new().unwrap()
}

async fn caps_the_body(transport: impl Transport + 'static) {
    let big = format!("HTTP/1.0 200 OK\r\n\r\n{}", "9".repeat(100_000)).into_bytes();
    let url = serve_raw(big, 2);
    let request = HttpRequest {
        method: Method::Get,
        url: format!("{url}/hb_ping?1&appid=x"),
        form: None,
        timeout: Duration::from_secs(2),
        body_limit: 1024,
    };
    let err = transport.send(request.clone()).await.unwrap_err();
    assert!(err.is_body_too_large(), "{err:?}");
    let ok = transport
        .send(HttpRequest { body_limit: 100_000, ..request })
        .await
        .unwrap();
    assert_eq!(ok.body.len(), 100_000);
}

async fn a_dripping_reply_hits_the_total_timeout(transport: impl Transport + 'static) {
    let url = serve_dripping(http10("3000"), Duration::from_millis(200), 1);
    let client = HeartbeatClient::builder_with_transport(transport)
        .url(url)
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = client.ping(Duration::from_secs(1), ErrorPolicy::Raise).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

#[cfg(feature = "reqwest")]
mod reqwest {
    use super::*;
    use heartbeat_sdk::transport::ReqwestTransport;

    fn transport() -> ReqwestTransport {
        ReqwestTransport::new().unwrap()
    }

    #[tokio::test]
    async fn http10() {
        reads_http10_close_delimited_replies(transport()).await;
    }

    #[tokio::test]
    async fn body_cap() {
        caps_the_body(transport()).await;
    }

    #[tokio::test]
    async fn dripping() {
        a_dripping_reply_hits_the_total_timeout(transport()).await;
    }

    #[tokio::test]
    async fn from_a_reqwest_client() {
        let t = ReqwestTransport::from(reqwest_client());
        reads_http10_close_delimited_replies(t).await;
    }

    fn reqwest_client() -> ::reqwest::Client {
        ::reqwest::Client::builder().no_proxy().build().unwrap()
    }
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn raw_queries_match_exactly_with_a_custom_matcher() {
    let server = MockServer::start().await;
    Mock::given(RawQuery("1000&appid=demo"))
        .respond_with(ResponseTemplate::new(200).set_body_string("2000"))
        .expect(1)
        .mount(&server)
        .await;
    // `?1000=` must not match: the bare timeout has no `=`.
    Mock::given(RawQuery("1000=&appid=demo"))
        .respond_with(ResponseTemplate::new(200).set_body_string("1"))
        .expect(0)
        .mount(&server)
        .await;
    let client = HeartbeatClient::builder().url(server.uri()).app_id("demo").build().unwrap();
    let granted = client.ping(Duration::from_secs(1), ErrorPolicy::Raise).await.unwrap();
    assert_eq!(granted, Duration::from_millis(2000));
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn invalid_arguments_are_refused_before_sending() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_string("1"))
        .expect(0)
        .mount(&server)
        .await;
    let client = HeartbeatClient::builder().url(server.uri()).build().unwrap();
    let too_long = Duration::from_millis(heartbeat_sdk::protocol::MAX_TIMEOUT_MS + 1);
    let err = client.init(too_long, ErrorPolicy::Raise).await.unwrap_err();
    assert!(matches!(err, Error::InvalidTimeout { .. }), "{err:?}");
    // a fallback still applies to an invalid argument
    let got = client.ping(too_long, ErrorPolicy::Fallback(Duration::ZERO)).await.unwrap();
    assert_eq!(got, Duration::ZERO);
    let err = client.status(Some(""), ErrorPolicy::Raise).await.unwrap_err();
    assert!(matches!(err, Error::InvalidAppId { .. }), "{err:?}");
}

#[cfg(feature = "reqwest")]
#[test]
fn bad_configuration_is_a_typed_error() {
    for url in ["ftp://host:1", "http://", "http://host:65536", "http://host:0"] {
        let err = HeartbeatClient::builder().url(url).build().unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
    }
    for app in [String::new(), "x".repeat(10_000)] {
        let err = HeartbeatClient::builder().app_id(app).build().unwrap_err();
        assert!(matches!(err, Error::InvalidAppId { .. }), "{err:?}");
    }
}

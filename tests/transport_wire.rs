//! Wire-level behaviour every HTTP transport must share: HTTP/1.0
//! close-delimited replies (how the reference server answers), the body
//! cap, a reply dripped slower than the timeout, and exact raw queries.
//! Every test here needs an HTTP transport; with none compiled in there is
//! nothing to test.
#![cfg(any(feature = "reqwest", feature = "surf"))]

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

async fn reads_http10_close_delimited_replies(transport: impl Transport + Clone + 'static) {
    let status = "OK - fine application [x @ 127.0.0.1]| od=0.52;3;5;0;6 delay=3000ms;;; ";
    let url = serve_raw(http10("3000"), 1);
    let client = HeartbeatClient::builder_with_transport(transport.clone())
        .url(url)
        .build()
        .unwrap();
    let granted = client
        .ping(Duration::from_secs(2), ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(granted, Duration::from_millis(3000));

    let url = serve_raw(http10(status), 1);
    let client = HeartbeatClient::builder_with_transport(transport)
        .url(url)
        .build()
        .unwrap();
    let got = client.status(Some("x"), ErrorPolicy::Raise).await.unwrap();
    assert_eq!(got.state(), State::Ok);
    assert_eq!(got.to_string(), status);
}

async fn caps_the_body(transport: impl Transport + 'static) {
    let big = format!("HTTP/1.0 200 OK\r\n\r\n{}", "9".repeat(100_000)).into_bytes();
    let url = serve_raw(big, 2);
    let request = HttpRequest::new(Method::Get, url, "/hb_ping?1&appid=x")
        .with_timeout(Duration::from_secs(2))
        .with_body_limit(1024);
    // the backend itself stops reading at the cap
    let err = transport.send(request.clone()).await.unwrap_err();
    assert!(err.is_body_too_large(), "{err:?}");
    let ok = transport
        .send(request.with_body_limit(100_000))
        .await
        .unwrap();
    assert_eq!(ok.body().len(), 100_000);
}

async fn a_dripping_reply_hits_the_total_timeout(transport: impl Transport + 'static) {
    let url = serve_dripping(http10("3000"), Duration::from_millis(200), 1);
    let client = HeartbeatClient::builder_with_transport(transport)
        .url(url)
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = client
        .ping(Duration::from_secs(1), ErrorPolicy::Raise)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

/// The tests every HTTP transport module runs on its own `transport()`.
macro_rules! shared_wire_tests {
    () => {
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
    };
}

#[cfg(feature = "reqwest")]
mod reqwest {
    use super::*;
    use heartbeat_sdk::transport::ReqwestTransport;

    fn transport() -> ReqwestTransport {
        ReqwestTransport::new().unwrap()
    }

    shared_wire_tests!();

    #[tokio::test]
    async fn from_a_reqwest_client() {
        let t = ReqwestTransport::from(reqwest_client());
        reads_http10_close_delimited_replies(t).await;
    }

    /// Issue 10: a wrapped reqwest client keeps its own redirect policy
    /// (reqwest follows ten by default); the reply of the other origin is
    /// then refused, never taken for the server's answer.
    #[tokio::test]
    async fn a_wrapped_client_that_follows_a_redirect_gets_no_answer_from_it() {
        let elsewhere = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(200).set_body_string("86400000"))
            .mount(&elsewhere)
            .await;
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(
                ResponseTemplate::new(307)
                    .insert_header("Location", format!("{}/x", elsewhere.uri()).as_str()),
            )
            .mount(&server)
            .await;
        let following = ::reqwest::Client::builder().no_proxy().build().unwrap();
        let client = HeartbeatClient::builder_with_transport(ReqwestTransport::from(following))
            .url(server.uri())
            .build()
            .unwrap();
        let err = client
            .init(Duration::from_secs(1), ErrorPolicy::Raise)
            .await
            .unwrap_err();
        let source = err.transport_error().unwrap_or_else(|| panic!("{err:?}"));
        assert!(source.to_string().contains("redirect"), "{err:?}");
        assert!(source.to_string().contains(&elsewhere.uri()), "{err:?}");
    }

    fn reqwest_client() -> ::reqwest::Client {
        ::reqwest::Client::builder().no_proxy().build().unwrap()
    }
}

#[cfg(feature = "surf")]
mod surf {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    use common::raw_http::http10 as http10_reply;
    use common::refusing::Refusing;
    use heartbeat_sdk::transport::SurfTransport;

    fn transport() -> SurfTransport {
        SurfTransport::new().unwrap()
    }

    fn get(url: &str, timeout: Duration) -> HttpRequest {
        HttpRequest::new(Method::Get, url, "/hb_ping?1&appid=x")
            .with_timeout(timeout)
            .with_body_limit(1024)
    }

    shared_wire_tests!();

    /// Counts the requests that pass through the surf client it is added to.
    #[derive(Debug, Default, Clone)]
    struct Counter(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl ::surf::middleware::Middleware for Counter {
        async fn handle(
            &self,
            req: ::surf::Request,
            client: ::surf::Client,
            next: ::surf::middleware::Next<'_>,
        ) -> ::surf::Result<::surf::Response> {
            self.0.fetch_add(1, Ordering::SeqCst);
            next.run(req, client).await
        }
    }

    #[tokio::test]
    async fn from_a_surf_client() {
        let counter = Counter::default();
        let client = transport().client().clone().with(counter.clone());
        reads_http10_close_delimited_replies(SurfTransport::from(client)).await;
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            2,
            "requests must go through the given client"
        );
    }

    /// A surf backend that never answers: only the client's deadline, above
    /// the transport, can end a request sent through it.
    #[derive(Debug)]
    struct Silent;

    #[async_trait::async_trait]
    impl ::surf::HttpClient for Silent {
        async fn send(
            &self,
            _req: ::surf::http::Request,
        ) -> ::surf::Result<::surf::http::Response> {
            futures_lite::future::pending().await
        }
    }

    /// A client over a fresh surf transport, talking to `url`.
    fn client_at(url: String) -> HeartbeatClient {
        HeartbeatClient::builder_with_transport(transport())
            .url(url)
            .build()
            .unwrap()
    }

    /// What a runtime could break: curl's reply waking the task, the
    /// transport's timer, connect errors.
    async fn works_here() {
        let url = serve_raw(http10_reply("3000"), 1);
        let client = client_at(url);
        let granted = client
            .ping(Duration::from_secs(1), ErrorPolicy::Raise)
            .await
            .unwrap();
        assert_eq!(granted, Duration::from_millis(3000));

        let silent = SurfTransport::from(::surf::Client::with_http_client(Silent));
        let client = HeartbeatClient::builder_with_transport(silent)
            .url("http://127.0.0.1:9")
            .request_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let started = Instant::now();
        let err = client
            .ping(Duration::from_secs(1), ErrorPolicy::Raise)
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        let took = started.elapsed();
        // not before the timeout; "after" only has to be bounded (a loaded
        // machine may wake up late, a missing timeout never ends)
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(10),
            "{took:?}"
        );

        let refusing = Refusing::new();
        let err = transport()
            .send(get(&refusing.url(), Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn works_in_a_current_thread_runtime() {
        works_here().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn works_in_a_multi_thread_runtime() {
        works_here().await;
    }

    #[test]
    fn works_without_a_runtime() {
        assert!(tokio::runtime::Handle::try_current().is_err());
        futures_lite::future::block_on(works_here());
    }

    #[tokio::test]
    async fn a_non_ascii_header_value_does_not_panic() {
        let reply = b"HTTP/1.0 200 OK\r\nContent-type: text/plain\r\nX-Place: caf\xc3\xa9 \x80\xff\r\n\r\n3000";
        let url = serve_raw(reply.to_vec(), 2);
        let client = HeartbeatClient::builder_with_transport(transport())
            .url(&url)
            .build()
            .unwrap();
        let granted = client
            .ping(Duration::from_secs(1), ErrorPolicy::Raise)
            .await
            .unwrap();
        assert_eq!(granted, Duration::from_millis(3000));

        // the value reaches surf with each byte past ASCII replaced
        let mut response = transport().client().get(&url).await.unwrap();
        assert_eq!(response.header("x-place").unwrap().as_str(), "caf?? ??");
        assert_eq!(response.body_string().await.unwrap(), "3000");
    }

    #[tokio::test]
    async fn status_codes_unknown_to_surf_are_kept() {
        for code in [200, 299, 404, 499, 599] {
            let url = serve_raw(format!("HTTP/1.0 {code} Odd\r\n\r\nbody").into_bytes(), 1);
            let reply = transport()
                .send(get(&url, Duration::from_secs(2)))
                .await
                .unwrap();
            assert_eq!((reply.status(), reply.body()), (code, &b"body"[..]));
        }
        let url = serve_raw(b"HTTP/1.0 499 Client Closed\r\n\r\nbye".to_vec(), 1);
        let client = client_at(url);
        let err = client
            .ping(Duration::from_secs(1), ErrorPolicy::Raise)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Status { status: 499, body, .. } if body == "bye"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_request_timeout_overrides_the_builder_timeout() {
        // about 0.9 s to drip the whole reply
        let slow = || serve_dripping(http10_reply("3000"), Duration::from_millis(10), 1);
        let transport = SurfTransport::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();

        // straight through the surf client, the builder's timeout applies
        let err = transport
            .client()
            .get(slow())
            .recv_bytes()
            .await
            .unwrap_err();
        let curl = err.downcast_ref::<isahc::Error>();
        assert!(matches!(curl, Some(isahc::Error::Timeout)), "{err}");

        // a request's own, longer timeout wins over it (30 s: room for the
        // 0.9 s drip on a loaded machine; it costs nothing when all is well)
        let reply = transport
            .send(get(&slow(), Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!((reply.status(), reply.body()), (200, &b"3000"[..]));
    }
}

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
    let client = HeartbeatClient::builder()
        .url(server.uri())
        .app_id("demo")
        .build()
        .unwrap();
    let granted = client
        .ping(Duration::from_secs(1), ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(granted, Duration::from_millis(2000));
}

#[tokio::test]
async fn invalid_arguments_are_refused_before_sending() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_string("1"))
        .expect(0)
        .mount(&server)
        .await;
    let client = HeartbeatClient::builder()
        .url(server.uri())
        .build()
        .unwrap();
    let too_long = Duration::from_millis(heartbeat_sdk::protocol::MAX_TIMEOUT_MS + 1);
    let err = client.init(too_long, ErrorPolicy::Raise).await.unwrap_err();
    assert!(matches!(err, Error::InvalidTimeout { .. }), "{err:?}");
    // a fallback still applies to an invalid argument
    let got = client
        .ping(too_long, ErrorPolicy::Fallback(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(got, Duration::ZERO);
    let err = client
        .status(Some(""), ErrorPolicy::Raise)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidAppId { .. }), "{err:?}");
}

#[test]
fn bad_configuration_is_a_typed_error() {
    for url in [
        "ftp://host:1",
        "http://",
        "http://host:65536",
        "http://host:0",
    ] {
        let err = HeartbeatClient::builder().url(url).build().unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
    }
    for app in [String::new(), "x".repeat(10_000)] {
        let err = HeartbeatClient::builder().app_id(app).build().unwrap_err();
        assert!(matches!(err, Error::InvalidAppId { .. }), "{err:?}");
    }
}

//! [`Harness`] over a wiremock `MockServer` for any real HTTP transport.

use std::time::Duration;

use async_trait::async_trait;
use heartbeat_sdk::{ClientBuilder, HeartbeatClient, Transport};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::refusing::Refusing;
use super::{Harness, Recorder, Reply, Seen, APP, CLIENT_TIMEOUT};

/// Drives a transport made by `make` against a fresh wiremock server per case.
pub struct WiremockHarness<F>(pub F);

/// The server the client talks to: a wiremock server, or for
/// [`Reply::Refused`] the reserved port that refuses (held as long as the
/// client is used).
enum ServerRecorder {
    Mock(MockServer),
    Refusing(#[allow(dead_code)] Refusing),
}

#[async_trait]
impl Recorder for ServerRecorder {
    async fn seen(&self) -> Vec<Seen> {
        let ServerRecorder::Mock(server) = self else {
            return Vec::new();
        };
        let requests = server.received_requests().await.unwrap_or_default();
        requests.iter().map(seen).collect()
    }
}

/// Convert a wiremock request into what the scenario compares.
pub fn seen(r: &wiremock::Request) -> Seen {
    Seen {
        method: r.method.to_string(),
        path: r.url.path().to_owned(),
        query: r.url.query().unwrap_or_default().to_owned(),
        form: (!r.body.is_empty()).then(|| String::from_utf8_lossy(&r.body).into_owned()),
        content_type: r
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

#[async_trait]
impl<T, F> Harness for WiremockHarness<F>
where
    T: Transport + 'static,
    F: Fn() -> T + Send + Sync,
{
    async fn client_replying_with(
        &self,
        reply: Reply,
        configure: fn(ClientBuilder) -> ClientBuilder,
    ) -> (HeartbeatClient, Box<dyn Recorder>) {
        let builder = configure(
            HeartbeatClient::builder_with_transport((self.0)())
                .app_id(APP)
                .request_timeout(CLIENT_TIMEOUT),
        );
        let template = match reply {
            Reply::Refused => {
                let refusing = Refusing::new();
                let client = builder.url(refusing.url()).build().unwrap();
                return (client, Box::new(ServerRecorder::Refusing(refusing)));
            }
            Reply::Text(status, body) => ResponseTemplate::new(status).set_body_string(body),
            Reply::Bytes(bytes) => ResponseTemplate::new(200).set_body_bytes(bytes),
            Reply::Redirect(status, location) => {
                ResponseTemplate::new(status).insert_header("Location", location.as_str())
            }
            Reply::Slow => ResponseTemplate::new(200)
                .set_body_string("1000")
                .set_delay(CLIENT_TIMEOUT + Duration::from_secs(2)),
        };
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(template)
            .mount(&server)
            .await;
        let client = builder.url(server.uri()).build().unwrap();
        (client, Box::new(ServerRecorder::Mock(server)))
    }
}

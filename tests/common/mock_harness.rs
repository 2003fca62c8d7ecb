//! [`Harness`] over the in-memory mock transport, scripted per case.

use async_trait::async_trait;
use heartbeat_sdk::testing::{MockFailure, MockTransport};
use heartbeat_sdk::{ClientBuilder, HeartbeatClient};

use super::{Harness, Recorder, Reply, Seen, APP, CLIENT_TIMEOUT};

/// Drives a fresh [`MockTransport`] per case.
pub struct MockHarness;

struct MockRecorder(MockTransport);

#[async_trait]
impl Recorder for MockRecorder {
    async fn seen(&self) -> Vec<Seen> {
        self.0
            .requests()
            .into_iter()
            .map(|r| {
                // the target comes apart from the base URL: no URL parsing
                let (path, query) = r.target().split_once('?').unwrap_or((r.target(), ""));
                Seen {
                    method: r.method().as_str().to_owned(),
                    path: path.to_owned(),
                    query: query.to_owned(),
                    // the Transport contract: a form is sent as urlencoded
                    content_type: r
                        .form()
                        .map(|_| "application/x-www-form-urlencoded".to_owned()),
                    form: r.form().map(str::to_owned),
                }
            })
            .collect()
    }
}

#[async_trait]
impl Harness for MockHarness {
    async fn client_replying_with(
        &self,
        reply: Reply,
        configure: fn(ClientBuilder) -> ClientBuilder,
    ) -> (HeartbeatClient, Box<dyn Recorder>) {
        let mock = MockTransport::new();
        let failure = match reply {
            Reply::Refused => MockFailure::Refused,
            Reply::Slow => MockFailure::Timeout,
            Reply::Text(status, body) => MockFailure::status(status, body),
            Reply::Bytes(bytes) => MockFailure::body(bytes),
            // no headers in the mock: the bare status, which it never follows
            Reply::Redirect(status, _location) => MockFailure::status(status, ""),
        };
        mock.fail_next(usize::MAX, failure);
        let builder = HeartbeatClient::builder_with_transport(mock.clone())
            .app_id(APP)
            .request_timeout(CLIENT_TIMEOUT);
        let client = configure(builder).build().unwrap();
        (client, Box::new(MockRecorder(mock)))
    }
}

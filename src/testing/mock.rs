//! [`MockTransport`]: answers in memory from the embedded server's registry.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::TransportError;
use crate::monitor::{ManualClock, RegistryConfig, SharedRegistry};
use crate::transport::{HttpRequest, HttpResponse, Transport};

/// What a scripted request gets instead of the registry's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockFailure {
    /// Connection refused ([`TransportError::is_connect`]).
    Refused,
    /// Timed out ([`TransportError::is_timeout`]), at once: no real waiting.
    Timeout,
    /// This HTTP status and raw body, e.g. `500`, or `200` with garbage.
    Reply {
        /// The HTTP status code.
        status: u16,
        /// The raw body bytes.
        body: Vec<u8>,
    },
}

impl MockFailure {
    /// An HTTP status with a text body.
    pub fn status(status: u16, body: &str) -> MockFailure {
        MockFailure::Reply {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    /// A `200` reply with these raw body bytes.
    pub fn body(body: impl Into<Vec<u8>>) -> MockFailure {
        MockFailure::Reply {
            status: 200,
            body: body.into(),
        }
    }
}

/// An in-memory [`Transport`] (feature `mock`) with the embedded server's
/// exact semantics and no sockets.
///
/// It answers from the same [`Registry`](crate::monitor::Registry) as the
/// real server, on a [`ManualClock`] that only moves when the test says so,
/// records every request, and can be scripted to fail. Clones share
/// everything, so keep one in the test and give one to the client.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> heartbeat_sdk::Result<()> {
/// use std::time::Duration;
/// use heartbeat_sdk::testing::{MockFailure, MockTransport};
/// use heartbeat_sdk::{ErrorPolicy, HeartbeatClient, State};
///
/// let mock = MockTransport::new();
/// let client = HeartbeatClient::builder_with_transport(mock.clone()).app_id("kiosk").build()?;
///
/// client.init(Duration::from_millis(2000), ErrorPolicy::Raise).await?; // granted 3000 ms
/// mock.advance(Duration::from_millis(9_300)); // od = 3.10
/// let status = client.status(Some("kiosk"), ErrorPolicy::Raise).await?;
/// assert_eq!(status.state(), State::Warning);
///
/// mock.fail_next(1, MockFailure::Refused);
/// assert!(client.ping(Duration::from_secs(2), ErrorPolicy::Raise).await.unwrap_err().is_connect());
/// assert_eq!(mock.requests().len(), 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MockTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: SharedRegistry,
    clock: ManualClock,
    peer: IpAddr,
    requests: Mutex<Vec<HttpRequest>>,
    script: Mutex<VecDeque<(usize, MockFailure)>>,
}

impl MockTransport {
    /// A mock with the reference server's settings, as seen from `127.0.0.1`.
    pub fn new() -> MockTransport {
        MockTransport::with_config(RegistryConfig::default())
    }

    /// A mock whose registry uses `config`.
    pub fn with_config(config: RegistryConfig) -> MockTransport {
        let clock = ManualClock::new();
        MockTransport {
            inner: Arc::new(Inner {
                registry: SharedRegistry::new(config, Arc::new(clock.clone())),
                clock,
                peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
                requests: Mutex::default(),
                script: Mutex::default(),
            }),
        }
    }

    /// The manual clock the registry runs on.
    pub fn clock(&self) -> &ManualClock {
        &self.inner.clock
    }

    /// Move the registry's clock forward.
    pub fn advance(&self, by: Duration) {
        self.inner.clock.advance(by);
    }

    /// The registry behind the mock, for direct inspection.
    pub fn registry(&self) -> &SharedRegistry {
        &self.inner.registry
    }

    /// Every request sent so far, in order (failed ones included).
    pub fn requests(&self) -> Vec<HttpRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Forget the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    /// Answer the next `count` requests with `failure` instead of the
    /// registry (after any failures scripted before).
    pub fn fail_next(&self, count: usize, failure: MockFailure) {
        if count > 0 {
            lock(&self.inner.script).push_back((count, failure));
        }
    }

    fn next_failure(&self) -> Option<MockFailure> {
        let mut script = lock(&self.inner.script);
        let (count, failure) = script.front_mut()?;
        *count -= 1;
        let failure = failure.clone();
        if *count == 0 {
            script.pop_front();
        }
        Some(failure)
    }
}

impl Default for MockTransport {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Transport for MockTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let result = self.answer(&request);
        // Recorded after answering so that the request is moved, not cloned.
        lock(&self.inner.requests).push(request);
        result
    }
}

impl MockTransport {
    /// The reply to `request`: a scripted failure, or the registry's answer
    /// to its request target (the base URL plays no part: the mock is the
    /// server at whatever base the client was given). The client holds the
    /// reply to the request's body cap, as for every transport.
    fn answer(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        match self.next_failure() {
            Some(MockFailure::Refused) => Err(TransportError::connect("mock: connection refused")),
            Some(MockFailure::Timeout) => Err(TransportError::timeout("mock: timed out")),
            Some(MockFailure::Reply { status, body }) => Ok(HttpResponse::new(status, body)),
            None => {
                let form = request.form().map(str::as_bytes);
                let reply = self
                    .inner
                    .registry
                    .handle(request.target(), form, self.inner.peer);
                Ok(HttpResponse::new(reply.status, reply.body.into_bytes()))
            }
        }
    }
}

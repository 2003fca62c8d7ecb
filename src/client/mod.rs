//! [`HeartbeatClient`]: the typed client, one method per Python function.
//!
//! - [`builder`]: [`ClientBuilder`], what a client is made of;
//! - [`exchange`]: one call on the wire (request, resend, body cap, policy);
//! - [`fleet`]: the calls over every application (`status_all`, `apps`,
//!   `events`).

mod builder;
mod exchange;
mod fleet;

pub use builder::ClientBuilder;
pub use fleet::{AppCheck, STATUS_ALL_CONCURRENCY};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::policy::ErrorPolicy;
use crate::protocol::{self, Beat, Status};
use crate::retry::RetryPolicy;
#[cfg(default_transport)]
use crate::settings::Settings;
use crate::transport::{Method, Transport};

/// A client of one heartbeat server for one application id.
///
/// Cheap to clone (the transport and settings are shared). Every method takes
/// an [`ErrorPolicy`]: `Raise` returns failures as [`Error`] (logged at
/// `debug` only), `Fallback(v)` logs them at `warn` and returns `Ok(v)`.
///
/// The words: the client **promises** a `timeout` with each `init`, `ping`
/// and `done` (the time within which it will beat again, or be gone); the
/// server answers with the timeout it **granted** (the promise plus its
/// tolerance, 1 s for the reference), which `/status` reports as
/// [`Status::granted`] and a keep-alive as
/// [`KeepAliveState::granted`](crate::KeepAliveState::granted).
///
/// | Python (`heartbeat.py`) | Rust |
/// |---|---|
/// | `hb_init(t [,e])` | [`init`](Self::init) |
/// | `hb_ping(t [,e])` | [`ping`](Self::ping) |
/// | `hb_done([t [,e]])` | [`done`](Self::done), [`done_now`](Self::done_now) |
/// | `hb_list([e])` | [`list`](Self::list) |
/// | `hb_status([ID [,e]])` | [`status`](Self::status) |
/// | `hb_read(path [,e])` | [`get`](Self::get) |
/// | `hb_post(path, data [,e])` | [`post`](Self::post) |
///
/// # Body caps
///
/// Each call reads at most as many reply bytes as the protocol can produce
/// for it, so that a hostile server cannot make the client buffer without
/// end, while our own server at its own limits is always read whole:
///
/// | call | cap |
/// |---|---|
/// | `init`, `ping`, `done`, `status(Some(id))` | [`DEFAULT_BODY_LIMIT`](crate::transport::DEFAULT_BODY_LIMIT) (64 KiB; [`ClientBuilder::body_limit`]) |
/// | `list` | [`protocol::max_list_body`]`(max_apps)` |
/// | `status(None)` (the host) | [`protocol::max_host_status_body`]`(max_apps)` |
/// | `get`, `post` (any path) | the largest of the caps above |
/// | `apps` (feature `serde`, JSON) | [`protocol::max_apps_body`]`(max_apps)` |
///
/// `max_apps` is [`protocol::MAX_APPS`] (100 000, the embedded server's
/// default cap) unless set with [`ClientBuilder::max_apps`]; the caps are
/// then [`protocol::MAX_LIST_BODY`] and [`protocol::MAX_HOST_STATUS_BODY`]
/// (about 102 MiB, for 1024-byte ids from IPv6 peers). A longer reply is a
/// [`TransportErrorKind::BodyTooLarge`](crate::TransportErrorKind::BodyTooLarge)
/// transport error.
///
/// ```no_run
/// # #[cfg(feature = "reqwest")]
/// # async fn run() -> heartbeat_sdk::Result<()> {
/// use std::time::Duration;
/// use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
///
/// let client = HeartbeatClient::from_env()?; // HB_URL / HB_HOST / HB_PORT / APP_ID
/// let granted = client.init(Duration::from_millis(500), ErrorPolicy::Raise).await?;
/// println!("server expects us within {granted:?}");
/// client.ping(Duration::from_secs(1), ErrorPolicy::Fallback(Duration::ZERO)).await?;
/// client.done_now(ErrorPolicy::Raise).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HeartbeatClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    app_id: protocol::AppId,
    transport: Arc<dyn Transport>,
    request_timeout: Duration,
    body_limit: usize,
    max_apps: usize,
    retry: RetryPolicy,
    basic_auth: Option<crate::transport::BasicAuth>,
}

impl fmt::Debug for HeartbeatClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatClient")
            .field("url", &self.inner.base)
            .field("app_id", &self.inner.app_id)
            .field("transport", &self.inner.transport)
            .field("request_timeout", &self.inner.request_timeout)
            .field("basic_auth", &self.inner.basic_auth)
            .finish()
    }
}

#[cfg(default_transport)]
#[cfg_attr(docsrs, doc(cfg(any(feature = "reqwest", feature = "surf"))))]
impl HeartbeatClient {
    /// A client configured from `HB_URL`, `HB_HOST`, `HB_PORT` and `APP_ID`
    /// (see [`Settings`]) over the [`DefaultTransport`](crate::transport::DefaultTransport).
    pub fn from_env() -> Result<HeartbeatClient> {
        HeartbeatClient::builder()
            .settings(Settings::from_env()?)
            .build()
    }

    /// A builder that uses the [`DefaultTransport`](crate::transport::DefaultTransport)
    /// unless given another.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }
}

impl HeartbeatClient {
    /// A builder that sends through `transport`; always available, whatever
    /// the features.
    pub fn builder_with_transport(transport: impl Transport + 'static) -> ClientBuilder {
        ClientBuilder::with_transport(transport)
    }

    /// The server's base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// This client's application id.
    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// `hb_init`: register, promising to ping again within `timeout`;
    /// returns the timeout the server granted (the reference adds 1 s).
    pub async fn init(&self, timeout: Duration, policy: ErrorPolicy<Duration>) -> Result<Duration> {
        self.beat(Beat::Init, timeout, policy).await
    }

    /// `hb_ping`: I'm alive, promising the next ping within `timeout`;
    /// returns the timeout the server granted. Pinging an unknown id
    /// registers it.
    pub async fn ping(&self, timeout: Duration, policy: ErrorPolicy<Duration>) -> Result<Duration> {
        self.beat(Beat::Ping, timeout, policy).await
    }

    /// `hb_done`: deregister, promising to be gone within `timeout`; returns
    /// the server's goodbye text.
    pub async fn done(&self, timeout: Duration, policy: ErrorPolicy<String>) -> Result<String> {
        let build = protocol::timeout_ms(timeout)
            .map_err(Error::from)
            .map(|ms| {
                move |buster: &str| {
                    protocol::beat_request(Beat::Done, ms, &self.inner.app_id, buster)
                }
            });
        self.call(build, self.inner.body_limit, policy, protocol::parse_text)
            .await
    }

    /// `hb_fail`, the failure extension (`docs/api-v1.md`): this run
    /// failed with exit `code` (128 + N for a death by signal N). Our
    /// server shows the application CRITICAL, `failed with exit code N`,
    /// until its next init or ping, and notifies; returns the server's
    /// text. The reference server does not know the command and answers
    /// `400`: [`Error::Status`] with `status: 400`. Send nothing else then
    /// (no `hb_done`), and the reference reports the app late, as
    /// `heartbeat wrap` does.
    ///
    /// ```no_run
    /// # async fn run(client: heartbeat_sdk::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use heartbeat_sdk::{Error, ErrorPolicy};
    /// match client.fail(3, ErrorPolicy::Raise).await {
    ///     Ok(_) => {}                                   // CRITICAL on the monitor
    ///     Err(Error::Status { status: 400, .. }) => {} // a reference server: let it go late
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn fail(&self, code: u8, policy: ErrorPolicy<String>) -> Result<String> {
        let build = |buster: &str| protocol::fail_request(code, &self.inner.app_id, buster);
        self.call(
            Ok(build),
            self.inner.body_limit,
            policy,
            protocol::parse_text,
        )
        .await
    }

    /// `hb_done` with the default timeout of 0.
    pub async fn done_now(&self, policy: ErrorPolicy<String>) -> Result<String> {
        self.done(Duration::ZERO, policy).await
    }

    /// `/list`: the applications the server tracks, as it names them
    /// (the reference: `ID @ IP`).
    ///
    /// The reply is read up to [`protocol::max_list_body`] for the
    /// client's `max_apps` (see [Body caps](HeartbeatClient#body-caps)).
    pub async fn list(&self, policy: ErrorPolicy<Vec<String>>) -> Result<Vec<String>> {
        let cap = protocol::max_list_body(self.inner.max_apps);
        self.call(
            Ok(protocol::list_request),
            cap,
            policy,
            protocol::parse_list,
        )
        .await
    }

    /// `/status`: the host's status (`None`), or one application's
    /// (`Some(id)`), as a parsed Nagios status line.
    ///
    /// The id is checked before sending ([`protocol::check_app_id`], the
    /// server's own rule). The host status grows with the number of apps and
    /// is read up to [`protocol::max_host_status_body`] for the client's
    /// `max_apps` (see [Body caps](HeartbeatClient#body-caps)).
    pub async fn status(&self, app: Option<&str>, policy: ErrorPolicy<Status>) -> Result<Status> {
        let cap = match app {
            Some(_) => self.inner.body_limit,
            None => protocol::max_host_status_body(self.inner.max_apps),
        };
        let build = match app {
            Some(app) => protocol::validate_app_id(app)
                .map(|()| Some(app))
                .map_err(Error::from),
            None => Ok(None),
        }
        .map(|app| move |buster: &str| protocol::status_request(app, buster));
        self.call(build, cap, policy, Status::from_body).await
    }

    /// `GET path` (Python `hb_read`): the reply body as text, read up to the
    /// largest cap of any call (see [Body caps](HeartbeatClient#body-caps)).
    pub async fn get(&self, path: &str, policy: ErrorPolicy<String>) -> Result<String> {
        let build = |buster: &str| protocol::raw_request(Method::Get, path, None, buster);
        self.call(Ok(build), self.raw_cap(), policy, protocol::parse_text)
            .await
    }

    /// The cap of a raw `get`/`post`: it may ask for anything, so the
    /// largest cap of any call (the host status's, or the small replies'
    /// when that is larger).
    fn raw_cap(&self) -> usize {
        protocol::max_host_status_body(self.inner.max_apps).max(self.inner.body_limit)
    }

    /// `POST path` with an encoded form body (Python `hb_post`): the reply
    /// body as text, read up to the largest cap of any call.
    pub async fn post(
        &self,
        path: &str,
        form: &str,
        policy: ErrorPolicy<String>,
    ) -> Result<String> {
        let build = |buster: &str| protocol::raw_request(Method::Post, path, Some(form), buster);
        self.call(Ok(build), self.raw_cap(), policy, protocol::parse_text)
            .await
    }
}

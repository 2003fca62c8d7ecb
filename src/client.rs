//! [`HeartbeatClient`]: the typed client, one method per Python function.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use url::Url;

use crate::error::{Error, Result};
use crate::policy::ErrorPolicy;
use crate::protocol::{self, AppAnswer, Beat, ParseError, Request, Status};
use crate::retry::RetryPolicy;
use crate::settings::{parse_url, Settings};
use crate::transport::{
    send_bounded, HttpRequest, HttpResponse, Method, Transport, DEFAULT_BODY_LIMIT,
    DEFAULT_REQUEST_TIMEOUT,
};

/// Most `/status` requests [`HeartbeatClient::status_all`] has in flight
/// at once: enough to hide the latency of a remote server, few enough that
/// 100 000 applications never mean 100 000 connections.
pub const STATUS_ALL_CONCURRENCY: usize = 8;

/// One listed application and what its status query answered
/// ([`HeartbeatClient::status_all`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct AppCheck {
    /// The key as `/list` printed it (`ID @ IP`, or the bare id).
    pub key: String,
    /// The answer to `/status?appid=ID`, classified for this key, or why
    /// there was none.
    pub answer: Result<AppAnswer>,
}

impl AppCheck {
    /// An application checked elsewhere (a test, another source).
    pub fn new(key: impl Into<String>, answer: Result<AppAnswer>) -> AppCheck {
        AppCheck {
            key: key.into(),
            answer,
        }
    }
}

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
/// | `init`, `ping`, `done`, `status(Some(id))` | [`DEFAULT_BODY_LIMIT`] (64 KiB; [`ClientBuilder::body_limit`]) |
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
    app_id: String,
    transport: Arc<dyn Transport>,
    request_timeout: Duration,
    body_limit: usize,
    max_apps: usize,
    retry: RetryPolicy,
}

impl fmt::Debug for HeartbeatClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatClient")
            .field("url", &self.inner.base)
            .field("app_id", &self.inner.app_id)
            .field("transport", &self.inner.transport)
            .field("request_timeout", &self.inner.request_timeout)
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

    /// Every listed application's status: `/list`, then
    /// `/status?appid=ID` for each key, at most [`STATUS_ALL_CONCURRENCY`]
    /// at once; the results in `/list`'s order.
    ///
    /// Each key is queried by its id, the part before its **last** `" @ "`
    /// ([`protocol::split_key`]): a query by the whole key `ID @ IP` is
    /// looked up as `ID @ IP @ ASKER_IP` by the reference and by our server
    /// (when it keys by peer, the default) and never matches. A bare id is
    /// looked up as `ID @ ASKER_IP`, so only the applications of the host
    /// the server sees this client coming from can be answered about; the
    /// key in brackets in the answer tells which record was looked up, and
    /// [`AppAnswer::classify`] sorts each answer into the app's own status,
    /// [`Gone`](AppAnswer::Gone) (done or expired since `/list`: the call
    /// goes on) or [`OtherHost`](AppAnswer::OtherHost) (the server answered
    /// about another record, or had none, for an application of another
    /// host). A server that keys by the bare id lists bare ids, and every
    /// app is answered about.
    ///
    /// Only a failed `/list` fails the call (and goes through `policy`);
    /// a failed status request is that application's
    /// [`AppCheck::answer`] error.
    ///
    /// ```no_run
    /// # #[cfg(feature = "reqwest")]
    /// # async fn run() -> heartbeat_sdk::Result<()> {
    /// use heartbeat_sdk::protocol::AppAnswer;
    /// use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
    ///
    /// let client = HeartbeatClient::from_env()?;
    /// for app in client.status_all(ErrorPolicy::Raise).await? {
    ///     match &app.answer {
    ///         Ok(AppAnswer::Status(status)) => println!("{}: {}", app.key, status.state()),
    ///         Ok(other) => println!("{}: {other:?}", app.key),
    ///         Err(error) => println!("{}: {error}", app.key),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn status_all(&self, policy: ErrorPolicy<Vec<AppCheck>>) -> Result<Vec<AppCheck>> {
        let keys = match self.list(ErrorPolicy::Raise).await {
            Ok(keys) => keys,
            Err(error) => return policy.recover(&self.inner.base, error),
        };
        Ok(self.check_keys(keys).await)
    }

    /// The status of each of `keys`, at most [`STATUS_ALL_CONCURRENCY`]
    /// requests in flight, in the order of `keys`. Runtime-agnostic: the
    /// in-flight requests are polled by hand, no task is spawned.
    async fn check_keys(&self, keys: Vec<String>) -> Vec<AppCheck> {
        type Running<'a> = Pin<Box<dyn Future<Output = (usize, AppCheck)> + Send + 'a>>;
        let mut done: Vec<Option<AppCheck>> = Vec::with_capacity(keys.len());
        done.resize_with(keys.len(), || None);
        let mut pending = keys.into_iter().enumerate();
        let mut running: Vec<Running<'_>> = Vec::with_capacity(STATUS_ALL_CONCURRENCY);
        loop {
            while running.len() < STATUS_ALL_CONCURRENCY {
                let Some((index, key)) = pending.next() else {
                    break;
                };
                running.push(Box::pin(async move { (index, self.check_key(key).await) }));
            }
            if running.is_empty() {
                break;
            }
            let (slot, (index, check)) = std::future::poll_fn(|cx| {
                for (slot, future) in running.iter_mut().enumerate() {
                    if let Poll::Ready(out) = future.as_mut().poll(cx) {
                        return Poll::Ready((slot, out));
                    }
                }
                Poll::Pending
            })
            .await;
            drop(running.swap_remove(slot));
            done[index] = Some(check);
        }
        done.into_iter().flatten().collect()
    }

    async fn check_key(&self, key: String) -> AppCheck {
        let (id, _) = protocol::split_key(&key);
        let answer = self
            .status(Some(id), ErrorPolicy::Raise)
            .await
            .map(|status| AppAnswer::classify(&key, status));
        AppCheck { key, answer }
    }

    /// `GET /api/v1/apps` (feature `serde`): every tracked and expected
    /// application with its state, the server's thresholds, counters and
    /// per-state counts, as typed records (the document of the project's
    /// `docs/api-v1.md`).
    ///
    /// The reply is read up to [`protocol::max_apps_body`] for the
    /// client's `max_apps` (see [Body caps](HeartbeatClient#body-caps)).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] from a server without the JSON API (the
    /// reference answers `400`), or one that answers text or HTML;
    /// [`Error::Parse`], with the body, for JSON that is not the
    /// document; and the errors of every call.
    ///
    /// ```no_run
    /// # async fn run(client: heartbeat_sdk::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use heartbeat_sdk::protocol::apps::{AppState, Apps};
    /// use heartbeat_sdk::{Error, ErrorPolicy};
    ///
    /// match client.apps(ErrorPolicy::Raise).await {
    ///     Ok(apps) => {
    ///         for app in apps.apps.iter().filter(|app| app.state != AppState::Ok) {
    ///             println!("{} is {}", app.key, app.state);
    ///         }
    ///     }
    ///     Err(Error::Unsupported { .. }) => println!("an older server: use list() and status()"),
    ///     Err(error) => return Err(error),
    /// }
    /// // or: an empty document when anything fails
    /// let apps = client.apps(ErrorPolicy::Fallback(Apps::default())).await?;
    /// # let _ = apps; Ok(()) }
    /// ```
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub async fn apps(
        &self,
        policy: ErrorPolicy<protocol::apps::Apps>,
    ) -> Result<protocol::apps::Apps> {
        let cap = protocol::max_apps_body(self.inner.max_apps);
        self.json_call(
            protocol::apps::apps_request,
            cap,
            protocol::apps::parse_apps,
            policy,
        )
        .await
    }

    /// The history of one application (`GET /api/v1/events`, our server's
    /// JSON API; feature `serde`): its state changes, newest first, as
    /// [`Events`](protocol::history::Events). The server keeps the last
    /// 100 per application id in memory.
    ///
    /// # Errors
    /// As [`apps`](Self::apps): [`Error::Unsupported`] from a server
    /// without it (the reference answers `400`), [`Error::Parse`] for
    /// another document.
    ///
    /// ```no_run
    /// # async fn run(client: heartbeat_sdk::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use heartbeat_sdk::protocol::history::EventsQuery;
    /// use heartbeat_sdk::ErrorPolicy;
    ///
    /// let history = client.events(&EventsQuery::new("kiosk-3").limit(20), ErrorPolicy::Raise).await?;
    /// for event in &history.events {
    ///     println!("{} {}", event.at, event.event.name());
    /// }
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub async fn events(
        &self,
        query: &protocol::history::EventsQuery,
        policy: ErrorPolicy<protocol::history::Events>,
    ) -> Result<protocol::history::Events> {
        use protocol::history;
        let build = || query.request();
        self.json_call(
            build,
            history::MAX_EVENTS_BODY,
            history::parse_events,
            policy,
        )
        .await
    }

    /// GETs one of the server's JSON documents: `Unsupported` from a server
    /// without it (400, 404, 405, or text / HTML), `Parse` for a document
    /// `parse` refuses.
    #[cfg(feature = "serde")]
    async fn json_call<T>(
        &self,
        build: impl Fn() -> protocol::Request + Send + Sync,
        cap: usize,
        parse: fn(&[u8]) -> std::result::Result<T, protocol::ParseError>,
        policy: ErrorPolicy<T>,
    ) -> Result<T> {
        let build = |_: &str| build();
        let result = async {
            let sent = (self.inner.retry)
                .run(self.inner.request_timeout, |timeout| {
                    self.send_once(&build, timeout, cap)
                })
                .await;
            let (url, body) = match sent {
                Err(Error::Status { url, status, .. }) if matches!(status, 400 | 404 | 405) => {
                    return Err(Error::Unsupported { url, status })
                }
                other => other?,
            };
            if !protocol::apps::is_json_document(&body) {
                return Err(Error::Unsupported { url, status: 200 });
            }
            parse(&body).map_err(|e| Error::Parse {
                url,
                reason: e.reason().to_owned(),
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        result
            .await
            .or_else(|error| policy.recover(&self.inner.base, error))
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

    async fn beat(
        &self,
        beat: Beat,
        timeout: Duration,
        policy: ErrorPolicy<Duration>,
    ) -> Result<Duration> {
        let build = protocol::timeout_ms(timeout)
            .map_err(Error::from)
            .map(|ms| {
                move |buster: &str| protocol::beat_request(beat, ms, &self.inner.app_id, buster)
            });
        self.call(
            build,
            self.inner.body_limit,
            policy,
            protocol::parse_granted,
        )
        .await
    }

    /// Send the request `build` makes (or report why it could not be
    /// built), reading at most `body_limit` reply bytes, parse a 2xx reply
    /// with `parse`, and apply `policy` to any failure. `build` is called
    /// with a fresh cache buster for every attempt, so no two requests on
    /// the wire share one. The failure is logged once, by
    /// [`ErrorPolicy::recover`].
    async fn call<T, B>(
        &self,
        build: Result<B>,
        body_limit: usize,
        policy: ErrorPolicy<T>,
        parse: impl FnOnce(&[u8]) -> Result<T, ParseError>,
    ) -> Result<T>
    where
        B: Fn(&str) -> Request + Sync,
    {
        let result = match build {
            Ok(build) => self.exchange(&build, body_limit, parse).await,
            Err(e) => Err(e),
        };
        result.or_else(|error| policy.recover(&self.inner.base, error))
    }

    async fn exchange<T>(
        &self,
        build: &(impl Fn(&str) -> Request + Sync),
        body_limit: usize,
        parse: impl FnOnce(&[u8]) -> Result<T, ParseError>,
    ) -> Result<T> {
        let (url, body) = (self.inner.retry)
            .run(self.inner.request_timeout, |timeout| {
                self.send_once(build, timeout, body_limit)
            })
            .await?;
        parse(&body).map_err(|e| Error::Parse {
            url,
            reason: e.reason().to_owned(),
            body: protocol::excerpt(&body),
        })
    }

    /// The HTTP request `build` makes around a fresh cache buster: the
    /// base URL and the protocol's request target travel apart.
    fn http_request(
        &self,
        build: &(impl Fn(&str) -> Request + Sync),
        timeout: Duration,
        body_limit: usize,
    ) -> HttpRequest {
        let request = build(&protocol::cache_buster());
        let http = HttpRequest::new(request.method, self.inner.base.as_str(), request.target)
            .with_timeout(timeout)
            .with_body_limit(body_limit);
        match request.form {
            Some(form) => http.with_form(form),
            None => http,
        }
    }

    /// One attempt: send a fresh request, held to its deadline and body cap
    /// whatever the transport, and turn a non-2xx reply into an error;
    /// returns the URL sent and the reply body.
    ///
    /// A `GET` whose connection was closed under it before the reply was
    /// complete ([`is_closed`](crate::TransportError::is_closed), e.g. a
    /// kept-alive connection the server had just timed out) is sent once
    /// more at once (with a new cache buster), within what is left of its
    /// timeout: a `GET` is idempotent, and the fresh connection is not stale.
    async fn send_once(
        &self,
        build: &(impl Fn(&str) -> Request + Sync),
        timeout: Duration,
        body_limit: usize,
    ) -> Result<(String, Vec<u8>)> {
        let started = crate::retry::now();
        let http = self.http_request(build, timeout, body_limit);
        let method = http.method();
        let mut url = http.url();
        tracing::debug!(method = method.as_str(), %url, "heartbeat request");
        let transport = &*self.inner.transport;
        let mut sent = send_bounded(transport, http).await;
        if let Err(error) = &sent {
            let left = timeout.saturating_sub(crate::retry::elapsed(started));
            if method == Method::Get && error.is_closed() && !left.is_zero() {
                let again = self.http_request(build, left, body_limit);
                url = again.url();
                tracing::debug!(%url, %error, "connection closed under a GET; sending it once more");
                sent = send_bounded(transport, again).await;
            }
        }
        let response: HttpResponse = match sent {
            Ok(response) => response,
            Err(source) => return Err(Error::Transport { url, source }),
        };
        if !(200..300).contains(&response.status()) {
            return Err(Error::Status {
                url,
                status: response.status(),
                body: protocol::excerpt(response.body()),
            });
        }
        Ok((url, response.into_body()))
    }
}

/// Configures a [`HeartbeatClient`], async or (with feature `blocking`)
/// [blocking](ClientBuilder::build_blocking).
///
/// ```
/// use std::time::Duration;
/// # #[cfg(feature = "reqwest")] {
/// let client = heartbeat_sdk::HeartbeatClient::builder()
///     .url("127.0.0.1:8888")
///     .app_id("kiosk-7")
///     .request_timeout(Duration::from_secs(2))
///     .build()
///     .unwrap();
/// assert_eq!(client.url(), "http://127.0.0.1:8888");
/// # }
/// ```
#[must_use]
pub struct ClientBuilder {
    url: Option<String>,
    settings: Option<Settings>,
    app_id: Option<String>,
    transport: GivenTransport,
    request_timeout: Duration,
    #[cfg(default_transport)]
    connect_timeout: Option<Duration>,
    body_limit: usize,
    max_apps: usize,
    retry: RetryPolicy,
}

/// The transport given to the builder. With a default transport compiled
/// in, it is optional; without one, the only way to get a builder is
/// [`HeartbeatClient::builder_with_transport`], so there always is one.
#[cfg(default_transport)]
type GivenTransport = Option<Arc<dyn Transport>>;
#[cfg(not(default_transport))]
type GivenTransport = Arc<dyn Transport>;

/// `transport` as the builder holds it.
#[cfg(default_transport)]
fn given(transport: Arc<dyn Transport>) -> GivenTransport {
    Some(transport)
}

/// `transport` as the builder holds it.
#[cfg(not(default_transport))]
fn given(transport: Arc<dyn Transport>) -> GivenTransport {
    transport
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("app_id", &self.app_id)
            .field("transport", &self.transport)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A builder over the default transport.
    #[cfg(default_transport)]
    pub(crate) fn new() -> Self {
        Self::with(None)
    }

    /// A builder over `transport`.
    pub(crate) fn with_transport(transport: impl Transport + 'static) -> Self {
        Self::with(given(Arc::new(transport)))
    }

    fn with(transport: GivenTransport) -> Self {
        Self {
            url: None,
            settings: None,
            app_id: None,
            transport,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            #[cfg(default_transport)]
            connect_timeout: None,
            body_limit: DEFAULT_BODY_LIMIT,
            max_apps: protocol::MAX_APPS,
            retry: RetryPolicy::none(),
        }
    }

    /// Start from `settings` (e.g. [`Settings::from_env`]); `url` and `app_id`
    /// still override them.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// The server URL (`http://host:port`, or `host:port` meaning `http://`).
    /// Default: `http://127.0.0.1:8888`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The application id. Default: [`DEFAULT_APP_ID`](crate::settings::DEFAULT_APP_ID).
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into());
        self
    }

    /// Send through `transport` instead of the default one. Configure its
    /// connect timeout on the transport itself: together with
    /// [`connect_timeout`](Self::connect_timeout), [`build`](Self::build)
    /// fails with [`Error::Config`].
    pub fn transport(mut self, transport: impl Transport + 'static) -> Self {
        self.transport = given(Arc::new(transport));
        self
    }

    /// Total time allowed per request (default 4 s), whatever the
    /// transport. Not the timeout promised to the server: that is the
    /// argument of each call.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Connect timeout of the default transport (default
    /// [`DEFAULT_CONNECT_TIMEOUT`](crate::transport::DEFAULT_CONNECT_TIMEOUT),
    /// 2 s). The builder cannot reach into a transport it was given, so
    /// setting both is refused by [`build`](Self::build) with
    /// [`Error::Config`] rather than silently ignored.
    ///
    /// ```
    /// # #[cfg(all(feature = "reqwest", feature = "mock"))] {
    /// use std::time::Duration;
    /// use heartbeat_sdk::{Error, HeartbeatClient};
    ///
    /// let ok = HeartbeatClient::builder().connect_timeout(Duration::from_millis(500)).build();
    /// assert!(ok.is_ok());
    /// let contradictory = HeartbeatClient::builder_with_transport(heartbeat_sdk::testing::MockTransport::new())
    ///     .connect_timeout(Duration::from_millis(500))
    ///     .build();
    /// assert!(matches!(contradictory, Err(Error::Config { .. })));
    /// # }
    /// ```
    #[cfg(default_transport)]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "reqwest", feature = "surf"))))]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Largest reply body accepted for `init`, `ping`, `done` and one
    /// application's `status` (default [`DEFAULT_BODY_LIMIT`], 64 KiB: they
    /// carry a number, a goodbye or one status line). The replies that grow
    /// with the number of apps have caps of their own, see [`max_apps`](Self::max_apps).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The most applications the server tracks (default
    /// [`protocol::MAX_APPS`], the embedded server's default cap): the caps
    /// of `list` ([`protocol::max_list_body`]), the host `status`, `get` and
    /// `post` ([`protocol::max_host_status_body`]) are sized for it. Raise
    /// it for a server configured to track more; lower it to buffer less
    /// from a server you trust less. See
    /// [Body caps](HeartbeatClient#body-caps).
    ///
    /// ```
    /// # #[cfg(feature = "reqwest")] {
    /// let client = heartbeat_sdk::HeartbeatClient::builder()
    ///     .max_apps(500)
    ///     .build()
    ///     .unwrap();
    /// # let _ = client; }
    /// ```
    pub fn max_apps(mut self, apps: usize) -> Self {
        self.max_apps = apps;
        self
    }

    /// Retry failed calls by `policy` (default [`RetryPolicy::none`]: one
    /// attempt); see [`RetryPolicy`] for what is retried.
    ///
    /// ```
    /// # #[cfg(feature = "reqwest")] {
    /// use std::time::Duration;
    /// use heartbeat_sdk::{HeartbeatClient, RetryPolicy};
    ///
    /// let client = HeartbeatClient::builder()
    ///     .retry(RetryPolicy::new(3).budget(Duration::from_secs(5)))
    ///     .build()
    ///     .unwrap();
    /// # let _ = client; }
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Validate the settings and build the client.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] and [`Error::InvalidAppId`] for unusable
    /// settings, [`Error::Config`] for [`connect_timeout`](Self::connect_timeout)
    /// together with a given transport, [`Error::Build`] when the default
    /// transport cannot be set up (e.g. its TLS backend).
    pub fn build(self) -> Result<HeartbeatClient> {
        let defaults = self.settings;
        let url: Url = match (self.url, &defaults) {
            (Some(url), _) => parse_url(&url)?,
            (None, Some(settings)) => settings.url.clone(),
            (None, None) => Settings::from_vars(|_| None)?.url,
        };
        let app_id = match (self.app_id, defaults) {
            (Some(app_id), _) => app_id,
            (None, Some(settings)) => settings.app_id,
            (None, None) => crate::settings::DEFAULT_APP_ID.to_owned(),
        };
        protocol::validate_app_id(&app_id)?;
        #[cfg(default_transport)]
        let transport = match (self.transport, self.connect_timeout) {
            (Some(_), Some(_)) => {
                return Err(Error::Config {
                    reason: "connect_timeout applies to the default transport only; \
                             set it on the transport given to the builder instead"
                        .to_owned(),
                })
            }
            (Some(transport), None) => transport,
            (None, connect) => Arc::new(default_transport(
                connect.unwrap_or(crate::transport::DEFAULT_CONNECT_TIMEOUT),
                self.request_timeout,
            )?),
        };
        #[cfg(not(default_transport))]
        let transport = self.transport;
        Ok(HeartbeatClient {
            inner: Arc::new(Inner {
                base: url.as_str().trim_end_matches('/').to_owned(),
                app_id,
                transport,
                request_timeout: self.request_timeout,
                body_limit: self.body_limit,
                max_apps: self.max_apps,
                retry: self.retry,
            }),
        })
    }
}

#[cfg(default_transport)]
fn default_transport(
    connect: Duration,
    total: Duration,
) -> Result<crate::transport::DefaultTransport> {
    crate::transport::DefaultTransport::builder()
        .connect_timeout(connect)
        .timeout(total)
        .build()
        .map_err(|source| Error::build("cannot set up the default HTTP transport", source))
}

#[cfg(all(test, feature = "mock", default_transport))]
mod tests {
    use super::*;

    #[test]
    fn a_connect_timeout_with_a_given_transport_is_refused_not_dropped() {
        let mock = || crate::testing::MockTransport::new();
        let second = Duration::from_secs(1);
        for builder in [
            HeartbeatClient::builder_with_transport(mock()).connect_timeout(second),
            HeartbeatClient::builder()
                .connect_timeout(second)
                .transport(mock()),
        ] {
            let error = builder.build().unwrap_err();
            assert!(matches!(error, Error::Config { .. }), "{error:?}");
            assert!(error.to_string().contains("connect_timeout"), "{error}");
        }
        // each alone is fine
        assert!(HeartbeatClient::builder()
            .connect_timeout(second)
            .build()
            .is_ok());
        assert!(HeartbeatClient::builder_with_transport(mock())
            .request_timeout(second)
            .build()
            .is_ok());
    }
}

//! The HTTP seam: one request in, one status and body out.
//!
//! A [`Transport`] knows HTTP only; it never looks at heartbeat paths. Every
//! heartbeat request is built by [`crate::protocol`] and every reply parsed
//! there, so a backend is a thin conversion between [`HttpRequest`] /
//! [`HttpResponse`] and its own types. A closure can be a transport too:
//! see [`from_fn`].
//!
//! # Why our own request and response types
//!
//! The seam carries a method, a base URL, a request target, an optional
//! form body, a deadline and a body cap, and returns a status and a body.
//! The `http` crate's `Request`/`Response` (what opentelemetry-http uses)
//! would carry none of the deadline or the cap, so they would travel in
//! extensions, the very smuggling this crate removed from its surf backend;
//! and `http` would become a public dependency whose major version we could
//! never bump before our own. So [`HttpRequest`] and [`HttpResponse`] stay
//! ours, but they are `#[non_exhaustive]` with private fields: they are made
//! by constructors ([`HttpRequest::new`] and its `with_*` setters,
//! [`HttpResponse::new`]) and read through accessors, so a field added later
//! (headers, say) breaks nobody. A struct literal does not compile outside
//! this crate:
//!
//! ```compile_fail
//! use std::time::Duration;
//! use heartbeat_sdk::transport::{HttpRequest, Method};
//!
//! let request = HttpRequest {
//!     method: Method::Get,
//!     url: "http://127.0.0.1:8888/hb_ping?2000&appid=x".to_owned(),
//!     form: None,
//!     timeout: Duration::from_secs(4),
//!     body_limit: 64 * 1024,
//! };
//! ```
//!
//! # What the seam enforces above every backend
//!
//! The client sends every request through one function that holds it to its
//! [`timeout`](HttpRequest::timeout) and its
//! [`body_limit`](HttpRequest::body_limit), whatever the transport:
//!
//! - **One deadline.** The whole exchange (connecting, sending, reading the
//!   reply) races one timer; when the timer wins, the transport's future is
//!   dropped (which aborts its I/O) and the call fails with
//!   [`is_timeout`](crate::TransportError::is_timeout). The timer is tokio's
//!   inside a tokio runtime (whose timer must be enabled, as reqwest needs
//!   too), else async-io's (it comes with the `surf` feature and needs no
//!   runtime). A build with neither (no `reqwest`, `surf`, `keepalive` nor
//!   `server` feature, e.g. `mock` alone with a transport of your own)
//!   has no timer: there, and outside a tokio runtime when `surf` is off,
//!   the deadline is the transport's own business.
//! - **One body cap.** A reply body longer than the request's `body_limit`
//!   is a [`BodyTooLarge`](crate::TransportErrorKind::BodyTooLarge) error,
//!   whatever the transport returned. The HTTP backends also stop reading
//!   at the cap rather than buffer a huge body first: that is the only part
//!   of the cap they keep, and the only part that cannot live above them.
//!
//! The backends still give their HTTP stack a connect timeout and a
//! client-wide total timeout (their builders' `timeout`, for requests sent
//! straight through the wrapped client), and hand it each request's own
//! timeout so that this ceiling never cuts a longer request short: reqwest
//! takes it per request, surf only per client, so the surf backend passes
//! it to its curl glue in a request extension (`SurfTransport`, feature
//! `surf`).

use std::fmt::{self, Debug};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::TransportError;

pub use crate::protocol::Method;

mod basic_auth;
pub use self::basic_auth::BasicAuth;

#[cfg(feature = "reqwest")]
mod reqwest;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use self::reqwest::{ReqwestTransport, ReqwestTransportBuilder};
#[cfg(feature = "surf")]
mod surf;
#[cfg(feature = "surf")]
#[cfg_attr(docsrs, doc(cfg(feature = "surf")))]
pub use self::surf::{SurfTransport, SurfTransportBuilder};
pub(crate) mod timer;

/// The connect timeout backends use unless told otherwise (the reference
/// shell client's value).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The total per-request timeout used unless told otherwise (the reference
/// shell client's value).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// The body cap of the replies that do not grow with the number of
/// tracked apps (init, ping, done, one application's status); a larger one
/// is a [`TransportErrorKind::BodyTooLarge`](crate::TransportErrorKind::BodyTooLarge)
/// error. `list` and the host status have caps sized by
/// [`protocol::max_list_body`](crate::protocol::max_list_body) and
/// [`protocol::max_host_status_body`](crate::protocol::max_host_status_body);
/// see [Body caps](crate::HeartbeatClient#body-caps).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// One HTTP request, as a transport must send it.
///
/// The URL comes in two parts: the server's [`base_url`](Self::base_url)
/// (`http://host:port`, perhaps with a path prefix, never a trailing `/`)
/// and the [`target`](Self::target) (`/path?query`, already
/// percent-encoded); [`url`](Self::url) joins them.
///
/// ```
/// use std::time::Duration;
/// use heartbeat_sdk::transport::{HttpRequest, Method};
///
/// let request = HttpRequest::new(Method::Post, "http://127.0.0.1:8888", "/hb_init?2000&appid=x")
///     .with_form("appid=x")
///     .with_timeout(Duration::from_secs(2))
///     .with_body_limit(1024);
/// assert_eq!(request.url(), "http://127.0.0.1:8888/hb_init?2000&appid=x");
/// assert_eq!(request.form(), Some("appid=x"));
/// assert_eq!(request.body_limit(), 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpRequest {
    method: Method,
    base_url: String,
    target: String,
    form: Option<String>,
    timeout: Duration,
    body_limit: usize,
    basic_auth: Option<BasicAuth>,
}

impl HttpRequest {
    /// A request for `target` (`/path?query`, percent-encoded) on the
    /// server at `base_url` (`http://host:port`), without a form body,
    /// with [`DEFAULT_REQUEST_TIMEOUT`] and [`DEFAULT_BODY_LIMIT`].
    ///
    /// A trailing `/` of `base_url` is dropped, and a missing leading `/`
    /// of `target` added, so that [`url`](Self::url) never doubles nor
    /// loses the slash between them.
    pub fn new(method: Method, base_url: impl Into<String>, target: impl Into<String>) -> Self {
        let mut base_url = base_url.into();
        while base_url.ends_with('/') {
            base_url.pop();
        }
        let mut target = target.into();
        if !target.starts_with('/') {
            target.insert(0, '/');
        }
        HttpRequest {
            method,
            base_url,
            target,
            form: None,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
            basic_auth: None,
        }
    }

    /// Send `auth` as `Authorization: Basic ...`.
    #[must_use]
    pub fn with_basic_auth(mut self, auth: BasicAuth) -> Self {
        self.basic_auth = Some(auth);
        self
    }

    /// The credentials to send, if any: a transport sets the
    /// `Authorization` header to [`BasicAuth::authorization`].
    pub fn basic_auth(&self) -> Option<&BasicAuth> {
        self.basic_auth.as_ref()
    }

    /// Send `form` as the body, `application/x-www-form-urlencoded`
    /// (already encoded).
    #[must_use]
    pub fn with_form(mut self, form: impl Into<String>) -> Self {
        self.form = Some(form.into());
        self
    }

    /// The total time allowed for connecting, sending and reading the reply.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Read at most this many body bytes.
    #[must_use]
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// `GET` or `POST`.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The server's base URL, e.g. `http://127.0.0.1:8888`, with no
    /// trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The request target: path and query, starting with `/`,
    /// percent-encoded, e.g. `/hb_ping?2000&appid=x&cache_buster=...`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The full URL: [`base_url`](Self::base_url) followed by
    /// [`target`](Self::target).
    pub fn url(&self) -> String {
        let mut url = String::with_capacity(self.base_url.len() + self.target.len());
        url.push_str(&self.base_url);
        url.push_str(&self.target);
        url
    }

    /// The form body, sent as `application/x-www-form-urlencoded`, already
    /// encoded.
    pub fn form(&self) -> Option<&str> {
        self.form.as_deref()
    }

    /// The total time allowed for connecting, sending and reading the
    /// reply. The client enforces it above the transport (see the
    /// [module docs](self)); a transport may also hand it to its HTTP stack.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Read at most this many body bytes; more is a
    /// [`TransportErrorKind::BodyTooLarge`](crate::TransportErrorKind::BodyTooLarge)
    /// error. The client sets it per call, to what the protocol can produce
    /// for that call, and checks every reply against it; a transport should
    /// stop reading once past it rather than buffer the rest.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }
}

/// One HTTP reply: status code and the raw body.
///
/// ```
/// use heartbeat_sdk::transport::HttpResponse;
///
/// let reply = HttpResponse::new(200, "3000");
/// assert_eq!((reply.status(), reply.body()), (200, &b"3000"[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpResponse {
    status: u16,
    body: Vec<u8>,
}

impl HttpResponse {
    /// A reply with this status code and raw body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            body: body.into(),
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body bytes, owned.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

/// Sends one HTTP request and returns its reply.
///
/// Implement it to plug in your own HTTP stack, or make a closure one with
/// [`from_fn`]:
///
/// ```
/// use async_trait::async_trait;
/// use heartbeat_sdk::transport::{HttpRequest, HttpResponse, Transport};
/// use heartbeat_sdk::TransportError;
///
/// #[derive(Debug)]
/// struct AlwaysThreeSeconds;
///
/// #[async_trait]
/// impl Transport for AlwaysThreeSeconds {
///     async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, TransportError> {
///         Ok(HttpResponse::new(200, "3000"))
///     }
/// }
/// ```
#[async_trait]
pub trait Transport: Debug + Send + Sync {
    /// Send `request` and return the reply, or a [`TransportError`] that says
    /// whether the server was unreachable, too slow, or something else.
    ///
    /// A non-2xx status is a reply, not an error. The client holds every
    /// call to the request's deadline and body cap (see the
    /// [module docs](self)).
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for Arc<T> {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        (**self).send(request).await
    }
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for Box<T> {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        (**self).send(request).await
    }
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for &T {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        (**self).send(request).await
    }
}

/// A transport made of a closure: `f` gets each request and returns a
/// future of the reply, so a test can be its own server in three lines.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> heartbeat_sdk::Result<()> {
/// use std::time::Duration;
/// use heartbeat_sdk::transport::{self, HttpResponse};
/// use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
///
/// let server = transport::from_fn(|_request| async { Ok(HttpResponse::new(200, "3000")) });
/// let client = HeartbeatClient::builder_with_transport(server).app_id("kiosk").build()?;
/// assert_eq!(client.ping(Duration::from_secs(2), ErrorPolicy::Raise).await?, Duration::from_secs(3));
/// # Ok(()) }
/// ```
///
/// The closure sees each [`HttpRequest`] in full, so it can also record
/// requests, fail some, or hand them on to another transport (clone what
/// the future needs into it):
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::{Arc, Mutex};
/// use heartbeat_sdk::transport::{self, HttpResponse};
/// use heartbeat_sdk::TransportError;
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let refusing = transport::from_fn(move |request| {
///     log.lock().unwrap().push(request.target().to_owned());
///     async { Err::<HttpResponse, _>(TransportError::connect("refused")) }
/// });
/// # use heartbeat_sdk::transport::{HttpRequest, Method, Transport};
/// # let err = refusing.send(HttpRequest::new(Method::Get, "http://h", "/list")).await.unwrap_err();
/// # assert!(err.is_connect());
/// # assert_eq!(*seen.lock().unwrap(), ["/list"]);
/// # }
/// ```
pub fn from_fn<F, Fut>(f: F) -> FnTransport<F>
where
    F: Fn(HttpRequest) -> Fut + Send + Sync,
    Fut: Future<Output = Result<HttpResponse, TransportError>> + Send + 'static,
{
    FnTransport { f }
}

/// The [`Transport`] that [`from_fn`] makes of a closure.
#[derive(Clone)]
pub struct FnTransport<F> {
    f: F,
}

impl<F> Debug for FnTransport<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTransport").finish_non_exhaustive()
    }
}

#[async_trait]
impl<F, Fut> Transport for FnTransport<F>
where
    F: Fn(HttpRequest) -> Fut + Send + Sync,
    Fut: Future<Output = Result<HttpResponse, TransportError>> + Send + 'static,
{
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        (self.f)(request).await
    }
}

/// The transport used by [`HeartbeatClient::from_env`](crate::HeartbeatClient::from_env)
/// and the builder when none is given: reqwest when its feature is on,
/// otherwise surf.
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "reqwest", feature = "surf"))))]
pub type DefaultTransport = ReqwestTransport;

/// The transport used by [`HeartbeatClient::from_env`](crate::HeartbeatClient::from_env)
/// and the builder when none is given: reqwest when its feature is on,
/// otherwise surf.
#[cfg(all(feature = "surf", not(feature = "reqwest")))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "reqwest", feature = "surf"))))]
pub type DefaultTransport = SurfTransport;

/// Send `request` through `transport`, held to its deadline and body cap:
/// the one place both are enforced for every transport (see the module
/// docs).
pub(crate) async fn send_bounded(
    transport: &dyn Transport,
    request: HttpRequest,
) -> Result<HttpResponse, TransportError> {
    let (timeout, limit) = (request.timeout, request.body_limit);
    let response = match timer::deadline(timeout, transport.send(request)).await {
        Some(reply) => reply?,
        None => {
            return Err(TransportError::timeout(format!(
                "no complete reply within {timeout:?}"
            )))
        }
    };
    if response.body.len() > limit {
        return Err(TransportError::body_too_large(limit));
    }
    Ok(response)
}

/// Append `chunk` to `body`, failing once `body` would exceed `limit` bytes.
///
/// Shared by the HTTP backends so that every transport enforces the cap the same way.
#[cfg_attr(not(default_transport), allow(dead_code))]
pub(crate) fn push_capped(
    body: &mut Vec<u8>,
    chunk: &[u8],
    limit: usize,
) -> Result<(), TransportError> {
    if body.len().saturating_add(chunk.len()) > limit {
        return Err(TransportError::body_too_large(limit));
    }
    body.extend_from_slice(chunk);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_capped_accepts_up_to_the_limit_and_refuses_past_it() {
        let mut body = Vec::new();
        push_capped(&mut body, b"abc", 4).unwrap();
        push_capped(&mut body, b"d", 4).unwrap();
        let err = push_capped(&mut body, b"e", 4).unwrap_err();
        assert!(err.is_body_too_large());
        assert_eq!(body, b"abcd");
    }
}

//! [`SurfTransport`]: surf sending through curl (isahc), feature `surf`.
//!
//! surf has had no commit since 2022 and both sentry-rust and
//! opentelemetry-rust dropped their surf backends, so this one is kept
//! isolated, off by default, and tested against raw sockets.
//!
//! Why curl: the reference heartbeat server answers in HTTP/1.0 and ends its
//! body by closing the connection. surf's `h1-client` backends refuse such
//! replies ("Unsupported HTTP version"); curl reads them.
//!
//! Why our own glue rather than `http_client::isahc::IsahcClient`: that glue
//! calls `to_str().unwrap()` on every reply header value and
//! `Response::new(status)` (which panics on status codes that `http-types`
//! does not list, such as 299 or 499), so a server could panic the caller
//! with one odd header byte. [`CurlClient`] converts headers without
//! panicking and carries any status code through.
//!
//! What this backend does not do: keep a deadline. The client holds every
//! request to its timeout above the transports (one timer: tokio's, or
//! async-io's outside tokio; see the [transport module](super)), and the
//! body cap too; this file only stops reading once past the cap. Two
//! values still ride in surf's extensions, each because surf has no field
//! for it: the request's own timeout ([`RequestTimeout`], surf's timeout is
//! per client) and a status code `http-types` cannot represent
//! ([`RawStatus`]).

use std::fmt;
use std::io;
use std::time::Duration;

use async_trait::async_trait;
use futures_lite::AsyncReadExt;
use isahc::config::Configurable;
use surf::http as http_types;

use super::{
    push_capped, HttpRequest, HttpResponse, Method, Transport, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
};
use crate::error::TransportError;

/// A [`Transport`] over one [`surf::Client`] that sends through curl
/// (feature `surf`, off by default).
///
/// Built with [`SurfTransport::new`] it bypasses system proxies (`http_proxy`,
/// `ALL_PROXY`...), follows no redirects (a `3xx` is returned as it is, and
/// the client makes it an [`Error::Status`](crate::Error::Status)), connects
/// within 2 s and gives a request 4 s in all; [`SurfTransport::builder`]
/// changes the timeouts. The client holds every request to its own
/// [`HttpRequest::timeout`] above the transport, with a timer that works
/// under any async runtime (tokio, async-std, smol) or none at all (see the
/// [transport module](super#what-the-seam-enforces-above-every-backend)).
///
/// The transport owns one curl client (one background thread and one
/// connection cache); clone the transport to share it.
///
/// surf itself is unmaintained upstream (no commit since 2022): prefer the
/// default reqwest transport unless your program already lives on surf.
///
/// ```
/// use std::time::Duration;
/// use heartbeat_sdk::transport::SurfTransport;
/// use heartbeat_sdk::HeartbeatClient;
///
/// let transport = SurfTransport::builder()
///     .connect_timeout(Duration::from_millis(500))
///     .build()
///     .expect("curl initialises");
/// let client = HeartbeatClient::builder_with_transport(transport)
///     .url("127.0.0.1:8888")
///     .build()
///     .unwrap();
/// # let _ = client;
/// ```
#[derive(Debug, Clone)]
pub struct SurfTransport {
    client: surf::Client,
}

impl SurfTransport {
    /// A transport with the default timeouts and no proxy.
    ///
    /// ```
    /// let transport = heartbeat_sdk::transport::SurfTransport::new().unwrap();
    /// # let _ = transport;
    /// ```
    pub fn new() -> Result<Self, TransportError> {
        Self::builder().build()
    }

    /// A builder to set the timeouts.
    ///
    /// ```
    /// use std::time::Duration;
    /// let transport = heartbeat_sdk::transport::SurfTransport::builder()
    ///     .timeout(Duration::from_secs(10))
    ///     .build()
    ///     .unwrap();
    /// # let _ = transport;
    /// ```
    pub fn builder() -> SurfTransportBuilder {
        SurfTransportBuilder::default()
    }

    /// The wrapped surf client, e.g. to add middleware and wrap it again
    /// with [`From`].
    ///
    /// ```
    /// use heartbeat_sdk::transport::SurfTransport;
    ///
    /// let transport = SurfTransport::new().unwrap();
    /// let same_curl_client = SurfTransport::from(transport.client().clone());
    /// # let _ = same_curl_client;
    /// ```
    pub fn client(&self) -> &surf::Client {
        &self.client
    }
}

/// Wrap a surf client of your own.
///
/// This crate builds surf without a default backend, so build the client
/// with `surf::Client::with_http_client`, take one from
/// [`SurfTransport::client`], or enable a surf backend feature yourself
/// (note that surf's own `curl-client` glue panics on a reply header value
/// that is not visible ASCII, and on status codes `http-types` does not
/// list). Whatever its backend, the client still enforces each request's
/// timeout and body cap above the transport.
/// Do not add surf's `Redirect` middleware: following a redirect would send
/// the app id to whatever origin the server names.
impl From<surf::Client> for SurfTransport {
    fn from(client: surf::Client) -> Self {
        Self { client }
    }
}

/// Configures a [`SurfTransport`].
///
/// ```
/// use std::time::Duration;
/// use heartbeat_sdk::transport::SurfTransport;
///
/// let transport = SurfTransport::builder()
///     .connect_timeout(Duration::from_millis(500))
///     .timeout(Duration::from_secs(3))
///     .build()
///     .unwrap();
/// # let _ = transport;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SurfTransportBuilder {
    connect_timeout: Duration,
    timeout: Duration,
}

impl Default for SurfTransportBuilder {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl SurfTransportBuilder {
    /// Time allowed to establish a connection (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for a whole request when the request itself does not say
    /// (default 4 s): it applies to requests sent straight through
    /// [`SurfTransport::client`]. Each [`HttpRequest::timeout`] overrides it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Build the transport (starts curl's background thread).
    pub fn build(self) -> Result<SurfTransport, TransportError> {
        let curl = isahc::HttpClient::builder()
            // CURLOPT_PROXY="": ignore http_proxy / ALL_PROXY, as reqwest's no_proxy()
            .proxy(None)
            // curl's default, said out loud: a redirect must never carry the
            // app id to another origin
            .redirect_policy(isahc::config::RedirectPolicy::None)
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .build()
            .map_err(from_isahc)?;
        let config = http_client::Config::new().set_timeout(Some(self.timeout));
        let glue = CurlClient { curl, config };
        Ok(SurfTransport {
            client: surf::Client::with_http_client(glue),
        })
    }
}

#[async_trait]
impl Transport for SurfTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let method = match request.method() {
            Method::Get => http_types::Method::Get,
            Method::Post => http_types::Method::Post,
        };
        let url = request.url();
        let url = surf::Url::parse(&url).map_err(|e| {
            TransportError::other(format!("invalid URL {url:?}: {e}")).with_source(e)
        })?;
        let mut outgoing = surf::Request::new(method, url);
        if let Some(form) = request.form() {
            outgoing.set_body(form);
            // after set_body, which sets text/plain
            outgoing.set_content_type(http_types::mime::FORM);
        }
        if let Some(auth) = request.basic_auth() {
            outgoing.insert_header(http_types::headers::AUTHORIZATION, auth.authorization());
        }
        outgoing.set_ext(RequestTimeout(request.timeout()));

        let mut response = self.client.send(outgoing).await.map_err(from_surf)?;
        let status = match response.ext::<RawStatus>() {
            Some(RawStatus(status)) => *status,
            None => u16::from(response.status()),
        };
        // stop at the cap rather than buffer a huge body first
        let limit = request.body_limit();
        let expected = response.len();
        if expected.is_some_and(|len| len > limit) {
            return Err(TransportError::body_too_large(limit));
        }
        let mut reader = response.take_body();
        let mut body = Vec::new();
        let mut chunk = vec![0; 8 * 1024];
        loop {
            let n = reader.read(&mut chunk).await.map_err(from_io)?;
            if n == 0 {
                break;
            }
            push_capped(&mut body, &chunk[..n], limit)?;
        }
        // curl ends the body stream quietly when it aborts a transfer
        if let Some(expected) = expected.filter(|&len| body.len() < len) {
            return Err(TransportError::closed(format!(
                "reply cut short: {} of {expected} bytes",
                body.len()
            )));
        }
        Ok(HttpResponse::new(status, body))
    }
}

/// The request's own total timeout, for [`CurlClient`] to hand to curl in
/// place of the client-wide one: surf has a per-client timeout only, no
/// per-request one, so this extension is the one way to lift the ceiling
/// of [`SurfTransportBuilder::timeout`] for a request that may take longer.
/// It is not a second deadline: the client enforces the request's deadline
/// above every transport.
#[derive(Debug, Clone, Copy)]
struct RequestTimeout(Duration);

/// The status code exactly as the server sent it: `http-types` represents
/// only the codes it lists (no 299, no 499), and surf offers no other way
/// to carry one.
#[derive(Debug, Clone, Copy)]
struct RawStatus(u16);

/// The surf backend: `isahc` (curl) behind `http_client::HttpClient`,
/// converting without ever panicking on what a server sends.
struct CurlClient {
    curl: isahc::HttpClient,
    config: http_client::Config,
}

impl fmt::Debug for CurlClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurlClient").finish_non_exhaustive()
    }
}

#[async_trait]
impl http_client::HttpClient for CurlClient {
    async fn send(
        &self,
        mut req: http_types::Request,
    ) -> Result<http_types::Response, surf::Error> {
        use isahc::http;

        let method = http::Method::from_bytes(req.method().to_string().as_bytes())
            .map_err(|e| glue_error(format!("method {}: {e}", req.method())))?;
        let mut builder = http::Request::builder()
            .method(method)
            .uri(req.url().as_str());
        for (name, values) in req.iter() {
            for value in values.iter() {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        if let Some(RequestTimeout(timeout)) = req.ext().get::<RequestTimeout>() {
            builder = builder.timeout(*timeout);
        }
        let body = req.take_body().into_bytes().await?;
        let body = if body.is_empty() {
            isahc::Body::empty()
        } else {
            isahc::Body::from(body)
        };
        let request = builder
            .body(body)
            .map_err(|e| glue_error(format!("cannot build the request: {e}")))?;

        let reply = self.curl.send_async(request).await?;
        let (parts, body) = reply.into_parts();
        let raw_status = parts.status.as_u16();
        let mut response = match http_types::StatusCode::try_from(raw_status) {
            Ok(status) => http_types::Response::new(status),
            Err(_) => {
                // A code http-types does not know (e.g. 299, 499): keep the
                // class for surf, the exact code for SurfTransport.
                let class = match raw_status / 100 {
                    1 => http_types::StatusCode::Continue,
                    2 => http_types::StatusCode::Ok,
                    3 => http_types::StatusCode::MultipleChoice,
                    4 => http_types::StatusCode::BadRequest,
                    _ => http_types::StatusCode::InternalServerError,
                };
                let mut response = http_types::Response::new(class);
                response.ext_mut().insert(RawStatus(raw_status));
                response
            }
        };
        for (name, value) in &parts.headers {
            let name =
                http_types::headers::HeaderName::from_bytes(name.as_str().as_bytes().to_vec());
            let value = http_types::headers::HeaderValue::from_bytes(ascii_lossy(value.as_bytes()));
            if let (Ok(name), Ok(value)) = (name, value) {
                response.append_header(name, value);
            }
        }
        let length = body.len().and_then(|len| usize::try_from(len).ok());
        response.set_body(http_types::Body::from_reader(
            futures_lite::io::BufReader::new(body),
            length,
        ));
        Ok(response)
    }

    fn set_config(&mut self, _config: http_client::Config) -> http_types::Result<()> {
        Err(glue_error(
            "the curl client of a SurfTransport is configured by SurfTransport::builder",
        ))
    }

    fn config(&self) -> &http_client::Config {
        &self.config
    }
}

/// Header bytes as ASCII: bytes 0x80-0xff (which `http-types` cannot hold)
/// become `?`.
fn ascii_lossy(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b.is_ascii() { b } else { b'?' })
        .collect()
}

fn glue_error(message: impl fmt::Display + fmt::Debug + Send + Sync + 'static) -> surf::Error {
    surf::Error::from_str(http_types::StatusCode::InternalServerError, message)
}

/// Map a surf error onto our kinds by the curl or I/O error inside it.
fn from_surf(err: surf::Error) -> TransportError {
    // Display only: surf's Debug may print a captured backtrace.
    let message = err.to_string();
    match err.into_inner().downcast::<isahc::Error>() {
        Ok(err) => from_isahc(err),
        Err(err) => match err.downcast::<io::Error>() {
            Ok(err) => from_io(err),
            Err(_) => TransportError::other(message),
        },
    }
}

fn from_isahc(err: isahc::Error) -> TransportError {
    classify_isahc(&err, err.to_string()).with_source(err)
}

fn classify_isahc(err: &isahc::Error, message: String) -> TransportError {
    match err {
        isahc::Error::ConnectFailed | isahc::Error::CouldntResolveHost => {
            TransportError::connect(message)
        }
        // curl reports connect timeouts and total timeouts alike
        isahc::Error::Timeout => TransportError::timeout(message),
        isahc::Error::Io(io) => with_io_kind(io, message),
        _ => TransportError::other(message),
    }
}

/// Errors while reading the body: curl's error may travel inside the I/O error.
fn from_io(err: io::Error) -> TransportError {
    let message = err.to_string();
    let error = match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<isahc::Error>())
    {
        Some(curl) => classify_isahc(curl, message),
        None => with_io_kind(&err, message),
    };
    error.with_source(err)
}

fn with_io_kind(err: &io::Error, message: String) -> TransportError {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable => {
            TransportError::connect(message)
        }
        TimedOut => TransportError::timeout(message),
        _ => TransportError::other(message),
    }
}

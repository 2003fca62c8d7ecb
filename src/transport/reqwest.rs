//! [`ReqwestTransport`]: the default backend, one pooled `reqwest::Client`.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    push_capped, HttpRequest, HttpResponse, Method, Transport, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
};
use crate::error::TransportError;

/// A [`Transport`] over one pooled [`reqwest::Client`] (feature `reqwest`).
///
/// Built with [`ReqwestTransport::new`] it bypasses system proxies, follows
/// no redirects, connects within 2 s and gives a request 4 s in all;
/// [`ReqwestTransport::builder`] changes the timeouts and adds trusted root
/// certificates. Wrap a client of your own with `From<reqwest::Client>`.
///
/// TLS (`https://` URLs): through rustls (feature `rustls`, the default)
/// or the platform's native TLS (feature `native-tls`). With both features
/// on, reqwest picks native TLS; to choose, build a `reqwest::Client` with
/// `use_rustls_tls()` or `use_native_tls()` and wrap it.
///
/// Redirects: a `3xx` reply is returned as it is (the client makes it an
/// [`Error::Status`](crate::Error::Status)); following one would send the
/// app id (in the query and the form) to whatever origin the server names.
///
/// ```
/// use std::time::Duration;
/// use heartbeat_sdk::transport::ReqwestTransport;
///
/// let transport = ReqwestTransport::builder()
///     .connect_timeout(Duration::from_millis(500))
///     .build()
///     .expect("a TLS backend is available");
/// # let _ = transport;
/// ```
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// A transport with the default timeouts and no proxy.
    pub fn new() -> Result<Self, TransportError> {
        Self::builder().build()
    }

    /// A builder to set the timeouts.
    pub fn builder() -> ReqwestTransportBuilder {
        ReqwestTransportBuilder::default()
    }

    /// The wrapped reqwest client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// Wrap a reqwest client of your own.
///
/// Build it with `.redirect(reqwest::redirect::Policy::none())`: reqwest
/// follows up to ten redirects by default, and a redirect policy cannot be
/// changed per request. Should your client follow one anyway, the reply
/// from the other URL is refused with a transport error (never taken for
/// the server's answer), but the request has then already been sent there.
impl From<reqwest::Client> for ReqwestTransport {
    fn from(client: reqwest::Client) -> Self {
        Self { client }
    }
}

/// Configures a [`ReqwestTransport`].
#[derive(Debug, Clone)]
pub struct ReqwestTransportBuilder {
    connect_timeout: Duration,
    timeout: Duration,
    /// Trusted on top of the TLS backend's own roots.
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    roots: Vec<reqwest::Certificate>,
}

impl Default for ReqwestTransportBuilder {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            #[cfg(any(feature = "rustls", feature = "native-tls"))]
            roots: Vec::new(),
        }
    }
}

impl ReqwestTransportBuilder {
    /// Time allowed to establish a connection (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for a whole request when the request itself does not say
    /// (default 4 s). Each [`HttpRequest::timeout`] overrides it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trust the certificates in `pem` (one or more `BEGIN CERTIFICATE`
    /// blocks) as roots for `https://` URLs, on top of the TLS backend's
    /// own (webpki's roots with rustls, the system's with native TLS):
    /// for a server with a self-signed certificate or a private CA
    /// (feature `rustls` or `native-tls`).
    ///
    /// # Errors
    /// A [`TransportError`] of kind
    /// [`Other`](crate::TransportErrorKind::Other) when `pem` holds no
    /// certificate or a block that does not decode. A certificate the TLS
    /// backend cannot parse is refused here with native TLS, and by
    /// [`build`](Self::build) with rustls.
    ///
    /// ```no_run
    /// use heartbeat_sdk::transport::ReqwestTransport;
    /// use heartbeat_sdk::HeartbeatClient;
    ///
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("/etc/heartbeat/ca.pem")?;
    /// let transport = ReqwestTransport::builder().add_root_certificate(&ca)?.build()?;
    /// let client = HeartbeatClient::builder_with_transport(transport)
    ///     .url("https://hb.internal:8443")
    ///     .app_id("backup")
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "rustls", feature = "native-tls"))))]
    pub fn add_root_certificate(mut self, pem: &[u8]) -> Result<Self, TransportError> {
        let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            TransportError::other(format!("invalid PEM certificate: {e}")).with_source(e)
        })?;
        if certificates.is_empty() {
            return Err(TransportError::other(
                "invalid PEM certificate: no BEGIN CERTIFICATE block",
            ));
        }
        self.roots.extend(certificates);
        Ok(self)
    }

    /// Build the transport.
    pub fn build(self) -> Result<ReqwestTransport, TransportError> {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout);
        #[cfg(any(feature = "rustls", feature = "native-tls"))]
        let builder = self
            .roots
            .into_iter()
            .fold(builder, reqwest::ClientBuilder::add_root_certificate);
        let client = builder.build().map_err(convert)?;
        Ok(ReqwestTransport { client })
    }
}

#[async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let url = request.url();
        let url = reqwest::Url::parse(&url).map_err(|e| {
            TransportError::other(format!("invalid URL {url:?}: {e}")).with_source(e)
        })?;
        let builder = match request.method() {
            Method::Get => self.client.get(url.clone()),
            Method::Post => self.client.post(url.clone()),
        };
        let builder = match request.form() {
            Some(form) => builder
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form.to_owned()),
            None => builder,
        };
        let builder = match request.basic_auth() {
            Some(auth) => builder.header(reqwest::header::AUTHORIZATION, auth.authorization()),
            None => builder,
        };
        // reqwest takes a per-request timeout directly: it lifts the
        // client's own ceiling to this request's deadline (which the client
        // enforces above every transport anyway).
        let mut response = builder
            .timeout(request.timeout())
            .send()
            .await
            .map_err(convert)?;
        if *response.url() != url {
            // only a client given through `From` follows redirects
            return Err(TransportError::other(format!(
                "the wrapped reqwest client followed a redirect to {}; build it with \
                 redirect::Policy::none()",
                response.url().origin().ascii_serialization()
            )));
        }
        let status = response.status().as_u16();
        let limit = request.body_limit();
        // stop at the cap rather than buffer a huge body first
        let announced = response.content_length();
        if announced.is_some_and(|len| len > limit as u64) {
            return Err(TransportError::body_too_large(limit));
        }
        // the announced length at once: growing by doubling would hold up
        // to twice a big body (a promise not kept costs address space, not
        // memory: pages never written are never resident)
        let mut body =
            Vec::with_capacity(announced.map_or(0, |len| usize::try_from(len).unwrap_or(limit)));
        while let Some(chunk) = response.chunk().await.map_err(convert)? {
            push_capped(&mut body, &chunk, limit)?;
        }
        Ok(HttpResponse::new(status, body))
    }
}

/// Map a reqwest error onto our kinds; a connect timeout counts as a timeout.
fn convert(err: reqwest::Error) -> TransportError {
    // The client error already names the URL; keep the message short.
    let err = err.without_url();
    let message = err.to_string();
    let kind = if err.is_timeout() {
        TransportError::timeout(message)
    } else if err.is_connect() {
        TransportError::connect(message)
    } else if closed_under_us(&err) {
        TransportError::closed(message)
    } else {
        TransportError::other(message)
    };
    kind.with_source(err)
}

/// True when the connection was closed or reset before the reply was
/// complete, e.g. a pooled keep-alive connection the server had just closed.
fn closed_under_us(err: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_incomplete_message() || e.is_canceled())
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{
                BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof,
            };
            if matches!(
                io.kind(),
                BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof
            ) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

//! The HTTP seam: one request in, one status and body out.
//!
//! A [`Transport`] knows HTTP only; it never looks at heartbeat paths. Every
//! heartbeat request is built by [`crate::protocol`] and every reply parsed
//! there, so a backend is a thin conversion between [`HttpRequest`] /
//! [`HttpResponse`] and its own types.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::TransportError;

#[cfg(feature = "mock")]
mod mock;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub use self::mock::{MockFailure, MockTransport};
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

/// The HTTP method of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One HTTP request, as a transport must send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: Method,
    /// The full URL, query included, already percent-encoded.
    pub url: String,
    /// A form body, sent as `application/x-www-form-urlencoded`, already encoded.
    pub form: Option<String>,
    /// The total time allowed for connecting, sending and reading the reply.
    pub timeout: Duration,
    /// Read at most this many body bytes; more is a
    /// [`TransportErrorKind::BodyTooLarge`](crate::TransportErrorKind::BodyTooLarge)
    /// error. The client sets it per call, to what the protocol can
    /// produce for that call; every transport must honour it.
    pub body_limit: usize,
}

/// One HTTP reply: status code and the raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body bytes, at most the request's `body_limit` of them.
    pub body: Vec<u8>,
}

/// Sends one HTTP request and returns its reply.
///
/// Implement it to plug in your own HTTP stack; a test can implement it in a
/// few lines:
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
///         Ok(HttpResponse { status: 200, body: b"3000".to_vec() })
///     }
/// }
/// ```
#[async_trait]
pub trait Transport: Debug + Send + Sync {
    /// Send `request` and return the reply, or a [`TransportError`] that says
    /// whether the server was unreachable, too slow, or something else.
    ///
    /// A non-2xx status is a reply, not an error.
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

/// Append `chunk` to `body`, failing once `body` would exceed `limit` bytes.
///
/// Shared by the HTTP backends so that every transport enforces the cap the same way.
#[cfg_attr(not(any(feature = "reqwest", feature = "surf")), allow(dead_code))]
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

//! The crate's one error type, and the transport error every backend maps into.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong in a heartbeat call.
///
/// Marked `#[non_exhaustive]`: match the variants you care about and keep a
/// wildcard arm.
///
/// ```
/// use heartbeat_sdk::Error;
///
/// fn describe(err: &Error) -> &'static str {
///     match err {
///         Error::Transport { source, .. } if source.is_connect() => "server not reachable",
///         Error::Transport { source, .. } if source.is_timeout() => "server too slow",
///         Error::Status { .. } => "server said no",
///         Error::Parse { .. } => "server said something odd",
///         Error::Unsupported { .. } => "server too old for this call",
///         Error::Build { .. } | Error::Task { .. } => "local failure",
///         _ => "bad configuration or argument",
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server URL cannot be used (no host, unsupported scheme, bad port...).
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The application id cannot be used: empty, too long, or with a
    /// character that would corrupt a reply line (control characters, `|`,
    /// U+2028, U+2029, bidirectional controls). The reason is the text of the
    /// [`AppIdError`](crate::protocol::AppIdError) that
    /// [`check_app_id`](crate::protocol::check_app_id), the rule the server
    /// applies too, returned.
    #[error("invalid application id: {reason}")]
    InvalidAppId {
        /// Why it was refused.
        reason: String,
    },
    /// A timeout that the protocol cannot carry (more than
    /// [`MAX_TIMEOUT_MS`](crate::protocol::MAX_TIMEOUT_MS) milliseconds).
    #[error("timeout {requested:?} is out of range (the protocol carries at most {max_ms} ms)")]
    InvalidTimeout {
        /// The timeout that was asked for.
        requested: Duration,
        /// The largest timeout in milliseconds the protocol carries.
        max_ms: u64,
    },
    /// Builder settings that contradict each other: for example
    /// [`ClientBuilder::connect_timeout`](crate::ClientBuilder::connect_timeout)
    /// together with an explicit transport, which the builder cannot
    /// configure.
    #[error("invalid client configuration: {reason}")]
    Config {
        /// What is wrong with the settings.
        reason: String,
    },
    /// The client could not be set up on this machine: its default HTTP
    /// transport failed to build (say, its TLS backend could not be
    /// initialised), or the blocking client could not start its worker
    /// thread or runtime. Nothing was sent.
    #[error("cannot build the client: {reason}")]
    Build {
        /// What could not be set up.
        reason: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A background task of this crate stopped before it could finish its
    /// work: the keep-alive task (it panicked or was aborted), or the
    /// blocking client's worker thread. Not a network failure: a failed
    /// request of the task is reported as that request's own error.
    #[error("{reason}")]
    Task {
        /// What stopped, and how.
        reason: String,
    },
    /// A keep-alive's [`shutdown`](crate::KeepAliveHandle::shutdown) (a beat
    /// in flight, then `hb_done`) did not finish within
    /// [`KeepAlive::shutdown_timeout`](crate::KeepAlive::shutdown_timeout):
    /// the task was aborted, and `hb_done` may not have reached the server.
    /// [`is_timeout`](Error::is_timeout) is true for it.
    #[error("keep-alive shutdown not done within {timeout:?}; task aborted")]
    ShutdownTimeout {
        /// The shutdown timeout that ran out.
        timeout: Duration,
    },
    /// The request did not get an HTTP reply (refused, timed out, cut off...).
    /// Always a request that was attempted: set-up failures are
    /// [`Error::Build`], a stopped background task [`Error::Task`].
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The full URL of the request.
        url: String,
        /// What the transport reported.
        #[source]
        source: TransportError,
    },
    /// The server answered with a status other than 2xx.
    #[error("server answered HTTP {status} to {url}: {body}")]
    Status {
        /// The full URL of the request.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The reply body: its first [`MAX_EXCERPT`](crate::protocol::MAX_EXCERPT)
        /// bytes, lossily decoded as UTF-8 (see [`excerpt`](crate::protocol::excerpt)).
        body: String,
    },
    /// The server does not offer what was asked for: it answered
    /// `GET /api/v1/apps` ([`HeartbeatClient::apps`](crate::HeartbeatClient::apps))
    /// with `400` (the reference server's `ERROR: cannot process your
    /// request`), `404` or `405`, or with a `2xx` reply that is not
    /// JSON at all (text or HTML; `status` is then `200`). Use `/list` and
    /// `/status` with such a server. Never retried.
    #[error("the server at {url} does not offer this API (HTTP {status})")]
    Unsupported {
        /// The full URL of the request.
        url: String,
        /// The HTTP status code it answered.
        status: u16,
    },
    /// The server answered 2xx but the body is not what the protocol says.
    #[error("cannot parse the reply from {url} ({reason}): {body:?}")]
    Parse {
        /// The full URL of the request.
        url: String,
        /// What was wrong with it.
        reason: String,
        /// The reply body (its first [`MAX_EXCERPT`](crate::protocol::MAX_EXCERPT)
        /// bytes, lossily decoded as UTF-8, see [`excerpt`](crate::protocol::excerpt)), kept so that you can see
        /// what the server actually said.
        body: String,
    },
}

/// The protocol's own errors, as the client reports them.
impl From<crate::protocol::AppIdError> for Error {
    fn from(e: crate::protocol::AppIdError) -> Self {
        Error::InvalidAppId {
            reason: e.to_string(),
        }
    }
}

/// The protocol's own errors, as the client reports them.
impl From<crate::protocol::TimeoutTooLong> for Error {
    fn from(e: crate::protocol::TimeoutTooLong) -> Self {
        Error::InvalidTimeout {
            requested: e.requested,
            max_ms: e.max_ms,
        }
    }
}

impl Error {
    /// The transport error behind this error, if it is a transport failure.
    pub fn transport_error(&self) -> Option<&TransportError> {
        match self {
            Error::Transport { source, .. } => Some(source),
            _ => None,
        }
    }

    /// True when the server could not be reached (refused, unreachable, DNS).
    pub fn is_connect(&self) -> bool {
        self.transport_error()
            .is_some_and(TransportError::is_connect)
    }

    /// True when the request timed out, or a keep-alive's shutdown did
    /// ([`Error::ShutdownTimeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::ShutdownTimeout { .. })
            || self
                .transport_error()
                .is_some_and(TransportError::is_timeout)
    }

    /// An [`Error::Build`] for `reason`, caused by `source`.
    #[cfg(any(feature = "reqwest", feature = "surf", feature = "blocking"))]
    pub(crate) fn build(
        reason: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        Error::Build {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// An [`Error::Task`] for `reason`.
    #[cfg(feature = "keepalive")]
    pub(crate) fn task(reason: impl Into<String>) -> Error {
        Error::Task {
            reason: reason.into(),
        }
    }
}

/// A convenient alias for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of transport failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Connection refused, host unreachable, name not resolved.
    Connect,
    /// The connect or total timeout fired.
    Timeout,
    /// The reply body was larger than the request's body limit.
    BodyTooLarge,
    /// The connection was closed or reset before the reply was complete,
    /// typically a kept-alive connection the server had just closed. A
    /// `GET` that fails this way is sent once more on a fresh connection.
    Closed,
    /// Anything else (protocol error, connection reset mid-reply...).
    Other,
}

/// A failure reported by a [`Transport`](crate::Transport), opaque so that no
/// backend's error type leaks into this crate's API.
///
/// ```
/// use heartbeat_sdk::TransportError;
///
/// let err = TransportError::timeout("no reply within 4s");
/// assert!(err.is_timeout());
/// assert!(!err.is_connect());
/// ```
pub struct TransportError {
    kind: TransportErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TransportError {
    /// A new error of the given kind with a message.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Connection refused or host unreachable.
    pub fn connect(message: impl Into<String>) -> Self {
        Self::new(TransportErrorKind::Connect, message)
    }

    /// The request timed out.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(TransportErrorKind::Timeout, message)
    }

    /// The reply body exceeded `limit` bytes.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            TransportErrorKind::BodyTooLarge,
            format!("reply body larger than {limit} bytes"),
        )
    }

    /// The connection was closed or reset before the reply was complete.
    pub fn closed(message: impl Into<String>) -> Self {
        Self::new(TransportErrorKind::Closed, message)
    }

    /// Any other failure.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(TransportErrorKind::Other, message)
    }

    /// Attach the underlying cause, shown by [`std::error::Error::source`].
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// True when the server could not be reached.
    pub fn is_connect(&self) -> bool {
        self.kind == TransportErrorKind::Connect
    }

    /// True when the request timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind == TransportErrorKind::Timeout
    }

    /// True when the reply body was over the limit.
    pub fn is_body_too_large(&self) -> bool {
        self.kind == TransportErrorKind::BodyTooLarge
    }

    /// True when the connection was closed or reset before the reply was
    /// complete.
    pub fn is_closed(&self) -> bool {
        self.kind == TransportErrorKind::Closed
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            TransportErrorKind::Connect => "cannot connect",
            TransportErrorKind::Timeout => "timed out",
            TransportErrorKind::BodyTooLarge => "reply too large",
            TransportErrorKind::Closed => "connection closed",
            TransportErrorKind::Other => "transport error",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

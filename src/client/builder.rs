//! [`ClientBuilder`]: the URL, the id, the transport, the timeouts, the
//! caps and the retry policy a [`HeartbeatClient`] is made of.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

#[cfg(default_transport)]
use crate::error::Error;
use crate::error::Result;
use crate::protocol;
use crate::retry::RetryPolicy;
use crate::settings::{parse_url, Settings};
use crate::transport::{BasicAuth, Transport, DEFAULT_BODY_LIMIT, DEFAULT_REQUEST_TIMEOUT};

use super::{HeartbeatClient, Inner};

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
    basic_auth: Option<BasicAuth>,
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
            basic_auth: None,
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

    /// Send HTTP basic-auth credentials with every request (a server
    /// started with a web config's `basic_auth_users`). A URL with
    /// userinfo (`https://user:password@host:8888`) sets them too; this
    /// wins over it. The password never appears in `Debug` output, errors
    /// or logs.
    ///
    /// ```
    /// # #[cfg(feature = "mock")] {
    /// use heartbeat_sdk::HeartbeatClient;
    /// use heartbeat_sdk::testing::MockTransport;
    ///
    /// let client = HeartbeatClient::builder_with_transport(MockTransport::new())
    ///     .url("https://monitor.example.org:8888")
    ///     .basic_auth("kiosk", "s3cret")
    ///     .build()?;
    /// assert!(!format!("{client:?}").contains("s3cret"));
    /// # }
    /// # Ok::<(), heartbeat_sdk::Error>(())
    /// ```
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some(BasicAuth::new(user, password));
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
        let mut url: Url = match (self.url, &defaults) {
            (Some(url), _) => parse_url(&url)?,
            (None, Some(settings)) => settings.url.clone(),
            (None, None) => Settings::from_vars(|_| None)?.url,
        };
        // the URL's userinfo becomes the credentials, and leaves the URL
        // (which errors and logs show)
        let from_url = crate::settings::take_userinfo(&mut url);
        let basic_auth = self.basic_auth.or(from_url);
        let app_id = match (self.app_id, defaults) {
            (Some(app_id), _) => app_id,
            (None, Some(settings)) => settings.app_id,
            (None, None) => crate::settings::DEFAULT_APP_ID.to_owned(),
        };
        let app_id = protocol::AppId::new(app_id)?;
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
                basic_auth,
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

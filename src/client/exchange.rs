//! One call on the wire: the request built with a fresh cache buster per
//! attempt, the GET resend within the remaining budget, the body cap, and
//! the [`ErrorPolicy`] applied once.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::policy::ErrorPolicy;
use crate::protocol::{self, Beat, ParseError, Request};
use crate::transport::{send_bounded, HttpRequest, HttpResponse, Method};

use super::HeartbeatClient;

impl HeartbeatClient {
    pub(super) async fn beat(
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
    pub(super) async fn call<T, B>(
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

    pub(super) async fn exchange<T>(
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
    pub(super) fn http_request(
        &self,
        build: &(impl Fn(&str) -> Request + Sync),
        timeout: Duration,
        body_limit: usize,
    ) -> HttpRequest {
        let request = build(&protocol::cache_buster());
        let http = HttpRequest::new(request.method, self.inner.base.as_str(), request.target)
            .with_timeout(timeout)
            .with_body_limit(body_limit);
        let http = match &self.inner.basic_auth {
            Some(auth) => http.with_basic_auth(auth.clone()),
            None => http,
        };
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
    pub(super) async fn send_once(
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

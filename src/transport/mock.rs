//! [`MockTransport`]: answers in memory from the embedded server's registry.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::{HttpRequest, HttpResponse, Transport};
use crate::error::TransportError;
use crate::server::{ManualClock, RegistryConfig, SharedRegistry};

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
/// It answers from the same [`Registry`](crate::server::Registry) as the
/// real server, on a [`ManualClock`] that only moves when the test says so,
/// records every request, and can be scripted to fail. Clones share
/// everything, so keep one in the test and give one to the client.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> heartbeat_sdk::Result<()> {
/// use std::time::Duration;
/// use heartbeat_sdk::transport::{MockFailure, MockTransport};
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
    fn answer(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let (status, body) = match self.next_failure() {
            Some(MockFailure::Refused) => {
                return Err(TransportError::connect("mock: connection refused"))
            }
            Some(MockFailure::Timeout) => return Err(TransportError::timeout("mock: timed out")),
            Some(MockFailure::Reply { status, body }) => (status, body),
            None => {
                let parsed;
                let target = match plain_target(&request.url) {
                    Some(target) => target,
                    None => {
                        parsed = url::Url::parse(&request.url)
                            .map_err(|e| TransportError::other(format!("mock: bad URL: {e}")))?;
                        &parsed[url::Position::BeforePath..]
                    }
                };
                let form = request.form.as_deref().map(str::as_bytes);
                let reply = self.inner.registry.handle(target, form, self.inner.peer);
                (reply.status, reply.body.into_bytes())
            }
        };
        if body.len() > request.body_limit {
            return Err(TransportError::body_too_large(request.body_limit));
        }
        Ok(HttpResponse { status, body })
    }
}

/// The request-target (`/path?query`) of a plain `http(s)://host[:port]/...`
/// URL, found without `Url::parse` (the mock's hot path: parsing costs more
/// than the rest of a mock ping). `None` when the URL holds anything that
/// `Url::parse` would rewrite or refuse (user info, dot segments, characters
/// it escapes, a bad port...): the caller parses it then.
fn plain_target(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let (authority, target) = rest.split_at(rest.find('/')?);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !authority.ends_with(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .and_then(|v6| v6.parse::<std::net::Ipv6Addr>().ok())
            .is_some(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok() || is_plain_domain(host),
    };
    let port_ok =
        port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_~".contains(&b));
    let query_ok = query
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%&=+*,;:@/?!$()".contains(&b));
    (host_ok && port_ok && path_ok && query_ok).then_some(target)
}

/// Lower-case ASCII labels of letters, digits and inner hyphens, the last
/// one not numeric (so never a would-be IPv4 address).
fn is_plain_domain(host: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    host.len() <= 253
        && host.split('.').all(label_ok)
        && host
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::plain_target;

    #[test]
    fn plain_targets_agree_with_url_parse() {
        let urls = [
            "http://127.0.0.1:8888/hb_ping?2000&appid=kiosk%207&cache_buster=1-2",
            "http://localhost/hb_init?0&appid=a",
            "https://hb.example.org:443/prefix/hb_done?0&appid=x&cache_buster=y",
            "http://[::1]:9/list?0&cache_buster=z",
            "http://[::1]/list",
            "http://h/status?0&appid=A+B%26C",
            "http://h/",
        ];
        for url in urls {
            let parsed = url::Url::parse(url).unwrap();
            assert_eq!(
                plain_target(url),
                Some(&parsed[url::Position::BeforePath..]),
                "{url}"
            );
        }
    }

    #[test]
    fn anything_unusual_goes_to_url_parse() {
        let urls = [
            "http://h",                      // no path
            "http://h?x=1",                  // no path, query
            "http://u:p@h/hb_ping",          // user info
            "http://h:99999/hb_ping",        // bad port
            "http://256.0.0.1/hb_ping",      // bad IPv4
            "http://1.2.3/hb_ping",          // IPv4 shorthand
            "http://Host/hb_ping",           // upper case host
            "http://h/a/../hb_ping",         // dot segments
            "http://h/hb_ping?a b",          // a space
            "http://h/hb_ping#frag",         // a fragment
            "http://h/hb_ping?appid=\u{e9}", // non-ASCII
            "ftp://h/hb_ping",               // another scheme
            "http://[::1/hb_ping",           // broken IPv6
        ];
        for url in urls {
            assert_eq!(plain_target(url), None, "{url}");
        }
    }
}

//! Building the requests of PROTOCOL.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{check_app_id, AppIdError, MAX_APP_ID_LEN, MAX_TIMEOUT_MS};

/// The HTTP method of a request: the protocol sends only these two.
///
/// It lives here, in the pure protocol module, and is re-exported as
/// [`transport::Method`](crate::transport::Method) for the HTTP seam, so
/// that the protocol never depends on the transport. More methods may come:
/// match it with a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
}

impl Method {
    /// The method's name on the wire.
    ///
    /// ```
    /// assert_eq!(heartbeat_sdk::protocol::Method::Post.as_str(), "POST");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// The three heartbeat commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Beat {
    /// `hb_init`: register, sent by `POST` with a form body.
    Init,
    /// `hb_ping`: I'm alive, sent by `GET`.
    Ping,
    /// `hb_done`: deregister, sent by `POST` with a form body.
    Done,
}

impl Beat {
    /// The command's path, e.g. `/hb_init`.
    pub fn path(self) -> &'static str {
        match self {
            Beat::Init => "/hb_init",
            Beat::Ping => "/hb_ping",
            Beat::Done => "/hb_done",
        }
    }

    /// The method the reference client uses for it.
    pub fn method(self) -> Method {
        match self {
            Beat::Ping => Method::Get,
            Beat::Init | Beat::Done => Method::Post,
        }
    }
}

/// A request relative to the server's base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `POST`.
    pub method: Method,
    /// Path and query, starting with `/`, percent-encoded.
    pub target: String,
    /// Form body (`application/x-www-form-urlencoded`), if any.
    pub form: Option<String>,
}

/// Everything but `A-Z a-z 0-9 - . _ ~` is percent-encoded, so an id with
/// spaces, `&`, `=`, `?`, `#`, `%`, `+` or non-ASCII letters arrives intact.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode one query or form component (UTF-8, RFC 3986 unreserved
/// characters kept).
///
/// ```
/// assert_eq!(heartbeat_sdk::protocol::encode_component("a&b=c d/é"), "a%26b%3Dc%20d%2F%C3%A9");
/// ```
pub fn encode_component(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// A value unique to this request: nanoseconds since the epoch and a
/// process-wide sequence number, so two requests in the same nanosecond
/// still differ.
pub fn cache_buster() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    // u64 nanoseconds last until 2554 and format far faster than u128.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    format!("{nanos}-{seq}")
}

/// A timeout the protocol cannot carry: more than [`MAX_TIMEOUT_MS`]
/// milliseconds. The client reports it as
/// [`Error::InvalidTimeout`](crate::Error::InvalidTimeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeoutTooLong {
    /// The timeout that was asked for.
    pub requested: Duration,
    /// The largest timeout in milliseconds the protocol carries.
    pub max_ms: u64,
}

impl std::fmt::Display for TimeoutTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timeout {:?} is out of range (the protocol carries at most {} ms)",
            self.requested, self.max_ms
        )
    }
}

impl std::error::Error for TimeoutTooLong {}

/// Convert a timeout to the whole milliseconds the protocol carries.
///
/// A sub-millisecond remainder is rounded **up** (a promise is never shorter
/// than asked): 1.2 ms is sent as 2, 0 stays 0. More than
/// [`MAX_TIMEOUT_MS`] is a [`TimeoutTooLong`].
///
/// ```
/// use std::time::Duration;
/// use heartbeat_sdk::protocol::{timeout_ms, MAX_TIMEOUT_MS};
///
/// assert_eq!(timeout_ms(Duration::from_micros(1200)), Ok(2));
/// assert_eq!(timeout_ms(Duration::MAX).unwrap_err().max_ms, MAX_TIMEOUT_MS);
/// ```
pub fn timeout_ms(timeout: Duration) -> Result<u64, TimeoutTooLong> {
    let nanos = timeout.as_nanos();
    let ms = nanos.div_ceil(1_000_000);
    if ms > u128::from(MAX_TIMEOUT_MS) {
        return Err(TimeoutTooLong {
            requested: timeout,
            max_ms: MAX_TIMEOUT_MS,
        });
    }
    Ok(ms as u64)
}

/// Check an application id before sending it: [`check_app_id`] with
/// [`MAX_APP_ID_LEN`], the same rule the server applies. The client
/// reports a refusal as [`Error::InvalidAppId`](crate::Error::InvalidAppId)
/// with the [`AppIdError`]'s text.
pub fn validate_app_id(app_id: &str) -> Result<(), AppIdError> {
    check_app_id(app_id, MAX_APP_ID_LEN)
}

/// `hb_init`, `hb_ping` or `hb_done` with a timeout in milliseconds:
/// `/hb_ping?2000&appid=ID&cache_buster=B`; init and done are `POST`ed with
/// the form body `appid=ID`.
pub fn beat_request(beat: Beat, timeout_ms: u64, app_id: &str, cache_buster: &str) -> Request {
    let app = encode_component(app_id);
    let target = format!(
        "{}?{timeout_ms}&appid={app}&cache_buster={}",
        beat.path(),
        encode_component(cache_buster)
    );
    let form = (beat.method() == Method::Post).then(|| format!("appid={app}"));
    Request {
        method: beat.method(),
        target,
        form,
    }
}

/// `hb_fail`, the failure extension: `POST /hb_fail?CODE&appid=ID&cache_buster=B`
/// with the form body `appid=ID`, as `hb_done` is sent.
///
/// ```
/// let request = heartbeat_sdk::protocol::fail_request(3, "nightly backup", "b");
/// assert_eq!(request.target, "/hb_fail?3&appid=nightly%20backup&cache_buster=b");
/// assert_eq!(request.form.as_deref(), Some("appid=nightly%20backup"));
/// ```
pub fn fail_request(code: u8, app_id: &str, cache_buster: &str) -> Request {
    let app = encode_component(app_id);
    Request {
        method: Method::Post,
        target: format!(
            "/hb_fail?{code}&appid={app}&cache_buster={}",
            encode_component(cache_buster)
        ),
        form: Some(format!("appid={app}")),
    }
}

/// `GET /list?0&cache_buster=B`.
pub fn list_request(cache_buster: &str) -> Request {
    Request {
        method: Method::Get,
        target: format!("/list?0&cache_buster={}", encode_component(cache_buster)),
        form: None,
    }
}

/// `GET /status?0&appid=ID&cache_buster=B` for one application, or the host
/// status `GET /status?0&cache_buster=B` without one.
pub fn status_request(app_id: Option<&str>, cache_buster: &str) -> Request {
    let buster = encode_component(cache_buster);
    let target = match app_id {
        Some(app) => format!(
            "/status?0&appid={}&cache_buster={buster}",
            encode_component(app)
        ),
        None => format!("/status?0&cache_buster={buster}"),
    };
    Request {
        method: Method::Get,
        target,
        form: None,
    }
}

/// A raw request to `path` (Python's `hb_read` / `hb_post`), with a
/// `cache_buster` appended to its query. A missing leading `/` is added; the
/// path and form are sent as given, so encode them yourself.
pub fn raw_request(method: Method, path: &str, form: Option<&str>, cache_buster: &str) -> Request {
    let slash = if path.starts_with('/') { "" } else { "/" };
    let joiner = if path.contains('?') { '&' } else { '?' };
    Request {
        method,
        target: format!(
            "{slash}{path}{joiner}cache_buster={}",
            encode_component(cache_buster)
        ),
        form: form.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_too_long_says_what_was_asked_and_the_limit() {
        let e = TimeoutTooLong {
            requested: Duration::from_secs(5_000_000),
            max_ms: MAX_TIMEOUT_MS,
        };
        assert_eq!(
            e.to_string(),
            "timeout 5000000s is out of range (the protocol carries at most 4294967295 ms)"
        );
    }

    #[test]
    fn methods_have_their_wire_names() {
        assert_eq!(Method::Get.as_str(), "GET");
        assert_eq!(Method::Post.as_str(), "POST");
    }

    #[test]
    fn init_and_done_are_posted_with_a_form_ping_is_a_get() {
        let init = beat_request(Beat::Init, 500, "demo", "b1");
        assert_eq!(init.method, Method::Post);
        assert_eq!(init.target, "/hb_init?500&appid=demo&cache_buster=b1");
        assert_eq!(init.form.as_deref(), Some("appid=demo"));

        let ping = beat_request(Beat::Ping, 1000, "demo", "b2");
        assert_eq!(ping.method, Method::Get);
        assert_eq!(ping.target, "/hb_ping?1000&appid=demo&cache_buster=b2");
        assert_eq!(ping.form, None);

        let done = beat_request(Beat::Done, 0, "demo", "b3");
        assert_eq!(done.method, Method::Post);
        assert_eq!(done.target, "/hb_done?0&appid=demo&cache_buster=b3");
        assert_eq!(done.form.as_deref(), Some("appid=demo"));
    }

    #[test]
    fn awkward_ids_are_percent_encoded_everywhere() {
        let req = beat_request(Beat::Init, 1, "a b&c=d?e#f%g+h/Zürich", "x");
        let enc = "a%20b%26c%3Dd%3Fe%23f%25g%2Bh%2FZ%C3%BCrich";
        assert_eq!(req.target, format!("/hb_init?1&appid={enc}&cache_buster=x"));
        assert_eq!(req.form, Some(format!("appid={enc}")));
    }

    #[test]
    fn list_and_status_requests() {
        assert_eq!(list_request("b").target, "/list?0&cache_buster=b");
        assert_eq!(status_request(None, "b").target, "/status?0&cache_buster=b");
        assert_eq!(
            status_request(Some("x y"), "b").target,
            "/status?0&appid=x%20y&cache_buster=b"
        );
    }

    #[test]
    fn raw_requests_keep_the_path_and_add_a_buster() {
        let r = raw_request(Method::Get, "list", None, "b");
        assert_eq!(r.target, "/list?cache_buster=b");
        let r = raw_request(Method::Post, "/hb_done?0&appid=x", Some("appid=x"), "b");
        assert_eq!(r.target, "/hb_done?0&appid=x&cache_buster=b");
        assert_eq!(r.form.as_deref(), Some("appid=x"));
    }

    #[test]
    fn cache_busters_are_unique_even_when_called_back_to_back() {
        let busters: std::collections::HashSet<String> =
            (0..10_000).map(|_| cache_buster()).collect();
        assert_eq!(busters.len(), 10_000);
    }

    #[test]
    fn timeouts_round_sub_milliseconds_up_and_refuse_the_unrepresentable() {
        assert_eq!(timeout_ms(Duration::ZERO).unwrap(), 0);
        assert_eq!(timeout_ms(Duration::from_nanos(1)).unwrap(), 1);
        assert_eq!(timeout_ms(Duration::from_micros(1200)).unwrap(), 2);
        assert_eq!(timeout_ms(Duration::from_millis(2000)).unwrap(), 2000);
        assert_eq!(
            timeout_ms(Duration::from_millis(MAX_TIMEOUT_MS)).unwrap(),
            MAX_TIMEOUT_MS
        );
        let err = timeout_ms(Duration::from_millis(MAX_TIMEOUT_MS + 1)).unwrap_err();
        assert_eq!(
            err,
            TimeoutTooLong {
                requested: Duration::from_millis(MAX_TIMEOUT_MS + 1),
                max_ms: MAX_TIMEOUT_MS
            }
        );
        assert!(timeout_ms(Duration::MAX).is_err());
    }

    #[test]
    fn app_ids_are_validated() {
        assert!(validate_app_id("Tetris").is_ok());
        assert!(validate_app_id(&"x".repeat(MAX_APP_ID_LEN)).is_ok());
        for bad in ["", "a\nb", "tab\there", "a|b", "a\u{2028}b", "a\u{202e}b"] {
            assert!(validate_app_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_app_id(&"x".repeat(MAX_APP_ID_LEN + 1)).is_err());
    }
}

//! The event history (`GET /api/v1/events`, `docs/api-v1.md`): what
//! happened to one application, newest first.
//!
//! [`EventsQuery`] is the request, written by the client
//! ([`EventsQuery::request`]) and read by the server
//! ([`EventsQuery::from_query`]) in this one place; [`Events`] and
//! [`HistoryEvent`] are the reply, written and read with serde (feature
//! `serde`).
//!
//! ```
//! use heartbeat_sdk::protocol::history::EventsQuery;
//!
//! let query = EventsQuery::new("kiosk 3").limit(20);
//! assert_eq!(query.request().target, "/api/v1/events?app=kiosk%203&limit=20");
//! assert_eq!(EventsQuery::from_query("app=kiosk%203&limit=20").unwrap(), query);
//! ```

use std::net::IpAddr;
use std::time::SystemTime;

use super::command::{decode_text, CommandError};
use super::notification::Change;
use super::request::{encode_component, Method, Request};
use super::{check_app_id, format_time, parse_time, printable, State, MAX_APP_ID_LEN};

/// The path of the history API.
pub const EVENTS_PATH: &str = "/api/v1/events";
/// Events in a reply unless the query says `limit`.
pub const DEFAULT_EVENTS_LIMIT: u32 = 100;
/// The largest `limit` accepted.
pub const MAX_EVENTS_LIMIT: u32 = 1000;

/// The largest `/api/v1/events` reply a client reads: the id escaped
/// (up to 6 bytes a byte), and [`MAX_EVENTS_LIMIT`] events of at most 512
/// bytes each.
pub const MAX_EVENTS_BODY: usize = 4096 + 6 * MAX_APP_ID_LEN + MAX_EVENTS_LIMIT as usize * 512;

/// A history query: `app=ID`, and optionally `host=IP`, `since=RFC3339`
/// (events at or after it), `limit=N` (1 to [`MAX_EVENTS_LIMIT`], default
/// [`DEFAULT_EVENTS_LIMIT`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventsQuery {
    /// The application id.
    pub app: String,
    /// Only the record beating from this address.
    pub host: Option<IpAddr>,
    /// Only events at or after this time.
    pub since: Option<SystemTime>,
    /// At most this many (newest first).
    pub limit: Option<u32>,
}

impl EventsQuery {
    /// The last events of `app`, from any host.
    pub fn new(app: impl Into<String>) -> EventsQuery {
        EventsQuery {
            app: app.into(),
            host: None,
            since: None,
            limit: None,
        }
    }

    /// Only the record beating from `host`.
    pub fn host(mut self, host: IpAddr) -> EventsQuery {
        self.host = Some(host);
        self
    }

    /// Only events at or after `since` (sent with millisecond precision).
    pub fn since(mut self, since: SystemTime) -> EventsQuery {
        self.since = Some(since);
        self
    }

    /// At most `limit` events (the server caps it at [`MAX_EVENTS_LIMIT`]).
    pub fn limit(mut self, limit: u32) -> EventsQuery {
        self.limit = Some(limit);
        self
    }

    /// The limit the server applies.
    pub fn effective_limit(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_EVENTS_LIMIT)
            .clamp(1, MAX_EVENTS_LIMIT) as usize
    }

    /// The `GET` request for this query.
    pub fn request(&self) -> Request {
        let mut target = format!("{EVENTS_PATH}?app={}", encode_component(&self.app));
        if let Some(host) = self.host {
            target.push_str(&format!("&host={}", encode_component(&host.to_string())));
        }
        if let Some(since) = self.since.and_then(format_time) {
            target.push_str(&format!("&since={}", encode_component(&since)));
        }
        if let Some(limit) = self.limit {
            target.push_str(&format!("&limit={limit}"));
        }
        Request {
            method: Method::Get,
            target,
            form: None,
        }
    }

    /// Reads the query string of a `/api/v1/events` request: `app` is
    /// required and a valid application id; unknown parameters are
    /// ignored; `+` is literal, as in the protocol's other queries.
    ///
    /// # Errors
    /// [`CommandError::MissingAppId`] without `app`, the id's own errors,
    /// and [`CommandError::InvalidParameter`] for a `host`, `since` or
    /// `limit` that does not parse.
    pub fn from_query(query: &str) -> Result<EventsQuery, CommandError> {
        let mut app = None;
        let mut out = EventsQuery::new(String::new());
        for element in query.split('&') {
            let (name, raw) = element.split_once('=').unwrap_or((element, ""));
            let value = || decode_text(raw.as_bytes(), "parameter", false);
            let invalid = |name: &'static str, reason: String| CommandError::InvalidParameter {
                name,
                reason,
            };
            match name {
                "app" => app = Some(decode_text(raw.as_bytes(), "appid", false)?.into_owned()),
                "host" => {
                    let text = value()?;
                    out.host = Some(text.parse().map_err(|_| {
                        invalid("host", format!("not an IP address: {}", printable(&text)))
                    })?);
                }
                "since" => {
                    let text = value()?;
                    out.since = Some(
                        parse_time(&text).map_err(|e| invalid("since", e.reason().to_owned()))?,
                    );
                }
                "limit" => {
                    let text = value()?;
                    let limit: u32 = text.parse().map_err(|_| {
                        invalid("limit", format!("not a count: {}", printable(&text)))
                    })?;
                    if !(1..=MAX_EVENTS_LIMIT).contains(&limit) {
                        return Err(invalid(
                            "limit",
                            format!("{limit} is not between 1 and {MAX_EVENTS_LIMIT}"),
                        ));
                    }
                    out.limit = Some(limit);
                }
                _ => {}
            }
        }
        let app = app.ok_or(CommandError::MissingAppId {
            command: "api/v1/events",
        })?;
        check_app_id(&app, MAX_APP_ID_LEN)
            .map_err(|reason| CommandError::InvalidAppId { reason })?;
        out.app = app;
        Ok(out)
    }
}

/// One state change in the history.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct HistoryEvent {
    /// What happened.
    pub event: Change,
    /// The address of the record; `null` for an expected application of
    /// any host.
    pub host: Option<String>,
    /// The state before (`null`: no record).
    pub previous: Option<State>,
    /// The state after (`null`: no record any more).
    pub state: Option<State>,
    /// The threshold crossed (warning, critical, expired), else `null`.
    pub overdue: Option<f64>,
    /// The exit code of a failed run (`failed`); absent otherwise.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub exit_code: Option<u8>,
    /// When: RFC 3339, UTC, milliseconds.
    pub at: String,
}

/// The reply of `GET /api/v1/events`: the application's events, newest
/// first.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Events {
    /// The application id asked for.
    pub app: String,
    /// Newest first, at most the query's limit.
    pub events: Vec<HistoryEvent>,
    /// How many events the server holds for this application (and host):
    /// more than `events` when older ones were left out.
    pub total: u64,
}

impl Events {
    /// A reply for `app`.
    pub fn new(app: impl Into<String>, events: Vec<HistoryEvent>, total: u64) -> Events {
        Events {
            app: app.into(),
            events,
            total,
        }
    }
}

/// Reads a `/api/v1/events` reply.
///
/// # Errors
/// A [`ParseError`](super::ParseError) for anything but the document.
#[cfg(feature = "serde")]
pub fn parse_events(body: &[u8]) -> Result<Events, super::ParseError> {
    serde_json::from_slice(body).map_err(|e| {
        super::ParseError::new(format!("not a history document (docs/api-v1.md): {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn queries_round_trip_through_their_request() {
        let since = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_600_801_234);
        let query = EventsQuery::new("a&b=c %2F")
            .host("10.0.0.5".parse().unwrap())
            .since(since)
            .limit(7);
        let target = query.request().target;
        let (path, q) = target.split_once('?').unwrap();
        assert_eq!(path, EVENTS_PATH);
        assert_eq!(EventsQuery::from_query(q).unwrap(), query);
        assert_eq!(query.effective_limit(), 7);
        assert_eq!(EventsQuery::new("x").effective_limit(), 100);
    }

    #[test]
    fn bad_queries_are_typed_errors() {
        let err = |q: &str| EventsQuery::from_query(q).unwrap_err();
        assert!(matches!(err("limit=3"), CommandError::MissingAppId { .. }));
        assert!(matches!(err("app="), CommandError::InvalidAppId { .. }));
        assert!(matches!(
            err("app=a%7Cb"),
            CommandError::InvalidAppId { .. }
        ));
        for (q, name) in [
            ("app=a&host=nope", "host"),
            ("app=a&since=yesterday", "since"),
            ("app=a&limit=0", "limit"),
            ("app=a&limit=1001", "limit"),
            ("app=a&limit=-1", "limit"),
        ] {
            match err(q) {
                CommandError::InvalidParameter { name: got, reason } => {
                    assert_eq!(got, name);
                    assert!(!reason.contains('\n'));
                }
                other => panic!("{q}: {other:?}"),
            }
        }
        assert!(matches!(
            err("app=%ZZ"),
            CommandError::InvalidPercentEncoding { .. }
        ));
        let forged = err("app=a&host=%0Aforged");
        assert!(!forged.to_string().contains('\n'), "{forged}");
        assert_eq!(
            EventsQuery::from_query("app=a&x=1&limit=5").unwrap().limit,
            Some(5)
        );
    }
}

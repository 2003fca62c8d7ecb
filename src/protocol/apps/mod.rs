//! The JSON API (`GET /api/v1/apps`, the project's `docs/api-v1.md`) as
//! typed records, and the JSON shape of every value type.
//!
//! The records ([`Apps`], [`AppRecord`], [`AppState`], [`Thresholds`],
//! [`Totals`], [`StateCounts`]) always exist; reading them from a reply
//! ([`parse_apps`]) and `Serialize`/`Deserialize` come with the feature
//! `serde`, which [`HeartbeatClient::apps`](crate::HeartbeatClient::apps)
//! needs too.
//!
//! # Why a feature
//!
//! The beats, `/list` and `/status` are plain text: a client that only
//! beats needs no JSON, and the default build stays without serde's derive
//! macros and serde_json. The feature adds `serde` (with `derive`) and
//! `serde_json`; the `cli` feature turns it on for `--json`.
//!
//! # JSON shapes (feature `serde`)
//!
//! Field names are `snake_case`; durations are integer milliseconds with
//! `_ms` in the name (rounded down when written); times are RFC 3339
//! strings in UTC with milliseconds and a `Z` ([`format_time`](super::format_time));
//! a field without a value is `null`, never left out. Readers ignore
//! fields they do not know. The shapes only ever gain fields.
//!
//! - [`State`](super::State): `"ok"`, `"warning"`, `"critical"`,
//!   `"unknown"`; any other string reads as `"unknown"`.
//! - [`Status`](super::Status): an object; `raw` is the line as the
//!   server sent it, everything else is derived from it and is ignored
//!   when read back (reading parses `raw` again):
//!
//!   ```json
//!   {"state":"warning","exit_code":1,"message":"WARNING - somewhat late application [T @ 127.0.0.1]",
//!    "app":"T @ 127.0.0.1","overdue_ratio":3.1,"granted_ms":3000,
//!    "perfdata":[{"label":"od","value":3.1,"unit":"","warn":{"start":0.0,"end":3.0,"inside":false},
//!                 "crit":{"start":0.0,"end":5.0,"inside":false},"min":0.0,"max":6.0},
//!                {"label":"delay","value":3000.0,"unit":"ms","warn":null,"crit":null,"min":null,"max":null}],
//!    "raw_perfdata":"od=3.10;3;5;0;6 delay=3000ms;;;","unparsed_perfdata":[],
//!    "raw":"WARNING - somewhat late application [T @ 127.0.0.1]| od=3.10;3;5;0;6 delay=3000ms;;; "}
//!   ```
//!
//!   (`app`, `overdue_ratio`, `granted_ms`: [`Status::app`](super::Status::app),
//!   [`overdue_ratio`](super::Status::overdue_ratio),
//!   [`granted`](super::Status::granted), `null` when absent.)
//! - [`PerfValue`](super::PerfValue) and [`Range`](super::Range): as in the
//!   example above (`value` `null` for `U`, an unbounded range end `null`).
//! - `server::Counters` (features `server` + `serde`):
//!   `{"inits":7,"pings":1234,"dones":2,"expiries":1,"refused":0,"events_dropped":0}`,
//!   its own field names; the API's `counters` object is [`Totals`]
//!   (`refused` is its `refusals`).
//! - [`Apps`] and its parts: exactly the document of `docs/api-v1.md`,
//!   which also fixes their meaning.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod query;

#[cfg(monitor)]
pub(crate) use query::Position;
pub use query::{AppsQuery, AppsSort, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};

use super::request::{Method, Request};

#[cfg(feature = "serde")]
use super::reply::ParseError;
#[cfg(feature = "serde")]
use super::time::serde_glue;

/// The path of the JSON API: `GET /api/v1/apps`.
pub const APPS_PATH: &str = "/api/v1/apps";

/// The largest reply to a page of `limit` applications a client reads:
/// [`max_apps_body`](super::max_apps_body) for them, and the `page` object
/// with a cursor for the longest key.
///
/// ```
/// use heartbeat_sdk::protocol::{apps::max_page_body, max_apps_body};
/// assert!(max_page_body(100) > max_apps_body(100));
/// assert!(max_page_body(1000) < 5 << 20);
/// ```
pub const fn max_page_body(limit: usize) -> usize {
    super::max_apps_body(limit).saturating_add(2 * super::MAX_KEY_LEN + 128)
}

/// `GET /api/v1/apps`, without a query (the reply is `Cache-Control:
/// no-store`, so it needs no cache buster).
///
/// ```
/// assert_eq!(heartbeat_sdk::protocol::apps::apps_request().target, "/api/v1/apps");
/// ```
pub fn apps_request() -> Request {
    Request {
        method: Method::Get,
        target: APPS_PATH.to_owned(),
        form: None,
    }
}

/// The state of one application in the JSON API.
///
/// Read from JSON, a state this version does not know is
/// [`Missing`](AppState::Missing) (grey), as the API asks of its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum AppState {
    /// `"ok"`: overdue ratio below the warning threshold.
    Ok,
    /// `"warning"`: from the warning threshold up to the critical one.
    Warning,
    /// `"critical"`: from the critical threshold on.
    Critical,
    /// `"missing"`: expected by the server but not tracked (and any state
    /// this version does not know).
    #[cfg_attr(feature = "serde", serde(other))]
    Missing,
}

impl AppState {
    /// Every state, in the order of [`StateCounts`] and of the dashboard's
    /// summary.
    pub const ALL: [AppState; 4] = [
        AppState::Ok,
        AppState::Warning,
        AppState::Critical,
        AppState::Missing,
    ];

    /// The state's word in the API: `ok`, `warning`, `critical`, `missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Ok => "ok",
            AppState::Warning => "warning",
            AppState::Critical => "critical",
            AppState::Missing => "missing",
        }
    }

    /// The state as the dashboard's badge writes it: `OK`, `WARNING`,
    /// `CRITICAL`, `MISSING`.
    ///
    /// ```
    /// use heartbeat_sdk::protocol::apps::AppState;
    /// assert_eq!(AppState::Missing.label(), "MISSING");
    /// ```
    pub fn label(self) -> &'static str {
        match self {
            AppState::Ok => "OK",
            AppState::Warning => "WARNING",
            AppState::Critical => "CRITICAL",
            AppState::Missing => "MISSING",
        }
    }
}

impl std::fmt::Display for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server's thresholds (`thresholds` in the document).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Thresholds {
    /// Overdue ratio from which an app is `warning` (reference: 3).
    pub warn_ratio: f64,
    /// Overdue ratio from which an app is `critical` (reference: 5).
    pub crit_ratio: f64,
    /// Overdue ratio at which a record is dropped (reference: 6).
    pub drop_ratio: f64,
    /// Added to every promised timeout (reference: 1 s); `tolerance_ms`.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "tolerance_ms", with = "serde_glue::ms")
    )]
    pub tolerance: Duration,
}

/// The reference's thresholds: 3, 5, 6 and 1 s.
impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            warn_ratio: 3.0,
            crit_ratio: 5.0,
            drop_ratio: 6.0,
            tolerance: Duration::from_millis(super::TOLERANCE_MS),
        }
    }
}

/// The server's totals since it started (`counters` in the document; the
/// same numbers as `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Totals {
    /// Accepted `hb_init` calls.
    pub inits: u64,
    /// Accepted `hb_ping` calls.
    pub pings: u64,
    /// `hb_done` calls, known id or not.
    pub dones: u64,
    /// Records dropped for being overdue.
    pub expiries: u64,
    /// `hb_init` / `hb_ping` refused because the registry was full.
    pub refusals: u64,
    /// `hb_fail` calls (failed runs; `0` from a server without them).
    #[cfg_attr(feature = "serde", serde(default))]
    pub fails: u64,
}

/// How many entries of [`Apps::apps`] are in each state (`counts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct StateCounts {
    /// Apps in state `ok`.
    pub ok: u64,
    /// Apps in state `warning`.
    pub warning: u64,
    /// Apps in state `critical`.
    pub critical: u64,
    /// Apps in state `missing`.
    pub missing: u64,
}

impl StateCounts {
    /// How many apps are in `state`.
    ///
    /// ```
    /// use heartbeat_sdk::protocol::apps::{AppState, StateCounts};
    /// let mut counts = StateCounts::default();
    /// counts.add(AppState::Warning, 2);
    /// assert_eq!(counts.of(AppState::Warning), 2);
    /// assert_eq!(counts.of(AppState::Ok), 0);
    /// ```
    pub fn of(&self, state: AppState) -> u64 {
        match state {
            AppState::Ok => self.ok,
            AppState::Warning => self.warning,
            AppState::Critical => self.critical,
            AppState::Missing => self.missing,
        }
    }

    /// Counts `n` more apps in `state`.
    pub fn add(&mut self, state: AppState, n: u64) {
        let slot = match state {
            AppState::Ok => &mut self.ok,
            AppState::Warning => &mut self.warning,
            AppState::Critical => &mut self.critical,
            AppState::Missing => &mut self.missing,
        };
        *slot = slot.saturating_add(n);
    }
}

/// One tracked or expected application (an entry of `apps`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct AppRecord {
    /// The record key (`ID @ IP`, or the bare id when the server keys by
    /// id); unique within the document.
    pub key: String,
    /// The id the app sent, or the expected id.
    pub id: String,
    /// The peer's IP address; `None` when unknown (a missing app).
    pub host: Option<String>,
    /// `ok`, `warning`, `critical` or `missing`.
    pub state: AppState,
    /// Time since the last beat over the granted timeout; `None` for a
    /// missing app.
    pub overdue_ratio: Option<f64>,
    /// The granted timeout (promised + tolerance); `granted_ms`.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "granted_ms", with = "serde_glue::opt_ms")
    )]
    pub granted: Option<Duration>,
    /// The last init or ping.
    #[cfg_attr(feature = "serde", serde(with = "serde_glue::opt_time"))]
    pub last_seen: Option<SystemTime>,
    /// [`Apps::generated_at`] − [`last_seen`](Self::last_seen); `last_seen_ago_ms`.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "last_seen_ago_ms", with = "serde_glue::opt_ms")
    )]
    pub last_seen_ago: Option<Duration>,
    /// On the server's expected list.
    pub expected: bool,
    /// Expected but not tracked (`state` is `missing`).
    pub missing: bool,
    /// The exit code of the run that failed (`hb_fail`; `state` is
    /// `critical` until the next init or ping).
    #[cfg_attr(feature = "serde", serde(default))]
    pub failed: Option<u8>,
    /// Share of the last 24 h the app was not CRITICAL, of the time it was
    /// tracked or expected and the server's history knows its state
    /// (`docs/api-v1.md`); `None` when that is no time at all.
    #[cfg_attr(feature = "serde", serde(default))]
    pub uptime_24h: Option<f64>,
    /// The same over the last 7 days.
    #[cfg_attr(feature = "serde", serde(default))]
    pub uptime_7d: Option<f64>,
    /// The last 24 h in half-hour slots, oldest first: the worst state in
    /// each, `o` OK, `w` WARNING, `c` CRITICAL, `-` unknown or untracked
    /// (empty from a server without a history).
    #[cfg_attr(feature = "serde", serde(default))]
    pub strip_24h: String,
}

/// The whole `GET /api/v1/apps` document.
///
/// [`Default`] is an empty document (version 1, generated at the Unix
/// epoch, the reference's thresholds, no apps): a fallback for
/// [`ErrorPolicy::Fallback`](crate::ErrorPolicy::Fallback).
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use heartbeat_sdk::protocol::apps::{parse_apps, AppState};
///
/// let body = br#"{"version":1,"generated_at":"2026-11-25T10:00:01.234Z",
///   "thresholds":{"warn_ratio":3.0,"crit_ratio":5.0,"drop_ratio":6.0,"tolerance_ms":1000},
///   "counters":{"inits":1,"pings":0,"dones":0,"expiries":0,"refusals":0},
///   "counts":{"ok":1,"warning":0,"critical":0,"missing":0},
///   "apps":[{"key":"k @ 127.0.0.1","id":"k","host":"127.0.0.1","state":"ok","overdue_ratio":0.5,
///     "granted_ms":3000,"last_seen":"2026-11-25T10:00:00.000Z","last_seen_ago_ms":1234,
///     "expected":false,"missing":false}]}"#;
/// let apps = parse_apps(body).unwrap();
/// assert_eq!(apps.apps[0].state, AppState::Ok);
/// assert_eq!(apps.apps[0].granted.unwrap().as_millis(), 3000);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Apps {
    /// `1`.
    pub version: u32,
    /// When the server took the snapshot; every `_ago` is relative to it.
    #[cfg_attr(feature = "serde", serde(with = "serde_glue::time"))]
    pub generated_at: SystemTime,
    /// The server's thresholds.
    pub thresholds: Thresholds,
    /// The server's totals.
    pub counters: Totals,
    /// Applications per state, of the whole server (also in a page).
    pub counts: StateCounts,
    /// In a reply to an [`AppsQuery`]: how many match it and where the
    /// next page starts; `None` (no `page` in the document) for the whole
    /// listing.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub page: Option<Page>,
    /// Every tracked and every expected application, in the server's
    /// order (missing ones last); in a page, the page's.
    pub apps: Vec<AppRecord>,
}

/// The `page` of a reply to an [`AppsQuery`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Page {
    /// Applications matching the query's filters, on every page.
    pub matched: u64,
    /// The query's [`cursor`](AppsQuery::cursor) for the next page; `None`
    /// on the last one.
    pub next_cursor: Option<String>,
}

impl Default for Apps {
    fn default() -> Self {
        Apps {
            version: 1,
            generated_at: UNIX_EPOCH,
            thresholds: Thresholds::default(),
            counters: Totals::default(),
            counts: StateCounts::default(),
            page: None,
            apps: Vec::new(),
        }
    }
}

/// Whether `body` is a JSON document at all: its first byte other than
/// JSON whitespace is `{` or `[`. A server without the JSON API answers
/// text or HTML instead, which the client reports as
/// [`Error::Unsupported`](crate::Error::Unsupported) rather than as a reply
/// that does not parse. (The transport seam carries no headers, so the
/// body stands in for the `Content-Type`.)
///
/// ```
/// use heartbeat_sdk::protocol::apps::is_json_document;
/// assert!(is_json_document(b" \n{\"version\":1}"));
/// assert!(!is_json_document(b"ERROR: cannot process your request: [/api/v1/apps]"));
/// assert!(!is_json_document(b"<!DOCTYPE html>"));
/// ```
pub fn is_json_document(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| matches!(b, b'{' | b'['))
}

/// The reply to `GET /api/v1/apps` (feature `serde`). Unknown fields are
/// ignored; a missing or mistyped field, or a time that is not
/// [`parse_time`](super::parse_time)'s, is an error.
///
/// # Errors
/// A [`ParseError`] saying where the document does not match.
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub fn parse_apps(body: &[u8]) -> Result<Apps, ParseError> {
    let apps: Apps = serde_json::from_slice(body).map_err(|e| {
        ParseError::new(format!("not a JSON API v1 document (docs/api-v1.md): {e}"))
    })?;
    if apps.version != 1 {
        return Err(ParseError::new(format!(
            "a JSON API document of version {}, not 1 (docs/api-v1.md)",
            apps.version
        )));
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_told_from_text_and_html() {
        for json in [&b"{}"[..], b"[]", b"\r\n\t {", b"[1"] {
            assert!(is_json_document(json), "{json:?}");
        }
        for not in [
            &b""[..],
            b"   ",
            b"ERROR: cannot process your request: [/api/v1/apps]",
            b"<html>{}</html>",
            b"\xef\xbb\xbf{}",
            b"\x0c{}",
            b"null",
            b"\"x\"",
        ] {
            assert!(!is_json_document(not), "{not:?}");
        }
    }

    #[test]
    fn each_state_has_its_api_word() {
        for (state, word) in [
            (AppState::Ok, "ok"),
            (AppState::Warning, "warning"),
            (AppState::Critical, "critical"),
            (AppState::Missing, "missing"),
        ] {
            assert_eq!(state.as_str(), word);
            assert_eq!(state.to_string(), word);
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn parse_apps_reads_a_document_and_names_what_is_wrong() {
        let doc = br#"{"version":1,"generated_at":"2026-11-25T13:00:00.250Z",
            "thresholds":{"warn_ratio":3.0,"crit_ratio":5.0,"drop_ratio":6.0,"tolerance_ms":1000},
            "counters":{"inits":2,"pings":9,"dones":1,"expiries":0,"refusals":0},
            "counts":{"ok":1,"warning":0,"critical":0,"missing":1},
            "apps":[{"key":"k @ ::1","id":"k","host":"::1","state":"ok","overdue_ratio":0.5,
                     "granted_ms":3000,"last_seen":"2026-11-25T12:59:59.000Z","last_seen_ago_ms":1250,
                     "expected":false,"missing":false},
                    {"key":"gone","id":"gone","host":null,"state":"missing","overdue_ratio":null,
                     "granted_ms":null,"last_seen":null,"last_seen_ago_ms":null,
                     "expected":true,"missing":true}]}"#;
        let apps = parse_apps(doc).unwrap();
        assert_eq!(
            apps.generated_at,
            UNIX_EPOCH + Duration::from_millis(1_795_611_600_250)
        );
        assert_eq!((apps.counters.pings, apps.counts.missing), (9, 1));
        assert_eq!(apps.apps.len(), 2);
        assert_eq!(apps.apps[0].granted, Some(Duration::from_secs(3)));
        assert_eq!(apps.apps[0].host.as_deref(), Some("::1"));
        assert_eq!(apps.apps[1].state, AppState::Missing);
        assert_eq!(apps.apps[1].last_seen, None);
        assert_eq!(apps.thresholds.tolerance, Duration::from_secs(1));
        assert_eq!(
            apps.apps[0].last_seen,
            Some(UNIX_EPOCH + Duration::from_millis(1_795_611_599_000))
        );
        assert_eq!(
            apps.apps[0].last_seen_ago,
            Some(Duration::from_millis(1250))
        );

        // and written back in the same shapes
        let back = serde_json::to_value(&apps).unwrap();
        assert_eq!(back["generated_at"], "2026-11-25T13:00:00.250Z");
        assert_eq!(back["thresholds"]["tolerance_ms"], 1000);
        assert_eq!(back["apps"][0]["last_seen"], "2026-11-25T12:59:59.000Z");
        assert_eq!(back["apps"][0]["granted_ms"], 3000);
        assert_eq!(back["apps"][1]["last_seen"], serde_json::Value::Null);
        assert_eq!(back["apps"][1]["granted_ms"], serde_json::Value::Null);

        let err = parse_apps(b"OK - fine").unwrap_err();
        assert!(
            err.reason().starts_with("not a JSON API v1 document"),
            "{err}"
        );
        assert!(parse_apps(br#"{"version":1}"#).is_err());
        let two = std::str::from_utf8(doc)
            .unwrap()
            .replacen(r#""version":1"#, r#""version":2"#, 1);
        let err = parse_apps(two.as_bytes()).unwrap_err();
        assert!(err.reason().contains("version 2, not 1"), "{err}");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn an_unknown_state_reads_as_missing_and_unknown_fields_are_ignored() {
        let state: AppState = serde_json::from_str("\"purple\"").unwrap();
        assert_eq!(state, AppState::Missing);
        let totals: Totals = serde_json::from_str(
            r#"{"inits":1,"pings":2,"dones":3,"expiries":4,"refusals":5,"new":[1]}"#,
        )
        .unwrap();
        assert_eq!((totals.inits, totals.refusals), (1, 5));
        assert!(serde_json::from_str::<Totals>(r#"{"inits":1}"#).is_err());
    }
}

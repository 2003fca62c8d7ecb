//! A page of `GET /api/v1/apps` (`docs/api-v1.md`, "Pages"): which
//! applications (`state=`, `q=`), in which order (`sort=`), how many
//! (`limit=`) and from where (`cursor=`).
//!
//! [`AppsQuery`] is the request, written by the client
//! ([`AppsQuery::request`]) and read by the server
//! ([`AppsQuery::from_query`]) in this one place, and so is the cursor: an
//! opaque token the server hands out in `page.next_cursor` and reads back.
//!
//! ```
//! use heartbeat_sdk::protocol::apps::{AppState, AppsQuery, AppsSort};
//!
//! let query = AppsQuery::new()
//!     .state(AppState::Critical)
//!     .state(AppState::Missing)
//!     .search("kiosk")
//!     .sort(AppsSort::Overdue)
//!     .limit(50);
//! let target = query.request().target;
//! assert_eq!(target, "/api/v1/apps?state=critical,missing&q=kiosk&sort=overdue&limit=50");
//! let (_, params) = target.split_once('?').unwrap();
//! assert_eq!(AppsQuery::from_query(params).unwrap(), Some(query));
//! // no parameter at all: the whole listing, as before pages existed
//! assert_eq!(AppsQuery::from_query("").unwrap(), None);
//! ```

use std::borrow::Cow;
use std::cmp::Ordering;

use super::{AppState, APPS_PATH};
use crate::protocol::command::{decode_text, CommandError};
use crate::protocol::printable;
use crate::protocol::request::{encode_component, Method, Request};

/// Applications in a page unless the query says `limit`.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub const MAX_PAGE_LIMIT: usize = 1000;
/// The longest `q` accepted, in bytes: a search costs the server a scan of
/// every id and host for it, so its length is bounded.
pub const MAX_SEARCH_LEN: usize = 256;

/// The order of a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AppsSort {
    /// `id`: by record key, byte-wise ascending (the whole listing's order,
    /// except that missing applications take their place by key too).
    #[default]
    Id,
    /// `overdue`: problems first: CRITICAL, then missing, then WARNING,
    /// then OK; within a state the longest overdue first (the earliest
    /// due: last beat plus granted timeout, which the clock alone does
    /// not reorder); then by key.
    Overdue,
    /// `last_seen`: the longest silent first (never seen, i.e. missing,
    /// before any), then by key.
    LastSeen,
}

impl AppsSort {
    /// The value of `sort=`: `id`, `overdue`, `last_seen`.
    pub fn as_str(self) -> &'static str {
        match self {
            AppsSort::Id => "id",
            AppsSort::Overdue => "overdue",
            AppsSort::LastSeen => "last_seen",
        }
    }

    fn from_name(name: &str) -> Option<AppsSort> {
        [AppsSort::Id, AppsSort::Overdue, AppsSort::LastSeen]
            .into_iter()
            .find(|sort| sort.as_str() == name)
    }

    /// The cursor's first letter.
    fn letter(self) -> char {
        match self {
            AppsSort::Id => 'i',
            AppsSort::Overdue => 'o',
            AppsSort::LastSeen => 'l',
        }
    }
}

/// One page of the JSON API: the filters, the order, the size and where
/// it starts. [`Default`] (= [`AppsQuery::new`]) is the first page of
/// every application by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppsQuery {
    /// Only applications in one of these states (none: every state).
    pub states: Vec<AppState>,
    /// Only applications whose id or host contains this text, ASCII
    /// letters matched without regard to case (none or empty: all).
    pub search: Option<String>,
    /// The order.
    pub sort: AppsSort,
    /// At most this many (1 to [`MAX_PAGE_LIMIT`], default
    /// [`DEFAULT_PAGE_LIMIT`]).
    pub limit: Option<usize>,
    /// Where the page starts: the `page.next_cursor` of the page before,
    /// with the same filters and order.
    pub cursor: Option<String>,
}

impl AppsQuery {
    /// The first page of every application, by key.
    pub fn new() -> AppsQuery {
        AppsQuery::default()
    }

    /// Also applications in `state` (the first call makes the filter).
    pub fn state(mut self, state: AppState) -> AppsQuery {
        if !self.states.contains(&state) {
            self.states.push(state);
        }
        self
    }

    /// Only applications whose id or host contains `text`.
    pub fn search(mut self, text: impl Into<String>) -> AppsQuery {
        self.search = Some(text.into());
        self
    }

    /// In this order.
    pub fn sort(mut self, sort: AppsSort) -> AppsQuery {
        self.sort = sort;
        self
    }

    /// At most `limit` applications (the server caps it at [`MAX_PAGE_LIMIT`]).
    pub fn limit(mut self, limit: usize) -> AppsQuery {
        self.limit = Some(limit);
        self
    }

    /// The page after the one whose `page.next_cursor` is `cursor`.
    pub fn after(mut self, cursor: impl Into<String>) -> AppsQuery {
        self.cursor = Some(cursor.into());
        self
    }

    /// The limit the server applies.
    pub fn effective_limit(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_PAGE_LIMIT)
            .clamp(1, MAX_PAGE_LIMIT)
    }

    /// The `GET` request for this page. It always names `limit`, so that
    /// even the first page of everything is a page (a reply with `page`).
    pub fn request(&self) -> Request {
        let mut target = format!("{APPS_PATH}?");
        if !self.states.is_empty() {
            let names: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            target.push_str(&format!("state={}&", names.join(",")));
        }
        if let Some(text) = self.search.as_deref().filter(|t| !t.is_empty()) {
            target.push_str(&format!("q={}&", encode_component(text)));
        }
        if self.sort != AppsSort::Id {
            target.push_str(&format!("sort={}&", self.sort.as_str()));
        }
        target.push_str(&format!("limit={}", self.effective_limit()));
        if let Some(cursor) = &self.cursor {
            target.push_str(&format!("&cursor={}", encode_component(cursor)));
        }
        Request {
            method: Method::Get,
            target,
            form: None,
        }
    }

    /// Reads the query string of a `/api/v1/apps` request; `None` when it
    /// names none of `state`, `q`, `sort`, `limit`, `cursor` (the whole
    /// listing). Unknown parameters are ignored; `+` is literal, as in the
    /// protocol's other queries.
    ///
    /// # Errors
    /// [`CommandError::InvalidParameter`] for a state, sort or limit this
    /// version does not know, or a cursor that is not one of this order's.
    pub fn from_query(query: &str) -> Result<Option<AppsQuery>, CommandError> {
        let mut out = AppsQuery::new();
        let mut paged = false;
        let invalid =
            |name: &'static str, reason: String| CommandError::InvalidParameter { name, reason };
        for element in query.split('&').filter(|e| !e.is_empty()) {
            let (name, raw) = element.split_once('=').unwrap_or((element, ""));
            let value = || decode_text(raw.as_bytes(), "parameter", false);
            match name {
                "state" => {
                    for word in value()?.split(',').filter(|w| !w.is_empty()) {
                        let state = AppState::ALL
                            .into_iter()
                            .find(|s| s.as_str() == word)
                            .ok_or_else(|| {
                                invalid(
                                    "state",
                                    format!(
                                        "not ok, warning, critical or missing: {}",
                                        printable(word)
                                    ),
                                )
                            })?;
                        out = out.state(state);
                    }
                }
                "q" => {
                    let text = value()?;
                    if text.len() > MAX_SEARCH_LEN {
                        return Err(invalid(
                            "q",
                            format!("longer than {MAX_SEARCH_LEN} bytes ({})", text.len()),
                        ));
                    }
                    out.search = Some(text.into_owned()).filter(|t| !t.is_empty());
                }
                "sort" => {
                    let text = value()?;
                    out.sort = AppsSort::from_name(&text).ok_or_else(|| {
                        invalid(
                            "sort",
                            format!("not id, overdue or last_seen: {}", printable(&text)),
                        )
                    })?;
                }
                "limit" => {
                    let text = value()?;
                    // digits only: `usize::from_str` would take a `+` too
                    let limit = Some(&*text)
                        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|t| t.parse::<usize>().ok())
                        .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
                        .ok_or_else(|| {
                            invalid(
                                "limit",
                                format!(
                                    "not a count from 1 to {MAX_PAGE_LIMIT}: {}",
                                    printable(&text)
                                ),
                            )
                        })?;
                    out.limit = Some(limit);
                }
                "cursor" => out.cursor = Some(value()?.into_owned()),
                _ => continue,
            }
            paged = true;
        }
        if let Some(cursor) = &out.cursor {
            Position::parse(out.sort, cursor)
                .ok_or_else(|| invalid("cursor", "not a cursor of this order".to_owned()))?;
        }
        Ok(paged.then_some(out))
    }

    /// Whether an application in `state`, with `id` and `host`, is on the
    /// query's pages.
    pub fn matches(&self, state: AppState, id: &str, host: Option<&str>) -> bool {
        (self.states.is_empty() || self.states.contains(&state))
            && self.search.as_deref().is_none_or(|text| {
                contains_ignore_ascii_case(id, text)
                    || host.is_some_and(|h| contains_ignore_ascii_case(h, text))
            })
    }
}

/// Whether `text` contains `needle`, ASCII letters compared without case.
fn contains_ignore_ascii_case(text: &str, needle: &str) -> bool {
    let (text, needle) = (text.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || text
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Where an application stands in a page's order: a number that orders
/// first (smaller first), then its key. The server makes one per row
/// ([`Position::new`]) and hands out the last row's as the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position<'a> {
    rank: u128,
    key: Cow<'a, str>,
}

impl<'a> Position<'a> {
    /// The position of a row in `sort`: its state, last beat and when its
    /// next one was due (milliseconds since the epoch; `None`: never
    /// seen) and key. Nothing in it moves with the clock alone: a row
    /// changes place when it beats, fails or changes state.
    #[cfg(monitor)]
    pub(crate) fn new(
        sort: AppsSort,
        state: AppState,
        last_seen_ms: Option<u64>,
        due_ms: Option<u64>,
        key: Cow<'a, str>,
    ) -> Position<'a> {
        let rank = match sort {
            AppsSort::Id => 0,
            AppsSort::Overdue => {
                let worst_first = match state {
                    AppState::Critical => 0u128,
                    AppState::Missing => 1,
                    AppState::Warning => 2,
                    AppState::Ok => 3,
                };
                // the longest overdue first: the earliest due. Not the
                // highest overdue ratio: with different timeouts two rows'
                // ratios cross as time passes, and a page would skip rows.
                (worst_first << 64) | u128::from(due_ms.unwrap_or(0))
            }
            AppsSort::LastSeen => last_seen_ms.map_or(0, |ms| u128::from(ms) + 1),
        };
        Position { rank, key }
    }

    /// The cursor naming this position: the order's letter, the rank and
    /// the key in hex (`[0-9a-f.]` only: nothing to escape anywhere).
    #[cfg(monitor)]
    pub(crate) fn cursor(&self, sort: AppsSort) -> String {
        let mut out = String::with_capacity(36 + 2 * self.key.len());
        out.push(sort.letter());
        out.push_str(&format!("{:x}.", self.rank));
        for b in self.key.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The position a cursor of `sort` names; `None` when it is not one.
    pub(crate) fn parse(sort: AppsSort, cursor: &str) -> Option<Position<'static>> {
        let rest = cursor.strip_prefix(sort.letter())?;
        let (rank, key) = rest.split_once('.')?;
        // lower-case hex only, as written: one text per position (the
        // radix parsers would take a `+` sign and upper case too)
        let hex = |text: &str| text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if rank.is_empty() || rank.len() > 32 || key.len() % 2 != 0 || !hex(rank) || !hex(key) {
            return None;
        }
        let rank = u128::from_str_radix(rank, 16).ok()?;
        let bytes = (0..key.len())
            .step_by(2)
            .map(|i| {
                key.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()?;
        let key = String::from_utf8(bytes).ok()?;
        Some(Position {
            rank,
            key: Cow::Owned(key),
        })
    }
}

impl Ord for Position<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank
            .cmp(&other.rank)
            .then_with(|| self.key.cmp(&other.key))
    }
}

impl PartialOrd for Position<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(monitor)]
    fn pos(sort: AppsSort, state: AppState, seen: Option<u64>, key: &str) -> Position<'_> {
        // a 1 s timeout, except for the keys that start with "slow": 100 s
        let granted = if key.starts_with("slow") {
            100_000
        } else {
            1_000
        };
        Position::new(
            sort,
            state,
            seen,
            seen.map(|ms| ms + granted),
            Cow::Borrowed(key),
        )
    }

    #[cfg(monitor)]
    #[test]
    fn the_overdue_order_is_critical_missing_warning_ok_then_the_earliest_due_then_key() {
        use AppState::*;
        let o = AppsSort::Overdue;
        let mut rows = [
            pos(o, Ok, Some(9_000), "a"),
            pos(o, Warning, Some(6_000), "b"),
            pos(o, Critical, Some(4_000), "c"),
            pos(o, Missing, None, "d"),
            pos(o, Critical, Some(1_000), "e"),
            pos(o, Ok, Some(8_000), "f"),
            pos(o, Ok, Some(8_000), "aa"),
            pos(o, Critical, Some(5_000), "failed"),
            // seen first of all, but due last of the critical ones
            pos(o, Critical, Some(0), "slow"),
        ];
        rows.sort();
        let keys: Vec<&str> = rows.iter().map(|p| &*p.key).collect();
        assert_eq!(keys, ["e", "c", "failed", "slow", "d", "b", "aa", "f", "a"]);
    }

    #[cfg(monitor)]
    #[test]
    fn the_overdue_order_of_silent_rows_does_not_change_as_time_passes() {
        // two silent CRITICAL rows with different timeouts: by overdue
        // ratio the 100 s one leads at first and the 1 s one later (the
        // ratios cross); by due time neither moves
        let o = AppsSort::Overdue;
        let quick = pos(o, AppState::Critical, Some(500_000), "quick");
        let slow = pos(o, AppState::Critical, Some(0), "slow");
        let ratio = |seen: f64, timeout: f64, now: f64| (now - seen) / timeout;
        assert!(ratio(500.0, 1.0, 501.0) < ratio(0.0, 100.0, 501.0));
        assert!(ratio(500.0, 1.0, 1_000.0) > ratio(0.0, 100.0, 1_000.0));
        assert!(
            slow < quick,
            "due at 100 s before due at 501 s, at any time"
        );
    }

    #[cfg(monitor)]
    #[test]
    fn the_last_seen_order_puts_the_never_seen_and_the_longest_silent_first() {
        let l = AppsSort::LastSeen;
        let mut rows = [
            pos(l, AppState::Ok, Some(2_000), "a"),
            pos(l, AppState::Missing, None, "m"),
            pos(l, AppState::Ok, Some(0), "epoch"),
            pos(l, AppState::Ok, Some(1_000), "b"),
        ];
        rows.sort();
        let keys: Vec<&str> = rows.iter().map(|p| &*p.key).collect();
        assert_eq!(keys, ["m", "epoch", "b", "a"]);
    }

    #[cfg(monitor)]
    #[test]
    fn a_cursor_reads_back_as_its_position_and_only_in_its_order() {
        for (sort, key) in [
            (AppsSort::Id, "kiosk @ 10.0.0.1"),
            (AppsSort::Overdue, "a\"<b>&é 漢"),
            (AppsSort::LastSeen, "x @ ::1"),
        ] {
            let p = pos(sort, AppState::Warning, Some(1_795_600_801_234), key);
            let cursor = p.cursor(sort);
            assert!(
                cursor[1..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b'.'),
                "{cursor}"
            );
            assert_eq!(Position::parse(sort, &cursor), Some(p.clone()));
            for other in [AppsSort::Id, AppsSort::Overdue, AppsSort::LastSeen] {
                if other != sort {
                    assert_eq!(Position::parse(other, &cursor), None);
                }
            }
        }
        for bad in [
            "",
            "i",
            "i.",
            "ix.00",
            "i0.0",
            "i0.zz",
            "i0.ff",
            "o1",
            "i+0.61",
            "i0.+6",
            "i0.6A",
            "iA.61",
            &format!("i{}.61", "f".repeat(33)),
        ] {
            let sort = if bad.starts_with('o') {
                AppsSort::Overdue
            } else {
                AppsSort::Id
            };
            assert_eq!(Position::parse(sort, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn queries_read_what_they_name_and_refuse_what_they_cannot() {
        assert_eq!(AppsQuery::from_query("").unwrap(), None);
        assert_eq!(AppsQuery::from_query("_=123&x=y").unwrap(), None);
        let q = AppsQuery::from_query(
            "state=warning&state=critical,warning&q=Kiosk%203&sort=last_seen&limit=7",
        )
        .unwrap()
        .unwrap();
        assert_eq!(q.states, [AppState::Warning, AppState::Critical]);
        assert_eq!(q.search.as_deref(), Some("Kiosk 3"));
        assert_eq!((q.sort, q.effective_limit()), (AppsSort::LastSeen, 7));
        assert_eq!(
            AppsQuery::from_query("limit=1000")
                .unwrap()
                .unwrap()
                .effective_limit(),
            1000
        );
        assert_eq!(AppsQuery::from_query("q=").unwrap().unwrap().search, None);
        let longest = format!("q={}", "%C3%A9".repeat(MAX_SEARCH_LEN / 2));
        let query = AppsQuery::from_query(&longest).unwrap().unwrap();
        assert_eq!(query.search.unwrap().len(), MAX_SEARCH_LEN);
        let too_long = format!("q={}", "a".repeat(MAX_SEARCH_LEN + 1));
        for (bad, name) in [
            ("state=purple", "state"),
            ("sort=random", "sort"),
            (too_long.as_str(), "q"),
            ("limit=%2B5", "limit"),
            ("limit=+5", "limit"),
            ("limit=", "limit"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("cursor=zz", "cursor"),
            ("sort=overdue&cursor=i0.61", "cursor"),
        ] {
            match AppsQuery::from_query(bad) {
                Err(CommandError::InvalidParameter { name: got, reason }) => {
                    assert_eq!(got, name, "{bad}");
                    assert!(!reason.contains('\n'));
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // a hostile value is escaped in the reason
        let Err(err) = AppsQuery::from_query("state=a%0Ab") else {
            panic!()
        };
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn the_search_matches_id_or_host_without_ascii_case() {
        let q = AppsQuery::new().search("KIOSK");
        assert!(q.matches(AppState::Ok, "my-kiosk-3", None));
        assert!(!q.matches(AppState::Ok, "projector", Some("10.0.0.1")));
        let q = AppsQuery::new().search("10.0.0").state(AppState::Warning);
        assert!(q.matches(AppState::Warning, "projector", Some("10.0.0.1")));
        assert!(!q.matches(AppState::Ok, "projector", Some("10.0.0.1")));
        assert!(AppsQuery::new().matches(AppState::Missing, "x", None));
    }

    #[test]
    fn a_request_names_its_limit_and_escapes_its_text() {
        let request = AppsQuery::new().search("a&b c").after("i0.61").request();
        assert_eq!(
            request.target,
            "/api/v1/apps?q=a%26b%20c&limit=100&cursor=i0.61"
        );
        assert_eq!(
            AppsQuery::new().limit(5000).request().target,
            "/api/v1/apps?limit=1000"
        );
    }
}

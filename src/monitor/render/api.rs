//! `GET /api/v1/apps` (the JSON of `docs/api-v1.md`) and the rows of the
//! dashboard at `GET /`, both rendered from one registry [`Snapshot`] a
//! piece at a time, like `/list` and `/metrics` (see
//! [`service`](crate::monitor::service)): piece 0 is the head (thresholds,
//! counters, counts; for the page the HTML up to the first row), then one
//! piece per tracked application in key order, one per missing (expected,
//! untracked) application, and a closing piece.
//!
//! Times: ages come from the server's [`Clock`](crate::monitor::Clock) (the
//! snapshot's), `generated_at` from the system clock when the snapshot was
//! taken, and `last_seen` is `generated_at` minus the age, both in whole
//! milliseconds, so `last_seen_ago_ms` is exactly their difference.
//!
//! Every record is a [`protocol::apps`](crate::protocol::apps) value
//! ([`AppRecord`], [`Thresholds`], [`Totals`], [`StateCounts`]) written by
//! its serde shape, the one schema `HeartbeatClient::apps()` reads back;
//! only the document's frame (`{"version":1,...,"apps":[`, the commas,
//! `]}`) is written here, so that it can be streamed a record at a time
//! (a unit test checks the stream is `serde_json`'s writing of the whole
//! [`Apps`](crate::protocol::apps::Apps)). The page renders the same
//! records through [`dashboard::escape`].

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::monitor::history::Uptime;
use crate::monitor::registry::Snapshot;
use crate::monitor::render::dashboard;
use std::borrow::Cow;
use std::collections::BinaryHeap;

use crate::protocol::apps::{
    AppRecord, AppState, AppsQuery, Page, Position, StateCounts, Thresholds, Totals,
};
use crate::protocol::{whole_ms, RecordKey, State};

/// The `Content-Type` of `/api/v1/apps`.
pub(crate) const JSON: &str = "application/json";
/// The `Content-Type` of the dashboard.
pub(crate) const HTML: &str = "text/html; charset=utf-8";

/// An application on the expected list that is not tracked.
pub(crate) trait Missing {
    /// The expected id.
    fn id(&self) -> &str;
    /// The expected host, when one was configured.
    fn host(&self) -> Option<IpAddr>;
}

/// A missing application given by value (tests; the server passes its
/// [`Expected`](crate::monitor::registry::Expected) specs).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MissingApp {
    /// The expected id.
    pub(crate) id: String,
    /// The expected host, if known.
    pub(crate) host: Option<IpAddr>,
}

#[cfg(test)]
impl Missing for MissingApp {
    fn id(&self) -> &str {
        &self.id
    }

    fn host(&self) -> Option<IpAddr> {
        self.host
    }
}

impl Missing for crate::monitor::registry::Expected {
    fn id(&self) -> &str {
        crate::monitor::registry::Expected::id(self)
    }

    fn host(&self) -> Option<IpAddr> {
        crate::monitor::registry::Expected::host(self)
    }
}

/// No missing applications: what a server without an expected list shows.
#[cfg(test)]
pub(crate) const NO_MISSING: &[MissingApp] = &[];

pub(crate) use crate::protocol::split_key;

/// Which document a [`Listing`] renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `/api/v1/apps`.
    Json,
    /// The dashboard page.
    Html,
}

/// One snapshot as the API and the dashboard list it.
pub(crate) struct Listing<'a, M: Missing> {
    /// The tracked applications (sorted before rendering).
    pub(crate) snapshot: &'a Snapshot,
    /// System time when the snapshot was taken.
    pub(crate) generated_at: SystemTime,
    /// Whether tracked application `i` is on the expected list.
    pub(crate) is_expected: &'a dyn Fn(usize) -> bool,
    /// The expected applications not tracked, listed after the tracked ones.
    pub(crate) missing: &'a [M],
    /// The uptime and strip of the record of an id and host.
    pub(crate) uptime: &'a dyn Fn(&str, Option<&str>) -> Uptime,
    /// The rows of a page ([`Listing::select`]); `None`: every row.
    pub(crate) selection: Option<&'a Selection>,
}

/// The rows of one page of a [`Listing`], in the page's order, and the
/// reply's `page`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Selection {
    /// Row numbers (tracked, then missing, as [`Listing::row`] counts).
    rows: Vec<usize>,
    /// What the reply says about the page.
    page: Page,
}

impl<M: Missing> Listing<'_, M> {
    /// How many pieces there are: the head, one per application, the end.
    pub(crate) fn pieces(&self) -> usize {
        self.rows() + 2
    }

    /// Rows on the reply: the page's, or every one.
    fn rows(&self) -> usize {
        self.selection
            .map_or_else(|| self.all_rows(), |page| page.rows.len())
    }

    fn all_rows(&self) -> usize {
        self.snapshot.len() + self.missing.len()
    }

    /// The page `query` asks for: the rows that match its filters and come
    /// after its cursor, at most its limit, in its order. One pass over the
    /// rows keeping the best `limit + 1` (memory of a page, not of the
    /// fleet), then a sort of those.
    pub(crate) fn select(&self, query: &AppsQuery) -> Selection {
        let limit = query.effective_limit();
        let after = query
            .cursor
            .as_deref()
            .and_then(|c| Position::parse(query.sort, c));
        let mut matched = 0_u64;
        let mut best: BinaryHeap<(Position<'_>, usize)> = BinaryHeap::with_capacity(limit + 1);
        for i in 0..self.all_rows() {
            let Some(position) = self.position(query, i) else {
                continue;
            };
            matched += 1;
            if after.as_ref().is_some_and(|after| position <= *after) {
                continue;
            }
            if best.len() > limit && best.peek().is_some_and(|(worst, _)| position >= *worst) {
                continue;
            }
            best.push((position, i));
            if best.len() > limit + 1 {
                best.pop();
            }
        }
        let mut page = best.into_sorted_vec();
        let more = page.len() > limit;
        page.truncate(limit);
        let next_cursor = page
            .last()
            .filter(|_| more)
            .map(|(position, _)| position.cursor(query.sort));
        Selection {
            rows: page.into_iter().map(|(_, i)| i).collect(),
            page: Page {
                matched,
                next_cursor,
            },
        }
    }

    /// Row `i`'s place in `query`'s order, when it matches the query's
    /// filters (the record is read once for both).
    fn position(&self, query: &AppsQuery, i: usize) -> Option<Position<'_>> {
        let snapshot = self.snapshot;
        match i.checked_sub(snapshot.len()) {
            Some(m) => {
                let missing = &self.missing[m];
                let host = missing.host().map(|ip| ip.to_string());
                query
                    .matches(AppState::Missing, missing.id(), host.as_deref())
                    .then(|| {
                        let key = Cow::Owned(self.missing_key(m));
                        Position::new(query.sort, AppState::Missing, None, None, key)
                    })
            }
            None => {
                let app = snapshot.app(i);
                let state = app_state(app.state);
                let (id, host) = self.split(app.key);
                query.matches(state, id, host).then(|| {
                    // the record's own beat time: the same on every request
                    let seen = snapshot.last_seen_ms(i);
                    let granted = u64::try_from(app.granted.as_millis()).unwrap_or(u64::MAX);
                    Position::new(
                        query.sort,
                        state,
                        Some(seen),
                        Some(seen.saturating_add(granted)),
                        Cow::Borrowed(app.key),
                    )
                })
            }
        }
    }

    /// The id and host of a tracked record's key.
    fn split<'k>(&self, key: &'k str) -> (&'k str, Option<&'k str>) {
        if self.snapshot.config().key_by_peer {
            split_key(key)
        } else {
            (key, None)
        }
    }

    /// The key a missing application is listed under.
    fn missing_key(&self, m: usize) -> String {
        let missing = &self.missing[m];
        match missing.host() {
            Some(ip) if self.snapshot.config().key_by_peer => {
                RecordKey::new(missing.id(), Some(&ip.to_string())).to_string()
            }
            _ => missing.id().to_owned(),
        }
    }

    /// Appends piece `i` of `format` to `out`.
    pub(crate) fn write_piece(&self, format: Format, i: usize, out: &mut Vec<u8>) {
        let rows = self.rows();
        match (format, i) {
            (Format::Json, 0) => self.json_head(out),
            (Format::Html, 0) => {
                let mut head = String::new();
                dashboard::write_head(&mut head, &self.counts(), &self.thresholds());
                out.extend_from_slice(head.as_bytes());
            }
            (Format::Json, i) if i <= rows => {
                if i > 1 {
                    out.push(b',');
                }
                json(out, &self.line(i - 1));
            }
            (Format::Html, i) if i <= rows => {
                let mut row = String::new();
                dashboard::render_row(&mut row, &self.line(i - 1), self.thresholds().drop_ratio);
                out.extend_from_slice(row.as_bytes());
            }
            (Format::Json, _) => out.extend_from_slice(b"]}\n"),
            (Format::Html, _) => {
                let mut tail = String::new();
                dashboard::write_tail(&mut tail, rows == 0);
                out.extend_from_slice(tail.as_bytes());
            }
        }
    }

    fn thresholds(&self) -> Thresholds {
        let config = self.snapshot.config();
        Thresholds {
            warn_ratio: config.warn_ratio,
            crit_ratio: config.crit_ratio,
            drop_ratio: config.drop_ratio,
            tolerance: config.tolerance,
        }
    }

    fn counts(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        for i in 0..self.snapshot.len() {
            counts.add(app_state(self.snapshot.app(i).state), 1);
        }
        counts.add(AppState::Missing, self.missing.len() as u64);
        counts
    }

    /// Line `n` of the reply: row `n` of the page, or of every row.
    fn line(&self, n: usize) -> AppRecord {
        self.row(self.selection.map_or(n, |page| page.rows[n]))
    }

    /// Row `i`: a tracked application, then the missing ones.
    fn row(&self, i: usize) -> AppRecord {
        let snapshot = self.snapshot;
        let generated = self.generated_ms();
        if let Some(m) = i.checked_sub(snapshot.len()) {
            let missing = &self.missing[m];
            let id = missing.id();
            let host = missing.host().map(|ip| ip.to_string());
            let uptime = (self.uptime)(id, host.as_deref());
            return record(self.missing_key(m), id, host, true, uptime);
        }
        let app = snapshot.app(i);
        let (id, host) = self.split(app.key);
        let ago = whole_ms(snapshot.since_last(i));
        AppRecord {
            state: app_state(app.state),
            overdue_ratio: Some(app.overdue_ratio),
            granted: Some(app.granted),
            last_seen: Some(UNIX_EPOCH + Duration::from_millis(generated.saturating_sub(ago))),
            last_seen_ago: Some(Duration::from_millis(ago)),
            missing: false,
            failed: app.failed,
            ..record(
                app.key.to_owned(),
                id,
                host.map(str::to_owned),
                (self.is_expected)(i),
                (self.uptime)(id, host),
            )
        }
    }

    /// The snapshot's system time in whole milliseconds since the epoch,
    /// within the years RFC 3339 can write (`0` before 1970).
    fn generated_ms(&self) -> u64 {
        self.generated_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, whole_ms)
            .min(LAST_MS)
    }

    fn json_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"version\":1,\"generated_at\":\"");
        out.extend_from_slice(rfc3339_ms(self.generated_ms()).as_bytes());
        out.extend_from_slice(b"\",\"thresholds\":");
        json(out, &self.thresholds());
        out.extend_from_slice(b",\"counters\":");
        json(out, &Totals::from(self.snapshot.counters()));
        out.extend_from_slice(b",\"counts\":");
        json(out, &self.counts());
        if let Some(selection) = self.selection {
            out.extend_from_slice(b",\"page\":");
            json(out, &selection.page);
        }
        out.extend_from_slice(b",\"apps\":[");
    }
}

/// A registry state as the API's (the registry never says UNKNOWN).
fn app_state(state: State) -> AppState {
    match state {
        State::Ok => AppState::Ok,
        State::Warning => AppState::Warning,
        _ => AppState::Critical,
    }
}

/// The record of an application that is not tracked (the missing state);
/// a tracked one overrides what it knows.
fn record(
    key: String,
    id: &str,
    host: Option<String>,
    expected: bool,
    uptime: Uptime,
) -> AppRecord {
    AppRecord {
        key,
        id: id.to_owned(),
        host,
        state: AppState::Missing,
        overdue_ratio: None,
        granted: None,
        last_seen: None,
        last_seen_ago: None,
        expected,
        missing: true,
        failed: None,
        uptime_24h: uptime.day,
        uptime_7d: uptime.week,
        strip_24h: uptime.strip,
    }
}

/// `value` as compact JSON, by its `protocol::apps` type's serde shape
/// (writing to a `Vec` cannot fail, and no value here has a time outside
/// the years RFC 3339 can write).
fn json<T: serde::Serialize>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The last millisecond RFC 3339 can write: 9999-12-31T23:59:59.999Z.
const LAST_MS: u64 = 253_402_300_799_999;

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds
/// (`2026-11-25T10:00:01.234Z`), by the protocol's one formatter; a time
/// past year 9999 (a system clock gone wrong) is written as the last
/// millisecond of 9999.
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    let time = UNIX_EPOCH.checked_add(Duration::from_millis(ms.min(LAST_MS)));
    time.and_then(crate::protocol::format_time)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::registry::{Registry, RegistryConfig};
    use crate::protocol::apps::AppsQuery;
    use serde_json::{json, Value};
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 5, 3));

    /// 2026-11-25T10:00:01.234Z
    fn generated_at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_600_801_234)
    }

    fn render<M: Missing>(
        snapshot: &mut Snapshot,
        format: Format,
        is_expected: &dyn Fn(usize) -> bool,
        missing: &[M],
    ) -> String {
        render_with(snapshot, format, is_expected, missing, &|_, _| {
            Uptime::unknown()
        })
    }

    fn render_with<M: Missing>(
        snapshot: &mut Snapshot,
        format: Format,
        is_expected: &dyn Fn(usize) -> bool,
        missing: &[M],
        uptime: &dyn Fn(&str, Option<&str>) -> Uptime,
    ) -> String {
        render_page(snapshot, format, is_expected, missing, uptime, None)
    }

    fn render_page<M: Missing>(
        snapshot: &mut Snapshot,
        format: Format,
        is_expected: &dyn Fn(usize) -> bool,
        missing: &[M],
        uptime: &dyn Fn(&str, Option<&str>) -> Uptime,
        query: Option<&AppsQuery>,
    ) -> String {
        snapshot.sort();
        let mut listing = Listing {
            snapshot,
            generated_at: generated_at(),
            is_expected,
            missing,
            uptime,
            selection: None,
        };
        let selection = query.map(|q| listing.select(q));
        listing.selection = selection.as_ref();
        let mut out = Vec::new();
        for i in 0..listing.pieces() {
            listing.write_piece(format, i, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    /// Every page of `query`, followed by its cursors, as parsed documents.
    fn pages<M: Missing>(
        snapshot: &mut Snapshot,
        missing: &[M],
        query: AppsQuery,
    ) -> Vec<crate::protocol::apps::Apps> {
        let mut out = Vec::new();
        let mut query = Some(query);
        while let Some(q) = query.take() {
            let text = render_page(
                snapshot,
                Format::Json,
                &|_| false,
                missing,
                &|_, _| Uptime::unknown(),
                Some(&q),
            );
            let doc = crate::protocol::apps::parse_apps(text.as_bytes()).unwrap();
            assert_eq!(
                serde_json::to_string(&doc).unwrap() + "\n",
                text,
                "the schema's shape"
            );
            let next = doc.page.as_ref().unwrap().next_cursor.clone();
            query = next.map(|cursor| q.clone().after(cursor));
            out.push(doc);
            assert!(out.len() < 1000, "the cursors never end");
        }
        out
    }

    /// A registry of 25 apps in every state, plus two missing ones.
    fn fleet() -> (Snapshot, [MissingApp; 2]) {
        let t0 = Instant::now();
        let mut r = Registry::default();
        for i in 0..25_u64 {
            // beats 0 to 12 s before the snapshot with a 1 s timeout (2 s granted):
            // ratios 0 to 6.25, so OK, WARNING, CRITICAL, and app-00 and app-01
            // (ratio 6 and more) dropped
            let host = if i % 2 == 0 { LOCAL } else { HOST };
            r.init(
                &format!("app-{i:02}"),
                host,
                Duration::from_secs(1),
                t0 + Duration::from_millis(500 * i),
            )
            .unwrap();
        }
        r.fail("app-03", HOST, 9, t0 + Duration::from_millis(12_400))
            .unwrap();
        let missing = [
            MissingApp {
                id: "gone-b".into(),
                host: Some(HOST),
            },
            MissingApp {
                id: "gone-a".into(),
                host: None,
            },
        ];
        (r.snapshot(t0 + Duration::from_millis(12_500)), missing)
    }

    #[test]
    fn pages_visit_every_matching_row_once_in_their_order() {
        use crate::protocol::apps::AppsSort;
        let (mut snapshot, missing) = fleet();
        let whole = render(&mut snapshot, Format::Json, &|_| false, &missing);
        let whole = crate::protocol::apps::parse_apps(whole.as_bytes()).unwrap();
        assert_eq!(whole.page, None, "no query, no page");
        let total = whole.apps.len();
        assert_eq!(total, 23 + 2);
        for sort in [AppsSort::Id, AppsSort::Overdue, AppsSort::LastSeen] {
            let pages = pages(
                &mut snapshot,
                &missing,
                AppsQuery::new().sort(sort).limit(4),
            );
            assert_eq!(pages.len(), total.div_ceil(4), "{sort:?}");
            let rows: Vec<&AppRecord> = pages.iter().flat_map(|p| &p.apps).collect();
            assert_eq!(rows.len(), total);
            let mut keys: Vec<&str> = rows.iter().map(|a| a.key.as_str()).collect();
            for page in &pages {
                assert_eq!(page.page.as_ref().unwrap().matched, total as u64);
                assert_eq!(
                    page.counts, whole.counts,
                    "the whole fleet's counts on every page"
                );
            }
            match sort {
                AppsSort::Id => assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}"),
                AppsSort::Overdue => {
                    let rank = |a: &AppRecord| match a.state {
                        AppState::Critical => 0,
                        AppState::Missing => 1,
                        AppState::Warning => 2,
                        _ => 3,
                    };
                    let due = |a: &AppRecord| a.last_seen.zip(a.granted).map(|(s, g)| s + g);
                    for w in rows.windows(2) {
                        let (a, b) = (w[0], w[1]);
                        assert!(
                            rank(a) < rank(b) || (rank(a) == rank(b) && due(a) <= due(b)),
                            "{} before {}",
                            a.key,
                            b.key
                        );
                    }
                    assert_eq!(rows[0].state, AppState::Critical);
                    assert_eq!(rows[0].key, "app-02 @ 127.0.0.1", "the most overdue first");
                }
                _ => {
                    assert!(
                        rows[0].last_seen.is_none() && rows[1].last_seen.is_none(),
                        "never seen first"
                    );
                    for w in rows[2..].windows(2) {
                        assert!(w[0].last_seen <= w[1].last_seen);
                    }
                }
            }
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), total, "no row twice");
        }
    }

    #[test]
    fn overdue_pages_of_silent_apps_with_different_timeouts_lose_no_row() {
        use crate::protocol::apps::AppsSort;
        // "slow" (20 s granted) beat at 0 s, "quick" (2 s granted) at
        // 100 s. At 110 s their ratios are 5.5 and 5.0, at 111.5 s 5.575
        // and 5.75: both CRITICAL, and by ratio their order flips
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("slow", LOCAL, Duration::from_secs(19), t0).unwrap();
        r.init(
            "quick",
            LOCAL,
            Duration::from_secs(1),
            t0 + Duration::from_secs(100),
        )
        .unwrap();
        let query = AppsQuery::new().sort(AppsSort::Overdue).limit(1);
        let mut page = |at_ms: u64, query: &AppsQuery| {
            let mut snapshot = r.snapshot(t0 + Duration::from_millis(at_ms));
            let text = render_page(
                &mut snapshot,
                Format::Json,
                &|_| false,
                &[] as &[MissingApp],
                &|_, _| Uptime::unknown(),
                Some(query),
            );
            crate::protocol::apps::parse_apps(text.as_bytes()).unwrap()
        };
        let first = page(110_000, &query);
        assert_eq!(first.counts.critical, 2);
        let cursor = first.page.as_ref().unwrap().next_cursor.clone().unwrap();
        let second = page(111_500, &query.clone().after(cursor));
        assert_eq!(second.counts.critical, 2);
        let keys: Vec<&str> = first
            .apps
            .iter()
            .chain(&second.apps)
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(
            keys,
            ["slow", "quick"],
            "the one due first leads, on both pages"
        );
        assert_eq!(second.page.unwrap().next_cursor, None);
    }

    #[test]
    fn filters_narrow_the_rows_and_the_matched_count_but_not_the_counts() {
        let (mut snapshot, missing) = fleet();
        let critical = pages(
            &mut snapshot,
            &missing,
            AppsQuery::new().state(AppState::Critical),
        );
        assert_eq!(critical.len(), 1);
        let rows = &critical[0].apps;
        assert!(!rows.is_empty() && rows.iter().all(|a| a.state == AppState::Critical));
        assert_eq!(rows.len() as u64, critical[0].counts.critical);
        assert!(
            rows.iter().any(|a| a.failed == Some(9)),
            "the failed run is critical"
        );
        let gone = pages(&mut snapshot, &missing, AppsQuery::new().search("GONE"));
        let keys: Vec<&str> = gone[0].apps.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["gone-a", "gone-b @ 10.0.5.3"]);
        let host = pages(
            &mut snapshot,
            &missing,
            AppsQuery::new().search("10.0.5.3").state(AppState::Ok),
        );
        assert!(host[0]
            .apps
            .iter()
            .all(|a| a.host.as_deref() == Some("10.0.5.3") && a.state == AppState::Ok));
        assert!(!host[0].apps.is_empty());
        let none = pages(
            &mut snapshot,
            &missing,
            AppsQuery::new().search("no such app"),
        );
        assert_eq!(
            (none[0].apps.len(), none[0].page.clone().unwrap().matched),
            (0, 0)
        );
        assert_eq!(none[0].page.as_ref().unwrap().next_cursor, None);
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_600_801_234), "2026-11-25T10:00:01.234Z");
        // leap days, a century that is not a leap year, one that is
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn keys_split_on_their_last_separator() {
        assert_eq!(
            split_key("kiosk-1 @ 127.0.0.1"),
            ("kiosk-1", Some("127.0.0.1"))
        );
        assert_eq!(split_key("a @ b @ ::1"), ("a @ b", Some("::1")));
        assert_eq!(split_key("bare"), ("bare", None));
    }

    /// The exact document for a small registry, expected and missing
    /// applications given explicitly.
    #[test]
    fn a_small_registry_renders_exactly() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("projector-b", HOST, Duration::from_secs(10), t0)
            .unwrap();
        r.ping(
            "kiosk-1",
            LOCAL,
            Duration::from_secs(2),
            t0 + Duration::from_millis(35_840),
        )
        .unwrap();
        r.done("gone", LOCAL, t0);
        let mut snapshot = r.snapshot(t0 + Duration::from_millis(37_400));
        // after sorting: 0 = kiosk-1, 1 = projector-b
        let missing = [
            MissingApp {
                id: "planetarium-show".into(),
                host: None,
            },
            MissingApp {
                id: "vitrine".into(),
                host: Some(HOST),
            },
        ];
        let uptime = |id: &str, _: Option<&str>| match id {
            "kiosk-1" => Uptime {
                day: Some(0.75),
                week: Some(0.5),
                strip: format!("{}{}", "o".repeat(40), "c".repeat(8)),
            },
            _ => Uptime::unknown(),
        };
        let text = render_with(&mut snapshot, Format::Json, &|i| i == 0, &missing, &uptime);
        // compact, one line, fields in the order of docs/api-v1.md
        let expected = concat!(
            r#"{"version":1,"generated_at":"2026-11-25T10:00:01.234Z","#,
            r#""thresholds":{"warn_ratio":3.0,"crit_ratio":5.0,"drop_ratio":6.0,"tolerance_ms":1000},"#,
            r#""counters":{"inits":1,"pings":1,"dones":1,"expiries":0,"refusals":0,"fails":0},"#,
            r#""counts":{"ok":1,"warning":1,"critical":0,"missing":2},"apps":["#,
            r#"{"key":"kiosk-1 @ 127.0.0.1","id":"kiosk-1","host":"127.0.0.1","state":"ok","#,
            r#""overdue_ratio":0.52,"granted_ms":3000,"last_seen":"2026-11-25T09:59:59.674Z","#,
            r#""last_seen_ago_ms":1560,"expected":true,"missing":false,"failed":null,"#,
            r#""uptime_24h":0.75,"uptime_7d":0.5,"#,
            r#""strip_24h":"oooooooooooooooooooooooooooooooooooooooocccccccc"},"#,
            r#"{"key":"projector-b @ 10.0.5.3","id":"projector-b","host":"10.0.5.3","state":"warning","#,
            r#""overdue_ratio":3.4,"granted_ms":11000,"last_seen":"2026-11-25T09:59:23.834Z","#,
            r#""last_seen_ago_ms":37400,"expected":false,"missing":false,"failed":null,"#,
            r#""uptime_24h":null,"uptime_7d":null,"strip_24h":"------------------------------------------------"},"#,
            r#"{"key":"planetarium-show","id":"planetarium-show","host":null,"state":"missing","#,
            r#""overdue_ratio":null,"granted_ms":null,"last_seen":null,"#,
            r#""last_seen_ago_ms":null,"expected":true,"missing":true,"failed":null,"#,
            r#""uptime_24h":null,"uptime_7d":null,"strip_24h":"------------------------------------------------"},"#,
            r#"{"key":"vitrine @ 10.0.5.3","id":"vitrine","host":"10.0.5.3","state":"missing","#,
            r#""overdue_ratio":null,"granted_ms":null,"last_seen":null,"#,
            r#""last_seen_ago_ms":null,"expected":true,"missing":true,"failed":null,"#,
            r#""uptime_24h":null,"uptime_7d":null,"strip_24h":"------------------------------------------------"}]}"#,
            "\n"
        );
        assert_eq!(text, expected);
        let _: Value = serde_json::from_str(&text).expect("valid JSON");
    }

    /// The streamed document is, byte for byte, `serde_json`'s writing of
    /// the `protocol::apps::Apps` it parses into: the head the listing
    /// writes by hand has the schema type's field names and order.
    #[test]
    fn the_stream_is_the_schema_types_serialization() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("a", HOST, Duration::from_secs(3), t0).unwrap();
        r.fail("b", LOCAL, 3, t0).unwrap();
        let mut snapshot = r.snapshot(t0 + Duration::from_millis(4_321));
        let missing = [MissingApp {
            id: "m".into(),
            host: Some(HOST),
        }];
        let text = render(&mut snapshot, Format::Json, &|i| i == 1, &missing);
        let apps = crate::protocol::apps::parse_apps(text.as_bytes()).unwrap();
        assert_eq!(apps.apps.len(), 3);
        assert_eq!(apps.counters.fails, 1);
        assert_eq!(apps.counts.of(AppState::Critical), 1);
        let again = serde_json::to_string(&apps).unwrap() + "\n";
        assert_eq!(text, again);
    }

    #[test]
    fn an_empty_registry_has_no_apps_and_zero_counts() {
        let mut snapshot = Registry::default().snapshot(Instant::now());
        let text = render(&mut snapshot, Format::Json, &|_| false, NO_MISSING);
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["apps"], json!([]));
        assert_eq!(
            doc["counts"],
            json!({"ok": 0, "warning": 0, "critical": 0, "missing": 0})
        );
        let page = render(&mut snapshot, Format::Html, &|_| false, NO_MISSING);
        assert!(
            page.contains(r#"<tbody id="apps"><tr class="empty">"#),
            "{page}"
        );
    }

    /// Ids are JSON strings that parse back to themselves, whatever they
    /// hold; on the page they are escaped text.
    #[test]
    fn hostile_ids_are_escaped_in_json_and_html() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        let ids = [
            "<img src=x onerror=alert(1)>",
            r#"q"uote\back"#,
            "</script><script>alert(3)</script>",
            "a @ b",
            "é 漢 😀",
        ];
        for id in ids {
            r.init(id, LOCAL, Duration::ZERO, t0).unwrap();
        }
        let mut snapshot = r.snapshot(t0);
        let text = render(&mut snapshot, Format::Json, &|_| false, NO_MISSING);
        let doc: Value = serde_json::from_str(&text).unwrap();
        let mut got: Vec<&str> = doc["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        got.sort_unstable();
        let mut want = ids.to_vec();
        want.sort_unstable();
        assert_eq!(got, want);
        assert!(text.contains(r#""id":"q\"uote\\back""#), "{text}");
        let hosts: Vec<&Value> = doc["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["host"])
            .collect();
        assert!(hosts.iter().all(|h| *h == "127.0.0.1"), "{hosts:?}");

        let page = render(&mut snapshot, Format::Html, &|_| false, NO_MISSING);
        assert!(!page.contains("<img"), "{page}");
        assert_eq!(page.matches("<script").count(), 1, "the page's own only");
        assert!(page.contains(r#"<td class="app-id">&lt;img src=x onerror=alert(1)&gt;</td>"#));
        assert!(
            page.contains(r#"<td class="app-id">a @ b</td><td class="app-host">127.0.0.1</td>"#)
        );
    }

    #[test]
    fn bare_keys_have_no_host() {
        let t0 = Instant::now();
        let mut r = Registry::new(RegistryConfig {
            key_by_peer: false,
            ..RegistryConfig::default()
        });
        r.init("x @ 1.2.3.4", LOCAL, Duration::ZERO, t0).unwrap();
        let missing = [MissingApp {
            id: "m".into(),
            host: Some(HOST),
        }];
        let mut snapshot = r.snapshot(t0);
        let text = render(&mut snapshot, Format::Json, &|_| false, &missing);
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["apps"][0]["id"], "x @ 1.2.3.4");
        assert_eq!(doc["apps"][0]["host"], Value::Null);
        assert_eq!(doc["apps"][1]["key"], "m");
        assert_eq!(doc["apps"][1]["host"], "10.0.5.3");
    }

    /// The page's rows are the dashboard's golden markup, from a snapshot.
    #[test]
    fn the_page_renders_the_snapshot_rows() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("kiosk-1", LOCAL, Duration::from_secs(2), t0)
            .unwrap();
        let mut snapshot = r.snapshot(t0 + Duration::from_millis(1560));
        let missing = [MissingApp {
            id: "kiosk-9".into(),
            host: None,
        }];
        // the history of kiosk-1: created 1.56 s ago
        let uptime = |id: &str, host: Option<&str>| match (id, host) {
            ("kiosk-1", Some("127.0.0.1")) => {
                crate::monitor::render::dashboard::tests::created_just_now()
            }
            _ => Uptime::unknown(),
        };
        let page = render_with(&mut snapshot, Format::Html, &|_| false, &missing, &uptime);
        let golden = include_str!("../../../tests/data/dashboard_rows.html");
        for row in golden.lines().filter(|l| !l.trim().is_empty()) {
            assert!(page.contains(row), "{row}\nnot in\n{page}");
        }
        for (state, n) in [("ok", 1), ("warning", 0), ("critical", 0), ("missing", 1)] {
            assert!(
                page.contains(&format!(r#"<b data-count="{state}">{n}</b>"#)),
                "{state}"
            );
        }
        assert!(
            page.ends_with("</html>\n") || page.ends_with("</html>"),
            "whole page"
        );
    }
}

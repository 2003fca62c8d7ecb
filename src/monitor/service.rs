//! The single mapping from a request to a reply, shared by the HTTP server
//! and the in-memory mock transport.
//!
//! # Big replies: snapshot under the lock, render and send outside it
//!
//! `/list`, the host `/status` with several applications and `/metrics`
//! grow with the registry: with 100 000 applications of 1 KiB ids they are
//! 100 to 220 MB. Formatted under the registry's lock they would stall every
//! ping behind each scrape, and built as one `String` they would let each
//! client that never reads pin a whole copy. So these replies are made in
//! two steps:
//!
//! 1. Under the lock, `prepare` takes a snapshot: the counters and, per
//!    record, its key and 16 bytes of times. Keys are the registry's own
//!    `Arc<str>`, so this is a reference count bump per record, whatever the
//!    key length; no formatting, no sorting. (Copying the key text instead
//!    would cost 100 MB per reply at 100 000 × 1 KiB ids.)
//! 2. After the lock is released, `Streamed` sorts the snapshot (the HTTP
//!    server does that, and the first chunk, on tokio's blocking pool) and
//!    renders the reply piece by piece (one piece is one key or one sample
//!    line), handing it out in chunks of at most a given size
//!    (`Streamed::chunks`). The HTTP server renders the next chunk only
//!    when hyper asks for it, i.e. when the previous one has been written to
//!    the socket, so a reader that stalls holds its snapshot (32 bytes per
//!    record, key text shared) and one or two chunks, never the whole text.
//!
//! The snapshot is consistent: the reply shows the registry as of the
//! request. Small replies (and big ones
//! for the mock transport and [`apply`]) are rendered whole from the same
//! pieces, so there is one renderer per reply.
//!
//! The [`Registry`] answers with typed data; this module is where it
//! becomes wire text, through the protocol's line functions
//! ([`protocol::app_line`] and its siblings).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::monitor::history::{HistorySink, Uptime};
use crate::monitor::registry::{
    AppInfo, AppStatus, Expected, HostStatus, Registry, RegistryConfig, RegistryFull, Snapshot,
};
use crate::monitor::render::api;
use crate::monitor::render::metrics;
use crate::protocol::apps::{AppsQuery, AppsSort};
use crate::protocol::command::{parse_command, Command};
use crate::protocol::{self, whole_ms, Beat, GOODBYE, MULTIPLE_LINE_END, MULTIPLE_LINE_SEPARATOR};

/// The content type of every reply but `/metrics`, as the reference sends it.
pub(crate) const TEXT_PLAIN: &str = "text/plain";

/// An HTTP status, a content type and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reply {
    /// HTTP status code (200, 400, 414 or 503).
    pub status: u16,
    /// Response body (no trailing newline except for `/list` and `/metrics`).
    pub body: String,
    /// `text/plain`, or the Prometheus exposition type for `/metrics`.
    pub content_type: &'static str,
}

impl Reply {
    fn ok(body: String) -> Self {
        Reply {
            status: 200,
            body,
            content_type: TEXT_PLAIN,
        }
    }

    /// A `200` with `value` as JSON.
    pub(crate) fn json(value: &impl serde::Serialize) -> Self {
        Reply {
            status: 200,
            // the protocol's documents are strings, numbers and options:
            // they always serialize
            body: serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned()),
            content_type: super::render::api::JSON,
        }
    }

    /// An `ERROR: {reason}` reply with `status`.
    pub fn error(status: u16, reason: impl std::fmt::Display) -> Self {
        Reply {
            status,
            body: format!("ERROR: {reason}"),
            content_type: TEXT_PLAIN,
        }
    }
}

/// Decodes a request into a [`Command`] without touching any registry (so
/// a server can do it before taking its lock); a bad request is the
/// `ERROR: {reason}` [`Reply`] to send (400 or 414).
pub(crate) fn parse(target: &str, form_body: Option<&[u8]>) -> Result<Command, Reply> {
    parse_command(target, form_body).map_err(|e| Reply::error(e.http_status(), e))
}

/// Applies a decoded `command` from `peer` to `registry` at `now` and
/// returns the reply (200, or 503 when the registry is full).
#[cfg(test)]
pub(crate) fn apply(
    registry: &mut Registry,
    command: Command,
    peer: IpAddr,
    now: Instant,
) -> Reply {
    prepare(registry, command, peer, now).into_reply()
}

/// What [`prepare`] gives: a finished reply, or the snapshot a big one is
/// rendered from once the registry is released.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A small reply, complete.
    Ready(Reply),
    /// A `200` whose body is rendered from a snapshot.
    Streamed(Streamed),
}

impl Answer {
    /// The whole reply, rendered now.
    pub(crate) fn into_reply(self) -> Reply {
        match self {
            Answer::Ready(reply) => reply,
            Answer::Streamed(streamed) => Reply {
                content_type: streamed.content_type(),
                ..Reply::ok(streamed.into_string())
            },
        }
    }
}

/// [`apply`] without rendering the whole-registry replies: the part that
/// must run under the registry's lock. Costs `O(n)` reference count bumps
/// for those, and no formatting.
pub(crate) fn prepare(
    registry: &mut Registry,
    command: Command,
    peer: IpAddr,
    now: Instant,
) -> Answer {
    let snapshot = |view, registry: &mut Registry| {
        Answer::Streamed(Streamed::new(view, registry.snapshot(now)))
    };
    Answer::Ready(match command {
        Command::Beat { beat, app, timeout } => match beat {
            Beat::Init => granted(registry.init(&app, peer, timeout, now)),
            Beat::Ping => granted(registry.ping(&app, peer, timeout, now)),
            Beat::Done => {
                registry.done(&app, peer, now);
                Reply::ok(GOODBYE.to_owned())
            }
        },
        Command::Fail { app, code } => match registry.fail(&app, peer, code, now) {
            Ok(()) => Reply::ok(format!("Failure recorded: exit code {code}")),
            Err(full) => Reply::error(503, full),
        },
        Command::List => return snapshot(View::List, registry),
        Command::Status { app: None } => {
            registry.expire(now);
            if registry.len() >= 2 && registry.missing().is_empty() {
                return snapshot(View::HostStatus, registry);
            }
            let config = registry.config().clone();
            Reply::ok(host_status_line(&registry.host_status(now), &config))
        }
        Command::Status { app: Some(app) } => {
            let config = registry.config().clone();
            Reply::ok(app_status_line(&registry.status(&app, peer, now), &config))
        }
        Command::Metrics => return snapshot(View::Metrics, registry),
        Command::Dashboard => {
            let page =
                Streamed::new(View::Dashboard, registry.snapshot(now)).paged(dashboard_page());
            return Answer::Streamed(page);
        }
        Command::DashboardScript => Reply {
            status: 200,
            body: crate::monitor::render::dashboard::SCRIPT.to_owned(),
            content_type: crate::monitor::render::dashboard::JAVASCRIPT,
        },
        Command::Apps(query) => {
            let apps = Streamed::new(View::Apps, registry.snapshot(now));
            return Answer::Streamed(match query {
                Some(query) => apps.paged(query),
                None => apps,
            });
        }
        // a registry keeps no history: SharedRegistry answers from its own
        Command::Events(query) => Reply::json(&crate::protocol::history::Events::new(
            query.app,
            Vec::new(),
            0,
        )),
    })
}

/// The `/status` line of a tracked application under `config`'s ratios:
/// [`protocol::app_line`].
pub(crate) fn app_line(app: &AppInfo<'_>, config: &RegistryConfig) -> String {
    if let Some(code) = app.failed {
        return protocol::failed_line(
            app.key,
            code,
            app.overdue_ratio,
            config.warn_ratio,
            config.crit_ratio,
            config.drop_ratio,
            whole_ms(app.granted),
        );
    }
    protocol::app_line(
        app.state,
        app.key,
        app.overdue_ratio,
        config.warn_ratio,
        config.crit_ratio,
        config.drop_ratio,
        whole_ms(app.granted),
    )
}

/// The `/status?appid=ID` body for `status`.
pub(crate) fn app_status_line(status: &AppStatus<'_>, config: &RegistryConfig) -> String {
    match status {
        AppStatus::Tracked(app) => app_line(app, config),
        AppStatus::NoRecord { key } => protocol::no_record_line(key),
        AppStatus::Missing(expected) => missing_line(&[expected]),
    }
}

/// The status line of expected applications without a record:
/// `CRITICAL - expected application has not reported [ID]` for one,
/// `CRITICAL - N expected applications have not reported: [A,B]` for
/// several (specs as written: `ID` or `ID @ IP`; ids are valid
/// application ids, so the line cannot be forged).
pub(crate) fn missing_line(missing: &[&Expected]) -> String {
    let list = missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(MULTIPLE_LINE_SEPARATOR);
    match missing.len() {
        1 => format!("CRITICAL - expected application has not reported [{list}]"),
        n => format!("CRITICAL - {n} expected applications have not reported: [{list}]"),
    }
}

/// The `/status` body (no id) for `status`.
pub(crate) fn host_status_line(status: &HostStatus<'_>, config: &RegistryConfig) -> String {
    match status {
        HostStatus::NoClients => protocol::NO_CLIENTS_LINE.to_owned(),
        HostStatus::One(app) => app_line(app, config),
        HostStatus::Multiple(keys) => protocol::multiple_line(keys.iter().copied()),
        HostStatus::Missing(missing) => missing_line(missing),
    }
}

/// The `/list` body for `keys`: each followed by `\n`.
#[cfg(test)]
pub(crate) fn list_body(keys: &[&str]) -> String {
    keys.iter().map(|key| format!("{key}\n")).collect()
}

/// Which whole-registry reply a [`Streamed`] renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// `/list`: every key followed by `\n`.
    List,
    /// `/status` without an id, with two or more records:
    /// [`protocol::multiple_line`].
    HostStatus,
    /// `/metrics`: [`metrics::render`].
    Metrics,
    /// `/api/v1/apps`: `docs/api-v1.md`.
    Apps,
    /// `/`: the dashboard page.
    Dashboard,
}

/// A whole-registry reply still to be rendered from its [`Snapshot`],
/// outside the registry's lock, whole ([`Streamed::into_string`]) or in
/// bounded chunks ([`Streamed::chunks`]).
#[derive(Debug)]
pub(crate) struct Streamed {
    view: View,
    /// Boxed: the chunked reply body holds it, and stays small.
    snapshot: Box<Snapshot>,
    /// The system time of the snapshot (the JSON's `generated_at`).
    taken: SystemTime,
    /// The wall-clock time of the snapshot (for `/metrics`' timestamps),
    /// when not the registry's own.
    wall: Option<SystemTime>,
    /// Appended after the last piece (the durable state's `/metrics`
    /// lines). Boxed to stay one thin pointer, as it is rarely given.
    #[allow(clippy::box_collection)]
    trailer: Option<Box<String>>,
    /// The history, for the uptime and strip of the API and the page, and
    /// the wall-clock now they are worked out at.
    history: Option<(Arc<HistorySink>, SystemTime)>,
    /// The page asked for (the API with a query, the dashboard always),
    /// and its rows once selected.
    page: Option<Box<(AppsQuery, OnceLock<api::Selection>)>>,
    /// `/metrics`: which applications have series, and once worked out
    /// (after the sort), their records.
    per_app: metrics::PerAppMetrics,
    series: OnceLock<metrics::Series>,
}

/// The rows the dashboard's first paint shows: problems first, one page.
pub(crate) fn dashboard_page() -> AppsQuery {
    AppsQuery::new()
        .sort(AppsSort::Overdue)
        .limit(DASHBOARD_PAGE)
}

/// Rows on a page of the dashboard.
pub(crate) const DASHBOARD_PAGE: usize = 100;

impl Streamed {
    /// The reply `view` of `snapshot` (sorted later, when rendered).
    pub(crate) fn new(view: View, snapshot: Snapshot) -> Self {
        let taken = SystemTime::now();
        Streamed {
            view,
            snapshot: Box::new(snapshot),
            taken,
            wall: None,
            trailer: None,
            history: None,
            page: None,
            per_app: metrics::PerAppMetrics::All,
            series: OnceLock::new(),
        }
    }

    /// The same reply, with per-application `/metrics` series for `mode`'s
    /// applications only.
    pub(crate) fn per_app_metrics(mut self, mode: metrics::PerAppMetrics) -> Self {
        self.per_app = mode;
        self
    }

    /// The `/metrics` series, worked out on first use (after the sort).
    fn series(&self) -> &metrics::Series {
        self.series
            .get_or_init(|| metrics::Series::of(&self.snapshot, self.per_app))
    }

    /// The same reply, for the page `query` asks (the API and the page).
    pub(crate) fn paged(mut self, query: AppsQuery) -> Self {
        self.page = Some(Box::new((query, OnceLock::new())));
        self
    }

    /// The same reply with each app's uptime and strip from `history`
    /// (the API and the page; other views have none).
    pub(crate) fn with_history(mut self, history: Arc<HistorySink>) -> Self {
        if matches!(self.view, View::Apps | View::Dashboard) {
            let now = history.now();
            self.history = Some((history, now));
        }
        self
    }

    /// The same reply, with `wall` as the wall-clock time of the snapshot.
    pub(crate) fn at_wall(self, wall: SystemTime) -> Self {
        Streamed {
            wall: Some(wall),
            ..self
        }
    }

    /// The same reply with `trailer` appended.
    pub(crate) fn with_trailer(mut self, trailer: String) -> Self {
        self.trailer = (!trailer.is_empty()).then(|| Box::new(trailer));
        self
    }

    /// Whether this is the `/metrics` reply.
    pub(crate) fn is_metrics(&self) -> bool {
        matches!(self.view, View::Metrics)
    }

    /// The reply's `Content-Type`.
    pub(crate) fn content_type(&self) -> &'static str {
        match self.view {
            View::List | View::HostStatus => TEXT_PLAIN,
            View::Metrics => metrics::CONTENT_TYPE,
            View::Apps => api::JSON,
            View::Dashboard => api::HTML,
        }
    }

    /// Whether the reply is sent with `Cache-Control: no-store` (the
    /// dashboard and its API; the reference's replies keep their headers).
    #[cfg(feature = "server")]
    pub(crate) fn no_store(&self) -> bool {
        !matches!(self.view, View::List | View::HostStatus | View::Metrics)
    }

    /// The JSON API's and the dashboard's view of the snapshot: tracked
    /// records, which of them are expected, and the expected apps missing.
    fn with_listing<R>(&self, f: impl FnOnce(&api::Listing<'_, Expected>) -> R) -> R {
        let snapshot: &Snapshot = &self.snapshot;
        let is_expected = |i| snapshot.is_expected(i);
        let uptime = |app: &str, host: Option<&str>| {
            self.history
                .as_ref()
                .map_or_else(Uptime::unknown, |(h, now)| h.uptime(app, host, *now))
        };
        let mut listing = api::Listing {
            snapshot,
            generated_at: self.taken,
            is_expected: &is_expected,
            missing: snapshot.missing(),
            uptime: &uptime,
            selection: None,
        };
        if let Some((query, selection)) = self.page.as_deref() {
            listing.selection = Some(selection.get_or_init(|| listing.select(query)));
        }
        f(&listing)
    }

    /// The whole body.
    pub(crate) fn into_string(self) -> String {
        let bytes = self.chunks(usize::MAX).next().unwrap_or_default();
        // every piece is a `str`, so the whole is UTF-8
        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }

    /// The body in chunks of at most `max` bytes (at least 1), each rendered
    /// when asked for. A chunk may end inside a UTF-8 character.
    pub(crate) fn chunks(mut self, max: usize) -> Chunks {
        if self.lists_every_record() {
            self.snapshot.sort();
        }
        Chunks {
            pieces: self.pieces(),
            body: self,
            next_piece: 0,
            carry: Vec::new(),
            max: max.max(1),
        }
    }

    /// Whether the reply lists every record in key order, so that the
    /// snapshot must be sorted first; a page (the API with a query, the
    /// dashboard) and `/metrics` without every app's series order only
    /// the records they show.
    fn lists_every_record(&self) -> bool {
        match self.view {
            View::List | View::HostStatus => true,
            View::Metrics => self.per_app == metrics::PerAppMetrics::All,
            View::Apps | View::Dashboard => self.page.is_none(),
        }
    }

    fn pieces(&self) -> usize {
        let n = self.snapshot.len();
        let trailer = usize::from(self.trailer.is_some());
        trailer
            + match self.view {
                View::List => n,
                View::HostStatus => n + 2,
                View::Metrics => self.series().pieces(),
                View::Apps | View::Dashboard => self.with_listing(|l| l.pieces()),
            }
    }

    /// Appends piece `i` (a key, a line, a header) to `out`.
    fn write_piece(&self, i: usize, out: &mut Vec<u8>) {
        let snapshot = &self.snapshot;
        if let Some(trailer) = self.trailer.as_ref().filter(|_| i + 1 == self.pieces()) {
            out.extend_from_slice(trailer.as_bytes());
            return;
        }
        match self.view {
            View::List => {
                out.extend_from_slice(snapshot.key(i).as_bytes());
                out.push(b'\n');
            }
            View::HostStatus => {
                let n = snapshot.len();
                if i == 0 {
                    out.extend_from_slice(protocol::multiple_line_head(n).as_bytes());
                } else if i <= n {
                    if i > 1 {
                        out.extend_from_slice(MULTIPLE_LINE_SEPARATOR.as_bytes());
                    }
                    out.extend_from_slice(snapshot.key(i - 1).as_bytes());
                } else {
                    out.extend_from_slice(MULTIPLE_LINE_END.as_bytes());
                }
            }
            View::Metrics => {
                let wall = self.wall.unwrap_or_else(|| snapshot.wall_now());
                metrics::write_piece(snapshot, self.series(), wall, i, out);
            }
            View::Apps => self.with_listing(|l| l.write_piece(api::Format::Json, i, out)),
            View::Dashboard => self.with_listing(|l| l.write_piece(api::Format::Html, i, out)),
        }
    }
}

/// The chunks of a [`Streamed`] body, each at most `max` bytes, rendered
/// one at a time: what is held between two calls is the snapshot and the
/// tail of the last piece that did not fit (one piece is at most a few KiB).
#[derive(Debug)]
pub(crate) struct Chunks {
    body: Streamed,
    pieces: usize,
    next_piece: usize,
    carry: Vec<u8>,
    max: usize,
}

impl Chunks {
    /// Whether every chunk has been handed out.
    pub(crate) fn is_done(&self) -> bool {
        self.next_piece == self.pieces && self.carry.is_empty()
    }
}

impl Iterator for Chunks {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.is_done() {
            return None;
        }
        let mut out = std::mem::take(&mut self.carry);
        // room for the chunk and the piece that overflows it
        out.reserve(self.max.min(1 << 20).saturating_sub(out.len()) + 4096);
        while out.len() < self.max && self.next_piece < self.pieces {
            self.body.write_piece(self.next_piece, &mut out);
            self.next_piece += 1;
        }
        if out.len() > self.max {
            self.carry = out.split_off(self.max);
        }
        // empty only when no piece was left
        (!out.is_empty()).then_some(out)
    }
}

/// The reply to an accepted `hb_init`/`hb_ping`: the granted timeout in
/// whole milliseconds; `503` when the registry is full.
fn granted(result: Result<Duration, RegistryFull>) -> Reply {
    match result {
        Ok(granted) => Reply::ok(whole_ms(granted).to_string()),
        Err(full) => Reply::error(503, full),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::EventKind;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4));

    struct Harness {
        registry: Registry,
        t0: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Self::with(RegistryConfig::default())
        }

        fn with(config: RegistryConfig) -> Self {
            Harness {
                registry: Registry::new(config),
                t0: Instant::now(),
            }
        }

        fn at(&mut self, ms: u64, target: &str) -> Reply {
            self.req(ms, target, None, LOCAL)
        }

        fn req(&mut self, ms: u64, target: &str, body: Option<&[u8]>, peer: IpAddr) -> Reply {
            let now = self.t0 + Duration::from_millis(ms);
            match parse(target, body) {
                Ok(command) => apply(&mut self.registry, command, peer, now),
                Err(reply) => reply,
            }
        }
    }

    fn ok(body: &str) -> Reply {
        Reply {
            status: 200,
            body: body.to_owned(),
            content_type: TEXT_PLAIN,
        }
    }

    #[test]
    fn replies_match_protocol_samples() {
        let mut h = Harness::new();
        assert_eq!(
            h.at(0, "/hb_init?2000&appid=Tetris&cache_buster=1"),
            ok("3000")
        );
        assert_eq!(
            h.at(1560, "/status?0&appid=Tetris"),
            ok("OK - fine application [Tetris @ 127.0.0.1]| od=0.52;3;5;0;6 delay=3000ms;;; ")
        );
        assert_eq!(
            h.at(9300, "/status?0&appid=Tetris"),
            ok("WARNING - somewhat late application [Tetris @ 127.0.0.1]| od=3.10;3;5;0;6 delay=3000ms;;; ")
        );
        assert_eq!(
            h.at(15210, "/status?0&appid=Tetris"),
            ok("CRITICAL - quite late application [Tetris @ 127.0.0.1]| od=5.07;3;5;0;6 delay=3000ms;;; ")
        );
        assert_eq!(h.at(15210, "/list"), ok("Tetris @ 127.0.0.1\n"));
        assert_eq!(
            h.at(18000, "/status?0&appid=Tetris"),
            ok("CRITICAL - no application record for queried ID: [Tetris @ 127.0.0.1]")
        );
        assert_eq!(h.at(18000, "/list"), ok(""));
    }

    #[test]
    fn whole_life_cycle_at_boundaries() {
        let mut h = Harness::new();
        assert_eq!(h.at(0, "/hb_ping?&appid=X"), ok("1000")); // empty timeout = 0
        let status = |h: &mut Harness, ms| h.at(ms, "/status").body;
        let expect = [
            (2990, "OK - fine", "2.99"),
            (3000, "WARNING - somewhat late", "3.00"),
            (4990, "WARNING - somewhat late", "4.99"),
            (5000, "CRITICAL - quite late", "5.00"),
            (5990, "CRITICAL - quite late", "5.99"),
        ];
        for (ms, prefix, od) in expect {
            assert_eq!(
                status(&mut h, ms),
                format!("{prefix} application [X @ 127.0.0.1]| od={od};3;5;0;6 delay=1000ms;;; ")
            );
        }
        assert_eq!(
            status(&mut h, 6000),
            "UNKNOWN - no heartbeat clients at the moment..."
        );
        let events = h.registry.take_events();
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, &*e.key)).collect();
        let x = "X @ 127.0.0.1";
        assert_eq!(
            kinds,
            [
                (EventKind::Created, x),
                (EventKind::Warning, x),
                (EventKind::Critical, x),
                (EventKind::Expired, x)
            ]
        );
    }

    #[test]
    fn ping_keeps_an_app_alive_and_done_says_goodbye() {
        let mut h = Harness::new();
        assert_eq!(h.at(0, "/hb_init?0&appid=A"), ok("1000"));
        assert_eq!(h.at(5000, "/x/hb_ping?0&appid=A"), ok("1000"));
        assert!(h
            .at(10_999, "/status?0&appid=A")
            .body
            .starts_with("CRITICAL - quite late"));
        assert_eq!(h.at(11_000, "/hb_done?0&appid=A"), ok(GOODBYE));
        // done of an unknown id is answered all the same.
        assert_eq!(h.at(11_000, "/hb_done?0&appid=A"), ok(GOODBYE));
        assert_eq!(h.at(11_000, "/hb_done?&appid=never-seen"), ok(GOODBYE));
        assert_eq!(h.at(11_000, "/list"), ok(""));
    }

    #[test]
    fn host_status_with_several_apps() {
        let mut h = Harness::new();
        for app in ["C", "A", "B"] {
            let target = format!("/hb_init?5000&appid={app}");
            assert_eq!(h.req(0, &target, None, HOST), ok("6000"));
        }
        assert_eq!(
            h.at(1, "/status"),
            ok("WARNING - multiple (3) applications: [A @ 1.2.3.4,B @ 1.2.3.4,C @ 1.2.3.4]")
        );
        assert_eq!(
            h.at(1, "/status?0&appid=A"),
            ok("CRITICAL - no application record for queried ID: [A @ 127.0.0.1]")
        );
        assert!(h
            .req(1, "/status?0&appid=A", None, HOST)
            .body
            .starts_with("OK - fine"));
    }

    #[test]
    fn every_bad_input_is_a_400_and_registers_nothing() {
        let mut h = Harness::new();
        let cases = [
            (
                "/hb_init?abc&appid=y",
                "ERROR: timeout must be a whole number of milliseconds, got [abc]",
            ),
            (
                "/hb_ping?-5&appid=y",
                "ERROR: timeout must not be negative, got [-5]",
            ),
            (
                "/hb_ping?99999999999999999999&appid=y",
                "ERROR: timeout [99999999999999999999] exceeds the maximum of 4294967295 ms",
            ),
            (
                "/hb_ping?2000",
                "ERROR: missing appid parameter for hb_ping",
            ),
            ("/hb_init?2000&appid=", "ERROR: empty appid for hb_init"),
            (
                "/hb_ping?1&appid=a%2",
                "ERROR: invalid percent-encoding in appid",
            ),
            (
                "/hb_ping?1&appid=%C3%28",
                "ERROR: appid is not valid UTF-8 after percent-decoding",
            ),
            (
                "/hb_ping?1&appid=a%0Db",
                "ERROR: appid must not contain control characters",
            ),
            (
                "/hb_pong?1&appid=y",
                "ERROR: cannot process your request: [/hb_pong?1&appid=y]",
            ),
        ];
        for (target, body) in cases {
            let reply = h.at(0, target);
            assert_eq!(reply.status, 400, "{target}");
            assert_eq!(reply.body, body, "{target}");
        }
        let long = format!("/hb_ping?1&appid={}", "x".repeat(2000));
        assert_eq!(h.at(0, &long).status, 414);
        assert!(h.registry.is_empty());
        assert_eq!(h.registry.counters(), Default::default());
        assert!(h.registry.take_events().is_empty());
    }

    #[test]
    fn percent_decoded_ids_and_form_bodies() {
        let mut h = Harness::new();
        assert_eq!(h.at(0, "/hb_init?1&appid=a%26b"), ok("1001"));
        assert_eq!(h.at(0, "/list"), ok("a&b @ 127.0.0.1\n"));
        let body: &[u8] = b"appid=Form+App";
        assert_eq!(
            h.req(0, "/hb_init?2000&cache_buster=9", Some(body), LOCAL),
            ok("3000")
        );
        assert_eq!(
            h.at(0, "/list"),
            ok("Form App @ 127.0.0.1\na&b @ 127.0.0.1\n")
        );
        assert_eq!(h.req(0, "/hb_done?0", Some(body), LOCAL), ok(GOODBYE));
        assert_eq!(h.at(0, "/list"), ok("a&b @ 127.0.0.1\n"));
    }

    #[test]
    fn full_registry_is_a_503() {
        let mut h = Harness::with(RegistryConfig {
            max_apps: 1,
            ..RegistryConfig::default()
        });
        assert_eq!(h.at(0, "/hb_init?0&appid=a"), ok("1000"));
        let reply = h.at(0, "/hb_ping?0&appid=b");
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.body,
            "ERROR: registry full: already tracking the maximum of 1 applications"
        );
        assert_eq!(h.at(0, "/hb_ping?0&appid=a"), ok("1000"));
    }

    #[test]
    fn bare_keys_config() {
        let mut h = Harness::with(RegistryConfig {
            key_by_peer: false,
            ..RegistryConfig::default()
        });
        assert_eq!(h.req(0, "/hb_init?0&appid=T", None, HOST), ok("1000"));
        assert_eq!(
            h.at(1000, "/status?0&appid=T"),
            ok("OK - fine application [T]| od=1.00;3;5;0;6 delay=1000ms;;; ")
        );
        assert_eq!(h.at(1000, "/list"), ok("T\n"));
    }

    /// Streamed replies come in chunks of at most the bound asked for,
    /// every one full but the last, and join to the whole reply.
    #[test]
    fn streamed_replies_come_in_bounded_chunks() {
        let mut h = Harness::new();
        for i in 0..300 {
            let id = format!("{i:03}-q%22b%5C-{}", "x".repeat(i % 200));
            assert_eq!(h.at(0, &format!("/hb_init?{i}&appid={id}")).status, 200);
        }
        let now = h.t0 + Duration::from_millis(1);
        for target in ["/list", "/status", "/metrics"] {
            let whole = h.at(1, target).body;
            for max in [1, 7, 1000, 32 * 1024, usize::MAX] {
                let command = parse(target, None).unwrap();
                let Answer::Streamed(streamed) = prepare(&mut h.registry, command, LOCAL, now)
                else {
                    panic!("{target} is not streamed");
                };
                let chunks: Vec<Vec<u8>> = streamed.chunks(max).collect();
                assert!(
                    chunks.iter().all(|c| !c.is_empty() && c.len() <= max),
                    "{target}: a chunk over {max} bytes"
                );
                assert_eq!(chunks.len(), whole.len().div_ceil(max), "{target} by {max}");
                assert!(chunks.concat() == whole.as_bytes(), "{target} by {max}");
            }
        }
        // below two apps the host status is one small line
        let mut h = Harness::new();
        h.at(0, "/hb_init?0&appid=one");
        let command = parse("/status", None).unwrap();
        assert!(matches!(
            prepare(&mut h.registry, command, LOCAL, h.t0),
            Answer::Ready(_)
        ));
    }

    /// A whole-registry reply shares the registry's keys until it is
    /// dropped, rendered or not (what frees a stalled reader's reply).
    #[test]
    fn a_dropped_reply_frees_its_snapshot() {
        let mut h = Harness::new();
        for i in 0..50 {
            h.at(0, &format!("/hb_init?0&appid=a{i}"));
        }
        // the events hold keys too
        h.registry.take_events();
        assert_eq!(h.registry.keys_held_by_replies(), 0);
        for target in ["/list", "/status", "/metrics"] {
            let command = parse(target, None).unwrap();
            let answer = prepare(&mut h.registry, command, LOCAL, h.t0);
            assert_eq!(h.registry.keys_held_by_replies(), 50, "{target}");
            let Answer::Streamed(streamed) = answer else {
                panic!("{target} is not streamed");
            };
            let mut chunks = streamed.chunks(10);
            assert!(chunks.next().is_some());
            assert_eq!(h.registry.keys_held_by_replies(), 50, "{target}");
            drop(chunks);
            assert_eq!(h.registry.keys_held_by_replies(), 0, "{target}");
        }
    }

    #[test]
    fn metrics_endpoint() {
        let mut h = Harness::new();
        h.at(0, "/hb_init?0&appid=a%22b");
        let reply = h.at(500, "/metrics");
        assert_eq!(reply.status, 200);
        assert!(reply
            .body
            .contains("heartbeat_app_overdue_ratio{app=\"a\\\"b\",host=\"127.0.0.1\"} 0.5\n"));
        assert!(reply.body.contains("heartbeat_inits_total 1\n"));
    }
}

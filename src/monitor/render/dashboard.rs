//! The dashboard at `GET /`: one HTML page compiled into the
//! binary, rendered on the server first (it reads fine with JavaScript off),
//! then refreshed in place by its own script every 2 s (the JSON shape is
//! fixed in `docs/api-v1.md`). It shows one page of at most 100 rows,
//! problems first (`sort=overdue`): the server renders the first page, the
//! script asks for the page on screen only
//! (`/api/v1/apps?sort=overdue&limit=100[&state=S][&q=TEXT][&cursor=C]`),
//! so neither grows with the fleet. The view is the location's hash
//! (`#q=TEXT&state=S&after=CURSOR&events=ID&host=IP`): the search box, a
//! click on a count (one state; again: all) and the Prev / Next buttons
//! set it.
//!
//! The page (`dashboard.html`) has two placeholders, `<!--SUMMARY-->` and
//! `<!--ROWS-->`; the server fills them with the markup below, and the
//! page's script builds exactly the same markup with `createElement` /
//! `textContent` / `setAttribute`, so a refresh changes values, never the
//! structure. Every text goes through [`escape`]; nothing is inserted raw.
//!
//! One row per application (no whitespace between the elements; `STATE` is
//! `ok`, `warning`, `critical` or `missing`):
//!
//! ```text
//! <tr class="app state-STATE" data-key="KEY" data-state="STATE">
//!   <td class="app-id">ID</td>
//!   <td class="app-host">HOST or —</td>
//!   <td class="app-state"><span class="badge">OK|WARNING|CRITICAL|MISSING</span>[<span class="exit">exit code N</span>]</td>
//!   <td class="app-overdue"><span class="bar"><span class="fill" style="width:P%"></span></span><span class="ratio">R or —</span></td>
//!   <td class="app-granted">3 s | 2.5 s | 500 ms | —</td>
//!   <td class="app-seen">N s ago | N min ago | N h ago | N d ago | never</td>
//!   <td class="app-history"><svg class="strip" viewBox="0 0 48 1" preserveAspectRatio="none">
//!     <rect class="s-o|s-w|s-c" x="FIRST" width="SLOTS" height="1"></rect>...</svg>
//!     <span class="uptime" title="7 d: U7 or —">U24 or —</span></td>
//! </tr>
//! ```
//!
//! The strip has one `rect` per run of equal slots of `strip_24h` (the
//! unknown `-` slots have none: the strip's background shows), `U` is the
//! uptime × 100 with 1 decimal and a `%`. The exit code is shown for a
//! failed run only. A click on a row opens its events
//! (`#events=ID&host=HOST`, from `GET /api/v1/events`) below the table.
//!
//! `P` is `min(ratio / drop_ratio, 1) × 100` and `R` the ratio, rounded as
//! `round(x × 10^places)` then printed with 1 (`P`) or 2 (`R`) decimals
//! (JavaScript's `Math.round` and Rust's `f64::round` agree for `x ≥ 0`).
//! No applications: one `<tr class="empty"><td colspan="7">No applications
//! yet.</td></tr>`.
//!
//! The summary: per state in the order ok, warning, critical, missing,
//! `<div class="count state-STATE"><b data-count="STATE">N</b><span>LABEL</span></div>`,
//! then `<p class="thresholds">warning from od 3, critical from 5, dropped at 6; tolerance 1 s</p>`.
//!
//! Served from the same registry snapshot as `/api/v1/apps`, a piece at a
//! time ([`write_head`], one [`render_row`] per application, [`write_tail`]):
//! see [`crate::monitor::render::api`]. `200`, `Content-Type: text/html;
//! charset=utf-8`, `Cache-Control: no-store`.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::protocol::apps::{AppRecord, AppState, StateCounts, Thresholds};
use crate::protocol::whole_ms;

/// The page, with its `<!--SUMMARY-->` and `<!--ROWS-->` placeholders.
pub(crate) const TEMPLATE: &str = include_str!("dashboard.html");

/// The page's script, served on its own path (`/dashboard.js`) so that the
/// page's `Content-Security-Policy` needs no inline script.
pub(crate) const SCRIPT: &str = include_str!("dashboard.js");

/// The script's content type.
pub(crate) const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// HTML-escapes `&`, `<`, `>`, `"` and `'`: safe in text and in quoted attributes.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The template's three parts: up to the summary, between the summary and
/// the rows, after the rows.
fn template_parts() -> (&'static str, &'static str, &'static str) {
    // both placeholders are there (a unit test says so)
    let (head, rest) = TEMPLATE
        .split_once("<!--SUMMARY-->")
        .unwrap_or((TEMPLATE, ""));
    let (middle, tail) = rest.split_once("<!--ROWS-->").unwrap_or((rest, ""));
    (head, middle, tail)
}

/// Appends the page up to its first row: the head, the summary.
pub(crate) fn write_head(out: &mut String, counts: &StateCounts, thresholds: &Thresholds) {
    let (head, middle, _) = template_parts();
    out.push_str(head);
    render_summary(out, counts, thresholds);
    out.push_str(middle);
}

/// Appends the page after its last row (`empty`: there was none).
pub(crate) fn write_tail(out: &mut String, empty: bool) {
    if empty {
        out.push_str(r#"<tr class="empty"><td colspan="7">No applications yet.</td></tr>"#);
    }
    out.push_str(template_parts().2);
}

/// The whole page for `apps`, in one string.
#[cfg(test)]
pub(crate) fn render_page(thresholds: &Thresholds, apps: &[AppRecord]) -> String {
    let mut counts = StateCounts::default();
    for app in apps {
        counts.add(app.state, 1);
    }
    let mut page = String::new();
    write_head(&mut page, &counts, thresholds);
    for app in apps {
        render_row(&mut page, app, thresholds.drop_ratio);
    }
    write_tail(&mut page, apps.is_empty());
    page
}

fn render_summary(out: &mut String, counts: &StateCounts, t: &Thresholds) {
    for state in AppState::ALL {
        let _ = write!(
            out,
            r#"<div class="count state-{s}"><b data-count="{s}">{n}</b><span>{l}</span></div>"#,
            s = state.as_str(),
            n = counts.of(state),
            l = state.label(),
        );
    }
    let text = format!(
        "warning from od {}, critical from {}, dropped at {}; tolerance {}",
        t.warn_ratio,
        t.crit_ratio,
        t.drop_ratio,
        duration(Some(whole_ms(t.tolerance))),
    );
    let _ = write!(out, r#"<p class="thresholds">{}</p>"#, escape(&text));
}

/// Appends one row's markup (the module docs give the exact shape).
pub(crate) fn render_row(out: &mut String, app: &AppRecord, drop_ratio: f64) {
    let state = app.state.as_str();
    let _ = write!(
        out,
        r#"<tr class="app state-{state}" data-key="{key}" data-state="{state}"><td class="app-id">{id}</td><td class="app-host">{host}</td><td class="app-state"><span class="badge">{label}</span>"#,
        key = escape(&app.key),
        id = escape(&app.id),
        host = escape(app.host.as_deref().unwrap_or(DASH)),
        label = app.state.label(),
    );
    if let Some(code) = app.failed {
        let _ = write!(out, r#"<span class="exit">exit code {code}</span>"#);
    }
    let _ = write!(
        out,
        r#"</td><td class="app-overdue"><span class="bar"><span class="fill" style="{width}"></span></span><span class="ratio">{ratio}</span></td><td class="app-granted">{granted}</td><td class="app-seen">{seen}</td><td class="app-history"><svg class="strip" viewBox="0 0 48 1" preserveAspectRatio="none">"#,
        width = bar_width(app.overdue_ratio, drop_ratio),
        ratio = match app.overdue_ratio {
            Some(r) if usable(r) => fixed(r, 2),
            _ => DASH.to_owned(),
        },
        granted = duration(app.granted.map(whole_ms)),
        seen = ago(app.last_seen_ago.map(whole_ms)),
    );
    let slots = app.strip_24h.as_bytes();
    let mut first = 0;
    while first < slots.len() {
        let run = slots[first..]
            .iter()
            .take_while(|&&s| s == slots[first])
            .count();
        let class = match slots[first] {
            b'o' => Some("s-o"),
            b'w' => Some("s-w"),
            b'c' => Some("s-c"),
            _ => None,
        };
        if let Some(class) = class {
            let _ = write!(
                out,
                r#"<rect class="{class}" x="{first}" width="{run}" height="1"></rect>"#
            );
        }
        first += run;
    }
    let _ = write!(
        out,
        r#"</svg><span class="uptime" title="7 d: {week}">{day}</span></td></tr>"#,
        week = percent(app.uptime_7d),
        day = percent(app.uptime_24h),
    );
}

/// An uptime as a percentage with one decimal, or a dash.
fn percent(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) if usable(r) => format!("{}%", fixed(r * 100.0, 1)),
        _ => DASH.to_owned(),
    }
}

const DASH: &str = "\u{2014}";

fn usable(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

/// `x ≥ 0` with `places` decimals, rounded like the page's `fixed()`.
fn fixed(x: f64, places: u32) -> String {
    let p = 10u64.pow(places);
    // Saturating cast: a ratio beyond u64 cannot reach the page anyway.
    let n = (x * p as f64).round() as u64;
    if places == 0 {
        return n.to_string();
    }
    format!("{}.{:0width$}", n / p, n % p, width = places as usize)
}

fn bar_width(ratio: Option<f64>, drop_ratio: f64) -> String {
    match ratio {
        Some(r) if usable(r) && usable(drop_ratio) && drop_ratio > 0.0 => {
            format!("width:{}%", fixed((r / drop_ratio).min(1.0) * 100.0, 1))
        }
        _ => "width:0.0%".to_owned(),
    }
}

fn duration(ms: Option<u64>) -> String {
    match ms {
        None => DASH.to_owned(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms % 1000 == 0 => format!("{} s", ms / 1000),
        Some(ms) => format!("{} s", fixed(ms as f64 / 1000.0, 1)),
    }
}

fn ago(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "never".to_owned();
    };
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::monitor::history::Uptime;
    use std::time::Duration;

    /// The markup both renderers must produce, shared with `tests/dashboard_browser.rs`.
    const GOLDEN: &str = include_str!("../../../tests/data/dashboard_rows.html");

    fn thresholds() -> Thresholds {
        Thresholds::default()
    }

    fn app(id: &str, state: AppState, ratio: f64) -> AppRecord {
        AppRecord {
            key: format!("{id} @ 127.0.0.1"),
            id: id.to_owned(),
            host: Some("127.0.0.1".into()),
            state,
            overdue_ratio: Some(ratio),
            granted: Some(Duration::from_secs(3)),
            last_seen: None,
            last_seen_ago: Some(Duration::from_millis((ratio * 3000.0) as u64)),
            expected: false,
            missing: false,
            failed: None,
            uptime_24h: None,
            uptime_7d: None,
            strip_24h: Uptime::unknown().strip,
        }
    }

    fn missing(id: &str) -> AppRecord {
        AppRecord {
            key: id.to_owned(),
            host: None,
            overdue_ratio: None,
            granted: None,
            last_seen_ago: None,
            expected: true,
            missing: true,
            ..app(id, AppState::Missing, 0.0)
        }
    }

    fn row(app: &AppRecord) -> String {
        let mut out = String::new();
        render_row(&mut out, app, 6.0);
        out
    }

    #[test]
    fn escape_covers_the_five_characters_and_borrows_plain_text() {
        assert_eq!(escape(r#"a&b<c>d"e'f"#), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
        assert!(matches!(escape("kiosk-1 @ 127.0.0.1"), Cow::Borrowed(_)));
        assert_eq!(escape("é ü 漢"), "é ü 漢");
    }

    #[test]
    fn a_hostile_id_is_escaped_everywhere_it_appears() {
        let hostile = "<img src=x onerror=alert(1)>";
        let page = render_page(
            &thresholds(),
            &[
                app(hostile, AppState::Ok, 0.1),
                app(r#"x" onmouseover="alert(2)"#, AppState::Warning, 3.2),
                app(
                    "</script><script>alert(3)</script>",
                    AppState::Critical,
                    5.5,
                ),
            ],
        );
        let (_, rows) = page.split_once(r#"<tbody id="apps">"#).unwrap();
        let (rows, _) = rows.split_once("</tbody>").unwrap();
        assert!(!rows.contains('\''), "{rows}");
        assert!(!rows.contains("<img"), "{rows}");
        assert!(!rows.contains("<script"), "{rows}");
        assert!(!rows.contains("\" onmouseover"), "{rows}");
        assert!(rows.contains(r#"<td class="app-id">&lt;img src=x onerror=alert(1)&gt;</td>"#));
        assert!(rows.contains(r#"data-key="&lt;img src=x onerror=alert(1)&gt; @ 127.0.0.1""#));
        assert!(rows.contains(r#"<td class="app-id">x&quot; onmouseover=&quot;alert(2)</td>"#));
        // the page keeps exactly its own one script
        assert_eq!(page.matches("<script").count(), 1);
    }

    /// The uptime of an app created moments ago (the golden kiosk-1).
    pub(crate) fn created_just_now() -> Uptime {
        Uptime {
            day: Some(1.0),
            week: Some(1.0),
            strip: format!("{}o", "-".repeat(47)),
        }
    }

    #[test]
    fn rows_match_the_shared_golden_markup() {
        let mut lines = GOLDEN.lines().filter(|l| !l.trim().is_empty());
        let uptime = created_just_now();
        let ok = AppRecord {
            last_seen_ago: Some(Duration::from_millis(1234)),
            uptime_24h: uptime.day,
            uptime_7d: uptime.week,
            strip_24h: uptime.strip,
            ..app("kiosk-1", AppState::Ok, 0.52)
        };
        assert_eq!(row(&ok), lines.next().unwrap());
        assert_eq!(row(&missing("kiosk-9")), lines.next().unwrap());
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn each_state_gets_its_class_badge_and_data_state() {
        for (state, class, label) in [
            (AppState::Ok, "state-ok", "OK"),
            (AppState::Warning, "state-warning", "WARNING"),
            (AppState::Critical, "state-critical", "CRITICAL"),
            (AppState::Missing, "state-missing", "MISSING"),
        ] {
            let r = row(&app("a", state, 1.0));
            assert!(
                r.starts_with(&format!(r#"<tr class="app {class}" "#)),
                "{r}"
            );
            assert!(
                r.contains(&format!(r#"data-state="{}""#, state.as_str())),
                "{r}"
            );
            assert!(
                r.contains(&format!(r#"<span class="badge">{label}</span>"#)),
                "{r}"
            );
        }
    }

    #[test]
    fn the_bar_is_the_ratio_over_the_drop_ratio_capped_at_full() {
        assert!(row(&app("a", AppState::Ok, 0.0)).contains(r#"style="width:0.0%""#));
        assert!(row(&app("a", AppState::Warning, 3.0)).contains(r#"style="width:50.0%""#));
        assert!(row(&app("a", AppState::Critical, 5.99)).contains(r#"style="width:99.8%""#));
        assert!(row(&app("a", AppState::Critical, 9.0)).contains(r#"style="width:100.0%""#));
        let mut nan = app("a", AppState::Ok, 0.0);
        nan.overdue_ratio = Some(f64::NAN);
        assert!(row(&nan).contains(r#"style="width:0.0%""#));
        assert!(row(&nan).contains(r#"<span class="ratio">—</span>"#));
        let mut out = String::new();
        render_row(&mut out, &app("a", AppState::Ok, 1.0), 0.0);
        assert!(out.contains(r#"style="width:0.0%""#), "{out}");
    }

    #[test]
    fn durations_and_ages_read_naturally() {
        assert_eq!(duration(Some(500)), "500 ms");
        assert_eq!(duration(Some(3000)), "3 s");
        assert_eq!(duration(Some(2500)), "2.5 s");
        assert_eq!(duration(Some(1001)), "1.0 s");
        assert_eq!(duration(None), "—");
        assert_eq!(ago(Some(12_999)), "12 s ago");
        assert_eq!(ago(Some(60_000)), "1 min ago");
        assert_eq!(ago(Some(7_200_000)), "2 h ago");
        assert_eq!(ago(Some(172_800_000)), "2 d ago");
        assert_eq!(ago(None), "never");
        assert_eq!(fixed(0.005, 2), "0.01");
        assert_eq!(fixed(12.0, 2), "12.00");
    }

    #[test]
    fn the_summary_counts_each_state_and_shows_the_thresholds() {
        let page = render_page(
            &Thresholds {
                warn_ratio: 2.5,
                ..thresholds()
            },
            &[
                app("a", AppState::Ok, 0.1),
                app("b", AppState::Ok, 0.2),
                app("c", AppState::Critical, 5.5),
                missing("d"),
            ],
        );
        assert!(!page.contains("<!--SUMMARY-->") && !page.contains("<!--ROWS-->"));
        for (state, n) in [("ok", 2), ("warning", 0), ("critical", 1), ("missing", 1)] {
            assert!(
                page.contains(&format!(r#"<b data-count="{state}">{n}</b>"#)),
                "{state}"
            );
        }
        assert!(page.contains(
            r#"<p class="thresholds">warning from od 2.5, critical from 5, dropped at 6; tolerance 1 s</p>"#
        ));
        assert_eq!(page.matches(r#"<tr class="app "#).count(), 4);
    }

    #[test]
    fn no_apps_renders_one_empty_row() {
        let page = render_page(&thresholds(), &[]);
        assert!(page.contains(
            r#"<tbody id="apps"><tr class="empty"><td colspan="7">No applications yet.</td></tr></tbody>"#
        ));
    }

    #[test]
    fn the_page_is_self_contained() {
        // no external resources: a kiosk network has no internet
        // but its own script, from this server
        let page = TEMPLATE.replacen(r#"<script src="dashboard.js"></script>"#, "", 1);
        for needle in [
            "http://", "https://", "src=", "<link", "@import", "url(", "<script",
        ] {
            assert!(!page.contains(needle), "{needle}");
            assert!(!SCRIPT.contains(needle), "{needle}");
        }
        // the script never writes HTML from data
        for needle in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "Function(",
        ] {
            assert!(!SCRIPT.contains(needle), "{needle}");
        }
        assert_eq!(TEMPLATE.matches("<!--SUMMARY-->").count(), 1);
        assert_eq!(TEMPLATE.matches("<!--ROWS-->").count(), 1);
    }
}

//! Prometheus text exposition (format 0.0.4) of a [`Registry`].

use std::borrow::Cow;
use std::io::Write as _;
use std::time::Instant;

use crate::protocol::whole_ms;
use crate::server::registry::{Registry, Snapshot};
use crate::server::service::{Streamed, View};

/// The `Content-Type` to send with [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Expires overdue records, then renders counters, the `heartbeat_apps`
/// gauge and the per-application gauges (label `app` = record key, in key
/// order).
pub fn render(registry: &mut Registry, now: Instant) -> String {
    Streamed::new(View::Metrics, registry.snapshot(now)).into_string()
}

/// How many pieces [`write_piece`] renders for `apps` records: the
/// counters and the first gauge's header, one line per app, the second
/// gauge's header, one line per app.
pub(crate) fn pieces(apps: usize) -> usize {
    2 * apps + 2
}

/// Appends piece `i` of the exposition of `snapshot` (sorted) to `out`.
pub(crate) fn write_piece(snapshot: &Snapshot, i: usize, out: &mut Vec<u8>) {
    let n = snapshot.len();
    // Writing to a Vec cannot fail.
    if i == 0 {
        let counters = snapshot.counters();
        let mut scalar = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        scalar(
            "heartbeat_apps",
            "gauge",
            "Number of tracked applications.",
            n as u64,
        );
        scalar(
            "heartbeat_inits_total",
            "counter",
            "Accepted hb_init requests.",
            counters.inits,
        );
        scalar(
            "heartbeat_pings_total",
            "counter",
            "Accepted hb_ping requests.",
            counters.pings,
        );
        scalar(
            "heartbeat_dones_total",
            "counter",
            "hb_done requests, known ids or not.",
            counters.dones,
        );
        scalar(
            "heartbeat_expiries_total",
            "counter",
            "Records dropped for being overdue.",
            counters.expiries,
        );
        scalar(
            "heartbeat_refused_total",
            "counter",
            "New applications refused because the registry was full.",
            counters.refused,
        );
        out.extend_from_slice(
            b"# HELP heartbeat_app_overdue_ratio Time since the last init/ping divided by the granted timeout.\n\
              # TYPE heartbeat_app_overdue_ratio gauge\n",
        );
    } else if i <= n {
        let app = snapshot.app(i - 1);
        let _ = writeln!(
            out,
            "heartbeat_app_overdue_ratio{{app=\"{}\"}} {}",
            escape_label_value(app.key),
            format_float(app.overdue_ratio)
        );
    } else if i == n + 1 {
        out.extend_from_slice(
            b"# HELP heartbeat_app_granted_timeout_ms Timeout granted to the application, in milliseconds.\n\
              # TYPE heartbeat_app_granted_timeout_ms gauge\n",
        );
    } else {
        let app = snapshot.app(i - n - 2);
        let _ = writeln!(
            out,
            "heartbeat_app_granted_timeout_ms{{app=\"{}\"}} {}",
            escape_label_value(app.key),
            whole_ms(app.granted)
        );
    }
}

/// Escapes a label value for the text format: `\` → `\\`, `"` → `\"`,
/// newline → `\n`.
pub fn escape_label_value(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Formats a sample value; non-finite values use Prometheus spelling.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label_value("plain @ 1.2.3.4"), "plain @ 1.2.3.4");
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert!(matches!(escape_label_value("x"), Cow::Borrowed(_)));
    }

    #[test]
    fn renders_counters_and_per_app_gauges() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.init("Tetris", LOCAL, Duration::from_millis(2000), t0)
            .unwrap();
        r.ping("we\"ird\\id", LOCAL, Duration::from_millis(0), t0)
            .unwrap();
        r.ping("gone", LOCAL, Duration::from_millis(0), t0).unwrap();
        r.done("gone", LOCAL, t0);
        let text = render(&mut r, t0 + Duration::from_millis(1560));
        let expected = [
            "# TYPE heartbeat_apps gauge\nheartbeat_apps 2\n",
            "# TYPE heartbeat_inits_total counter\nheartbeat_inits_total 1\n",
            "heartbeat_pings_total 2\n",
            "heartbeat_dones_total 1\n",
            "heartbeat_expiries_total 0\n",
            "# HELP heartbeat_app_overdue_ratio ",
            "# TYPE heartbeat_app_overdue_ratio gauge\n",
            "heartbeat_app_overdue_ratio{app=\"Tetris @ 127.0.0.1\"} 0.52\n",
            "heartbeat_app_overdue_ratio{app=\"we\\\"ird\\\\id @ 127.0.0.1\"} 1.56\n",
            "# TYPE heartbeat_app_granted_timeout_ms gauge\n",
            "heartbeat_app_granted_timeout_ms{app=\"Tetris @ 127.0.0.1\"} 3000\n",
            "heartbeat_app_granted_timeout_ms{app=\"we\\\"ird\\\\id @ 127.0.0.1\"} 1000\n",
        ];
        for piece in expected {
            assert!(text.contains(piece), "missing {piece:?} in\n{text}");
        }
        assert!(text.ends_with('\n'));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("sample line");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn renders_exactly() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.ping("b", LOCAL, Duration::from_millis(0), t0).unwrap();
        r.init("Tetris", LOCAL, Duration::from_millis(2000), t0)
            .unwrap();
        let text = render(&mut r, t0 + Duration::from_millis(1560));
        assert_eq!(
            text,
            "# HELP heartbeat_apps Number of tracked applications.\n\
             # TYPE heartbeat_apps gauge\n\
             heartbeat_apps 2\n\
             # HELP heartbeat_inits_total Accepted hb_init requests.\n\
             # TYPE heartbeat_inits_total counter\n\
             heartbeat_inits_total 1\n\
             # HELP heartbeat_pings_total Accepted hb_ping requests.\n\
             # TYPE heartbeat_pings_total counter\n\
             heartbeat_pings_total 1\n\
             # HELP heartbeat_dones_total hb_done requests, known ids or not.\n\
             # TYPE heartbeat_dones_total counter\n\
             heartbeat_dones_total 0\n\
             # HELP heartbeat_expiries_total Records dropped for being overdue.\n\
             # TYPE heartbeat_expiries_total counter\n\
             heartbeat_expiries_total 0\n\
             # HELP heartbeat_refused_total New applications refused because the registry was full.\n\
             # TYPE heartbeat_refused_total counter\n\
             heartbeat_refused_total 0\n\
             # HELP heartbeat_app_overdue_ratio Time since the last init/ping divided by the granted timeout.\n\
             # TYPE heartbeat_app_overdue_ratio gauge\n\
             heartbeat_app_overdue_ratio{app=\"Tetris @ 127.0.0.1\"} 0.52\n\
             heartbeat_app_overdue_ratio{app=\"b @ 127.0.0.1\"} 1.56\n\
             # HELP heartbeat_app_granted_timeout_ms Timeout granted to the application, in milliseconds.\n\
             # TYPE heartbeat_app_granted_timeout_ms gauge\n\
             heartbeat_app_granted_timeout_ms{app=\"Tetris @ 127.0.0.1\"} 3000\n\
             heartbeat_app_granted_timeout_ms{app=\"b @ 127.0.0.1\"} 1000\n"
        );
    }

    #[test]
    fn render_expires_first() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.ping("old", LOCAL, Duration::from_millis(0), t0).unwrap();
        let text = render(&mut r, t0 + Duration::from_secs(6));
        assert!(text.contains("heartbeat_apps 0\n"));
        assert!(text.contains("heartbeat_expiries_total 1\n"));
        assert!(!text.contains("old"));
    }

    #[test]
    fn non_finite_values() {
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(0.5), "0.5");
    }
}

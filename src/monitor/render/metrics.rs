//! The `/metrics` reply, piece by piece (see [`crate::monitor::metrics`]
//! for the format).

use std::borrow::Cow;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::monitor::registry::Snapshot;
use crate::protocol::split_key;
use crate::protocol::State;

/// The `Content-Type` to send with [`render`](crate::monitor::metrics::render)'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The families with a line per tracked app and per missing expected app.
const WITH_MISSING: [(&str, &str); 2] = [
    (
        "heartbeat_app_up",
        "1 if the application reports, 0 if it is late past the critical ratio or expected and missing.",
    ),
    (
        "heartbeat_app_state",
        "Nagios state of the application: 0 OK, 1 WARNING, 2 CRITICAL (also expected and missing).",
    ),
];

/// The families with a line per tracked app only.
const TRACKED_ONLY: [(&str, &str); 3] = [
    (
        "heartbeat_app_overdue_ratio",
        "Time since the last init/ping divided by the granted timeout.",
    ),
    (
        "heartbeat_app_last_seen_timestamp_seconds",
        "Unix time of the last init or ping.",
    ),
    (
        "heartbeat_app_granted_timeout_seconds",
        "Timeout granted to the application: the promised one plus the tolerance.",
    ),
];

/// How many pieces [`write_piece`] renders for `apps` records and
/// `missing` expected applications without one: the scalars, then per
/// family its header and one line per application.
pub(crate) fn pieces(apps: usize, missing: usize) -> usize {
    1 + WITH_MISSING.len() * (1 + apps + missing) + TRACKED_ONLY.len() * (1 + apps)
}

/// Appends piece `i` of the exposition of `snapshot` (sorted) to `out`;
/// `wall` is the wall-clock time of the snapshot.
pub(crate) fn write_piece(snapshot: &Snapshot, wall: SystemTime, i: usize, out: &mut Vec<u8>) {
    if i == 0 {
        return write_scalars(snapshot, out);
    }
    let n = snapshot.len();
    let missing = snapshot.missing();
    let m = missing.len();
    let mut i = i - 1;
    for (family, (name, help)) in WITH_MISSING.iter().enumerate() {
        if i == 0 {
            return header(out, name, help);
        }
        if i <= n {
            let app = snapshot.app(i - 1);
            let value = match family {
                0 => u8::from(app.state != State::Critical),
                _ => app.state.exit_code(),
            };
            let (id, host) = labels(snapshot, i - 1);
            return sample(out, name, &id, &host, &value.to_string());
        }
        if i <= n + m {
            let spec = &missing[i - n - 1];
            let value = [0, State::Critical.exit_code()][family];
            let host = spec.host().map(|ip| ip.to_string()).unwrap_or_default();
            return sample(out, name, spec.id(), &host, &value.to_string());
        }
        i -= 1 + n + m;
    }
    for (family, (name, help)) in TRACKED_ONLY.iter().enumerate() {
        if i == 0 {
            return header(out, name, help);
        }
        if i <= n {
            let app = snapshot.app(i - 1);
            let value = match family {
                0 => format_float(app.overdue_ratio),
                1 => {
                    let seen = wall
                        .checked_sub(snapshot.since_last(i - 1))
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .unwrap_or_default();
                    format!("{}.{:03}", seen.as_secs(), seen.subsec_millis())
                }
                _ => format_float(app.granted.as_millis() as f64 / 1000.0),
            };
            let (id, host) = labels(snapshot, i - 1);
            return sample(out, name, &id, &host, &value);
        }
        i -= 1 + n;
    }
}

/// The gauge of tracked applications and the counters.
fn write_scalars(snapshot: &Snapshot, out: &mut Vec<u8>) {
    let counters = snapshot.counters();
    let mut scalar = |name: &str, kind: &str, help: &str, value: u64| {
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    scalar(
        "heartbeat_apps",
        "gauge",
        "Number of tracked applications.",
        snapshot.len() as u64,
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
        "heartbeat_fails_total",
        "counter",
        "hb_fail requests (failed runs), known ids or not.",
        counters.fails,
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
}

fn header(out: &mut Vec<u8>, name: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
}

fn sample(out: &mut Vec<u8>, name: &str, app: &str, host: &str, value: &str) {
    let _ = writeln!(
        out,
        "{name}{{app=\"{}\",host=\"{}\"}} {value}",
        escape_label_value(app),
        escape_label_value(host)
    );
}

/// The `app` and `host` labels of record `i`: its key split on the last
/// `" @ "` when keyed by peer, else the whole key and no host.
fn labels(snapshot: &Snapshot, i: usize) -> (Cow<'_, str>, Cow<'_, str>) {
    let key = snapshot.key(i);
    if snapshot.config().key_by_peer {
        let (id, host) = split_key(key);
        (Cow::Borrowed(id), Cow::Borrowed(host.unwrap_or_default()))
    } else {
        (Cow::Borrowed(key), Cow::Borrowed(""))
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
    use crate::monitor::metrics::render;
    use crate::monitor::Registry;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label_value("plain @ 1.2.3.4"), "plain @ 1.2.3.4");
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert!(matches!(escape_label_value("x"), Cow::Borrowed(_)));
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

//! The `/metrics` reply, piece by piece (see [`crate::monitor::metrics`]
//! for the format).

use std::borrow::Cow;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::monitor::registry::Snapshot;
use crate::protocol::State;
use crate::protocol::{split_key, whole_ms, KEY_SEPARATOR};

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

/// Which applications have per-application series in `/metrics`
/// (`heartbeat serve --per-app-metrics`, `ServerBuilder::per_app_metrics`).
///
/// Every mode has the scalars and `heartbeat_apps_by_state{state}`, so an
/// alert on `heartbeat_apps_by_state{state="critical"} > 0` works in all of
/// them; `heartbeat_app_up == 0` works with `All` and `Problems`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PerAppMetrics {
    /// Five series per tracked application, two per missing one (as
    /// before the modes existed): 5 million samples for a million apps.
    #[default]
    All,
    /// The same series, for applications that are not OK only (WARNING,
    /// CRITICAL, missing): a fleet of a million is a few thousand series,
    /// and an app's series end when it recovers (Prometheus marks them
    /// stale, so an alert on them resolves).
    Problems,
    /// No per-application series.
    None,
}

impl PerAppMetrics {
    /// The flag's word: `all`, `problems`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            PerAppMetrics::All => "all",
            PerAppMetrics::Problems => "problems",
            PerAppMetrics::None => "none",
        }
    }
}

impl std::str::FromStr for PerAppMetrics {
    type Err = String;

    /// `all`, `problems` or `none`.
    fn from_str(word: &str) -> Result<PerAppMetrics, String> {
        [
            PerAppMetrics::All,
            PerAppMetrics::Problems,
            PerAppMetrics::None,
        ]
        .into_iter()
        .find(|mode| mode.as_str() == word)
        .ok_or_else(|| format!("not all, problems or none: {:?}", word))
    }
}

/// The records and missing applications one exposition has series for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Series {
    /// Tracked records (indices of the snapshot).
    tracked: Vec<usize>,
    /// For each of `tracked`, where its key splits into the `app` and
    /// `host` labels, and whether either needs escaping ([`Split`]):
    /// worked out once per scrape, not once per family.
    splits: Vec<Split>,
    /// Missing applications (indices of `Snapshot::missing`).
    missing: usize,
}

/// A key's labels: the length of its id (the `app` label; the `host` is
/// what follows the separator, if anything), and in the top bit whether
/// a label needs escaping (almost never: ids with `\`, `"` or a newline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split(u32);

impl Split {
    const ESCAPE: u32 = 1 << 31;

    fn of(key: &str, key_by_peer: bool) -> Split {
        let id_len = if key_by_peer {
            split_key(key).0.len()
        } else {
            key.len()
        };
        // an id is at most MAX_APP_ID_LEN bytes, far below 2^31
        let id_len = u32::try_from(id_len).unwrap_or(u32::MAX >> 1) & !Split::ESCAPE;
        if key.bytes().any(|b| b == b'\\' || b == b'"' || b == b'\n') {
            Split(id_len | Split::ESCAPE)
        } else {
            Split(id_len)
        }
    }

    /// The `app` and `host` label values of `key`.
    fn labels(self, key: &str) -> (&[u8], &[u8]) {
        let key = key.as_bytes();
        let id_len = ((self.0 & !Split::ESCAPE) as usize).min(key.len());
        let host = key.get(id_len + KEY_SEPARATOR.len()..).unwrap_or_default();
        (&key[..id_len], host)
    }

    fn escape(self) -> bool {
        self.0 & Split::ESCAPE != 0
    }
}

impl Series {
    /// The records of `snapshot` `mode` gives series, in key order: with
    /// [`All`](PerAppMetrics::All) the snapshot must be sorted already;
    /// otherwise only the few it keeps are sorted here.
    pub(crate) fn of(snapshot: &Snapshot, mode: PerAppMetrics) -> Series {
        let tracked = match mode {
            PerAppMetrics::All => (0..snapshot.len()).collect(),
            PerAppMetrics::Problems => {
                let mut problems: Vec<usize> = (0..snapshot.len())
                    .filter(|&i| snapshot.app(i).state != State::Ok)
                    .collect();
                problems.sort_unstable_by(|&a, &b| snapshot.key(a).cmp(snapshot.key(b)));
                problems
            }
            PerAppMetrics::None => Vec::new(),
        };
        let key_by_peer = snapshot.config().key_by_peer;
        let splits = tracked
            .iter()
            .map(|&i| Split::of(snapshot.key(i), key_by_peer))
            .collect();
        let missing = match mode {
            PerAppMetrics::None => 0,
            _ => snapshot.missing().len(),
        };
        Series {
            tracked,
            splits,
            missing,
        }
    }

    /// How many pieces [`write_piece`] renders: the scalars, then per
    /// family its header and one line per application.
    pub(crate) fn pieces(&self) -> usize {
        let (n, m) = (self.tracked.len(), self.missing);
        1 + WITH_MISSING.len() * (1 + n + m) + TRACKED_ONLY.len() * (1 + n)
    }
}

/// Appends piece `i` of the exposition of `snapshot` (sorted) to `out`;
/// `wall` is the wall-clock time of the snapshot. Written straight into
/// `out`: no allocation per sample.
pub(crate) fn write_piece(
    snapshot: &Snapshot,
    series: &Series,
    wall: SystemTime,
    i: usize,
    out: &mut Vec<u8>,
) {
    if i == 0 {
        return write_scalars(snapshot, out);
    }
    let tracked = &series.tracked;
    let n = tracked.len();
    let missing = snapshot.missing();
    let m = series.missing;
    let mut i = i - 1;
    for (family, (name, help)) in WITH_MISSING.iter().enumerate() {
        if i == 0 {
            return header(out, name, help);
        }
        if i <= n {
            let record = tracked[i - 1];
            let app = snapshot.app(record);
            let value = match family {
                0 => u8::from(app.state != State::Critical),
                _ => app.state.exit_code(),
            };
            labels(out, name, app.key, series.splits[i - 1]);
            return value_line(out, |out| write_u64(out, u64::from(value)));
        }
        if i <= n + m {
            let spec = &missing[i - n - 1];
            let value = [0, State::Critical.exit_code()][family];
            sample_start(out, name, spec.id());
            if let Some(ip) = spec.host() {
                let _ = write!(out, "{ip}");
            }
            out.extend_from_slice(b"\"}");
            return value_line(out, |out| write_u64(out, u64::from(value)));
        }
        i -= 1 + n + m;
    }
    for (family, (name, help)) in TRACKED_ONLY.iter().enumerate() {
        if i == 0 {
            return header(out, name, help);
        }
        if i <= n {
            let record = tracked[i - 1];
            let app = snapshot.app(record);
            labels(out, name, app.key, series.splits[i - 1]);
            return match family {
                0 => value_line(out, |out| write_float(out, app.overdue_ratio)),
                1 => {
                    let seen = wall
                        .checked_sub(snapshot.since_last(record))
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .unwrap_or_default();
                    value_line(out, |out| {
                        write_u64(out, seen.as_secs())?;
                        out.push(b'.');
                        let ms = seen.subsec_millis();
                        out.extend_from_slice(&[
                            b'0' + (ms / 100) as u8,
                            b'0' + (ms / 10 % 10) as u8,
                            b'0' + (ms % 10) as u8,
                        ]);
                        Ok(())
                    })
                }
                _ => value_line(out, |out| write_seconds(out, whole_ms(app.granted))),
            };
        }
        i -= 1 + n;
    }
}

/// The gauges of tracked applications and per state, and the counters.
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
    let _ = write!(
        out,
        "# HELP {REFUSED} New applications refused: the registry was full (registry_full), or the caller's host had its share (host_share).\n# TYPE {REFUSED} counter\n"
    );
    for (reason, n) in [
        ("registry_full", counters.refused),
        ("host_share", counters.refused_host_share),
    ] {
        let _ = writeln!(out, "{REFUSED}{{reason=\"{reason}\"}} {n}");
    }
    let mut by_state = [0_u64; 4];
    for i in 0..snapshot.len() {
        by_state[usize::from(snapshot.app(i).state.exit_code().min(2))] += 1;
    }
    by_state[3] = snapshot.missing().len() as u64;
    header(
        out,
        BY_STATE,
        "Applications per state: ok, warning, critical (tracked), missing (expected, not tracked).",
    );
    for (state, n) in ["ok", "warning", "critical", "missing"]
        .iter()
        .zip(by_state)
    {
        let _ = writeln!(out, "{BY_STATE}{{state=\"{state}\"}} {n}");
    }
}

/// The family of counts per state, in every mode.
const BY_STATE: &str = "heartbeat_apps_by_state";
const REFUSED: &str = "heartbeat_refused_total";

fn header(out: &mut Vec<u8>, name: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
}

/// `NAME{app="ID",host="` (the id escaped); the caller writes the host.
fn sample_start(out: &mut Vec<u8>, name: &str, app: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"{app=\"");
    escape_into(out, app.as_bytes());
    out.extend_from_slice(b"\",host=\"");
}

/// `NAME{app="ID",host="IP"}` of `key` (split as `split` says: on the
/// last `" @ "` when keyed by peer, else the whole key and no host).
fn labels(out: &mut Vec<u8>, name: &str, key: &str, split: Split) {
    let (id, host) = split.labels(key);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"{app=\"");
    if split.escape() {
        escape_into(out, id);
        out.extend_from_slice(b"\",host=\"");
        escape_into(out, host);
    } else {
        out.extend_from_slice(id);
        out.extend_from_slice(b"\",host=\"");
        out.extend_from_slice(host);
    }
    out.extend_from_slice(b"\"}");
}

/// ` VALUE\n`, the value written by `value` (into a `Vec`: cannot fail).
fn value_line(out: &mut Vec<u8>, value: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) {
    out.push(b' ');
    let _ = value(out);
    out.push(b'\n');
}

/// Escapes a label value for the text format: `\` → `\\`, `"` → `\"`,
/// newline → `\n`.
pub fn escape_label_value(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len() + 8);
    escape_into(&mut out, value.as_bytes());
    // only ASCII was replaced by ASCII: still UTF-8
    Cow::Owned(String::from_utf8(out).unwrap_or_default())
}

/// [`escape_label_value`] of `value`, appended to `out`.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut from = 0;
    for (at, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            b'\n' => b"\\n",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..at]);
        out.extend_from_slice(escaped);
        from = at + 1;
    }
    out.extend_from_slice(&bytes[from..]);
}

/// `n` in decimal, without the formatting machinery.
fn write_u64(out: &mut Vec<u8>, mut n: u64) -> std::io::Result<()> {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    Ok(())
}

/// `ms` milliseconds as seconds, exactly as `{}` prints `ms as f64 / 1000.0`
/// (the shortest decimal that reads back: at most three decimals, no
/// trailing zero), without the float formatting.
fn write_seconds(out: &mut Vec<u8>, ms: u64) -> std::io::Result<()> {
    write_u64(out, ms / 1000)?;
    let mut frac = ms % 1000;
    if frac != 0 {
        let mut digits = 3;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        out.push(b'.');
        let start = out.len();
        write_u64(out, frac)?;
        // leading zeros of the fraction (1.005 s: "005" is written "5")
        let missing = digits - (out.len() - start);
        out.splice(start..start, std::iter::repeat_n(b'0', missing));
    }
    Ok(())
}

/// Writes a sample value; non-finite values use Prometheus spelling.
fn write_float(out: &mut Vec<u8>, v: f64) -> std::io::Result<()> {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        write!(out, "{v}")?;
    }
    Ok(())
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
        assert_eq!(escape_label_value("\"é\n"), "\\\"é\\n");
        assert!(matches!(escape_label_value("x"), Cow::Borrowed(_)));
    }

    /// With `Problems` the snapshot is not sorted (a page of a million would
    /// pay for it): the few series kept are, and only theirs are there.
    #[test]
    fn problems_only_and_in_key_order() {
        use crate::monitor::service::{Streamed, View};
        let t0 = Instant::now();
        let mut r = Registry::default();
        let mut late: Vec<String> = (0..40)
            .map(|i| format!("late-{:02}", (i * 17) % 40))
            .collect();
        for id in &late {
            r.init(id, LOCAL, Duration::ZERO, t0).unwrap();
        }
        for i in 0..200 {
            r.init(&format!("fine-{i}"), LOCAL, Duration::from_secs(60), t0)
                .unwrap();
        }
        let render = |r: &mut Registry, mode| {
            Streamed::new(View::Metrics, r.snapshot(t0 + Duration::from_millis(3500)))
                .per_app_metrics(mode)
                .into_string()
        };
        let text = render(&mut r, PerAppMetrics::Problems);
        let apps: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("heartbeat_app_state{app=\""))
            .map(|l| l.split('"').next().unwrap())
            .collect();
        late.sort();
        assert_eq!(apps, late, "the WARNING ones, in key order");
        assert!(text.contains("heartbeat_apps_by_state{state=\"ok\"} 200\n"));
        assert!(text.contains("heartbeat_apps_by_state{state=\"warning\"} 40\n"));
        let none = render(&mut r, PerAppMetrics::None);
        assert!(!none.contains("{app="), "{none}");
        assert!(none.contains("heartbeat_apps 240\n"));
        let all = render(&mut r, PerAppMetrics::All);
        assert_eq!(all.matches("heartbeat_app_up{").count(), 240);
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
    fn integers_and_seconds_are_written_as_the_formatter_would() {
        let text = |f: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
            let mut out = Vec::new();
            f(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(text(&|o| write_u64(o, n)), n.to_string());
        }
        for ms in [
            0,
            1,
            5,
            10,
            50,
            100,
            999,
            1000,
            1001,
            1005,
            1010,
            1050,
            1100,
            1500,
            2500,
            60_000,
            4_294_968_295,
            4_294_967_295_999,
        ] {
            let want = (ms as f64 / 1000.0).to_string();
            assert_eq!(text(&|o| write_seconds(o, ms)), want, "{ms} ms");
        }
    }

    #[test]
    fn non_finite_values() {
        let float = |v| {
            let mut out = Vec::new();
            write_float(&mut out, v).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(1e21), "1000000000000000000000");
    }
}

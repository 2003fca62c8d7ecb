//! `/metrics` the way Prometheus users expect it: exact exposition of a
//! small registry, and `promtool check metrics` on a real scrape (when
//! Debian's `prometheus` package, which has promtool, is installed).
#![cfg(feature = "server")]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use heartbeat_sdk::monitor::{metrics, Expected, ManualClock, Registry};
use heartbeat_sdk::server::{PerAppMetrics, Server};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

fn d(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Tracked OK, WARNING and CRITICAL (an expected app kept past the drop
/// ratio among them), expected and missing, and an id that would break a
/// label if not escaped.
#[test]
fn exposition_of_a_small_registry() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.expect("late".parse().unwrap());
    r.expect("absent".parse().unwrap());
    r.expect("kiosk @ 10.0.0.5".parse().unwrap());
    r.init("late", OTHER, d(0), t0).unwrap();
    r.init("fine", LOCAL, d(9000), t0).unwrap();
    r.ping("we\"ird\\id\u{e9}", LOCAL, d(500), t0).unwrap();
    r.done("gone", LOCAL, t0);
    // 10 s on: fine at 1 (OK), late at 10 (CRITICAL; expected, so kept
    // past the drop ratio); the weird one, pinged again at 1 s with
    // 2500 ms granted, at 3.6 (WARNING).
    let now = t0 + d(10_000);
    r.ping("we\"ird\\id\u{e9}", LOCAL, d(1500), now - d(9_000))
        .unwrap();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let text = metrics::render_at(&mut r, now, wall);
    assert_eq!(
        text,
        r#"# HELP heartbeat_apps Number of tracked applications.
# TYPE heartbeat_apps gauge
heartbeat_apps 3
# HELP heartbeat_inits_total Accepted hb_init requests.
# TYPE heartbeat_inits_total counter
heartbeat_inits_total 2
# HELP heartbeat_pings_total Accepted hb_ping requests.
# TYPE heartbeat_pings_total counter
heartbeat_pings_total 2
# HELP heartbeat_dones_total hb_done requests, known ids or not.
# TYPE heartbeat_dones_total counter
heartbeat_dones_total 1
# HELP heartbeat_fails_total hb_fail requests (failed runs), known ids or not.
# TYPE heartbeat_fails_total counter
heartbeat_fails_total 0
# HELP heartbeat_expiries_total Records dropped for being overdue.
# TYPE heartbeat_expiries_total counter
heartbeat_expiries_total 0
# HELP heartbeat_refused_total New applications refused: the registry was full (registry_full), or the caller's host had its share (host_share).
# TYPE heartbeat_refused_total counter
heartbeat_refused_total{reason="registry_full"} 0
heartbeat_refused_total{reason="host_share"} 0
# HELP heartbeat_apps_by_state Applications per state: ok, warning, critical (tracked), missing (expected, not tracked).
# TYPE heartbeat_apps_by_state gauge
heartbeat_apps_by_state{state="ok"} 1
heartbeat_apps_by_state{state="warning"} 1
heartbeat_apps_by_state{state="critical"} 1
heartbeat_apps_by_state{state="missing"} 2
# HELP heartbeat_app_up 1 if the application reports, 0 if it is late past the critical ratio or expected and missing.
# TYPE heartbeat_app_up gauge
heartbeat_app_up{app="fine",host="127.0.0.1"} 1
heartbeat_app_up{app="late",host="10.0.0.5"} 0
heartbeat_app_up{app="we\"ird\\idé",host="127.0.0.1"} 1
heartbeat_app_up{app="absent",host=""} 0
heartbeat_app_up{app="kiosk",host="10.0.0.5"} 0
# HELP heartbeat_app_state Nagios state of the application: 0 OK, 1 WARNING, 2 CRITICAL (also expected and missing).
# TYPE heartbeat_app_state gauge
heartbeat_app_state{app="fine",host="127.0.0.1"} 0
heartbeat_app_state{app="late",host="10.0.0.5"} 2
heartbeat_app_state{app="we\"ird\\idé",host="127.0.0.1"} 1
heartbeat_app_state{app="absent",host=""} 2
heartbeat_app_state{app="kiosk",host="10.0.0.5"} 2
# HELP heartbeat_app_overdue_ratio Time since the last init/ping divided by the granted timeout.
# TYPE heartbeat_app_overdue_ratio gauge
heartbeat_app_overdue_ratio{app="fine",host="127.0.0.1"} 1
heartbeat_app_overdue_ratio{app="late",host="10.0.0.5"} 10
heartbeat_app_overdue_ratio{app="we\"ird\\idé",host="127.0.0.1"} 3.6
# HELP heartbeat_app_last_seen_timestamp_seconds Unix time of the last init or ping.
# TYPE heartbeat_app_last_seen_timestamp_seconds gauge
heartbeat_app_last_seen_timestamp_seconds{app="fine",host="127.0.0.1"} 1699999990.000
heartbeat_app_last_seen_timestamp_seconds{app="late",host="10.0.0.5"} 1699999990.000
heartbeat_app_last_seen_timestamp_seconds{app="we\"ird\\idé",host="127.0.0.1"} 1699999991.000
# HELP heartbeat_app_granted_timeout_seconds Timeout granted to the application: the promised one plus the tolerance.
# TYPE heartbeat_app_granted_timeout_seconds gauge
heartbeat_app_granted_timeout_seconds{app="fine",host="127.0.0.1"} 10
heartbeat_app_granted_timeout_seconds{app="late",host="10.0.0.5"} 1
heartbeat_app_granted_timeout_seconds{app="we\"ird\\idé",host="127.0.0.1"} 2.5
"#
    );
}

/// A scrape of a running server passes `promtool check metrics`, in every
/// `--per-app-metrics` mode; `problems` keeps the series of the apps that
/// are not OK only, `none` keeps none, and the counts per state are in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_real_scrape() {
    for mode in [
        PerAppMetrics::All,
        PerAppMetrics::Problems,
        PerAppMetrics::None,
    ] {
        let scrape = scrape(mode).await;
        let ok = "heartbeat_app_up{app=\"other\",host=\"127.0.0.1\"} 1\n";
        let missing = "heartbeat_app_up{app=\"absent\",host=\"10.0.0.5\"} 0\n";
        let late = "heartbeat_app_state{app=\"a\\\"b\\\\c d\",host=\"127.0.0.1\"} 1\n";
        let (has_ok, has_problems) = match mode {
            PerAppMetrics::All => (true, true),
            PerAppMetrics::Problems => (false, true),
            _ => (false, false),
        };
        assert_eq!(scrape.contains(ok), has_ok, "{mode:?}: {scrape}");
        assert_eq!(scrape.contains(missing), has_problems, "{mode:?}: {scrape}");
        assert_eq!(scrape.contains(late), has_problems, "{mode:?}: {scrape}");
        for (state, n) in [("ok", 1), ("warning", 1), ("critical", 0), ("missing", 2)] {
            let line = format!("heartbeat_apps_by_state{{state=\"{state}\"}} {n}\n");
            assert!(scrape.contains(&line), "{mode:?}: {line}{scrape}");
        }
        if !promtool_check(&scrape) {
            return;
        }
    }
}

/// `/metrics` of a server in `mode` with an OK app, a WARNING one with an
/// id to escape, and two missing ones.
async fn scrape(mode: PerAppMetrics) -> String {
    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .per_app_metrics(mode)
        .expect("absent".parse::<Expected>().unwrap())
        .expect("absent @ 10.0.0.5".parse::<Expected>().unwrap())
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::task::spawn_blocking(move || {
        get(addr, "/hb_init?0&appid=a%22b%5Cc%20d");
        get(addr, "/hb_ping?60000&appid=other");
    })
    .await
    .unwrap();
    // 1 s granted, 3.5 s on: WARNING
    clock.advance(Duration::from_millis(3_500));
    let scrape = tokio::task::spawn_blocking(move || get(addr, "/metrics"))
        .await
        .unwrap();
    server.shutdown().await;
    scrape
}

/// The body of `GET target` over HTTP/1.0.
fn get(addr: std::net::SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {target} HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// `promtool check metrics` of `scrape` passes without remarks; `false`
/// when promtool is not installed (and `HB_REQUIRE_TOOLS` unset).
fn promtool_check(scrape: &str) -> bool {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // .ci/run installs promtool and sets this: there a skip would
            // hide a test that never ran.
            assert!(
                std::env::var_os("HB_REQUIRE_TOOLS").is_none(),
                "HB_REQUIRE_TOOLS is set but promtool was not found"
            );
            println!("promtool not found: skipped");
            return false;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{scrape}");
    assert!(
        said.trim().is_empty(),
        "promtool has remarks: {said}\n{scrape}"
    );
    true
}

//! Expected applications (`serve --expect ID`, `--expect-file FILE`,
//! `ServerBuilder::expect`, `Registry::expect`): never dropped, CRITICAL
//! in their own status while they have not reported, and the threshold
//! options of `serve`, validated.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use heartbeat_sdk::server::{Expected, ManualClock, RegistryConfig, SharedRegistry};
use heartbeat_sdk::State;

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat");
const PEER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5));

fn registry(clock: &ManualClock, expected: &[&str]) -> SharedRegistry {
    let shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(clock.clone()));
    shared.with_registry(|r, _| {
        for spec in expected {
            r.expect(spec.parse::<Expected>().unwrap());
        }
    });
    shared
}

/// Never started: CRITICAL; starts: OK; dies: never dropped, stays
/// CRITICAL; `done`: still expected, so CRITICAL again (`done` means "gone
/// on purpose" for other applications, but an expected one should always
/// run).
#[test]
fn life_of_an_expected_application() {
    let clock = ManualClock::new();
    let shared = registry(&clock, &["backup"]);
    let status = || shared.handle("/status?0&appid=backup", None, PEER).body;
    let missing = "CRITICAL - expected application has not reported [backup]";
    assert_eq!(status(), missing);
    assert_eq!(
        shared.handle("/list", None, PEER).body,
        "",
        "/list shows records only"
    );

    shared.handle("/hb_init?2000&appid=backup", None, PEER);
    assert_eq!(
        status(),
        "OK - fine application [backup @ 10.0.0.5]| od=0.00;3;5;0;6 delay=3000ms;;; "
    );
    let state = |text: &str| {
        text.parse::<heartbeat_sdk::protocol::Status>()
            .unwrap()
            .state()
    };

    // dies: past crit, then far past the drop ratio (6 × 3 s): still there
    clock.advance(Duration::from_secs(15));
    assert_eq!(state(&status()), State::Critical);
    clock.advance(Duration::from_secs(3600));
    assert!(
        status().starts_with("CRITICAL - quite late application [backup @ 10.0.0.5]| od=1205.00;")
    );
    assert_eq!(
        shared.handle("/list", None, PEER).body,
        "backup @ 10.0.0.5\n"
    );
    let metrics = shared.handle("/metrics", None, PEER).body;
    assert!(
        metrics.contains("heartbeat_app_up{app=\"backup\",host=\"10.0.0.5\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("heartbeat_expiries_total 0\n"),
        "{metrics}"
    );

    // done: removed, and missing again
    shared.handle("/hb_done?0&appid=backup", None, PEER);
    assert_eq!(status(), missing);
    assert_eq!(shared.handle("/status", None, PEER).body, missing);
    assert_eq!(state(missing), State::Critical);
}

/// `ID @ IP` is satisfied from that host only; `ID` from any.
#[test]
fn a_host_spec_wants_that_host() {
    let clock = ManualClock::new();
    let shared = registry(&clock, &["kiosk @ 10.0.0.5", "any"]);
    let local = "127.0.0.1".parse().unwrap();
    shared.handle("/hb_init?0&appid=kiosk", None, local);
    shared.handle("/hb_init?0&appid=any", None, local);
    assert_eq!(
        shared.handle("/status", None, PEER).body,
        "CRITICAL - expected application has not reported [kiosk @ 10.0.0.5]"
    );
    shared.handle("/hb_init?0&appid=kiosk", None, PEER);
    assert_eq!(
        shared.handle("/status", None, PEER).body,
        "WARNING - multiple (3) applications: [any @ 127.0.0.1,kiosk @ 10.0.0.5,kiosk @ 127.0.0.1]"
    );
    // the unexpected `kiosk @ 127.0.0.1` is dropped as usual, the rest stay
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        shared.handle("/list", None, PEER).body,
        "any @ 127.0.0.1\nkiosk @ 10.0.0.5\n"
    );
}

/// A `heartbeat serve` process, killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> Serve {
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(args)
        .env_remove("HB_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .parse()
        .unwrap();
    Serve { child, addr }
}

fn get(addr: SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {target} HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn serve_expects_from_options_and_files() {
    let dir = std::env::temp_dir().join(format!("hb-expect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("expected");
    std::fs::write(
        &file,
        "# nightly jobs\n\n  backup  \nkiosk #7 @ 127.0.0.1\n",
    )
    .unwrap();
    let server = serve(&["--expect", "web", "--expect-file", file.to_str().unwrap()]);
    let addr = server.addr;
    assert_eq!(
        get(addr, "/status"),
        "CRITICAL - 3 expected applications have not reported: [backup,kiosk #7 @ 127.0.0.1,web]"
    );
    assert_eq!(
        get(addr, "/status?0&appid=kiosk%20%237"),
        "CRITICAL - expected application has not reported [kiosk #7 @ 127.0.0.1]"
    );
    for id in ["backup", "kiosk%20%237", "web"] {
        assert_eq!(get(addr, &format!("/hb_init?1000&appid={id}")), "2000");
    }
    assert!(get(addr, "/status").starts_with("WARNING - multiple (3) applications: "));
    assert!(get(addr, "/status?0&appid=web").starts_with("OK - fine application [web @ 127.0.0.1]"));
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_takes_thresholds() {
    let server = serve(&[
        "--tolerance-ms",
        "500",
        "--warn",
        "1.5",
        "--crit",
        "2",
        "--drop",
        "2",
    ]);
    assert_eq!(get(server.addr, "/hb_init?1000&appid=t"), "1500");
    // od is the wall-clock time since the init over 1500 ms: on a busy
    // machine it can be 0.01 or more, so it is parsed and bounded (below
    // the warning ratio, which the OK prefix also says), never compared.
    let status = get(server.addr, "/status?0&appid=t");
    let od = status
        .strip_prefix("OK - fine application [t @ 127.0.0.1]| od=")
        .and_then(|rest| rest.strip_suffix(";1.5;2;0;2 delay=1500ms;;; "))
        .unwrap_or_else(|| panic!("{status:?}"));
    let od: f64 = od.parse().unwrap_or_else(|_| panic!("{status:?}"));
    assert!((0.0..1.5).contains(&od), "{status:?}");
}

/// `heartbeat serve --bind 127.0.0.1:0 ARGS`, expected to exit at once:
/// killed, and the test failed, if it is still running after 30 s (it
/// would then be serving).
fn refused(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(args)
        .env_remove("HB_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {args:?} did not exit: it serves");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Bad thresholds and specs: exit 2, one line on stderr, nothing served.
#[test]
fn serve_refuses_bad_settings_in_one_line() {
    let dir = std::env::temp_dir().join(format!("hb-expect-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_file = dir.join("expected");
    std::fs::write(&bad_file, "ok\n# fine\nbad|id\n").unwrap();
    let bad_file = bad_file.to_str().unwrap().to_owned();
    let cases: [(&[&str], &str); 9] = [
        (&["--warn", "5"], "--warn 5 must be below --crit 5"),
        (&["--crit", "7"], "--crit 7 must not be above --drop 6"),
        (
            &["--warn", "0"],
            "--warn 0 must be a positive finite number",
        ),
        (
            &["--drop", "inf"],
            "--drop inf must be a positive finite number",
        ),
        (
            &["--crit", "NaN"],
            "--crit NaN must be a positive finite number",
        ),
        (
            &["--expect", "a @ nowhere"],
            "--expect \"a @ nowhere\": \"nowhere\" after the last",
        ),
        (
            &["--expect", "a\u{7}b"],
            "--expect \"a\\u{7}b\": invalid application id",
        ),
        (
            &["--expect-file", &bad_file],
            ", line 3: invalid application id: it contains '|'",
        ),
        // an endless file is refused, not read into memory
        (
            &["--expect-file", "/dev/zero"],
            "--expect-file /dev/zero: larger than",
        ),
    ];
    for (args, reason) in cases {
        let out = refused(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("heartbeat serve: ") && stderr.contains(reason),
            "{args:?}: {stderr}"
        );
    }
    let missing = refused(&["--expect-file", "/nonexistent/expected"]);
    assert_eq!(missing.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Durable state (issue 11): `heartbeat serve --state` survives `kill -9`,
//! restored applications go through the usual schedule, bad state files
//! stop `serve` untouched, and systemd hears READY=1 / STOPPING=1. Every
//! wait is a bounded poll of something observable (a metric, a socket, a
//! line), never a sleep that makes a test pass.
#![cfg(all(feature = "state", feature = "cli"))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use heartbeat_sdk::server::{
    ManualClock, Server, StateStore, StateWriter, StoredApp, DEFAULT_COMMIT_INTERVAL,
};

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat");
/// The longest any single step may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("hb-state-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `heartbeat serve --bind 127.0.0.1:0 ARGS`, without the test's settings.
fn serve(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "HB_URL",
        "HB_HOST",
        "HB_PORT",
        "APP_ID",
        "RUST_LOG",
        "NOTIFY_SOCKET",
    ] {
        command.env_remove(var);
    }
    command.args(["serve", "--bind", "127.0.0.1:0"]).args(args);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A running `serve`: its process, address and stderr.
struct Serving {
    child: Child,
    addr: String,
    stderr: Option<ChildStderr>,
}

impl Serving {
    /// Starts `command` and reads its `listening on http://ADDR` line.
    fn start(mut command: Command) -> Serving {
        let mut child = command.spawn().expect("the heartbeat binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim_end()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let stderr = child.stderr.take();
        Serving {
            child,
            addr,
            stderr,
        }
    }

    /// The body of `GET target` (HTTP/1.0, read to the end).
    fn get(&self, target: &str) -> String {
        get(&self.addr, target)
    }

    /// The value of the `/metrics` sample `name`.
    fn metric(&self, name: &str) -> Option<u64> {
        self.get("/metrics")
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok())
    }

    /// Polls `/metrics` until `name` reaches `at_least`.
    fn wait_for_metric(&self, name: &str, at_least: u64) {
        let start = Instant::now();
        loop {
            let value = self.metric(name).unwrap_or_else(|| panic!("no {name}"));
            if value >= at_least {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{name} stays at {value}, below {at_least}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9`, and its stderr.
    fn kill_9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.stderr_text()
    }

    /// SIGTERM, the exit code and its stderr.
    fn terminate(mut self) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let code = self.child.wait().unwrap().code();
        (code, self.stderr_text())
    }

    fn stderr_text(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.stderr.take() {
            stderr.read_to_string(&mut text).unwrap();
        }
        text
    }
}

fn get(addr: &str, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET {target} HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// The crash guarantee: every app acknowledged more than one commit
/// interval before `kill -9` is back after a restart, fresh; a `done`
/// acknowledged before it stays done.
#[test]
fn apps_acknowledged_before_the_last_commit_survive_kill_9() {
    let dir = TempDir::new("crash");
    let state = dir.join("state.db");
    let state = state.to_str().unwrap();
    let args = ["--state", state, "--state-commit-ms", "50"];
    let server = Serving::start(serve(&args));
    // Only present with --state.
    server.wait_for_metric("heartbeat_state_write_errors_total", 0);
    assert_eq!(server.get("/hb_init?60000&appid=gone"), "61000");
    server.wait_for_metric("heartbeat_state_rows_written_total", 1);
    assert_eq!(
        server.get("/hb_done?0&appid=gone"),
        "So Long, and Thanks for All the Fish!"
    );
    server.wait_for_metric("heartbeat_state_rows_written_total", 2);
    for i in 0..200 {
        assert_eq!(
            server.get(&format!("/hb_init?60000&appid=app{i:03}")),
            "61000"
        );
    }
    // the delete of `gone` and 200 upserts, each its own key: 202 rows
    server.wait_for_metric("heartbeat_state_rows_written_total", 202);
    assert_eq!(server.metric("heartbeat_state_write_errors_total"), Some(0));
    server.kill_9();

    let server = Serving::start(serve(&args));
    let list = server.get("/list");
    let expected: String = (0..200)
        .map(|i| format!("app{i:03} @ 127.0.0.1\n"))
        .collect();
    assert_eq!(list, expected, "all 200 back, `gone` stays done");
    // fresh: seen at start-up, granted timeout kept
    // (od comes from the wall clock: parsed and bounded, not compared)
    let status = server.get("/status?appid=app123");
    let od: f64 = status
        .strip_prefix("OK - fine application [app123 @ 127.0.0.1]| od=")
        .and_then(|rest| rest.strip_suffix(";3;5;0;6 delay=61000ms;;; "))
        .and_then(|od| od.parse().ok())
        .unwrap_or_else(|| panic!("{status:?}"));
    assert!((0.0..0.5).contains(&od), "{status:?}");
    let (code, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("restored 200 applications from {state}")),
        "{stderr}"
    );
}

/// A restored app that stays silent goes WARNING, CRITICAL and is dropped
/// on the usual schedule, counted from start-up (not from when it was last
/// seen), with its granted timeout; its row is then deleted.
#[tokio::test]
async fn a_restored_app_that_stays_silent_is_dropped_on_schedule() {
    let dir = TempDir::new("schedule");
    let state = dir.join("state.db");
    // stored by a server that saw it last an hour ago
    let (sink, writer) =
        StateWriter::spawn(StateStore::open(&state).unwrap(), DEFAULT_COMMIT_INTERVAL);
    sink.upsert(StoredApp {
        key: "quiet @ 127.0.0.1".into(),
        app: "quiet".into(),
        host: "127.0.0.1".into(),
        granted: Duration::from_millis(3000),
        last_seen: SystemTime::now() - Duration::from_secs(3600),
        failed: None,
    });
    writer.shutdown().await.unwrap();

    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .state(&state)
        .start()
        .await
        .unwrap();
    let status = |at_ms: u64| {
        clock.advance(Duration::from_millis(at_ms) - clock.elapsed());
        server
            .registry()
            .handle("/status?appid=quiet", None, LOCAL)
            .body
    };
    let perf = |od: &str| format!("| od={od};3;5;0;6 delay=3000ms;;; ");
    let key = "[quiet @ 127.0.0.1]";
    assert_eq!(
        status(0),
        format!("OK - fine application {key}{}", perf("0.00"))
    );
    assert_eq!(
        status(8_999),
        format!("OK - fine application {key}{}", perf("3.00"))
    );
    assert_eq!(
        status(9_000),
        format!("WARNING - somewhat late application {key}{}", perf("3.00"))
    );
    assert_eq!(
        status(15_000),
        format!("CRITICAL - quite late application {key}{}", perf("5.00"))
    );
    assert_eq!(
        status(17_999),
        format!("CRITICAL - quite late application {key}{}", perf("6.00"))
    );
    assert_eq!(
        status(18_000),
        format!("CRITICAL - no application record for queried ID: {key}")
    );
    server.shutdown().await;
    let stored = StateStore::open(&state).unwrap().load().unwrap();
    assert!(stored.is_empty(), "the expiry deleted the row: {stored:?}");
}

/// An app that expires while no request comes is deleted all the same: the
/// server sweeps every commit interval.
#[tokio::test]
async fn expiries_without_requests_are_deleted_too() {
    let dir = TempDir::new("sweep");
    let state = dir.join("state.db");
    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .state(&state)
        .state_commit_interval(Duration::from_millis(5))
        .start()
        .await
        .unwrap();
    server
        .registry()
        .handle("/hb_init?0&appid=short", None, LOCAL);
    server
        .registry()
        .handle("/hb_init?60000&appid=long", None, LOCAL);
    clock.advance(Duration::from_secs(6));
    let len = || {
        server
            .registry()
            .with_registry(|registry, _| registry.len())
    };
    let start = Instant::now();
    while len() != 1 {
        assert!(start.elapsed() < DEADLINE, "no sweep");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.shutdown().await;
    let stored = StateStore::open(&state).unwrap().load().unwrap();
    let keys: Vec<&str> = stored.iter().map(|app| app.key.as_str()).collect();
    assert_eq!(keys, ["long @ 127.0.0.1"]);
}

/// Thousands of expiries in one request overflow the registry's event
/// buffer; the state must still lose every expired row.
#[tokio::test]
async fn a_mass_expiry_deletes_every_row() {
    const APPS: usize = 5_000; // above the registry's event buffer of 4096
    let dir = TempDir::new("mass");
    let state = dir.join("state.db");
    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .max_apps(APPS + 1)
        .state(&state)
        .start()
        .await
        .unwrap();
    let registry = server.registry();
    for i in 0..APPS {
        let reply = registry.handle(&format!("/hb_init?0&appid=a{i}"), None, LOCAL);
        assert_eq!(reply.status, 200);
    }
    clock.advance(Duration::from_secs(5));
    registry.handle("/hb_init?60000&appid=keeper", None, LOCAL);
    clock.advance(Duration::from_secs(1)); // every a{i} is due: 6 × 1000 ms
    assert_eq!(
        registry.handle("/list", None, LOCAL).body,
        "keeper @ 127.0.0.1\n"
    );
    server.shutdown().await;
    let stored = StateStore::open(&state).unwrap().load().unwrap();
    let keys: Vec<&str> = stored.iter().map(|app| app.key.as_str()).collect();
    assert_eq!(keys, ["keeper @ 127.0.0.1"]);
}

/// What `serve --state PATH` says and does about a file it cannot use.
fn refused(path: &Path) -> (Option<i32>, String, String) {
    let output = serve(&["--state", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn assert_refused(path: &Path, says: &str) {
    let (code, stdout, stderr) = refused(path);
    assert_eq!(code, Some(73), "{path:?}: {stderr}");
    assert_eq!(stdout, "", "{path:?}: it must not listen");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with("heartbeat serve: state file "),
        "{stderr:?}"
    );
    assert!(stderr.contains(says), "{path:?}: {stderr:?}");
}

/// A file that is not a state database, or has a newer schema, stops
/// `serve` with one line and exit 73, and is left byte for byte.
#[test]
fn bad_state_files_stop_serve_and_are_left_untouched() {
    let dir = TempDir::new("bad");
    let notes = dir.join("notes.txt");
    let text =
        b"kiosk-7 @ 10.0.0.7\nsomeone's notes, not SQLite, long enough for a header.......\n";
    std::fs::write(&notes, text).unwrap();
    assert_refused(&notes, "is not a heartbeat state database");
    assert_eq!(std::fs::read(&notes).unwrap(), text);
    assert!(!dir.join("notes.txt-wal").exists());

    // a state file from a newer release: user_version (header bytes 60..64)
    let newer = dir.join("newer.db");
    drop(StateStore::open(&newer).unwrap());
    let mut bytes = std::fs::read(&newer).unwrap();
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(&newer, &bytes).unwrap();
    assert_refused(&newer, "has schema version 99");
    assert_eq!(std::fs::read(&newer).unwrap(), bytes);
}

/// A path that cannot be written, and a file another server holds, stop
/// `serve` the same way.
#[test]
fn unwritable_or_busy_state_paths_stop_serve() {
    let dir = TempDir::new("unwritable");
    assert_refused(&dir.0, "cannot be opened for writing");
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    assert_refused(&file.join("state.db"), "cannot be opened for writing");
    assert_refused(
        &dir.join("missing/state.db"),
        "cannot be opened for writing",
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x");

    let state = dir.join("state.db");
    let first = Serving::start(serve(&["--state", state.to_str().unwrap()]));
    assert_refused(&state, "in use by another process");
    let (code, stderr) = first.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// Under systemd (`NOTIFY_SOCKET`), `serve` sends READY=1 once listening
/// and STOPPING=1 when it shuts down.
#[test]
fn serve_tells_systemd_ready_and_stopping() {
    let dir = TempDir::new("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut command = serve(&[]);
    command.env("NOTIFY_SOCKET", &socket_path);
    let server = Serving::start(command);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within the deadline");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "READY=1\n");
    // it serves, and without --state /metrics has no state lines
    assert!(!server.get("/metrics").contains("heartbeat_state"));
    let (code, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let n = socket
        .recv(&mut buf)
        .expect("STOPPING=1 within the deadline");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "STOPPING=1\n");
}

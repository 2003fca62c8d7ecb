//! The `heartbeat` binary end to end: every subcommand run as a process
//! against the embedded server started in this test (on 127.0.0.1:0), its
//! stdout, stderr and exit code checked. Every wait is bounded.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use heartbeat_sdk::server::{ManualClock, Server, ServerHandle};

#[path = "support/refusing.rs"]
mod refusing;
use refusing::Refusing;

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat");
/// The longest any single step may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);
const GOODBYE: &str = "So Long, and Thanks for All the Fish!";
const NO_STATUS: &str = "CRITICAL - cannot get heartbeat status from HB server!";

/// What a finished run left behind.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `heartbeat ARGS` with none of the settings variables of the test's own
/// environment.
fn heartbeat(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "HB_URL",
        "HB_HOST",
        "HB_PORT",
        "APP_ID",
        "HB_USER",
        "HB_PASSWORD",
        "HB_CA_FILE",
        "RUST_LOG",
        "HB_SEND_INIT",
        "HB_SEND_PING",
        "HB_SEND_DONE",
        "HB_PING_INTERVAL",
        "HB_INIT_TIMEOUT",
        "HB_DONE_TIMEOUT",
    ] {
        command.env_remove(var);
    }
    command.args(args);
    command
}

/// `heartbeat --url URL ARGS`.
fn against(url: &str, args: &[&str]) -> Command {
    let mut command = heartbeat(&["--url", url]);
    command.args(args);
    command
}

/// A started process whose stdout arrives line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: JoinHandle<String>,
}

impl Running {
    fn start(command: Command) -> Running {
        Running::start_with(command, Stdio::piped(), Stdio::piped())
    }

    /// Start `command` with `stdout` and `stderr` (`Stdio::piped()`: read
    /// here; anything else: nothing read).
    fn start_with(mut command: Command, stdout: Stdio, stderr: Stdio) -> Running {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("the heartbeat binary starts");
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut stderr) = stderr {
                let _ = stderr.read_to_string(&mut text);
            }
            text
        });
        Running {
            child,
            lines,
            stderr,
        }
    }

    /// The URL of `serve`'s first line (`listening on URL`), read off the
    /// async workers; the process handed back.
    async fn url(self) -> (String, Running) {
        let (line, running) = tokio::task::spawn_blocking(move || (self.line(), self))
            .await
            .unwrap();
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_owned();
        (url, running)
    }

    /// The next stdout line, within the deadline.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("a line on stdout in time")
    }

    /// Send `signal` (`TERM`, `INT`) to the process.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Wait for the exit (killing the process at the deadline) and collect
    /// the rest of its output.
    fn finish(mut self) -> Output {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("heartbeat did not exit within {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = String::new();
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        Output {
            code: status.code(),
            stdout,
            stderr: self.stderr.join().unwrap(),
        }
    }
}

/// Run `command` to the end on a blocking thread.
async fn run(command: Command) -> Output {
    tokio::task::spawn_blocking(move || Running::start(command).finish())
        .await
        .unwrap()
}

/// Run `command` to the end with `stdout`, on a blocking thread.
async fn run_with_stdout(command: Command, stdout: Stdio) -> Output {
    tokio::task::spawn_blocking(move || {
        Running::start_with(command, stdout, Stdio::piped()).finish()
    })
    .await
    .unwrap()
}

/// `/dev/full`, opened for writing: every write fails with ENOSPC.
fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full"),
    )
}

/// The write end of a pipe whose read end is already closed: every write
/// fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    Stdio::from(writer)
}

/// Assert a run that did not panic and said exactly `line` on stderr.
#[track_caller]
fn assert_one_line(output: &Output, code: i32, line: &str) {
    assert_eq!(output.code, Some(code), "{output:?}");
    assert!(!output.stderr.contains("panicked"), "{output:?}");
    assert_eq!(output.stderr, format!("{line}\n"), "{output:?}");
}

/// Assert a successful run printing exactly `stdout`.
#[track_caller]
fn assert_ok(output: &Output, stdout: &str) {
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(output.stdout, stdout, "{output:?}");
    assert_eq!(output.stderr, "", "{output:?}");
}

/// Assert a failed run: exit `code`, nothing on stdout, one line on stderr
/// starting with `prefix`.
#[track_caller]
fn assert_failed(output: &Output, code: i32, prefix: &str) {
    assert_eq!(output.code, Some(code), "{output:?}");
    assert_eq!(output.stdout, "", "{output:?}");
    assert!(output.stderr.starts_with(prefix), "{output:?}");
    assert_eq!(output.stderr.lines().count(), 1, "one line: {output:?}");
}

async fn start() -> ServerHandle {
    Server::builder("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

/// The registry's keys, each followed by `\n` (as `/list` shows them).
fn list(server: &ServerHandle) -> String {
    server.registry().with_registry(|registry, now| {
        registry
            .list(now)
            .iter()
            .map(|key| format!("{key}\n"))
            .collect()
    })
}

/// Poll `condition` until it holds, failing at the deadline.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free port for a server the test starts (`serve --bind`): it has to
/// be released for the server to bind it, so another test could take it
/// in between (rare; the bind would then fail loudly). For an address
/// that must refuse connections use [`Refusing`], which keeps its port.
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// A path in the temp dir unique to this test process.
fn temp_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("heartbeat-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beats_list_and_status_print_the_server_answer() {
    let server = start().await;
    let url = server.url();
    let with_app = |args: &[&str]| against(&url, &[args, &["--app-id", "cli-app"][..]].concat());
    let key = "cli-app @ 127.0.0.1";

    assert_ok(&run(against(&url, &["list"])).await, "");
    assert_ok(
        &run(against(&url, &["status"])).await,
        "UNKNOWN - no heartbeat clients at the moment...\n",
    );
    assert_ok(&run(with_app(&["init", "500"])).await, "1500\n");
    assert_ok(&run(against(&url, &["list"])).await, &format!("{key}\n"));
    assert_ok(&run(with_app(&["ping", "2000"])).await, "3000\n");
    for query in [&["status", "cli-app"][..], &["status"]] {
        let output = run(against(&url, query)).await;
        assert_eq!(output.code, Some(0), "{output:?}");
        assert!(
            output
                .stdout
                .starts_with(&format!("OK - fine application [{key}]| od=0.")),
            "{output:?}"
        );
        assert!(
            output.stdout.ends_with(";3;5;0;6 delay=3000ms;;; \n"),
            "raw line, trailing space kept: {output:?}"
        );
    }
    assert_ok(&run(with_app(&["done"])).await, &format!("{GOODBYE}\n"));
    assert_ok(&run(against(&url, &["list"])).await, "");
    assert_ok(
        &run(against(&url, &["status", "cli-app"])).await,
        &format!("CRITICAL - no application record for queried ID: [{key}]\n"),
    );

    // defaults: init 10000 ms, ping 9000 ms (plus the server's 1000)
    assert_ok(&run(with_app(&["init"])).await, "11000\n");
    assert_ok(&run(with_app(&["ping"])).await, "10000\n");

    // the settings come from HB_URL and APP_ID, or HB_HOST and HB_PORT
    let mut env_url = heartbeat(&["ping", "100"]);
    env_url.env("HB_URL", &url).env("APP_ID", "from-env");
    assert_ok(&run(env_url).await, "1100\n");
    let mut host_port = heartbeat(&["ping", "200", "--app-id", "host-port"]);
    host_port
        .env("HB_HOST", "127.0.0.1")
        .env("HB_PORT", server.local_addr().port().to_string());
    assert_ok(&run(host_port).await, "1200\n");
    assert_eq!(
        list(&server),
        format!("{key}\nfrom-env @ 127.0.0.1\nhost-port @ 127.0.0.1\n")
    );
    server.shutdown().await;
}

#[cfg(feature = "surf")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_surf_transport_can_be_chosen() {
    let server = start().await;
    let output = run(against(
        &server.url(),
        &["--transport", "surf", "ping", "1000", "--app-id", "s"],
    ))
    .await;
    assert_ok(&output, "2000\n");
    assert_eq!(list(&server), "s @ 127.0.0.1\n");
    server.shutdown().await;
}

#[cfg(not(feature = "surf"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transports_not_compiled_in_are_refused() {
    let output = run(heartbeat(&["--transport", "surf", "list"])).await;
    assert_eq!(output.code, Some(2), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_one_line_on_stderr_with_the_documented_exit_code() {
    // 1: nothing listens
    let refusing = Refusing::new();
    let output = run(against(&refusing.url(), &["ping", "1000"])).await;
    assert_failed(&output, 1, "heartbeat ping: request to http://127.0.0.1:");
    assert!(output.stderr.contains("cannot connect"), "{output:?}");

    // 1: a server that accepts but never answers, past --timeout
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let output = run(against(&silent_url, &["--timeout", "300", "list"])).await;
    assert_failed(&output, 1, "heartbeat list: ");
    assert!(output.stderr.contains("timed out"), "{output:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "--timeout bounds the wait"
    );
    drop(silent);

    // 2: bad settings or arguments, before anything is sent
    let output = run(against("ftp://x", &["list"])).await;
    assert_failed(&output, 2, "heartbeat list: invalid server URL");
    let output = run(against("127.0.0.1:1", &["init", "5000000000"])).await;
    assert_failed(&output, 2, "heartbeat init: timeout");
    let mut bad_port = heartbeat(&["list"]);
    bad_port.env("HB_PORT", "eighty");
    assert_failed(
        &run(bad_port).await,
        2,
        "heartbeat list: invalid server URL",
    );
    let output = run(heartbeat(&["ping", "soon"])).await;
    assert_eq!(output.code, Some(2), "clap's usage error: {output:?}");

    // 3: the server answers with an error (registry full: 503)
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .max_apps(1)
        .start()
        .await
        .unwrap();
    let url = server.url();
    assert_ok(
        &run(against(&url, &["ping", "1000", "--app-id", "a"])).await,
        "2000\n",
    );
    let output = run(against(&url, &["ping", "1000", "--app-id", "b"])).await;
    assert_failed(&output, 3, "heartbeat ping: server answered HTTP 503");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_with_each_nagios_state() {
    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let url = server.url();
    let check = |args: &[&str]| run(against(&url, &[&["check"][..], args].concat()));

    let output = check(&[]).await;
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (Some(3), "UNKNOWN - no heartbeat clients at the moment...\n")
    );

    assert_ok(
        &run(against(&url, &["ping", "2000", "--app-id", "ID"])).await,
        "3000\n",
    );
    for (advance_ms, code, line) in [
        (1_560, 0, "OK - fine application [ID @ 127.0.0.1]| od=0.52;3;5;0;6 delay=3000ms;;; "),
        (7_740, 1, "WARNING - somewhat late application [ID @ 127.0.0.1]| od=3.10;3;5;0;6 delay=3000ms;;; "),
        (5_910, 2, "CRITICAL - quite late application [ID @ 127.0.0.1]| od=5.07;3;5;0;6 delay=3000ms;;; "),
    ] {
        clock.advance(Duration::from_millis(advance_ms));
        let output = check(&["ID"]).await;
        assert_eq!(output.code, Some(code), "{output:?}");
        assert_eq!(output.stdout, format!("{line}\n"));
        assert_eq!(output.stderr, "");
        assert_eq!(check(&[]).await.code, Some(code), "one app: the host's state is its state");
    }
    clock.advance(Duration::from_millis(2_790)); // od 6: dropped
    let output = check(&["ID"]).await;
    assert_eq!(output.code, Some(2), "{output:?}");
    assert_eq!(
        output.stdout,
        "CRITICAL - no application record for queried ID: [ID @ 127.0.0.1]\n"
    );

    for app in ["A", "B"] {
        assert_ok(
            &run(against(&url, &["init", "1000", "--app-id", app])).await,
            "2000\n",
        );
    }
    let output = check(&[""]).await; // an empty $ARG1$ means the host
    assert_eq!(output.code, Some(1), "{output:?}");
    assert_eq!(
        output.stdout,
        "WARNING - multiple (2) applications: [A @ 127.0.0.1,B @ 127.0.0.1]\n"
    );
    server.shutdown().await;

    // unreachable: the reference check's exact words, exit 2, the reason on stderr
    let refusing = Refusing::new();
    for url in [refusing.url(), "ftp://nowhere".to_owned()] {
        let output = run(against(&url, &["check"])).await;
        assert_eq!(output.code, Some(2), "{output:?}");
        assert_eq!(output.stdout, format!("{NO_STATUS}\n"));
        assert!(output.stderr.starts_with("heartbeat check: "), "{output:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_exits_with_the_child_exit_code() {
    let refusing = Refusing::new();
    let url = refusing.url();
    let output = run(against(
        &url,
        &["wrap", "--", "sh", "-c", "echo child; exit 7"],
    ))
    .await;
    assert_eq!(output.code, Some(7), "{output:?}");
    assert_eq!(
        output.stdout, "child\n",
        "CMD writes to the wrapper's stdout"
    );
    assert_eq!(output.stderr, "", "no heartbeats asked for, none tried");

    let output = run(against(&url, &["wrap", "true"])).await;
    assert_eq!(output.code, Some(0), "{output:?}");

    // killed by a signal: 128 + N
    let output = run(against(&url, &["wrap", "--", "sh", "-c", "kill -KILL $$"])).await;
    assert_eq!(output.code, Some(128 + 9), "{output:?}");

    let output = run(against(
        &url,
        &["wrap", "--", "no-such-program-hb-cli-test"],
    ))
    .await;
    assert_eq!(output.code, Some(127), "{output:?}");
    assert!(
        output
            .stderr
            .starts_with("heartbeat wrap: cannot run no-such-program-hb-cli-test"),
        "{output:?}"
    );

    // heartbeats that fail are reported and do not stop CMD
    let output = run(against(&url, &["dummy", "--", "sh", "-c", "exit 5"])).await;
    assert_eq!(output.code, Some(5), "{output:?}");
    assert!(
        output
            .stderr
            .contains("heartbeat wrap: init failed (running CMD anyway)"),
        "{output:?}"
    );
    assert!(
        output.stderr.contains("heartbeat wrap: fail failed"),
        "a failed run sends hb_fail, not done: {output:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_sends_init_pings_while_the_child_runs_and_done_after() {
    let server = start().await;
    let url = server.url();
    let release = temp_path("release");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done; exit 0",
        release.display()
    );
    let counters = || {
        server
            .registry()
            .with_registry(|registry, _| registry.counters())
    };

    for subcommand in [&["wrap", "--all"][..], &["dummy"]] {
        let before = counters();
        let args = [
            subcommand,
            &[
                "--app-id",
                "wrapped",
                "--interval",
                "100",
                "--",
                "sh",
                "-c",
                &script,
            ][..],
        ]
        .concat();
        let running = Running::start(against(&url, &args));
        // the keep-alive's first beat is an init too
        eventually("init and two pings", || {
            let now = counters();
            now.inits > before.inits && now.pings >= before.pings + 2
        })
        .await;
        assert_eq!(
            list(&server),
            "wrapped @ 127.0.0.1\n",
            "registered while CMD runs"
        );
        std::fs::write(&release, "").unwrap();
        let output = tokio::task::spawn_blocking(move || running.finish())
            .await
            .unwrap();
        assert_eq!(output.code, Some(0), "{output:?}");
        assert_eq!(output.stderr, "", "{output:?}");
        assert_eq!(list(&server), "", "done was sent when CMD exited");
        assert_eq!(counters().dones, before.dones + 1);
        std::fs::remove_file(&release).unwrap();
    }

    // only what is asked for: --init --done, no pings
    let before = counters();
    let output = run(against(
        &url,
        &[
            "wrap", "--init", "--done", "--app-id", "quiet", "--", "true",
        ],
    ))
    .await;
    assert_eq!(output.code, Some(0), "{output:?}");
    let after = counters();
    assert_eq!(
        (after.inits, after.pings, after.dones),
        (before.inits + 1, before.pings, before.dones + 1)
    );

    // the reference wrapper's environment variables turn the beats on
    let before = counters();
    let mut by_env = against(&url, &["wrap", "--app-id", "env", "--", "true"]);
    by_env
        .env("HB_SEND_INIT", "true")
        .env("HB_SEND_DONE", "false");
    assert_eq!(run(by_env).await.code, Some(0));
    let after = counters();
    assert_eq!((after.inits, after.dones), (before.inits + 1, before.dones));
    assert_eq!(list(&server), "env @ 127.0.0.1\n");
    server.shutdown().await;
}

/// A failed run is an alarm: `hb_fail?CODE` instead of the done, so our
/// server shows it CRITICAL with the code; a server that answers `400` to
/// it (the reference) gets no done, so the app goes late there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_reports_a_failed_run_instead_of_signing_off() {
    let server = start().await;
    let url = server.url();
    let output = run(against(
        &url,
        &[
            "wrap", "--all", "--app-id", "cron job", "--", "sh", "-c", "exit 3",
        ],
    ))
    .await;
    assert_eq!(output.code, Some(3), "{output:?}");
    assert_eq!(output.stderr, "", "{output:?}");
    assert_eq!(
        list(&server),
        "cron job @ 127.0.0.1\n",
        "still listed: failed, not gone"
    );
    let status = server
        .registry()
        .handle(
            "/status?appid=cron%20job",
            None,
            std::net::Ipv4Addr::LOCALHOST.into(),
        )
        .body;
    assert!(
        status
            .starts_with("CRITICAL - application [cron job @ 127.0.0.1] failed with exit code 3|"),
        "{status}"
    );
    let counters = server.registry().with_registry(|r, _| r.counters());
    assert_eq!((counters.fails, counters.dones), (1, 0));
    // a program that cannot start is a failed run too (127)
    let output = run(against(
        &url,
        &[
            "wrap",
            "--done",
            "--app-id",
            "missing",
            "--",
            "no-such-program-hb-cli-test",
        ],
    ))
    .await;
    assert_eq!(output.code, Some(127), "{output:?}");
    assert_eq!(
        server.registry().with_registry(|r, _| r.counters()).fails,
        2
    );
    server.shutdown().await;

    // the reference: 400 to hb_fail, so nothing more is sent
    let reference = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/hb_fail"))
        .respond_with(
            wiremock::ResponseTemplate::new(400)
                .set_body_string("ERROR: cannot process your request"),
        )
        .mount(&reference)
        .await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_string("2000"))
        .mount(&reference)
        .await;
    let output = run(against(
        &reference.uri(),
        &["dummy", "--app-id", "cron", "--", "sh", "-c", "exit 4"],
    ))
    .await;
    assert_eq!(output.code, Some(4), "{output:?}");
    assert!(
        output.stderr.contains("does not know hb_fail (HTTP 400)"),
        "{output:?}"
    );
    let paths: Vec<String> = reference
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(
        paths.first().map(String::as_str),
        Some("/hb_init"),
        "{paths:?}"
    );
    assert_eq!(
        paths.last().map(String::as_str),
        Some("/hb_fail"),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p == "/hb_done"), "no done: {paths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_forwards_sigterm_and_sigint_to_the_child() {
    let server = start().await;
    let url = server.url();
    for (signal, script, expected) in [
        // CMD traps the signal: its own exit code comes back
        (
            "TERM",
            "trap 'kill $!; exit 42' TERM; touch \"$0\"; sleep 30 & wait",
            42,
        ),
        (
            "INT",
            "trap 'kill $!; exit 43' INT; touch \"$0\"; sleep 30 & wait",
            43,
        ),
        // CMD dies of the signal: 128 + 15
        ("TERM", "touch \"$0\"; exec sleep 30", 128 + 15),
    ] {
        let ready = temp_path(&format!("ready-{expected}"));
        let ready_arg = ready.display().to_string();
        let args = [
            "dummy", "--app-id", "sig", "--", "sh", "-c", script, &ready_arg,
        ];
        let running = Running::start(against(&url, &args));
        eventually("CMD to be ready", || ready.exists()).await;
        assert_eq!(list(&server), "sig @ 127.0.0.1\n");
        running.signal(signal);
        let output = tokio::task::spawn_blocking(move || running.finish())
            .await
            .unwrap();
        assert_eq!(output.code, Some(expected), "SIG{signal}: {output:?}");
        // a non-zero exit after the forwarded signal is a failed run
        let status = server
            .registry()
            .handle(
                "/status?appid=sig",
                None,
                std::net::Ipv4Addr::LOCALHOST.into(),
            )
            .body;
        assert!(
            status.contains(&format!("failed with exit code {expected}|")),
            "SIG{signal}: {status}"
        );
        let _ = std::fs::remove_file(&ready);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_its_address_answers_and_stops_on_sigterm() {
    let running = Running::start(heartbeat(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--max-apps",
        "1",
    ]));
    let (url, running) = running.url().await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    assert_ok(
        &run(against(&url, &["ping", "1000", "--app-id", "served"])).await,
        "2000\n",
    );
    assert_ok(&run(against(&url, &["list"])).await, "served @ 127.0.0.1\n");
    assert_eq!(run(against(&url, &["check", "served"])).await.code, Some(0));
    let full = run(against(&url, &["ping", "1000", "--app-id", "second"])).await;
    assert_failed(&full, 3, "heartbeat ping: server answered HTTP 503");
    assert_ok(
        &run(against(&url, &["done", "--app-id", "served"])).await,
        &format!("{GOODBYE}\n"),
    );

    running.signal("TERM");
    let output = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert_eq!(output.code, Some(0), "{output:?}");
    for event in [
        "Construction of [served @ 127.0.0.1]",
        "Refusal of [second @ 127.0.0.1]",
        "Destruction of [served @ 127.0.0.1]",
    ] {
        assert!(
            output.stderr.contains(event),
            "logged {event:?}: {output:?}"
        );
    }
    let output = run(against(&url, &["list"])).await;
    assert_eq!(output.code, Some(1), "stopped listening: {output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_caps_promised_timeouts_and_warns_about_expected_ids_without_a_host() {
    let running = Running::start(heartbeat(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--max-timeout",
        "60000",
        "--max-expected-timeout",
        "5000",
        "--expect",
        "backup",
        "--expect",
        "projector @ 10.0.0.5",
    ]));
    let (url, running) = running.url().await;
    // the reply is the granted timeout: the capped promise plus 1 s
    let long = "4294967295";
    assert_ok(
        &run(against(&url, &["ping", long, "--app-id", "any"])).await,
        "61000\n",
    );
    assert_ok(
        &run(against(&url, &["ping", long, "--app-id", "backup"])).await,
        "6000\n",
    );
    assert_ok(
        &run(against(&url, &["ping", "2000", "--app-id", "backup"])).await,
        "3000\n",
    );
    running.signal("TERM");
    let output = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert_eq!(output.code, Some(0), "{output:?}");
    let warnings: Vec<&str> = output
        .stderr
        .lines()
        .filter(|l| l.contains("satisfied by a beat from any address"))
        .collect();
    assert_eq!(warnings.len(), 1, "{output:?}");
    assert!(
        warnings[0].contains("expected=1"),
        "one bare id of two: {warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_what_it_cannot_bind() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run(heartbeat(&["serve", "--bind", &addr])).await;
    assert_failed(&output, 4, "heartbeat serve: cannot listen");
    let output = run(heartbeat(&["--url", "http://example.org:1", "serve"])).await;
    assert_failed(&output, 2, "heartbeat serve: invalid server URL");
}

/// The `/dev/full` error as std words it.
const ENOSPC: &str = "No space left on device (os error 28)";

/// Issue 10, item 7: a full stdout panicked (exit 101). Now: one line on
/// stderr, exit 74 (`check`: 3, UNKNOWN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stdout_is_a_one_line_error_with_its_exit_code() {
    let server = start().await;
    let url = server.url();
    assert_ok(
        &run(against(&url, &["ping", "1000", "--app-id", "full"])).await,
        "2000\n",
    );
    for (args, what) in [
        (&["list"][..], "list"),
        (&["status"], "status"),
        (&["init", "1000", "--app-id", "full"], "init"),
        (&["ping", "1000", "--app-id", "full"], "ping"),
        (&["demo", "--app-id", "demo-full", "--beats", "1"], "demo"),
    ] {
        let output = run_with_stdout(against(&url, args), dev_full()).await;
        assert_one_line(
            &output,
            74,
            &format!("heartbeat {what}: cannot write output: {ENOSPC}"),
        );
    }
    assert_eq!(
        list(&server),
        "full @ 127.0.0.1\n",
        "the demo stopped before its init"
    );
    let output = run_with_stdout(against(&url, &["check", "full"]), dev_full()).await;
    assert_one_line(
        &output,
        3,
        &format!("heartbeat check: cannot write output: {ENOSPC}"),
    );
    let output = run_with_stdout(against(&url, &["done", "--app-id", "full"]), dev_full()).await;
    assert_one_line(
        &output,
        74,
        &format!("heartbeat done: cannot write output: {ENOSPC}"),
    );
    assert_eq!(
        list(&server),
        "",
        "the done was sent before its answer was lost"
    );
    server.shutdown().await;

    // unreachable and a full stdout: UNKNOWN, both reasons on stderr
    let refusing = Refusing::new();
    let output = run_with_stdout(against(&refusing.url(), &["check"]), dev_full()).await;
    assert_eq!(output.code, Some(3), "{output:?}");
    assert!(!output.stderr.contains("panicked"), "{output:?}");
    let lines: Vec<&str> = output.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{output:?}");
    assert_eq!(
        lines[0],
        format!("heartbeat check: cannot write output: {ENOSPC}")
    );
    assert!(
        lines[1].starts_with("heartbeat check: request to"),
        "{output:?}"
    );
}

/// Issue 10, item 7: a reader that went away (EPIPE) panicked too. Now the
/// command ends quietly with the code it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_pipe_ends_quietly_with_the_code_the_command_had() {
    let server = start().await;
    let url = server.url();
    for (args, code) in [
        (&["ping", "1000", "--app-id", "gone"][..], 0),
        (&["list"], 0),
        (&["status", "gone"], 0),
        (&["check", "gone"], 0),
        (&["check", "nobody"], 2),
        (&["demo", "--app-id", "demo-gone", "--beats", "1"], 0),
    ] {
        let output = run_with_stdout(against(&url, args), closed_pipe()).await;
        assert_eq!(output.code, Some(code), "{args:?}: {output:?}");
        assert_eq!(output.stderr, "", "{args:?}: {output:?}");
    }
    assert_eq!(list(&server), "gone @ 127.0.0.1\n");
    server.shutdown().await;
}

/// Issue 10, item 7: `heartbeat serve | true` panicked on its first line.
/// Now a closed or full stdout, and a closed stderr, do not stop it: it
/// serves (and logs into the void) until SIGTERM, then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_serves_on_when_its_stdout_and_stderr_are_gone() {
    for (stdout, stderr, closed) in [
        (closed_pipe(), closed_pipe(), true),
        (dev_full(), Stdio::piped(), false),
    ] {
        let addr = free_addr();
        let url = format!("http://{addr}");
        let running = Running::start_with(heartbeat(&["serve", "--bind", &addr]), stdout, stderr);
        eventually("the server to listen", || {
            std::net::TcpStream::connect(&addr).is_ok()
        })
        .await;
        // each request is logged on stderr: the server lives through that
        assert_ok(
            &run(against(&url, &["ping", "1000", "--app-id", "void"])).await,
            "2000\n",
        );
        assert_ok(&run(against(&url, &["list"])).await, "void @ 127.0.0.1\n");
        running.signal("TERM");
        let output = tokio::task::spawn_blocking(move || running.finish())
            .await
            .unwrap();
        assert_eq!(output.code, Some(0), "{output:?}");
        if !closed {
            assert!(!output.stderr.contains("panicked"), "{output:?}");
            assert!(
                output
                    .stderr
                    .contains(&format!("cannot write the address to stdout: {ENOSPC}")),
                "{output:?}"
            );
        }
    }
}

/// Issue 10, item 8: `--app-id ''`, `APP_ID=''` and `APP_ID='   '` used to
/// beat as the demo id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_blank_app_id_is_refused_the_demo_id_is_for_an_unset_one() {
    let server = start().await;
    let url = server.url();
    let mut empty_env = against(&url, &["ping", "1000"]);
    empty_env.env("APP_ID", "");
    let mut blank_env = against(&url, &["ping", "1000"]);
    blank_env.env("APP_ID", "   ");
    let mut blank_wrap = against(&url, &["dummy", "--", "true"]);
    blank_wrap.env("APP_ID", " \t");
    for (command, what) in [
        (against(&url, &["ping", "1000", "--app-id", ""]), "ping"),
        (against(&url, &["init", "--app-id", "  "]), "init"),
        (empty_env, "ping"),
        (blank_env, "ping"),
        (blank_wrap, "wrap"),
    ] {
        let output = run(command).await;
        assert_failed(
            &output,
            2,
            &format!("heartbeat {what}: invalid application id"),
        );
    }
    assert_eq!(list(&server), "", "nothing was sent");
    assert_ok(&run(against(&url, &["ping", "1000"])).await, "2000\n");
    assert_eq!(list(&server), "rust_heartbeat_client_demo @ 127.0.0.1\n");
    // the monitoring queries send no app id of their own: an empty APP_ID
    // in a monitoring agent's environment must not fail them (a false
    // CRITICAL from `check`)
    let mut listed = against(&url, &["list"]);
    listed.env("APP_ID", "");
    assert_ok(
        &run(listed).await,
        "rust_heartbeat_client_demo @ 127.0.0.1\n",
    );
    let mut checked = against(&url, &["check", "--app-id", " "]);
    checked.env("APP_ID", "");
    let output = run(checked).await;
    assert_eq!(output.code, Some(0), "one app, fine: {output:?}");
    assert!(
        output.stdout.starts_with("OK - fine application"),
        "{output:?}"
    );
    server.shutdown().await;
}

/// Whether process `pid` has ended: gone, or a zombie not reaped yet.
#[cfg(target_os = "linux")]
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The pids a wrapped script wrote (atomically, by `mv`) into `path`.
#[cfg(target_os = "linux")]
async fn pids_in(path: &std::path::Path) -> Vec<u32> {
    eventually("CMD to write its pids", || path.exists()).await;
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect()
}

/// Kills what a failed test leaves running.
#[cfg(target_os = "linux")]
struct KillOnDrop(Vec<u32>);

#[cfg(target_os = "linux")]
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if !ended(pid) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

/// Issue 10, item 9: SIGHUP and SIGUSR1 killed the wrapper (CMD ran on, no
/// done); SIGTERM reached CMD but not CMD's children. Now each goes to
/// CMD's process group; the wrapper waits, exits 128+N, and (issue 19)
/// reports the death by signal with `hb_fail?128+N` instead of the done.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_forwards_hup_usr1_term_to_the_child_and_grandchild_then_reports_the_failure() {
    let server = start().await;
    let url = server.url();
    // the grandchild's output not on the wrapper's pipes: a grandchild left
    // running would make finish() wait for it
    let script =
        "sleep 300 >/dev/null 2>&1 & echo $$ $! > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"; wait";
    for (signal, number) in [("HUP", 1), ("USR1", 10), ("TERM", 15)] {
        let pids_file = temp_path(&format!("pids-{signal}"));
        let pids_arg = pids_file.display().to_string();
        let args = [
            "dummy", "--app-id", "group", "--", "sh", "-c", script, &pids_arg,
        ];
        let running = Running::start(against(&url, &args));
        let pids = KillOnDrop(pids_in(&pids_file).await);
        assert_eq!(pids.0.len(), 2, "child and grandchild");
        assert_eq!(list(&server), "group @ 127.0.0.1\n");
        running.signal(signal);
        let output = tokio::task::spawn_blocking(move || running.finish())
            .await
            .unwrap();
        assert_eq!(output.code, Some(128 + number), "SIG{signal}: {output:?}");
        assert_eq!(output.stderr, "", "SIG{signal}: {output:?}");
        let status = server
            .registry()
            .handle(
                "/status?appid=group",
                None,
                std::net::Ipv4Addr::LOCALHOST.into(),
            )
            .body;
        let code = 128 + number;
        assert!(
            status.contains(&format!("failed with exit code {code}|")),
            "SIG{signal}: {status}"
        );
        eventually(&format!("SIG{signal}: child and grandchild to end"), || {
            pids.0.iter().all(|&pid| ended(pid))
        })
        .await;
        let _ = std::fs::remove_file(&pids_file);
    }
    server.shutdown().await;
}

/// Issue 10, item 9: a wrapper killed by SIGKILL left CMD running. Now
/// (Linux) CMD gets the parent death signal.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapper_killed_by_sigkill_takes_its_child_along() {
    let pids_file = temp_path("pids-KILL");
    let pids_arg = pids_file.display().to_string();
    let script = "echo $$ > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"; exec sleep 300";
    let refusing = Refusing::new();
    // CMD's output not piped here: a CMD left running would hold the pipes
    // open and make finish() wait for it
    let running = Running::start_with(
        against(
            &refusing.url(),
            &["wrap", "--", "sh", "-c", script, &pids_arg],
        ),
        Stdio::null(),
        Stdio::null(),
    );
    let pids = KillOnDrop(pids_in(&pids_file).await);
    assert!(!ended(pids.0[0]), "CMD runs");
    running.signal("KILL");
    let output = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert_eq!(output.code, None, "killed: {output:?}");
    eventually("CMD to die with the wrapper", || ended(pids.0[0])).await;
    let _ = std::fs::remove_file(&pids_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_beats_until_sigterm_then_signs_off() {
    let server = start().await;
    let running = Running::start(against(&server.url(), &["demo", "--app-id", "demo-app"]));
    eventually("the demo's init", || {
        list(&server) == "demo-app @ 127.0.0.1\n"
    })
    .await;
    running.signal("TERM");
    let output = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output.stdout.contains(&format!("hb_done: {GOODBYE}\n")),
        "{output:?}"
    );
    assert!(
        output
            .stdout
            .contains("list before hb_done: [\"demo-app @ 127.0.0.1\"]\n"),
        "{output:?}"
    );
    assert!(
        output.stdout.contains("list after hb_done: []\n"),
        "{output:?}"
    );
    assert_eq!(list(&server), "");
    server.shutdown().await;

    // no server named: the demo starts its own
    let running = Running::start(heartbeat(&["demo"]));
    let (line, running) = tokio::task::spawn_blocking(move || (running.line(), running))
        .await
        .unwrap();
    assert!(
        line.starts_with(
            "no server configured: started the embedded heartbeat server at http://127.0.0.1:"
        ),
        "{line}"
    );
    running.signal("INT");
    let output = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output.stdout.contains(&format!("hb_done: {GOODBYE}\n")),
        "{output:?}"
    );
}

// ---------------------------------------------------------------------------
// Issue 10 (serve): connection cap from the open-file limit, exit code 4 for
// a failed bind, no colour escapes in a log that is not a terminal
// ---------------------------------------------------------------------------

/// `sh -c SCRIPT` with the settings variables removed like [`heartbeat`].
fn shell(script: &str) -> Command {
    let command = heartbeat(&[]);
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(script);
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => sh.env(name, value),
            None => sh.env_remove(name),
        };
    }
    sh
}

/// One kept-alive `hb_ping` on `stream`; the status code.
fn raw_ping(stream: &mut std::net::TcpStream, app: &str) -> u16 {
    use std::io::Write;
    let request = format!("GET /hb_ping?1&appid={app} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = stream
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("no reply to {app}: {e}"));
        assert!(n > 0, "{app}: closed before a reply");
        reply.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return head[9..12].parse().unwrap();
            }
        }
    }
}

/// Under `ulimit -n 256`, `serve` caps connections at 192 and says so;
/// 300 kept-alive clients are all answered (the longest-idle connections
/// make room) instead of accepts failing with "Too many open files".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_fits_its_connection_cap_to_the_open_file_limit() {
    let running = Running::start(shell(&format!(
        "ulimit -n 256 && exec '{BIN}' serve --bind 127.0.0.1:0"
    )));
    let (line, running) = tokio::task::spawn_blocking(move || (running.line(), running))
        .await
        .unwrap();
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_owned();
    let statuses = tokio::task::spawn_blocking(move || {
        let mut open = Vec::new();
        let mut statuses = Vec::new();
        for i in 0..300 {
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            statuses.push(raw_ping(&mut stream, &format!("c{i}")));
            open.push(stream);
        }
        // the newest are still open and served
        for (i, stream) in open.iter_mut().enumerate().skip(290) {
            statuses.push(raw_ping(stream, &format!("c{i}")));
        }
        statuses
    })
    .await
    .unwrap();
    assert_eq!(statuses.len(), 310);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    running.signal("TERM");
    let output = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert_eq!(output.code, Some(0), "{output:?}");
    let log = &output.stderr;
    assert!(
        log.contains(
            "connection cap derived from the open-file limit open_files=256 max_connections=192"
        ),
        "{log}"
    );
    assert!(!log.contains("accept failed"), "{log}");
    // 108 or more evictions, logged once per burst (one burst, or a few
    // if a slow machine let the head timeout free a slot in between), not
    // once per eviction
    let bursts = log.matches("connection cap reached").count();
    assert!((1..=3).contains(&bursts), "{bursts} bursts: {log}");

    // a soft limit alone is raised to the hard one
    let hard = Command::new("sh")
        .args(["-c", "ulimit -H -n"])
        .output()
        .unwrap();
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    let running = Running::start(shell(&format!(
        "ulimit -S -n 256 && exec '{BIN}' serve --bind 127.0.0.1:0"
    )));
    let running = tokio::task::spawn_blocking(move || {
        running.line();
        running
    })
    .await
    .unwrap();
    running.signal("TERM");
    let output = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert!(!output.stderr.contains("open_files=256 "), "{output:?}");
    if let Ok(hard) = hard.parse::<u64>() {
        let cap = (hard - 64).min(10_000);
        assert!(
            output
                .stderr
                .contains(&format!("open_files={hard} max_connections={cap}")),
            "{output:?}"
        );
    }
}

/// A port already taken: exit code 4 ("cannot listen"), documented in the
/// help, one line on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exits_4_when_it_cannot_listen() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run(heartbeat(&["serve", "--bind", &addr])).await;
    assert_failed(&output, 4, "heartbeat serve: cannot listen: ");
    drop(taken);
    let help = run(heartbeat(&["--help"])).await;
    assert!(
        help.stdout
            .contains("\n  4    serve: cannot listen on the address"),
        "{help:?}"
    );
}

/// With stderr a pipe, `serve`'s log has no colour escapes (no ESC byte),
/// even at debug level and with refusals and errors logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_no_colour_escapes_into_a_pipe() {
    let mut command = heartbeat(&["serve", "--bind", "127.0.0.1:0"]);
    command.env("RUST_LOG", "debug");
    let running = Running::start(command);
    let (url, running) = running.url().await;
    assert_ok(
        &run(against(&url, &["ping", "--app-id", "colour"])).await,
        "10000\n",
    );
    assert_ok(
        &run(against(&url, &["ping", "--app-id", "colour"])).await,
        "10000\n",
    );
    let addr = url.strip_prefix("http://").unwrap().to_owned();
    let refused = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET /hb_pong HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    })
    .await
    .unwrap();
    assert!(refused.starts_with("HTTP/1.0 400 "), "{refused}");
    running.signal("TERM");
    let output = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert!(
        output
            .stderr
            .contains("Construction of [colour @ 127.0.0.1]"),
        "{output:?}"
    );
    assert!(output.stderr.contains("DEBUG"), "{output:?}");
    assert!(output.stderr.contains("request refused"), "{output:?}");
    assert!(!output.stderr.contains('\u{1b}'), "{:?}", output.stderr);
}

/// `serve --state` on Ctrl+C (SIGINT): exits 0, logs that it is shutting
/// down and that the state was saved, and the state file holds what was
/// registered although no periodic commit was due (commits every hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_sigint_exits_0_and_commits_its_state() {
    let state = temp_path("sigint-state.db");
    let state_arg = state.display().to_string();
    let running = Running::start(heartbeat(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--state",
        &state_arg,
        "--state-commit-ms",
        "3600000",
    ]));
    #[cfg(target_os = "linux")]
    let _kill = KillOnDrop(vec![running.child.id()]);
    let (url, running) = running.url().await;
    assert_ok(
        &run(against(&url, &["init", "30000", "--app-id", "kept"])).await,
        "31000\n",
    );

    running.signal("INT");
    let output = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(!output.stderr.contains("panicked"), "{output:?}");
    let shutting = output.stderr.find("signal received: shutting down");
    let saved = output.stderr.find("state saved");
    assert!(
        matches!((shutting, saved), (Some(a), Some(b)) if a < b),
        "says it stops, then that the state is saved: {output:?}"
    );
    let stored = heartbeat_sdk::server::StateStore::open(&state)
        .unwrap()
        .load()
        .unwrap();
    let keys: Vec<&str> = stored.iter().map(|app| app.key.as_str()).collect();
    assert_eq!(keys, ["kept @ 127.0.0.1"], "committed on the way out");
    // (the process has exited, so nothing listens on its port; not probed:
    // another test may be given the port by then)
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{state_arg}{suffix}"));
    }
}

/// `wrap` configured by the reference wrapper's variables only (no flags):
/// CMD gets the wrapper's environment, `HB_*` and `APP_ID` unchanged; the
/// init promises `HB_INIT_TIMEOUT`; each keep-alive beat promises twice
/// `HB_PING_INTERVAL` (KeepAlive's default margin: the interval again).
/// The server here adds no tolerance, so what it grants is what was
/// promised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_promises_twice_its_interval_and_cmd_sees_the_hb_variables() {
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .config(heartbeat_sdk::server::RegistryConfig {
            tolerance: Duration::ZERO,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let url = server.url();
    let granted = |key: &str| {
        server.registry().with_registry(|registry, now| {
            registry
                .apps(now)
                .find(|app| app.key == key)
                .map(|app| app.granted)
        })
    };
    let counters = || {
        server
            .registry()
            .with_registry(|registry, _| registry.counters())
    };

    for (ping, expected_promise) in [("true", 1400), ("false", 5000)] {
        let base = temp_path(&format!("wrap-env-{ping}"));
        let (env_file, release) = (base.with_extension("env"), base.with_extension("release"));
        let _ = std::fs::remove_file(&env_file);
        let _ = std::fs::remove_file(&release);
        // CMD writes what it sees of HB_* and APP_ID, then waits
        let script =
            "env | grep -E '^(HB_|APP_ID=)' | sort > \"$0.tmp\" && mv \"$0.tmp\" \"$0.env\"; \
                      i=0; while [ ! -e \"$0.release\" ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done";
        let given = [
            ("APP_ID", "by-env"),
            ("HB_DONE_TIMEOUT", "0"),
            ("HB_INIT_TIMEOUT", "5000"),
            ("HB_PING_INTERVAL", "700"),
            ("HB_SEND_DONE", "true"),
            ("HB_SEND_INIT", "true"),
            ("HB_SEND_PING", ping),
            ("HB_URL", url.as_str()),
        ];
        let mut command = heartbeat(&["wrap", "--", "sh", "-c", script]);
        command.arg(base.display().to_string());
        // only what this test gives: not the HB_* of whoever runs the suite
        // (CI's HB_REQUIRE_TOOLS, a developer's HB_URL)
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("HB_") || name == "APP_ID" {
                command.env_remove(&name);
            }
        }
        command.envs(given);
        let before = counters();
        let running = Running::start(command);
        #[cfg(target_os = "linux")]
        let _kill = KillOnDrop(vec![running.child.id()]);

        eventually("CMD to write its environment", || env_file.exists()).await;
        let seen = std::fs::read_to_string(&env_file).unwrap();
        let expected: String = given.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        assert_eq!(seen, expected, "CMD sees the wrapper's HB_* variables");

        if ping == "true" {
            // the keep-alive's own init and a ping after it
            eventually("the keep-alive to init and ping", || {
                let now = counters();
                now.inits >= before.inits + 2 && now.pings > before.pings
            })
            .await;
        }
        assert_eq!(
            granted("by-env @ 127.0.0.1"),
            Some(Duration::from_millis(expected_promise)),
            "HB_SEND_PING={ping}"
        );
        std::fs::write(&release, "").unwrap();
        let output = tokio::task::spawn_blocking(move || running.finish())
            .await
            .unwrap();
        assert_eq!(output.code, Some(0), "{output:?}");
        assert_eq!(output.stderr, "", "{output:?}");
        assert_eq!(list(&server), "", "done sent after CMD");
        let after = counters();
        assert_eq!(after.dones, before.dones + 1);
        if ping == "false" {
            assert_eq!(
                (after.inits, after.pings),
                (before.inits + 1, before.pings),
                "init only"
            );
        }
        for path in [&env_file, &release] {
            let _ = std::fs::remove_file(path);
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_web_config_protects_its_views_and_the_cli_sends_credentials() {
    const PASSWORD: &str = "s3cret-for-the-cli";
    let dir = temp_path("web-config");
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    // a bad file stops serve at start: one line, its own exit code
    for (name, yaml) in [
        ("broken.yml", "basic_auth_users: ["),
        (
            "unsupported.yml",
            "tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
        ),
        (
            "bad-hash.yml",
            "basic_auth_users:\n  operator: not-a-bcrypt-hash\n",
        ),
        // found when the TLS front is built, after the file parsed
        (
            "no-cert.yml",
            "tls_server_config:\n  cert_file: none.crt\n  key_file: none.key\n",
        ),
    ] {
        std::fs::write(dir.join(name), yaml).unwrap();
        let output = run(heartbeat(&[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--web-config",
            &path(name),
        ]))
        .await;
        assert_failed(&output, 78, "heartbeat serve: --web-config ");
        assert!(!output.stderr.contains("not-a-bcrypt-hash"), "{output:?}");
    }
    let output = run(heartbeat(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--web-config",
        &path("missing.yml"),
    ]))
    .await;
    assert_failed(&output, 78, "heartbeat serve: --web-config ");

    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!("basic_auth_users:\n  operator: '{hash}'\n"),
    )
    .unwrap();
    let running = Running::start(heartbeat(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--web-config",
        &path("web.yml"),
    ]));
    let (url, running) = running.url().await;
    // the reference's paths stay open
    assert_ok(
        &run(against(&url, &["ping", "2000", "--app-id", "kiosk"])).await,
        "3000\n",
    );
    // the JSON API does not
    // without credentials `check --all` cannot see the missing apps: it
    // says so, UNKNOWN, rather than OK
    let denied = run(against(&url, &["check", "--all"])).await;
    assert_eq!(denied.code, Some(3), "{denied:?}");
    assert!(
        denied
            .stdout
            .starts_with("UNKNOWN - the server refused /api/v1/apps (HTTP 401)"),
        "{denied:?}"
    );
    let mut command = against(&url, &["--user", "operator", "check", "--all"]);
    command.env("HB_PASSWORD", PASSWORD);
    let allowed = run(command).await;
    assert_eq!(allowed.code, Some(0), "{allowed:?}");
    assert!(allowed.stdout.starts_with("OK"), "{allowed:?}");
    let mut command = against(&url, &["--user", "operator", "check", "--all", "--json"]);
    command.env("HB_PASSWORD", "wrong");
    let wrong = run(command).await;
    assert_eq!(wrong.code, Some(3), "{wrong:?}");
    assert!(wrong.stdout.contains(r#""state":"unknown""#), "{wrong:?}");
    // `list` reads the reference's /list: open
    let list = run(against(&url, &["list", "--json"])).await;
    assert_eq!(list.code, Some(0), "{list:?}");
    // a user without a password is a usage error, said before any request
    let output = run(against(
        &url,
        &["--user", "operator", "ping", "--app-id", "kiosk"],
    ))
    .await;
    assert_failed(&output, 2, "heartbeat ping: ");
    assert!(output.stderr.contains("HB_PASSWORD"), "{output:?}");
    running.signal("TERM");
    let output = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(!output.stderr.contains(PASSWORD), "{output:?}");
    let _ = std::fs::remove_dir_all(dir);
}

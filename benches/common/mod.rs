//! Shared by the benches: the embedded server in a child process, the bare
//! hyper client used as baseline and load generator, machine load, and
//! criterion's estimates.
//!
//! The server runs in a child process (the bench binary re-executed with
//! `HB_BENCH_CHILD=server`), as a real deployment would, so that its peak RSS
//! can be read from `/proc` and a callgrind run of the bench counts only the
//! client's instructions.
#![allow(dead_code)] // each bench uses its own part of this module

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const CHILD_ENV: &str = "HB_BENCH_CHILD";
const WORKERS_ENV: &str = "HB_BENCH_SERVER_WORKERS";
/// The server child's state file (`ServerProcess::start_with_state`).
const STATE_ENV: &str = "HB_BENCH_STATE";
/// The server child's notification sinks (`ServerProcess::start_with_notify`):
/// space-separated `webhook=URL` and `alertmanager=URL`.
const NOTIFY_ENV: &str = "HB_BENCH_NOTIFY";
/// The server child's `/metrics` mode (`ServerProcess::start_with_per_app_metrics`).
const PER_APP_ENV: &str = "HB_BENCH_PER_APP_METRICS";
/// The server child expects the ids `late-0` to `late-{N-1}` (never dropped).
const EXPECT_ENV: &str = "HB_BENCH_EXPECT_LATE";
/// The server child's `--max-apps` (default: the server's).
const MAX_APPS_ENV: &str = "HB_BENCH_SERVER_MAX_APPS";

/// Call first thing in `main`: when this process is the server child, serve
/// until stdin closes, then exit.
pub fn run_child_if_asked() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let workers = std::env::var(WORKERS_ENV)
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let addr = "127.0.0.1:0".parse().expect("address");
        #[allow(unused_mut)]
        let mut builder = heartbeat_sdk::server::Server::builder(addr);
        // `ServerProcess::start_with_state`: durable state, default interval
        #[cfg(feature = "state")]
        if let Some(path) = std::env::var_os(STATE_ENV) {
            builder = builder.state(path);
        }
        #[cfg(feature = "notify")]
        if let Ok(sinks) = std::env::var(NOTIFY_ENV) {
            for sink in sinks.split_whitespace() {
                match sink.split_once('=') {
                    Some(("webhook", url)) => {
                        let url = url.parse().expect("webhook URL");
                        builder = builder.webhook(url, heartbeat_sdk::server::WebhookFormat::Json);
                    }
                    Some(("alertmanager", url)) => {
                        builder = builder.alertmanager(url.parse().expect("Alertmanager URL"));
                    }
                    _ => panic!("{NOTIFY_ENV}: {sink}"),
                }
            }
        }
        let late: usize = std::env::var(EXPECT_ENV).map_or(0, |n| n.parse().expect("a count"));
        for i in 0..late {
            let spec = heartbeat_sdk::server::Expected::any_host(&format!("late-{i}"));
            builder = builder.expect(spec.expect("an id"));
        }
        if let Ok(n) = std::env::var(MAX_APPS_ENV) {
            builder = builder.max_apps(n.parse().expect("a count"));
        }
        if let Ok(mode) = std::env::var(PER_APP_ENV) {
            builder = builder.per_app_metrics(mode.parse().expect("all, problems or none"));
        }
        let server = builder.start().await.expect("server starts");
        println!("{}", server.local_addr());
        std::io::stdout().flush().expect("stdout");
        // The parent closes our stdin (or dies): stop then.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await
        .expect("stdin watcher");
        server.shutdown().await;
    });
    std::process::exit(0);
}

/// Re-run this bench pinned to CPU 0 (with `taskset`), server child
/// included, unless `HB_BENCH_NO_PIN` is set; returns only in the pinned run
/// or when pinning is not possible.
///
/// Why: on a virtual machine a single request/reply over loopback costs as
/// much in waking an idle vCPU as in work, and that wake-up latency swings
/// 3x with the host's load. On one CPU, client and server hand over by a
/// context switch and the figures measure CPU work: repeatable within a few
/// percent.
pub fn rerun_pinned_to_one_cpu() {
    if std::env::var_os("HB_BENCH_PINNED").is_some()
        || std::env::var_os("HB_BENCH_NO_PIN").is_some()
    {
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let status = Command::new("taskset")
        .arg("-c")
        .arg("0")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env("HB_BENCH_PINNED", "1")
        .status();
    match status {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(error) => {
            println!(
                "[pin] cannot run taskset ({error}): running unpinned, latencies will be noisier"
            )
        }
    }
}

/// Whether this process runs pinned by [`rerun_pinned_to_one_cpu`].
pub fn pinned() -> bool {
    std::env::var_os("HB_BENCH_PINNED").is_some()
}

/// The embedded server running in a child process; killed on drop.
pub struct ServerProcess {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Start the embedded server (tokio multi-thread runtime, 2 workers: one
    /// per core of the reference machine) in a child process.
    pub fn start() -> ServerProcess {
        ServerProcess::spawn(Command::new(std::env::current_exe().expect("current exe")))
    }

    /// [`ServerProcess::start`] with durable state in `path` (feature
    /// `state`; without it the variable is ignored by the child).
    pub fn start_with_state(path: &std::path::Path) -> ServerProcess {
        let mut command = Command::new(std::env::current_exe().expect("current exe"));
        command.env(STATE_ENV, path);
        ServerProcess::spawn(command)
    }

    /// [`ServerProcess::start`] with notification sinks (feature `notify`):
    /// `webhook=URL` and `alertmanager=URL`, space-separated.
    pub fn start_with_notify(sinks: &str) -> ServerProcess {
        let mut command = Command::new(std::env::current_exe().expect("current exe"));
        command.env(NOTIFY_ENV, sinks);
        ServerProcess::spawn(command)
    }

    /// [`ServerProcess::start`] with `--per-app-metrics MODE` (`all`,
    /// `problems`, `none`).
    /// The ids `late-0` to `late-{late-1}` are expected (kept, CRITICAL
    /// once silent).
    /// Room for `max_apps`.
    pub fn start_with_per_app_metrics(mode: &str, late: usize, max_apps: usize) -> ServerProcess {
        let mut command = Command::new(std::env::current_exe().expect("current exe"));
        command
            .env(PER_APP_ENV, mode)
            .env(EXPECT_ENV, late.to_string())
            .env(MAX_APPS_ENV, max_apps.to_string());
        ServerProcess::spawn(command)
    }

    fn spawn(mut command: Command) -> ServerProcess {
        let mut child = command
            .env(CHILD_ENV, "server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the server child");
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("child prints its address");
        let addr = line.trim().parse().expect("a socket address");
        ServerProcess {
            child,
            _stdout: stdout,
            addr,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.child.id(), "VmHWM")
    }

    /// Current resident set size (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.child.id(), "VmRSS")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Closing its stdin asks the child to stop; give it time to shut
        // down cleanly (longer under valgrind).
        drop(self.child.stdin.take());
        for _ in 0..200 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/PID/status` given in kB, e.g. `VmHWM`.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// A bare hyper HTTP/1.1 client on one kept-alive TCP connection: what a GET
/// over loopback costs with no SDK at all.
pub struct BareClient {
    sender: SendRequest<Empty<Bytes>>,
    host: String,
}

impl BareClient {
    /// Connect and handshake; the connection task runs on the current runtime.
    pub async fn connect(addr: SocketAddr) -> BareClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        BareClient {
            sender,
            host: addr.to_string(),
        }
    }

    /// `GET target`; returns the status and the whole body.
    pub async fn get(&mut self, target: &str) -> (u16, Bytes) {
        let request = hyper::Request::get(target)
            .header(hyper::header::HOST, &self.host)
            .body(Empty::new())
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, body)
    }
}

/// Registers apps `0..n`, named by `id`, promising `timeout_ms`, over
/// `loaders` concurrent connections (each ping must answer 200).
pub async fn populate(
    addr: SocketAddr,
    n: usize,
    id: fn(usize) -> String,
    timeout_ms: u64,
    loaders: usize,
) {
    let mut tasks = Vec::new();
    for loader in 0..loaders {
        tasks.push(tokio::spawn(async move {
            let mut client = BareClient::connect(addr).await;
            for i in (loader..n).step_by(loaders) {
                let target = ping_target(&id(i), timeout_ms, i as u64);
                let (status, _) = client.get(&target).await;
                assert_eq!(status, 200, "registering app {i}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("loader");
    }
}

/// A ping target as `HeartbeatClient::ping` sends it, with a unique buster.
pub fn ping_target(app: &str, timeout_ms: u64, seq: u64) -> String {
    format!("/hb_ping?{timeout_ms}&appid={app}&cache_buster={seq}")
}

/// `/proc/loadavg`'s first three fields, to note with each run.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Print the machine load, so every figure is read with it.
pub fn print_load(when: &str) {
    println!("[load] {when}: load average {}", load_average());
}

/// Criterion's output directory, found the way criterion 0.8 finds it:
/// `$CRITERION_HOME`, else `criterion/` in `$CARGO_TARGET_DIR`, else in the
/// target directory `cargo metadata` names (under `cargo bench`), else
/// `target/criterion`.
pub fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let from_metadata = || {
        let output = Command::new(std::env::var_os("CARGO")?)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()?;
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        Some(PathBuf::from(metadata.get("target_directory")?.as_str()?))
    };
    from_metadata()
        .map(|target| target.join("criterion"))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Criterion's latest estimate for `group/function`, in nanoseconds per
/// iteration: `(median, mean)`.
pub fn estimate_ns(group: &str, function: &str) -> Option<(f64, f64)> {
    let path = criterion_home()
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let point = |name: &str| json.get(name)?.get("point_estimate")?.as_f64();
    Some((point("median")?, point("mean")?))
}

//! Notifications and history at the promised scale (issue 19). Plain
//! `main` (no criterion): it prints its figures.
//!
//! 1. **Pings with sinks configured.** Two server processes tracking
//!    100 000 apps each: one plain, one with two webhooks and an
//!    Alertmanager. Sixteen kept-alive connections ping as fast as they
//!    can, in alternating 1 s windows (plain, notified, plain, ...) so the
//!    machine's other load weighs on both alike. Target: pings/s with the
//!    sinks ≥ 0.9× without.
//! 2. **10 000 apps CRITICAL at once.** A server with the real
//!    Alertmanager (Debian's `prometheus-alertmanager`; skipped without
//!    it): 10 000 apps registered within a fraction of a second with a
//!    500 ms timeout (granted 1.5 s, CRITICAL 7.5 s after their init) go
//!    silent. Target: every alert in Alertmanager's `GET /api/v2/alerts`
//!    within 10 s of the last crossing; the server's RSS growth reported.
//! 3. **A month of a flapping fleet's history.** 100 000 apps × 30 days ×
//!    `HB_BENCH_CHANGES_PER_DAY` state changes (default 4) written through
//!    the state writer into the `events` table; the file's size, the write
//!    time, and what a restart reads back (`load_history`: time, entries).
//!
//! `cargo bench --bench notify --features notify,state`

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use heartbeat_sdk::monitor::{HistoryEntry, HISTORY_CAP, HISTORY_PER_APP};
use heartbeat_sdk::protocol::notification::Change;
use heartbeat_sdk::server::{StateStore, StateWriter, DEFAULT_COMMIT_INTERVAL};
use heartbeat_sdk::State;
use tokio::runtime::Runtime;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::{BareClient, ServerProcess};

const APPS: usize = 100_000;
const TIMEOUT_MS: u64 = 600_000;
const LOADERS: usize = 8;
const CONNECTIONS: usize = 16;
const WINDOW: Duration = Duration::from_secs(1);
const ROUNDS: usize = 8;
const CRITICAL_APPS: usize = 10_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn id(i: usize) -> String {
    format!("kiosk-{i:06}")
}

/// Registers apps `0..n` with `timeout_ms` over `LOADERS` connections.
async fn populate(addr: SocketAddr, n: usize, timeout_ms: u64) {
    common::populate(addr, n, id, timeout_ms, LOADERS).await;
}

/// Pings answered within `WINDOW` over `CONNECTIONS` connections.
async fn pings_in_a_window(addr: SocketAddr, round: usize) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + WINDOW;
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let mut client = BareClient::connect(addr).await;
            let mut i = c + round * 7919;
            while Instant::now() < deadline {
                let app = id(i % APPS);
                let (status, _) = client
                    .get(&common::ping_target(&app, TIMEOUT_MS, i as u64))
                    .await;
                assert_eq!(status, 200);
                done.fetch_add(1, Ordering::Relaxed);
                i += CONNECTIONS;
            }
        }));
    }
    for task in tasks {
        task.await.expect("pinger");
    }
    done.load(Ordering::Relaxed)
}

/// Waits until no notification is pending on the server at `addr`.
async fn drain(addr: SocketAddr) -> Instant {
    let mut client = BareClient::connect(addr).await;
    loop {
        let (_, body) = client.get("/metrics").await;
        let text = String::from_utf8_lossy(&body);
        let pending: f64 = text
            .lines()
            .filter(|l| l.starts_with("heartbeat_notifications_pending{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        if pending == 0.0 {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A webhook receiver that takes everything.
async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// The real Alertmanager on a free loopback port, killed when dropped.
struct Alertmanager {
    url: String,
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alertmanager(rt: &Runtime) -> Option<Alertmanager> {
    let binary = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let dir = std::env::temp_dir().join(format!("hb-bench-am-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).ok()?;
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: none\n  group_wait: 0s\nreceivers:\n  - name: none\n",
    )
    .ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let am = Alertmanager {
        url: format!("http://127.0.0.1:{port}"),
        child,
        dir,
    };
    let ready = format!("{}/-/ready", am.url);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let up = rt.block_on(async {
            reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
        });
        if up {
            return Some(am);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn pings_with_sinks(rt: &Runtime, am: Option<&Alertmanager>) {
    println!("\n== 1. pings/s at {APPS} apps, {CONNECTIONS} connections, with and without sinks");
    let (hook_a, hook_b, stub) =
        rt.block_on(async { (receiver().await, receiver().await, receiver().await) });
    let am_url = am.map_or_else(|| stub.uri(), |am| am.url.clone());
    if am.is_none() {
        println!("(no prometheus-alertmanager: a stub receiver stands in for it)");
    }
    let plain = ServerProcess::start();
    let notified = ServerProcess::start_with_notify(&format!(
        "webhook={}/a webhook={}/b alertmanager={am_url}",
        hook_a.uri(),
        hook_b.uri()
    ));
    rt.block_on(async {
        populate(plain.addr, APPS, TIMEOUT_MS).await;
        let registered = Instant::now();
        populate(notified.addr, APPS, TIMEOUT_MS).await;
        // 100 000 `created` notifications per webhook: measure in steady
        // state, once they are delivered
        let drained = drain(notified.addr).await;
        println!(
            "the {} `created` notifications of the registration delivered {:.1} s after it began",
            2 * APPS,
            (drained - registered).as_secs_f64()
        );
    });
    common::print_load("before the windows");
    let (mut without, mut with) = (0, 0);
    for round in 0..ROUNDS {
        let a = rt.block_on(pings_in_a_window(plain.addr, round));
        let b = rt.block_on(pings_in_a_window(notified.addr, round));
        println!("round {round}: without {a} pings/s, with {b} pings/s");
        without += a;
        with += b;
    }
    common::print_load("after the windows");
    let (without, with) = (without / ROUNDS as u64, with / ROUNDS as u64);
    println!(
        "RESULT pings/s: without sinks {without}, with 2 webhooks + Alertmanager {with}: {:.3}× (target ≥ 0.9×)",
        with as f64 / without as f64
    );
    println!(
        "RSS: without {}, with {}",
        mib(plain.rss_kib()),
        mib(notified.rss_kib())
    );
}

fn ten_thousand_critical(rt: &Runtime, am: &Alertmanager) {
    println!("\n== 2. {CRITICAL_APPS} apps CRITICAL at once, real Alertmanager");
    let server = ServerProcess::start_with_notify(&format!("alertmanager={}", am.url));
    let rss_before = server.rss_kib();
    let started = Instant::now();
    rt.block_on(populate(server.addr, CRITICAL_APPS, 500));
    let registered = Instant::now();
    println!(
        "registered in {:.2} s; RSS {}",
        (registered - started).as_secs_f64(),
        mib(server.rss_kib())
    );
    // granted 1 500 ms: CRITICAL at 5 × 1.5 s after each init
    let first_crossing = started + Duration::from_millis(7_500);
    let last_crossing = registered + Duration::from_millis(7_500);
    let alerts_url = format!("{}/api/v2/alerts?silenced=false&inhibited=false", am.url);
    let client = reqwest::Client::new();
    let deadline = last_crossing + Duration::from_secs(60);
    let mut seen = 0;
    while Instant::now() < deadline {
        let body = rt.block_on(async {
            let reply = client.get(&alerts_url).send().await.ok()?;
            reply.text().await.ok()
        });
        if let Some(body) = body {
            let alerts: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
            seen = alerts
                .iter()
                .filter(|a| a["labels"]["alertname"] == "HeartbeatAppDown")
                .count();
            if seen >= CRITICAL_APPS {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let all_in = Instant::now();
    let after = |t: Instant| all_in.saturating_duration_since(t).as_secs_f64();
    println!(
        "RESULT {seen} of {CRITICAL_APPS} alerts in Alertmanager {:.2} s after the last crossing ({:.2} s after the first; target ≤ 10 s)",
        after(last_crossing),
        after(first_crossing)
    );
    println!(
        "RSS: {} before registering, {} after, peak {}",
        mib(rss_before),
        mib(server.rss_kib()),
        mib(server.peak_rss_kib())
    );
}

fn a_month_of_history() {
    let per_day: usize = std::env::var("HB_BENCH_CHANGES_PER_DAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let days = 30;
    let total = APPS * days * per_day;
    println!("\n== 3. history: {APPS} apps × {days} days × {per_day} changes = {total} entries");
    let dir = std::env::temp_dir().join(format!("hb-bench-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("state.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let apps: Vec<Arc<str>> = (0..APPS).map(|i| Arc::from(id(i).as_str())).collect();
    let host: Arc<str> = Arc::from("10.0.0.5");
    let now = SystemTime::now();
    let span = Duration::from_secs(days as u64 * 24 * 3600);
    let step = span / (days * per_day) as u32;
    let started = Instant::now();
    rt.block_on(async {
        let store = StateStore::open(&path).expect("state file");
        let (sink, writer) = StateWriter::spawn(store, DEFAULT_COMMIT_INTERVAL);
        // the fleet flaps: OK → WARNING → CRITICAL → recovered, round and round
        let cycle = [
            (Change::Warning, State::Ok, State::Warning),
            (Change::Critical, State::Warning, State::Critical),
            (Change::Recovered, State::Critical, State::Ok),
        ];
        let mut sent = 0;
        for n in 0..days * per_day {
            let at = now - span + step * n as u32;
            let (change, from, to) = cycle[n % cycle.len()];
            for app in &apps {
                let mut entry = HistoryEntry::new("", change, at).states(Some(from), Some(to));
                entry.app = Arc::clone(app);
                entry.host = Some(Arc::clone(&host));
                sink.history_add(entry);
            }
            sent += APPS;
            if sent % 1_000_000 == 0 || n + 1 == days * per_day {
                sink.flush().await.expect("commit");
            }
        }
        writer.shutdown().await.expect("final commit");
    });
    let written = started.elapsed();
    let size: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "RESULT wrote {total} entries in {:.1} s ({:.0} entries/s); state file {:.1} MiB ({:.0} bytes per entry)",
        written.as_secs_f64(),
        total as f64 / written.as_secs_f64(),
        size as f64 / (1024.0 * 1024.0),
        size as f64 / total as f64
    );
    let rss = || common::proc_status_kib(std::process::id(), "VmRSS");
    let before = rss();
    let started = Instant::now();
    let store = StateStore::open(&path).expect("reopen");
    let history = store
        .load_history(HISTORY_PER_APP, HISTORY_CAP)
        .expect("load");
    let loaded = started.elapsed();
    println!(
        "RESULT a restart reads back {} entries (the newest {HISTORY_CAP} at most) in {:.2} s; RSS {} → {}",
        history.len(),
        loaded.as_secs_f64(),
        mib(before),
        mib(rss())
    );
    drop(history);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    common::run_child_if_asked();
    common::print_load("start");
    let rt = runtime();
    let am = alertmanager(&rt);
    let only = std::env::var("HB_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only.contains('1') {
        pings_with_sinks(&rt, am.as_ref());
    }
    if only.is_empty() || only.contains('2') {
        match &am {
            Some(am) => ten_thousand_critical(&rt, am),
            None => println!("\n== 2. skipped: no prometheus-alertmanager"),
        }
    }
    if only.is_empty() || only.contains('3') {
        a_month_of_history();
    }
}

//! The embedded server end to end: pings per second with 1, 16 and 256
//! concurrent kept-alive clients, and the server process's peak RSS.
//!
//! The server runs in its own process (tokio multi-thread runtime, 2
//! workers); the load generator is this process: bare hyper HTTP/1.1
//! clients, one kept-alive connection each, on one tokio thread, each client
//! sending its next ping as soon as the last one is answered. Criterion
//! reports `thrpt` in elements per second: one element is one ping.
//!
//! With feature `state`, a second server runs with durable state
//! (`Server::state`, default 1 s commit interval) and its 16-client rate is
//! printed beside the one without (issue 11: at least 0.8x), followed by
//! the start-up time with 100 000 stored applications (under 1 s).
//!
//! `cargo bench --features server --bench server`
//! `cargo bench --features state --bench server`

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use tokio::runtime::Runtime;

use common::{BareClient, ServerProcess};

const GROUP: &str = "server_pings";
const CLIENTS: [usize; 3] = [1, 16, 256];
const TIMEOUT_MS: u64 = 60_000;

/// One load-generating client: its connection and its app id.
struct Pinger {
    client: BareClient,
    app: String,
    seq: u64,
}

impl Pinger {
    async fn pings(mut self, count: u64) -> Pinger {
        for _ in 0..count {
            self.seq += 1;
            let target = common::ping_target(&self.app, TIMEOUT_MS, self.seq);
            let (status, _) = self.client.get(&target).await;
            assert_eq!(status, 200);
        }
        self
    }
}

async fn connect(server: &ServerProcess, clients: usize) -> Vec<Pinger> {
    let mut pingers = Vec::with_capacity(clients);
    for i in 0..clients {
        let pinger = Pinger {
            client: BareClient::connect(server.addr).await,
            app: format!("load-{i:03}"),
            seq: 0,
        };
        pingers.push(pinger.pings(1).await);
    }
    pingers
}

/// `total` pings spread over every pinger, all running at once.
async fn run(pingers: Vec<Pinger>, total: u64) -> (Vec<Pinger>, Duration) {
    let n = pingers.len() as u64;
    let start = Instant::now();
    let tasks: Vec<_> = pingers
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let share = total / n + u64::from((i as u64) < total % n);
            tokio::spawn(p.pings(share))
        })
        .collect();
    let mut back = Vec::with_capacity(tasks.len());
    for task in tasks {
        back.push(task.await.expect("pinger"));
    }
    (back, start.elapsed())
}

fn bench_server(c: &mut Criterion, rt: &Runtime, server: &ServerProcess) {
    let mut group = c.benchmark_group(GROUP);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for clients in CLIENTS {
        let pool = Mutex::new(rt.block_on(connect(server, clients)));
        group.bench_with_input(BenchmarkId::new("clients", clients), &clients, |b, _| {
            b.to_async(rt).iter_custom(|iters| {
                let pool = &pool;
                async move {
                    let pingers = std::mem::take(&mut *pool.lock().expect("pool"));
                    let (pingers, elapsed) = run(pingers, iters).await;
                    *pool.lock().expect("pool") = pingers;
                    elapsed
                }
            });
        });
        println!(
            "[rss] server process after the {clients}-client run: VmRSS {} KiB, peak VmHWM {} KiB",
            server.rss_kib().unwrap_or(0),
            server.peak_rss_kib().unwrap_or(0)
        );
    }
    group.finish();
}

/// Peak RSS of a fresh server process that served only 16 clients for 2 s.
fn peak_rss_under_16_clients(rt: &Runtime) -> (u64, u64, f64) {
    let server = ServerProcess::start();
    let idle = server.rss_kib().unwrap_or(0);
    let pings = rt.block_on(async {
        let mut pingers = connect(&server, 16).await;
        let start = Instant::now();
        let mut pings = 0;
        while start.elapsed() < Duration::from_secs(2) {
            let (back, _) = run(pingers, 16 * 200).await;
            pingers = back;
            pings += 16 * 200;
        }
        pings as f64 / start.elapsed().as_secs_f64()
    });
    (idle, server.peak_rss_kib().unwrap_or(0), pings)
}

fn main() {
    common::run_child_if_asked();
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = ServerProcess::start();
    common::print_load("server: start");
    bench_server(&mut c, &rt, &server);
    common::print_load("server: after criterion");
    drop(server);

    println!("\nserver: pings per second (criterion medians)");
    for clients in CLIENTS {
        if let Some((median, _)) = common::estimate_ns(GROUP, &format!("clients/{clients}")) {
            println!("  {clients:>3} clients: {:>9.0} pings/s", 1e9 / median);
        }
    }
    let (idle, peak, rate) = peak_rss_under_16_clients(&rt);
    println!(
        "server: fresh process, 16 clients for 2 s at {rate:.0} pings/s: \
         RSS idle {idle} KiB, peak (VmHWM) {peak} KiB"
    );
    #[cfg(feature = "state")]
    state::compare(&mut c, &rt);
    common::print_load("server: end");
    c.final_summary();
}

#[cfg(feature = "state")]
mod state {
    use super::*;
    use heartbeat_sdk::server::{Server, StateStore, StateWriter, StoredApp};
    use std::time::SystemTime;

    const STATE_GROUP: &str = "server_pings_state";
    const STORED: usize = 100_000;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hb-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// 16 clients against a server with `--state`, then the ratio to the
    /// same run's figure without it.
    pub fn compare(c: &mut Criterion, rt: &Runtime) {
        let dir = temp_dir("state-pings");
        let server = ServerProcess::start_with_state(&dir.join("state.db"));
        let mut group = c.benchmark_group(STATE_GROUP);
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(1));
        let pool = Mutex::new(rt.block_on(connect(&server, 16)));
        group.bench_with_input(BenchmarkId::new("clients", 16), &16, |b, _| {
            b.to_async(rt).iter_custom(|iters| {
                let pool = &pool;
                async move {
                    let pingers = std::mem::take(&mut *pool.lock().expect("pool"));
                    let (pingers, elapsed) = run(pingers, iters).await;
                    *pool.lock().expect("pool") = pingers;
                    elapsed
                }
            });
        });
        group.finish();
        drop(server);
        let without = common::estimate_ns(GROUP, "clients/16").map(|(m, _)| 1e9 / m);
        let with = common::estimate_ns(STATE_GROUP, "clients/16").map(|(m, _)| 1e9 / m);
        if let (Some(without), Some(with)) = (without, with) {
            println!(
                "server: 16 clients, --state {with:.0} pings/s vs {without:.0} without: {:.2}x",
                with / without
            );
        }
        rt.block_on(restart(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Start-up (open, load, restore, bind) with 100 000 stored apps.
    async fn restart(dir: &std::path::Path) {
        let path = dir.join("restart.db");
        let (sink, writer) = StateWriter::spawn(
            StateStore::open(&path).expect("state"),
            Duration::from_secs(3600),
        );
        for i in 0..STORED {
            let app = format!("kiosk-{i:06}");
            let host = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            sink.upsert(StoredApp {
                key: format!("{app} @ {host}"),
                app,
                host,
                granted: Duration::from_millis(61_000),
                last_seen: SystemTime::now(),
                failed: None,
            });
        }
        writer.shutdown().await.expect("state written");
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let server = Server::builder("127.0.0.1:0".parse().expect("address"))
                .max_apps(STORED)
                .state(&path)
                .start()
                .await
                .expect("server starts");
            times.push(start.elapsed());
            let restored = server.registry().with_registry(|r, _| r.len());
            assert_eq!(restored, STORED);
            server.shutdown().await;
        }
        times.sort();
        println!(
            "server: start with {STORED} stored apps (open, load, restore, bind): median {:.0} ms, max {:.0} ms of 5",
            times[2].as_secs_f64() * 1e3,
            times[4].as_secs_f64() * 1e3
        );
    }
}

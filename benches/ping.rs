//! One full `client.ping()` (encode, send, parse) through every transport,
//! against a bare hyper client sending the identical GET on a kept-alive
//! loopback connection to the same embedded server (the baseline).
//!
//! `cargo bench --all-features --bench ping`
//!
//! The bench re-runs itself pinned to CPU 0 with `taskset` (server child
//! included), so that it measures the CPU work of a round trip rather than
//! the virtual machine's vCPU wake-up latency; `HB_BENCH_NO_PIN=1` runs it
//! unpinned. See `common::rerun_pinned_to_one_cpu`.
//!
//! After criterion's figures it prints each transport's ratio to the
//! baseline twice: from criterion's medians, and from an interleaved run
//! (baseline and transports alternated in short batches, so that the load
//! of other processes hits them alike).

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use heartbeat_sdk::testing::MockTransport;
use heartbeat_sdk::transport::ReqwestTransport;
use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
use tokio::runtime::Runtime;

use common::{BareClient, ServerProcess};

const GROUP: &str = "ping";
const BASELINE: &str = "hyper_baseline";
const TIMEOUT: Duration = Duration::from_secs(60);
const TIMEOUT_MS: u64 = 60_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn sdk_client(transport: impl heartbeat_sdk::Transport + 'static, url: &str) -> HeartbeatClient {
    HeartbeatClient::builder_with_transport(transport)
        .url(url)
        .app_id("bench")
        .build()
        .expect("client")
}

async fn ping(client: &HeartbeatClient) {
    let granted = client
        .ping(TIMEOUT, ErrorPolicy::Raise)
        .await
        .expect("ping");
    assert_eq!(granted, Duration::from_millis(TIMEOUT_MS + 1000));
}

/// Sends the same GET as `HeartbeatClient::ping` (path, timeout, appid and a
/// fresh cache buster), with no SDK in between.
async fn bare_ping(client: &mut BareClient) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let target = common::ping_target("bench", TIMEOUT_MS, SEQ.fetch_add(1, Ordering::Relaxed));
    let (status, body) = client.get(&target).await;
    assert_eq!(status, 200);
    black_box(body);
}

/// The transports under test, each with a warmed-up kept-alive connection.
struct Contenders {
    mock: (HeartbeatClient, MockTransport),
    reqwest: HeartbeatClient,
    #[cfg(feature = "surf")]
    surf: HeartbeatClient,
    bare: BareClient,
}

impl Contenders {
    async fn new(server: &ServerProcess) -> Contenders {
        let mock = MockTransport::new();
        let url = server.url();
        let contenders = Contenders {
            mock: (sdk_client(mock.clone(), &url), mock),
            reqwest: sdk_client(ReqwestTransport::new().expect("reqwest"), &url),
            #[cfg(feature = "surf")]
            surf: sdk_client(
                heartbeat_sdk::transport::SurfTransport::new().expect("surf"),
                &url,
            ),
            bare: BareClient::connect(server.addr).await,
        };
        ping(&contenders.mock.0).await;
        ping(&contenders.reqwest).await;
        #[cfg(feature = "surf")]
        ping(&contenders.surf).await;
        contenders
    }

    fn names() -> Vec<&'static str> {
        let mut names = vec!["mock", "reqwest"];
        if cfg!(feature = "surf") {
            names.push("surf");
        }
        names
    }

    /// `count` pings through `name`; returns the time they took.
    async fn run(&mut self, name: &str, count: u64) -> Duration {
        let start = Instant::now();
        match name {
            "mock" => {
                for _ in 0..count {
                    ping(&self.mock.0).await;
                }
            }
            "reqwest" => {
                for _ in 0..count {
                    ping(&self.reqwest).await;
                }
            }
            #[cfg(feature = "surf")]
            "surf" => {
                for _ in 0..count {
                    ping(&self.surf).await;
                }
            }
            _ => {
                for _ in 0..count {
                    bare_ping(&mut self.bare).await;
                }
            }
        }
        let elapsed = start.elapsed();
        // The mock records every request; forget them outside the timing.
        self.mock.1.clear_requests();
        elapsed
    }
}

fn bench_ping(c: &mut Criterion, rt: &Runtime, server: &ServerProcess) {
    let contenders = tokio::sync::Mutex::new(rt.block_on(Contenders::new(server)));
    let mut group = c.benchmark_group(GROUP);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for name in [BASELINE].into_iter().chain(Contenders::names()) {
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let contenders = &contenders;
                async move { contenders.lock().await.run(name, iters).await }
            });
        });
    }
    group.finish();
}

/// Each transport alternated with the baseline in short batches; per
/// transport, the median of the per-batch ratios.
fn interleaved_ratios(rt: &Runtime, server: &ServerProcess) -> Vec<(&'static str, Duration, f64)> {
    const ROUNDS: usize = 15;
    const BATCH: u64 = 300;
    rt.block_on(async {
        let mut contenders = Contenders::new(server).await;
        let mut out = Vec::new();
        for name in Contenders::names() {
            let mut ratios = Vec::with_capacity(ROUNDS);
            let mut times = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let base = contenders.run(BASELINE, BATCH).await / BATCH as u32;
                let this = contenders.run(name, BATCH).await / BATCH as u32;
                ratios.push(this.as_secs_f64() / base.as_secs_f64());
                times.push(this);
            }
            ratios.sort_by(f64::total_cmp);
            times.sort();
            out.push((name, times[ROUNDS / 2], ratios[ROUNDS / 2]));
        }
        out
    })
}

/// `HB_BENCH_PROFILE=reqwest:10000`: which transport to run alone, how often.
fn profile_request() -> Option<(String, u64)> {
    let spec = std::env::var("HB_BENCH_PROFILE").ok()?;
    let (name, count) = spec.split_once(':')?;
    Some((name.to_owned(), count.parse().ok()?))
}

fn main() {
    common::run_child_if_asked();
    let profile = profile_request();
    if profile.is_none() {
        common::rerun_pinned_to_one_cpu();
    }
    let mut c = Criterion::default().configure_from_args();
    let rt = runtime();
    let server = ServerProcess::start();
    if let Some((name, count)) = profile {
        // For `valgrind --tool=callgrind`: only `count` pings, no criterion.
        rt.block_on(async { Contenders::new(&server).await.run(&name, count).await });
        return;
    }
    println!(
        "[pin] client and server {}",
        if common::pinned() {
            "pinned to CPU 0 (HB_BENCH_NO_PIN=1 to run them unpinned)"
        } else {
            "unpinned"
        }
    );
    common::print_load("ping: start");
    bench_ping(&mut c, &rt, &server);
    common::print_load("ping: after criterion");

    println!("\nping: ratio to the bare hyper baseline (criterion medians)");
    match common::estimate_ns(GROUP, BASELINE) {
        Some((base, _)) => {
            println!("  {BASELINE:<15} {:>10.2} µs   1.00x", base / 1000.0);
            for name in Contenders::names() {
                if let Some((median, _)) = common::estimate_ns(GROUP, name) {
                    println!(
                        "  {name:<15} {:>10.2} µs   {:.2}x",
                        median / 1000.0,
                        median / base
                    );
                }
            }
        }
        None => println!("  (no baseline estimate: was it filtered out?)"),
    }
    println!("ping: ratio to the bare hyper baseline (interleaved batches, median)");
    for (name, time, ratio) in interleaved_ratios(&rt, &server) {
        println!(
            "  {name:<15} {:>10.2} µs   {ratio:.2}x",
            time.as_secs_f64() * 1e6
        );
    }
    common::print_load("ping: end");
    c.final_summary();
}

//! Scrapes and slow readers (issue 10, item 6): whole-registry replies
//! must not stall pings, and clients that do not read them must not pin
//! memory.
//!
//! 1. **Ping latency under scrapes.** A server process tracking 100 000
//!    apps (`kiosk-000042`-style ids). One client pings on a kept-alive
//!    connection, one ping at a time, and the latency of each is recorded:
//!    with the server otherwise idle and while a second client (on its own
//!    thread) scrapes `/metrics` back to back, in alternating windows so
//!    that other load on the machine weighs on both alike. Target: p99
//!    under scrapes within 2× the idle p99.
//! 2. **Stalled readers.** A fresh server process tracking 100 000 apps
//!    with 1 KiB ids (`/metrics` is then about 218 MB). Ten clients send
//!    `GET /metrics` and never read; the server's RSS is sampled until it
//!    settles (well within the 30 s write timeout). Target: growth under
//!    100 MiB. Ping latency is measured again while they stall.
//!
//! 3. **Periodic scrapes** (issue 20, with `HB_BENCH_PERIODIC=1` instead
//!    of 1 and 2): 16 connections ping while Prometheus-style scrapes come
//!    every `HB_BENCH_SCRAPE_EVERY` s (default 1) in alternating windows of
//!    `HB_BENCH_WINDOW` s (default 3), `HB_BENCH_APPS` apps (default
//!    100 000), with `--per-app-metrics all` and `problems`.
//!
//! Plain `main` (no criterion): it prints its figures.
//!
//! `cargo bench --features server --bench scrape`

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use common::{BareClient, ServerProcess};

const APPS: usize = 100_000;
const TIMEOUT_MS: u64 = 600_000;
/// Concurrent connections used to register the apps.
const LOADERS: usize = 8;
/// How long ping latency is sampled in each condition.
const SPAN: Duration = Duration::from_secs(4);
const STALLED: usize = 10;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Registers `APPS` apps named by `id`, over `LOADERS` connections.
async fn populate(server: &ServerProcess, id: fn(usize) -> String) {
    common::populate(server.addr, APPS, id, TIMEOUT_MS, LOADERS).await;
}

fn short_id(i: usize) -> String {
    format!("kiosk-{i:06}")
}

/// 1 KiB: the longest id the server accepts.
fn long_id(i: usize) -> String {
    let mut id = format!("kiosk-{i:06}-");
    id.extend(std::iter::repeat_n('x', 1024 - id.len()));
    id
}

/// Latencies of pings of an existing app, one at a time, for `span`,
/// sorted.
async fn ping_latencies(client: &mut BareClient, app: &str, span: Duration) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let since = Instant::now();
    while since.elapsed() < span {
        let target = common::ping_target(app, TIMEOUT_MS, latencies.len() as u64);
        let start = Instant::now();
        let (status, _) = client.get(&target).await;
        latencies.push(start.elapsed());
        assert_eq!(status, 200);
    }
    latencies.sort_unstable();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(sorted: &[Duration]) -> String {
    format!(
        "p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  max {:>7.3} ms  ({} pings)",
        percentile(sorted, 0.50).as_secs_f64() * 1e3,
        percentile(sorted, 0.99).as_secs_f64() * 1e3,
        percentile(sorted, 0.999).as_secs_f64() * 1e3,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        sorted.len()
    )
}

/// The scraper: on its own thread and runtime, scraping `/metrics` back
/// to back while `on` is set.
struct Scraper {
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Scrapes completed, and the bytes of the last one.
    scrapes: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    /// Whether a scrape is in flight.
    busy: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Duration>,
}

impl Scraper {
    fn start(server: &ServerProcess) -> Scraper {
        let flag = || Arc::new(AtomicBool::new(false));
        let (on, stop, busy) = (flag(), flag(), flag());
        let (scrapes, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let addr = server.addr;
        let thread = {
            let (on, stop, busy) = (on.clone(), stop.clone(), busy.clone());
            let (scrapes, bytes) = (scrapes.clone(), bytes.clone());
            std::thread::spawn(move || {
                runtime().block_on(async {
                    let mut client = BareClient::connect(addr).await;
                    let mut scraping = Duration::ZERO;
                    while !stop.load(Ordering::SeqCst) {
                        if !on.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                        busy.store(true, Ordering::SeqCst);
                        let start = Instant::now();
                        let (status, body) = client.get("/metrics").await;
                        scraping += start.elapsed();
                        assert_eq!(status, 200);
                        bytes.store(body.len() as u64, Ordering::SeqCst);
                        scrapes.fetch_add(1, Ordering::SeqCst);
                        busy.store(false, Ordering::SeqCst);
                    }
                    scraping
                })
            })
        };
        Scraper {
            on,
            stop,
            scrapes,
            bytes,
            busy,
            thread,
        }
    }

    /// Turn scraping on or off, and wait until it is.
    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
        while self.busy.load(Ordering::SeqCst) != on {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Ping latency with the server idle and while `/metrics` is scraped back
/// to back, in alternating windows so that the machine's load (other
/// processes) weighs on both alike.
fn ping_latency_under_scrapes() {
    const WINDOWS: u32 = 8;
    let rt = runtime();
    let server = ServerProcess::start();
    rt.block_on(populate(&server, short_id));
    let app = short_id(APPS / 2);
    let mut pinger = rt.block_on(BareClient::connect(server.addr));
    rt.block_on(ping_latencies(&mut pinger, &app, SPAN / 4)); // warm-up
    let scraper = Scraper::start(&server);
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for _ in 0..WINDOWS {
        scraper.set(false);
        idle.extend(rt.block_on(ping_latencies(&mut pinger, &app, SPAN / WINDOWS)));
        scraper.set(true);
        busy.extend(rt.block_on(ping_latencies(&mut pinger, &app, SPAN / WINDOWS)));
    }
    scraper.stop.store(true, Ordering::SeqCst);
    let scraping = scraper.thread.join().expect("scraper");
    let count = scraper.scrapes.load(Ordering::SeqCst);
    idle.sort_unstable();
    busy.sort_unstable();

    let p99 = |l: &[Duration]| percentile(l, 0.99).as_secs_f64();
    println!(
        "scrape: ping latency at {APPS} apps, {} s of pings in each condition ({WINDOWS} alternating windows)",
        SPAN.as_secs()
    );
    println!("  idle:                          {}", summary(&idle));
    println!("  /metrics scraped back to back: {}", summary(&busy));
    println!(
        "  p99 under scrapes / idle p99: {:.2}x (target <= 2x); {count} scrapes of {:.1} MB, {:.0} ms each",
        p99(&busy) / p99(&idle),
        scraper.bytes.load(Ordering::SeqCst) as f64 / 1e6,
        scraping.as_secs_f64() * 1e3 / count.max(1) as f64
    );
}

fn rss_with_stalled_readers() {
    let rt = runtime();
    let server = ServerProcess::start();
    let loaded = Instant::now();
    rt.block_on(populate(&server, long_id));
    let app = long_id(APPS / 2);
    let mut pinger = rt.block_on(BareClient::connect(server.addr));
    let idle = rt.block_on(ping_latencies(&mut pinger, &app, SPAN / 2));
    let before = server.rss_kib().unwrap_or(0);
    println!(
        "\nscrape: {APPS} apps with 1 KiB ids registered in {:.1} s; server RSS {:.1} MiB",
        loaded.elapsed().as_secs_f64(),
        before as f64 / 1024.0
    );

    // ten clients ask for /metrics and never read
    let stalled: Vec<TcpStream> = rt.block_on(async {
        let mut streams = Vec::new();
        for _ in 0..STALLED {
            let mut stream = TcpStream::connect(server.addr).await.expect("connect");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
                .await
                .expect("request");
            streams.push(stream);
        }
        streams
    });
    // sample until the RSS has not grown for 2 s (at most 20 s: the
    // write timeout is 30 s)
    let since = Instant::now();
    let (mut peak, mut last_growth) = (before, Instant::now());
    while since.elapsed() < Duration::from_secs(20)
        && last_growth.elapsed() < Duration::from_secs(2)
    {
        std::thread::sleep(Duration::from_millis(100));
        let rss = server.rss_kib().unwrap_or(0);
        if rss > peak + 256 {
            last_growth = Instant::now();
        }
        peak = peak.max(rss);
    }
    let busy = rt.block_on(ping_latencies(&mut pinger, &app, SPAN / 2));
    let after = server.rss_kib().unwrap_or(0);
    peak = peak.max(after);
    println!(
        "  {STALLED} stalled readers of /metrics: server RSS grew by {:.1} MiB (peak {:.1} MiB; target growth < 100 MiB)",
        (peak - before) as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!("  ping latency, idle:           {}", summary(&idle));
    println!("  ping latency, while stalled:  {}", summary(&busy));
    drop(stalled);
}

/// Pings over `CONNECTIONS` kept-alive connections at once, each its own
/// app, for `span`: every latency, sorted.
/// (apps spread over the first half of `apps`).
async fn concurrent_latencies(
    server: &ServerProcess,
    apps: usize,
    span: Duration,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut client = BareClient::connect(addr).await;
            ping_latencies(&mut client, &short_id(c * (apps / CONNECTIONS / 2)), span).await
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("pinger"));
    }
    all.sort_unstable();
    all
}

/// Connections pinging at once in [`periodic_scrapes`] (issue 20's bench).
const CONNECTIONS: usize = 16;

/// Issue 20's periodic scrapes: `HB_BENCH_APPS` apps (default 100 000),
/// a scrape every `HB_BENCH_SCRAPE_EVERY` seconds (default 1), each
/// window `HB_BENCH_WINDOW` seconds (default 3).
struct Periodic {
    apps: usize,
    every: Duration,
    window: Duration,
}

impl Periodic {
    fn from_env() -> Periodic {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .map_or(default, |v| v.parse().expect("a whole number"))
        };
        Periodic {
            apps: var("HB_BENCH_APPS", APPS as u64) as usize,
            every: Duration::from_secs(var("HB_BENCH_SCRAPE_EVERY", 1)),
            window: Duration::from_secs(var("HB_BENCH_WINDOW", 3)),
        }
    }
}

/// Issue 20: p99 of pings over 16 connections with the server idle and
/// while Prometheus-style scrapes come periodically (once a second unless
/// [`Periodic`] says otherwise), alternating windows, with the server in
/// `mode` (`--per-app-metrics`).
fn periodic_scrapes(mode: &str, periodic: &Periodic) {
    const WINDOWS: u32 = 4;
    let (apps, every, window) = (periodic.apps, periodic.every, periodic.window);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // one in a thousand is expected and silent: CRITICAL (kept) within
    // seconds, so `problems` has series
    let late = apps / 1000;
    let server = ServerProcess::start_with_per_app_metrics(mode, late, apps);
    // (the late ones are part of the fleet)
    rt.block_on(common::populate(
        server.addr,
        apps - late,
        short_id,
        TIMEOUT_MS,
        LOADERS,
    ));
    rt.block_on(async {
        let mut client = BareClient::connect(server.addr).await;
        for i in 0..late {
            let target = common::ping_target(&format!("late-{i}"), 0, 0);
            assert_eq!(client.get(&target).await.0, 200);
        }
        tokio::time::sleep(Duration::from_secs(6)).await;
    });
    rt.block_on(concurrent_latencies(&server, apps, window / 4)); // warm-up
    let scraping = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new((AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)));
    let scraper = {
        let (scraping, stop, stats, addr) =
            (scraping.clone(), stop.clone(), stats.clone(), server.addr);
        std::thread::spawn(move || {
            runtime().block_on(async {
                let mut next = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    if !scraping.load(Ordering::SeqCst) || Instant::now() < next {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    next = Instant::now() + every;
                    let start = Instant::now();
                    // a connection per scrape: one kept between scrapes
                    // 15 s apart would meet the server's idle timeout
                    let mut client = BareClient::connect(addr).await;
                    let (status, body) = client.get("/metrics").await;
                    assert_eq!(status, 200);
                    stats.0.fetch_add(1, Ordering::SeqCst);
                    stats.1.store(body.len() as u64, Ordering::SeqCst);
                    stats
                        .2
                        .fetch_add(start.elapsed().as_micros() as u64, Ordering::SeqCst);
                }
            })
        })
    };
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for _ in 0..WINDOWS {
        scraping.store(false, Ordering::SeqCst);
        idle.extend(rt.block_on(concurrent_latencies(&server, apps, window)));
        scraping.store(true, Ordering::SeqCst);
        busy.extend(rt.block_on(concurrent_latencies(&server, apps, window)));
    }
    stop.store(true, Ordering::SeqCst);
    scraper.join().expect("scraper");
    idle.sort_unstable();
    busy.sort_unstable();
    let p99 = |l: &[Duration]| percentile(l, 0.99).as_secs_f64();
    let scrapes = stats.0.load(Ordering::SeqCst);
    println!(
        "scrape: --per-app-metrics {mode}: {apps} apps, {CONNECTIONS} connections pinging, {WINDOWS} alternating windows of {} s",
        window.as_secs()
    );
    println!("  idle:                     {}", summary(&idle));
    println!(
        "  /metrics every {} s:       {}",
        every.as_secs(),
        summary(&busy)
    );
    println!(
        "  p99 with scrapes / idle p99: {:.2}x (target <= 2x); {scrapes} scrapes of {:.2} MB, {:.0} ms each",
        p99(&busy) / p99(&idle),
        stats.1.load(Ordering::SeqCst) as f64 / 1e6,
        stats.2.load(Ordering::SeqCst) as f64 / 1e3 / scrapes.max(1) as f64
    );
}

fn main() {
    common::run_child_if_asked();
    common::print_load("scrape: start");
    if std::env::var_os("HB_BENCH_PERIODIC").is_some() {
        let periodic = Periodic::from_env();
        periodic_scrapes("all", &periodic);
        periodic_scrapes("problems", &periodic);
        return;
    }
    ping_latency_under_scrapes();
    common::print_load("scrape: after the latency runs");
    rss_with_stalled_readers();
    common::print_load("scrape: end");
}

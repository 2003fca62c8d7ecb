//! `/metrics` at fleet scale (issue 20): time per scrape and bytes per
//! second of the whole exposition of 1 000 000 applications (five series
//! each), two ways:
//!
//! 1. in-process, `monitor::metrics::render` (snapshot, sort, every sample
//!    into one `String`);
//! 2. over HTTP from an in-process server (what Prometheus pays): `GET
//!    /metrics` on a plain socket, read to the end, also with
//!    `per_app_metrics(Problems)` when the build has it.
//!
//! Plain `main` (no criterion): it prints its figures, medians of 5. Set
//! `HB_BENCH_APPS` for another fleet size. Before/after a change: build
//! this file at both commits (without the `Problems` run where the older
//! one has no modes) and run the binaries back to back (BENCHMARKS.md).
//!
//! `cargo bench --features server --bench metrics`

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use heartbeat_sdk::monitor::{metrics, Registry, RegistryConfig};
use heartbeat_sdk::server::{ManualClock, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn apps() -> usize {
    std::env::var("HB_BENCH_APPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// `apps` apps, one in a thousand WARNING at `t0 + 3.5 s`.
fn fill(registry: &mut Registry, apps: usize, t0: Instant) {
    for i in 0..apps {
        let host = IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8));
        let timeout = if i % 1000 == 0 { 0 } else { 600_000 };
        registry
            .init(
                &format!("kiosk-{i:07}"),
                host,
                Duration::from_millis(timeout),
                t0,
            )
            .expect("room for every app");
        if i % 4096 == 0 {
            registry.take_events();
        }
    }
    registry.take_events();
}

fn report(what: &str, apps: usize, bytes: usize, mut times: Vec<Duration>) {
    times.sort_unstable();
    let median = times[times.len() / 2];
    println!(
        "metrics: {what}: apps={apps} bytes={bytes} median_ms={:.1} min_ms={:.1} max_ms={:.1} MB_per_s={:.0}",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        bytes as f64 / median.as_secs_f64() / 1e6
    );
}

fn in_process(apps: usize) {
    let mut registry = Registry::new(RegistryConfig {
        max_apps: apps,
        ..RegistryConfig::default()
    });
    let t0 = Instant::now();
    fill(&mut registry, apps, t0);
    let now = t0 + Duration::from_millis(3500);
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let text = metrics::render(&mut registry, now);
        times.push(start.elapsed());
        bytes = text.len();
        assert!(text.contains("heartbeat_app_up{app=\"kiosk-0000001\""));
    }
    report("render in-process", apps, bytes, times);
}

/// Bytes and time of one `GET /metrics` read to the end.
async fn scrape(addr: std::net::SocketAddr) -> (usize, Duration) {
    let start = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    (total, start.elapsed())
}

async fn over_http(apps: usize, problems: bool) {
    let clock = ManualClock::new();
    let mut builder = Server::builder("127.0.0.1:0".parse().unwrap())
        .max_apps(apps)
        .clock(clock.clone());
    if problems {
        builder = builder.per_app_metrics(heartbeat_sdk::server::PerAppMetrics::Problems);
    }
    let server = builder.start().await.unwrap();
    server
        .registry()
        .with_registry(|registry, now| fill(registry, apps, now));
    // frozen 3.5 s on: the late ones stay WARNING for every scrape
    clock.advance(Duration::from_millis(3500));
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let (b, t) = scrape(server.local_addr()).await;
        bytes = b;
        times.push(t);
    }
    let what = if problems {
        "GET /metrics, --per-app-metrics problems"
    } else {
        "GET /metrics"
    };
    report(what, apps, bytes, times);
    server.shutdown().await;
}

fn main() {
    let apps = apps();
    in_process(apps);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(over_http(apps, false));
    runtime.block_on(over_http(apps, true));
}

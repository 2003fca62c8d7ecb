//! `/metrics` rendering at fleet scale (issue 20): time per scrape and
//! bytes per second of the whole exposition of 1 000 000 applications
//! (five series each), rendered in-process by `monitor::metrics::render`,
//! the path the server takes (snapshot, sort, then every sample).
//!
//! Plain `main` (no criterion): it prints its figures. Set
//! `HB_BENCH_APPS` for another fleet size.
//!
//! `cargo bench --features server --bench metrics`

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use heartbeat_sdk::monitor::{metrics, Registry, RegistryConfig};

fn main() {
    let apps: usize = std::env::var("HB_BENCH_APPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let mut registry = Registry::new(RegistryConfig {
        max_apps: apps,
        ..RegistryConfig::default()
    });
    let t0 = Instant::now();
    for i in 0..apps {
        let host = IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8));
        // one in a thousand late enough to be WARNING at the scrape
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
    times.sort_unstable();
    let median = times[times.len() / 2];
    println!(
        "metrics_render apps={apps} bytes={bytes} samples={} median_ms={:.1} min_ms={:.1} max_ms={:.1} MB_per_s={:.0}",
        5 * apps,
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        bytes as f64 / median.as_secs_f64() / 1e6
    );
}

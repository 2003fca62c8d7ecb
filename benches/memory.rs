//! Memory: heap bytes per tracked application in the `Registry`.
//!
//! A counting global allocator (`stats_alloc`, a safe wrapper around the
//! system allocator: no `unsafe` here) measures the live heap the registry
//! holds after N apps pinged, divided by N. Apps are named like kiosks
//! (`kiosk-000042`), keyed `ID @ 127.0.0.1` as the reference does (24-byte
//! keys). "requested" counts the bytes asked of the allocator;
//! "with malloc overhead" rounds every live block up to glibc's chunk size
//! (8 bytes of header, 16-byte granularity, 32 bytes at least), and the RSS
//! growth of the process is printed as a cross-check.
//!
//! `cargo bench --features server --bench memory`

use std::alloc::System;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use heartbeat_sdk::monitor::{Registry, RegistryConfig};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A glibc malloc chunk for a request of `size` bytes on x86_64.
fn glibc_chunk(size: usize) -> usize {
    (size + 8).div_ceil(16).max(2) * 16
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let rest = l.strip_prefix("VmRSS:")?;
                rest.trim().strip_suffix("kB")?.trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench -- FILTER` passes arguments; this bench ignores them.
    println!("memory: heap held by the Registry per tracked app");
    println!(
        "  {:>8}  {:>10}  {:>12}  {:>11}  {:>10}",
        "apps", "requested", "with malloc", "blocks/app", "RSS growth"
    );
    for count in [1_000usize, 10_000, 100_000] {
        let names: Vec<String> = (0..count).map(|i| format!("kiosk-{i:06}")).collect();
        let t0 = Instant::now();
        let rss_before = rss_kib();
        let region = Region::new(GLOBAL);
        let mut registry = Registry::new(RegistryConfig {
            max_apps: count,
            ..RegistryConfig::default()
        });
        for (i, name) in names.iter().enumerate() {
            let now = t0 + Duration::from_micros(i as u64);
            registry
                .ping(name, PEER, Duration::from_secs(60), now)
                .expect("room");
            drop(registry.take_events()); // as the server does after each request
        }
        let change = region.change();
        let rss_after = rss_kib();
        assert_eq!(registry.len(), count);

        let live_bytes = (change.bytes_allocated as isize + change.bytes_reallocated
            - change.bytes_deallocated as isize) as f64;
        let live_blocks = change.allocations as f64 - change.deallocations as f64;
        let per_app = live_bytes / count as f64;
        // Per-app blocks are the Arc<str> keys; the map and index are few big
        // blocks whose overhead is negligible: charge every key its chunk.
        let key_len = names[0].len() + " @ 127.0.0.1".len();
        let arc_str = 16 + key_len;
        let with_overhead = per_app + (glibc_chunk(arc_str) - arc_str) as f64;
        println!(
            "  {count:>8}  {per_app:>8.1} B  {with_overhead:>10.1} B  {:>11.3}  {:>8.1} B",
            live_blocks / count as f64,
            (rss_after.saturating_sub(rss_before) * 1024) as f64 / count as f64
        );
        black_box(&registry);
    }
}

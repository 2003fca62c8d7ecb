//! The `Registry` alone: one ping among 1 000 and among 100 000 tracked
//! applications. The cost must not grow with the count.
//!
//! Pings go round-robin over the active apps (not the same one again and
//! again), with the clock moving 1 µs per ping and a 60 s timeout, so nothing
//! expires and every ping moves one record in the deadline index, as on a
//! busy server. Besides "every app active" at 1 000 and 100 000, a third case
//! keeps 100 000 apps tracked but pings only 1 000 of them: same working set
//! as the 1 000 case, 100 times the count.
//!
//! `cargo bench --features server --bench registry`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, Criterion};
use heartbeat_sdk::monitor::{Registry, RegistryConfig};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TIMEOUT: Duration = Duration::from_millis(60_000);

/// `count` apps named like kiosks (`kiosk-000042`), all registered at `t0`.
fn filled(count: usize, t0: Instant) -> (Registry, Vec<String>) {
    let mut registry = Registry::new(RegistryConfig {
        max_apps: count,
        ..RegistryConfig::default()
    });
    let names: Vec<String> = (0..count).map(|i| format!("kiosk-{i:06}")).collect();
    for name in &names {
        registry.ping(name, PEER, TIMEOUT, t0).expect("room");
    }
    registry.take_events();
    (registry, names)
}

/// One ping per iteration, round-robin over the first `active` of `tracked`
/// apps.
fn bench_case(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, tracked: usize, active: usize) {
    let t0 = Instant::now();
    let (mut registry, names) = filled(tracked, t0);
    let mut now = t0;
    let mut next = 0;
    group.bench_function(id, |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            next = (next + 1) % active;
            let granted = registry.ping(black_box(&names[next]), PEER, TIMEOUT, now);
            // the server drains events after every request; so do we
            black_box(registry.take_events());
            granted
        })
    });
    assert_eq!(registry.len(), tracked, "nothing expired, nothing added");
}

fn registry(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry_ping");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    // Every tracked app pings in turn: the working set is the whole registry.
    bench_case(&mut group, "1000", 1_000, 1_000);
    bench_case(&mut group, "100000", 100_000, 100_000);
    // 100 000 tracked, the same 1 000 active: the count grows, the working
    // set does not. Tells the cost of the count from the cost of the cache.
    bench_case(&mut group, "100000_tracked_1000_active", 100_000, 1_000);
    group.finish();
}

criterion_group!(benches, registry);

/// `HB_BENCH_PROFILE=TRACKED:ACTIVE:PINGS` runs only that many pings, for
/// `valgrind --tool=cachegrind` (see BENCHMARKS.md).
fn profile() -> Option<()> {
    let spec = std::env::var("HB_BENCH_PROFILE").ok()?;
    let mut parts = spec.split(':').map(|p| p.parse::<usize>().ok());
    let (tracked, active, pings) = (parts.next()??, parts.next()??, parts.next()??);
    let t0 = Instant::now();
    let (mut registry, names) = filled(tracked, t0);
    for i in 0..pings {
        let now = t0 + Duration::from_micros(i as u64 + 1);
        black_box(registry.ping(&names[i % active], PEER, TIMEOUT, now)).ok()?;
        black_box(registry.take_events());
    }
    Some(())
}

fn main() {
    if profile().is_some() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

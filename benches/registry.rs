//! The `Registry` alone: one ping among 1 000 and among 100 000 tracked
//! applications. The cost must not grow with the count.
//!
//! Pings go round-robin over every tracked app (not the same one again and
//! again), with the clock moving 1 µs per ping and a 60 s timeout, so nothing
//! expires and every ping moves one record in the deadline index, as on a
//! busy server.
//!
//! `cargo bench --features server --bench registry`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use heartbeat_sdk::server::{Registry, RegistryConfig};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TIMEOUT_MS: u64 = 60_000;

/// `count` apps named like kiosks (`kiosk-000042`), all registered at `t0`.
fn filled(count: usize, t0: Instant) -> (Registry, Vec<String>) {
    let mut registry = Registry::new(RegistryConfig {
        max_apps: count,
        ..RegistryConfig::default()
    });
    let names: Vec<String> = (0..count).map(|i| format!("kiosk-{i:06}")).collect();
    for name in &names {
        registry.ping(name, PEER, TIMEOUT_MS, t0).expect("room");
    }
    registry.take_events();
    (registry, names)
}

fn registry(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry_ping");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for count in [1_000usize, 100_000] {
        let t0 = Instant::now();
        let (mut registry, names) = filled(count, t0);
        let mut now = t0;
        let mut next = 0;
        group.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.iter(|| {
                now += Duration::from_micros(1);
                next = (next + 1) % names.len();
                let granted = registry.ping(black_box(&names[next]), PEER, TIMEOUT_MS, now);
                // the server drains events after every request; so do we
                black_box(registry.take_events());
                granted
            })
        });
        assert_eq!(registry.len(), count, "nothing expired, nothing added");
    }
    group.finish();
}

criterion_group!(benches, registry);
criterion_main!(benches);

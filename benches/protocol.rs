//! The pure protocol layer alone: building a ping request, parsing replies
//! and status lines, and the server's decoding of a request-target.
//!
//! `cargo bench --bench protocol` (needs no feature).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use heartbeat_sdk::protocol::{self, command, Beat};
use heartbeat_sdk::Status;

const STATUS_LINE: &str =
    "WARNING - somewhat late application [Tetris @ 127.0.0.1]| od=3.10;3;5;0;6 delay=3000ms;;; ";

fn protocol(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let buster = protocol::cache_buster();
    group.bench_function("beat_request", |b| {
        b.iter(|| {
            protocol::beat_request(
                black_box(Beat::Ping),
                black_box(2000),
                black_box("kiosk-7"),
                black_box(&buster),
            )
        })
    });
    group.bench_function("cache_buster", |b| b.iter(protocol::cache_buster));
    group.bench_function("beat_request_with_buster", |b| {
        b.iter(|| {
            protocol::beat_request(
                Beat::Ping,
                black_box(2000),
                black_box("kiosk-7"),
                &protocol::cache_buster(),
            )
        })
    });
    group.bench_function("parse_granted", |b| {
        b.iter(|| protocol::parse_granted(black_box(b"3000")))
    });
    group.bench_function("parse_status_line", |b| {
        b.iter(|| Status::parse(black_box(STATUS_LINE)))
    });
    let target = protocol::beat_request(Beat::Ping, 2000, "kiosk-7", &buster).target;
    group.bench_function("server_parse_command", |b| {
        b.iter(|| command::parse_command(black_box(&target), None))
    });
    group.finish();
}

criterion_group!(benches, protocol);
criterion_main!(benches);

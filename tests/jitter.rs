//! Issue 14: the jitter the retry loop and the keep-alive backoff claim is
//! observed where it matters, in the waits they actually make, not only in
//! the `jitter` helper. On tokio's paused clock every wait is exact (to the
//! millisecond of tokio's timer) and costs no real time, so many draws are
//! cheap.
//!
//! Each test draws `DRAWS` waits of one un-jittered bound `B` and asserts
//! that all lie in `[B/2, B]` and that they spread: at least one lies in
//! `[B/2, 3B/4)` and at least one in `(3B/4, B]`. Without jitter every wait
//! is exactly `B`, so the lower part is empty and the test fails. With jitter (uniform on `[B/2, B]`) the chance that all
//! draws fall on one side of `3B/4` is `2 × 2^-DRAWS` (about 1e-19 for 64
//! draws): no seed is needed for the test to be deterministic in practice.
#![cfg(all(feature = "mock", feature = "keepalive"))]

use std::time::Duration;

use heartbeat_sdk::testing::MockFailure;
use heartbeat_sdk::{ErrorPolicy, HeartbeatClient, KeepAlive, KeepAliveState, RetryPolicy};

#[path = "support/timed.rs"]
mod timed;
use timed::Timed;

const DRAWS: usize = 64;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// All of `waits` within `[bound/2, bound]`, and on both sides of `3/4 bound`.
fn assert_jittered(waits: &[Duration], bound: Duration) {
    assert!(waits.len() >= DRAWS, "{} waits", waits.len());
    assert!(
        waits.iter().all(|w| *w >= bound / 2 && *w <= bound),
        "a wait outside [{:?}, {bound:?}]: {waits:?}",
        bound / 2
    );
    let three_quarters = bound * 3 / 4;
    let low = waits.iter().filter(|w| **w < three_quarters).count();
    let high = waits.iter().filter(|w| **w > three_quarters).count();
    assert!(
        low > 0 && high > 0,
        "no spread: {low} waits below {three_quarters:?}, {high} above: {waits:?}"
    );
    assert!(
        waits.iter().any(|w| *w < bound),
        "every wait is the un-jittered bound: {waits:?}"
    );
}

/// The retry loop: every call fails once and is retried after one backoff
/// of `initial_backoff` (the cap), jittered.
#[tokio::test(start_paused = true)]
async fn the_retry_loop_waits_a_jittered_backoff() {
    let bound = ms(1000);
    let timed = Timed::default();
    let client = HeartbeatClient::builder_with_transport(timed.transport())
        .app_id("jittered-retry")
        .retry(
            RetryPolicy::new(2)
                .initial_backoff(bound)
                .max_backoff(bound),
        )
        .build()
        .unwrap();
    let mut waits = Vec::new();
    for _ in 0..DRAWS {
        timed.mock.fail_next(1, MockFailure::Refused);
        let before = timed.at().len();
        client.ping(ms(5000), ErrorPolicy::Raise).await.unwrap();
        let at = timed.at();
        assert_eq!(at.len(), before + 2, "one failure, one retry");
        waits.push(at[before + 1] - at[before]);
    }
    assert_jittered(&waits, bound);
}

/// The retry loop's later backoffs (doubled, then capped) are jittered too.
#[tokio::test(start_paused = true)]
async fn every_retry_backoff_is_jittered_not_only_the_first() {
    let timed = Timed::default();
    let client = HeartbeatClient::builder_with_transport(timed.transport())
        .app_id("jittered-retries")
        .retry(
            RetryPolicy::new(4)
                .initial_backoff(ms(400))
                .max_backoff(ms(1000)),
        )
        .build()
        .unwrap();
    // waits before retries 1, 2, 3: 400, 800, 1000 (capped) ms un-jittered
    let bounds = [ms(400), ms(800), ms(1000)];
    let mut waits = vec![Vec::new(); bounds.len()];
    for _ in 0..DRAWS {
        timed.mock.fail_next(3, MockFailure::status(503, "busy"));
        let before = timed.at().len();
        client.init(ms(5000), ErrorPolicy::Raise).await.unwrap();
        let at = timed.at();
        assert_eq!(at.len(), before + 4);
        for (n, waits) in waits.iter_mut().enumerate() {
            waits.push(at[before + n + 1] - at[before + n]);
        }
    }
    for (waits, bound) in waits.iter().zip(bounds) {
        assert_jittered(waits, bound);
    }
}

/// The keep-alive's backoff after a failed beat: with `max_backoff` below
/// the interval the cap is the interval, so every wait after a failure is
/// the interval, jittered.
#[tokio::test(start_paused = true)]
async fn the_keep_alive_backoff_is_jittered() {
    let interval = ms(1000);
    let timed = Timed::default();
    let client = HeartbeatClient::builder_with_transport(timed.transport())
        .app_id("jittered-keep-alive")
        .build()
        .unwrap();
    timed.mock.fail_next(DRAWS + 1, MockFailure::Refused);
    let handle = client.keep_alive(KeepAlive::every(interval).max_backoff(Duration::ZERO));
    let mut states = handle.subscribe();
    let state: KeepAliveState = tokio::time::timeout(
        Duration::from_secs(24 * 3600),
        states.wait_for(|s| s.beats_ok >= 1),
    )
    .await
    .expect("the keep-alive recovers")
    .unwrap()
    .clone();
    assert_eq!(state.beats_failed, DRAWS as u64 + 1);
    assert_eq!(state.inits_ok, 1);
    drop(states);
    handle.shutdown().await.unwrap();

    // requests: DRAWS + 1 failed inits, the successful init, the done
    let at = timed.at();
    assert_eq!(at.len(), DRAWS + 3);
    let waits: Vec<Duration> = at[..DRAWS + 2].windows(2).map(|w| w[1] - w[0]).collect();
    assert_jittered(&waits, interval);
}

/// The growing keep-alive backoff (interval × 2^(n-1), capped) is jittered
/// at each step.
#[tokio::test(start_paused = true)]
async fn each_step_of_the_keep_alive_backoff_is_jittered() {
    let interval = ms(500);
    // failures 1, 2, 3 wait 500, 1000, 2000 ms un-jittered; then a success
    let bounds = [ms(500), ms(1000), ms(2000)];
    let mut waits = vec![Vec::new(); bounds.len()];
    for _ in 0..DRAWS {
        let timed = Timed::default();
        let client = HeartbeatClient::builder_with_transport(timed.transport())
            .app_id("jittered-steps")
            .build()
            .unwrap();
        timed.mock.fail_next(3, MockFailure::Timeout);
        let handle = client.keep_alive(KeepAlive::every(interval).max_backoff(ms(2000)));
        let mut states = handle.subscribe();
        tokio::time::timeout(
            Duration::from_secs(3600),
            states.wait_for(|s| s.beats_ok >= 1),
        )
        .await
        .expect("the keep-alive recovers")
        .unwrap();
        drop(states);
        drop(handle);
        let at = timed.at();
        for (n, waits) in waits.iter_mut().enumerate() {
            waits.push(at[n + 1] - at[n]);
        }
    }
    for (waits, bound) in waits.iter().zip(bounds) {
        assert_jittered(waits, bound);
    }
}

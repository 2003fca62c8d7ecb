//! The Python client's command-line demo as a library function, shared by
//! `examples/demo.rs` and `heartbeat demo`.
//!
//! The session: `hb_init`, then forever a random promise of 100–2000 ms, a
//! random sleep of up to seven times that promise (so some beats are late),
//! and a `hb_ping` with the next promise, counting the late ones. When `stop`
//! completes (Ctrl+C, SIGTERM, or a beat limit) it reads the list and the
//! status, sends `hb_done`, and reads them again.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::HeartbeatClient;
use crate::error::Result;
use crate::policy::ErrorPolicy;
use crate::protocol::Status;

/// How the demo session beats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// Smallest promise (default 100 ms).
    pub min_promise: Duration,
    /// Largest promise (default 2000 ms).
    pub max_promise: Duration,
    /// Sleep up to this many times the promise (default 7).
    pub max_sleep_factor: u32,
    /// Stop by itself after this many pings (default: only when stopped).
    pub max_beats: Option<u64>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            min_promise: Duration::from_millis(100),
            max_promise: Duration::from_millis(2000),
            max_sleep_factor: 7,
            max_beats: None,
        }
    }
}

/// What the session did and what the server said at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    /// Pings sent (init not counted).
    pub beats: u64,
    /// Beats sent later than promised.
    pub overdue: u64,
    /// Beats that failed (logged and skipped).
    pub failed: u64,
    /// `/list` before `hb_done`.
    pub list_before: Vec<String>,
    /// `/status` of this app before `hb_done`.
    pub status_before: Status,
    /// The goodbye text of `hb_done`.
    pub goodbye: String,
    /// `/list` after `hb_done`.
    pub list_after: Vec<String>,
    /// `/status` of this app after `hb_done`.
    pub status_after: Status,
}

/// Run the demo session until `stop` completes (or `options.max_beats`),
/// then sign off. Beat failures are logged and counted, never fatal; a
/// request in flight when `stop` fires is abandoned and `hb_done` still sent.
///
/// ```no_run
/// # #[cfg(feature = "reqwest")]
/// # async fn run() -> heartbeat_sdk::Result<()> {
/// use heartbeat_sdk::demo::{run, DemoOptions};
///
/// let client = heartbeat_sdk::HeartbeatClient::from_env()?;
/// let options = DemoOptions { max_beats: Some(5), ..DemoOptions::default() };
/// let report = run(&client, &options, std::future::pending()).await?;
/// println!("{} beats, {} late", report.beats, report.overdue);
/// # Ok(()) }
/// ```
pub async fn run(
    client: &HeartbeatClient,
    options: &DemoOptions,
    stop: impl Future<Output = ()>,
) -> Result<DemoReport> {
    let mut counts = Counts::default();
    tokio::select! {
        () = beat(client, options, &mut counts) => {}
        () = stop => tracing::info!("stopping the demo"),
    }
    let no_status = || Status::parse("UNKNOWN - no reply from the heartbeat server").ok();
    let status = |policy_value: Option<Status>| match policy_value {
        Some(value) => ErrorPolicy::Fallback(value),
        None => ErrorPolicy::Raise,
    };
    let list_before = client.list(ErrorPolicy::Fallback(Vec::new())).await?;
    let status_before = client
        .status(Some(client.app_id()), status(no_status()))
        .await?;
    tracing::info!(list = ?list_before, status = %status_before, "before hb_done");
    let goodbye = client
        .done_now(ErrorPolicy::Fallback(String::new()))
        .await?;
    tracing::info!(%goodbye, "hb_done");
    let list_after = client.list(ErrorPolicy::Fallback(Vec::new())).await?;
    let status_after = client
        .status(Some(client.app_id()), status(no_status()))
        .await?;
    tracing::info!(list = ?list_after, status = %status_after, "after hb_done");
    Ok(DemoReport {
        beats: counts.beats,
        overdue: counts.overdue,
        failed: counts.failed,
        list_before,
        status_before,
        goodbye,
        list_after,
        status_after,
    })
}

#[derive(Debug, Default)]
struct Counts {
    beats: u64,
    overdue: u64,
    failed: u64,
}

async fn beat(client: &HeartbeatClient, options: &DemoOptions, counts: &mut Counts) {
    let mut rng = Rng::seeded();
    let mut promise = rng.between(options.min_promise, options.max_promise);
    match client.init(promise, ErrorPolicy::Raise).await {
        Ok(granted) => tracing::info!(
            promise_ms = promise.as_millis() as u64,
            granted_ms = granted.as_millis() as u64,
            "hb_init"
        ),
        Err(error) => tracing::warn!(%error, "hb_init failed; pinging anyway"),
    }
    while options.max_beats.is_none_or(|max| counts.beats < max) {
        let pause = rng.between(Duration::ZERO, promise * options.max_sleep_factor);
        tokio::time::sleep(pause).await;
        let late = pause > promise;
        counts.overdue += u64::from(late);
        promise = rng.between(options.min_promise, options.max_promise);
        counts.beats += 1;
        match client.ping(promise, ErrorPolicy::Raise).await {
            Ok(granted) => tracing::info!(
                beat = counts.beats,
                slept_ms = pause.as_millis() as u64,
                late,
                overdue = counts.overdue,
                promise_ms = promise.as_millis() as u64,
                granted_ms = granted.as_millis() as u64,
                "hb_ping"
            ),
            Err(error) => {
                counts.failed += 1;
                tracing::warn!(beat = counts.beats, %error, "hb_ping failed");
            }
        }
    }
}

/// A small xorshift generator: the demo needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration in `low..=high` with millisecond steps.
    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let (low, high) = (low.as_millis() as u64, high.as_millis() as u64);
        let span = high.saturating_sub(low) + 1;
        Duration::from_millis(low + self.next() % span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_durations_stay_in_range_and_vary() {
        let mut rng = Rng(42);
        let low = Duration::from_millis(100);
        let high = Duration::from_millis(2000);
        let draws: Vec<Duration> = (0..1000).map(|_| rng.between(low, high)).collect();
        assert!(draws.iter().all(|d| (low..=high).contains(d)));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 500);
        assert_eq!(rng.between(Duration::ZERO, Duration::ZERO), Duration::ZERO);
    }
}

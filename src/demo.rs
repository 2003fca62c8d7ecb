//! The Python client's command-line demo as a library function, shared by
//! `examples/demo.rs` and `heartbeat demo`.
//!
//! The session: `hb_init`, then forever a random timeout of 100–2000 ms, a
//! random sleep of up to seven times that timeout (so some beats are late),
//! and a `hb_ping` with the next timeout, counting the late ones. When `stop`
//! completes (the caller's choice: `heartbeat demo` passes Ctrl+C or
//! SIGTERM, `examples/demo.rs` [`tokio::signal::ctrl_c`]) or the beat limit
//! is reached, it reads the list and the status, sends `hb_done`, and reads
//! them again. [`DemoReport`] prints as the lines both show at the end.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::HeartbeatClient;
use crate::error::Result;
use crate::policy::ErrorPolicy;
use crate::protocol::whole_ms;
use crate::protocol::{printable, Status};

/// How the demo session beats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// Smallest timeout (default 100 ms).
    pub min_timeout: Duration,
    /// Largest timeout (default 2000 ms).
    pub max_timeout: Duration,
    /// Sleep up to this many times the timeout (default 7).
    pub max_sleep_factor: u32,
    /// Stop by itself after this many pings (default: only when stopped).
    pub max_beats: Option<u64>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            min_timeout: Duration::from_millis(100),
            max_timeout: Duration::from_millis(2000),
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

/// The report's lines, as `heartbeat demo` and `examples/demo.rs` print
/// them; the server's texts go through [`printable`].
///
/// ```text
/// beats: 5, overdue: 2, failed: 0
/// list before hb_done: ["demo @ 127.0.0.1"]
/// status before hb_done: OK - fine application [demo @ 127.0.0.1]| od=0.52;3;5;0;6 delay=3000ms;;;
/// hb_done: So Long, and Thanks for All the Fish!
/// list after hb_done: []
/// status after hb_done: CRITICAL - no application record for queried ID: [demo @ 127.0.0.1]
/// ```
impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "beats: {}, overdue: {}, failed: {}",
            self.beats, self.overdue, self.failed
        )?;
        writeln!(f, "list before hb_done: {:?}", self.list_before)?;
        writeln!(
            f,
            "status before hb_done: {}",
            printable(self.status_before.raw())
        )?;
        writeln!(f, "hb_done: {}", printable(&self.goodbye))?;
        writeln!(f, "list after hb_done: {:?}", self.list_after)?;
        write!(
            f,
            "status after hb_done: {}",
            printable(self.status_after.raw())
        )
    }
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
    let list_before = client.list(ErrorPolicy::Fallback(Vec::new())).await?;
    let status_before = app_status(client).await?;
    tracing::info!(list = ?list_before, status = %status_before, "before hb_done");
    let goodbye = client
        .done_now(ErrorPolicy::Fallback(String::new()))
        .await?;
    tracing::info!(%goodbye, "hb_done");
    let list_after = client.list(ErrorPolicy::Fallback(Vec::new())).await?;
    let status_after = app_status(client).await?;
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

/// This application's status, or an `UNKNOWN` stand-in when the server
/// does not answer.
async fn app_status(client: &HeartbeatClient) -> Result<Status> {
    let policy = match Status::parse("UNKNOWN - no reply from the heartbeat server") {
        Ok(unknown) => ErrorPolicy::Fallback(unknown),
        Err(_) => ErrorPolicy::Raise,
    };
    client.status(Some(client.app_id()), policy).await
}

#[derive(Debug, Default)]
struct Counts {
    beats: u64,
    overdue: u64,
    failed: u64,
}

async fn beat(client: &HeartbeatClient, options: &DemoOptions, counts: &mut Counts) {
    let mut rng = Rng::seeded();
    let mut timeout = rng.between(options.min_timeout, options.max_timeout);
    match client.init(timeout, ErrorPolicy::Raise).await {
        Ok(granted) => tracing::info!(
            timeout_ms = whole_ms(timeout),
            granted_ms = whole_ms(granted),
            "hb_init"
        ),
        Err(error) => tracing::warn!(%error, "hb_init failed; pinging anyway"),
    }
    while options.max_beats.is_none_or(|max| counts.beats < max) {
        let pause = rng.between(
            Duration::ZERO,
            timeout.saturating_mul(options.max_sleep_factor),
        );
        tokio::time::sleep(pause).await;
        let late = pause > timeout;
        counts.overdue += u64::from(late);
        timeout = rng.between(options.min_timeout, options.max_timeout);
        counts.beats += 1;
        match client.ping(timeout, ErrorPolicy::Raise).await {
            Ok(granted) => tracing::info!(
                beat = counts.beats,
                slept_ms = whole_ms(pause),
                late,
                overdue = counts.overdue,
                timeout_ms = whole_ms(timeout),
                granted_ms = whole_ms(granted),
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
        let (low, high) = (whole_ms(low), whole_ms(high));
        let span = high.saturating_sub(low).saturating_add(1);
        Duration::from_millis(low.saturating_add(self.next() % span))
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

    #[test]
    fn huge_options_saturate_instead_of_panicking() {
        let mut rng = Rng(7);
        for _ in 0..100 {
            let _ = rng.between(Duration::ZERO, Duration::MAX);
            let d = rng.between(Duration::MAX, Duration::MAX);
            assert_eq!(d, Duration::from_millis(u64::MAX));
            let d = rng.between(Duration::from_millis(u64::MAX - 1), Duration::MAX);
            assert!(d >= Duration::from_millis(u64::MAX - 1));
        }
        assert_eq!(whole_ms(Duration::MAX), u64::MAX);
        assert_eq!(whole_ms(Duration::from_millis(1234)), 1234);
        // the sleep bound of a huge timeout and factor
        let bound = Duration::MAX.saturating_mul(u32::MAX);
        let _ = rng.between(Duration::ZERO, bound);
    }

    #[test]
    fn the_report_prints_its_lines_with_server_text_made_printable() {
        let report = DemoReport {
            beats: 5,
            overdue: 2,
            failed: 1,
            list_before: vec!["demo @ 127.0.0.1".into()],
            status_before: Status::parse(
                "OK - fine application [demo]| od=0.10;3;5;0;6 delay=3000ms;;; ",
            )
            .unwrap(),
            goodbye: "bye\u{1b}[2J".into(),
            list_after: Vec::new(),
            status_after: Status::parse("CRITICAL - no application record for queried ID: [demo]")
                .unwrap(),
        };
        assert_eq!(
            report.to_string(),
            "beats: 5, overdue: 2, failed: 1\n\
             list before hb_done: [\"demo @ 127.0.0.1\"]\n\
             status before hb_done: OK - fine application [demo]| od=0.10;3;5;0;6 delay=3000ms;;; \n\
             hb_done: bye\\u{1b}[2J\n\
             list after hb_done: []\n\
             status after hb_done: CRITICAL - no application record for queried ID: [demo]"
        );
    }
}

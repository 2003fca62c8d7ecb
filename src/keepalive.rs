//! Keep-alive: one call starts a tokio task that registers, pings on an
//! interval for as long as it runs, and signs off on shutdown.
//!
//! Start one with [`HeartbeatClient::keep_alive`]; see [`KeepAlive`] for what
//! the task promises and how it behaves when the server is away.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::HeartbeatClient;
use crate::error::{Error, Result};
use crate::policy::ErrorPolicy;
use crate::protocol;
use crate::retry::{exponential, jitter};

/// How a keep-alive task beats: its interval, the timeout it promises, and
/// its backoff and shutdown bounds.
///
/// - **Timeout:** every init and ping promises the server the next beat
///   within a [`timeout`](Self::timeout) of `interval + margin`; the margin
///   defaults to the interval itself, so the timeout is twice the interval
///   (a late beat or one lost request does not make the application late).
///   The server adds its own tolerance on top (the reference: 1000 ms) and
///   answers with the timeout it granted
///   ([`KeepAliveState::granted`]). The timeout is capped at
///   [`MAX_TIMEOUT_MS`](crate::protocol::MAX_TIMEOUT_MS), the largest
///   timeout a request carries.
/// - **Cadence:** the next beat is due one interval after the previous one
///   *started*. If that moment has already passed (a slow reply, a stalled
///   runtime, a suspended machine), one beat is sent at once and the cadence
///   restarts from it: missed beats are skipped, never sent in a burst.
/// - **Failures** are logged through `tracing` once, at `warn`, with the
///   keep-alive's context (failures in a row, next retry), and the task
///   keeps going. After the *n*-th failure in a row it waits
///   `interval × 2^(n-1)`, capped at `max(max_backoff, interval)`, jittered to
///   a random point between half of that and all of it; so the first retry
///   comes within one interval, and a fleet does not retry in step.
/// - **Re-init:** the first beat, and every beat after a failed one, is an
///   `hb_init` rather than an `hb_ping`, so a server that restarted (and lost
///   its records) sees a fresh registration as soon as it answers. (A ping
///   for an unknown id also registers it, so a restart between two beats
///   that saw no failure is covered too.)
/// - **Interval zero** pauses: no beats until
///   [`set_interval`](KeepAliveHandle::set_interval) gives a non-zero one.
///
/// ```
/// use std::time::Duration;
/// use heartbeat_sdk::KeepAlive;
///
/// let config = KeepAlive::every(Duration::from_secs(5));
/// assert_eq!(config.timeout(), Duration::from_secs(10));
/// let config = config.margin(Duration::from_secs(1));
/// assert_eq!(config.timeout(), Duration::from_secs(6));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    interval: Duration,
    margin: Option<Duration>,
    max_backoff: Duration,
    done_timeout: Duration,
    shutdown_timeout: Duration,
}

impl KeepAlive {
    /// The cap on the backoff after failures unless set (never less than the
    /// interval): 30 s.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
    /// How long [`KeepAliveHandle::shutdown`] may take unless set: 5 s.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

    /// Beat every `interval` (zero: start paused).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = heartbeat_sdk::KeepAlive::every(Duration::from_secs(1));
    /// assert_eq!(config.interval(), Duration::from_secs(1));
    /// ```
    pub fn every(interval: Duration) -> KeepAlive {
        KeepAlive {
            interval,
            margin: None,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            done_timeout: Duration::ZERO,
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// Promise a timeout of `interval + margin` instead of twice the
    /// interval. The margin stays fixed when the interval changes.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = heartbeat_sdk::KeepAlive::every(Duration::from_secs(2)).margin(Duration::from_millis(500));
    /// assert_eq!(config.timeout(), Duration::from_millis(2500));
    /// ```
    pub fn margin(mut self, margin: Duration) -> KeepAlive {
        self.margin = Some(margin);
        self
    }

    /// Cap the wait after repeated failures (default 30 s; the interval
    /// when that is longer).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = heartbeat_sdk::KeepAlive::every(Duration::from_secs(1)).max_backoff(Duration::from_secs(10));
    /// # let _ = config;
    /// ```
    pub fn max_backoff(mut self, max_backoff: Duration) -> KeepAlive {
        self.max_backoff = max_backoff;
        self
    }

    /// The timeout `hb_done` promises on shutdown (default 0: gone now).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = heartbeat_sdk::KeepAlive::every(Duration::from_secs(1)).done_timeout(Duration::from_secs(3));
    /// # let _ = config;
    /// ```
    pub fn done_timeout(mut self, timeout: Duration) -> KeepAlive {
        self.done_timeout = timeout;
        self
    }

    /// The most [`KeepAliveHandle::shutdown`] waits, for a beat in flight and
    /// then the `hb_done` (default 5 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = heartbeat_sdk::KeepAlive::every(Duration::from_secs(1)).shutdown_timeout(Duration::from_secs(2));
    /// # let _ = config;
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> KeepAlive {
        self.shutdown_timeout = timeout;
        self
    }

    /// The interval the task starts with.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert!(heartbeat_sdk::KeepAlive::every(Duration::ZERO).interval().is_zero());
    /// ```
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The timeout each init and ping promises at the starting interval:
    /// `interval + margin`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = heartbeat_sdk::KeepAlive::every(Duration::from_millis(300));
    /// assert_eq!(config.timeout(), Duration::from_millis(600));
    /// ```
    pub fn timeout(&self) -> Duration {
        self.timeout_for(self.interval)
    }

    /// `interval + margin`, capped at the largest timeout the protocol
    /// carries ([`MAX_TIMEOUT_MS`](protocol::MAX_TIMEOUT_MS)), so a very
    /// long interval still beats rather than failing every time with
    /// [`Error::InvalidTimeout`].
    fn timeout_for(&self, interval: Duration) -> Duration {
        interval
            .saturating_add(self.margin.unwrap_or(interval))
            .min(Duration::from_millis(protocol::MAX_TIMEOUT_MS))
    }

    fn backoff(&self, interval: Duration, failures: u32) -> Duration {
        jitter(exponential(
            interval,
            self.max_backoff.max(interval),
            failures,
        ))
    }
}

/// What a keep-alive task has done so far; watch it with
/// [`KeepAliveHandle::state`] or [`KeepAliveHandle::subscribe`].
///
/// ```
/// # #[cfg(feature = "mock")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use heartbeat_sdk::testing::MockTransport;
/// use heartbeat_sdk::{HeartbeatClient, KeepAlive};
///
/// let client = HeartbeatClient::builder_with_transport(MockTransport::new()).build().unwrap();
/// let keep_alive = client.keep_alive(KeepAlive::every(Duration::from_secs(1)));
/// let state = keep_alive.subscribe().wait_for(|s| s.beats_ok >= 1).await.unwrap().clone();
/// assert_eq!(state.inits_ok, 1);
/// assert_eq!(state.granted, Some(Duration::from_secs(3))); // 2 s promised + 1 s tolerance
/// keep_alive.shutdown().await.unwrap();
/// # }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct KeepAliveState {
    /// The current interval (zero: paused).
    pub interval: Duration,
    /// Beats (inits and pings) the server answered.
    pub beats_ok: u64,
    /// Beats that failed.
    pub beats_failed: u64,
    /// Of `beats_ok`, the inits (the first beat, and each first success
    /// after a failure).
    pub inits_ok: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The timeout the server granted at the last successful beat (the
    /// promised [`KeepAlive::timeout`] plus the server's tolerance).
    pub granted: Option<Duration>,
    /// The error of the last failed beat (kept after a later success).
    pub last_error: Option<Arc<Error>>,
    /// True once the task has stopped on [`KeepAliveHandle::shutdown`] and
    /// sent its `hb_done` (an aborted task never sets it).
    pub stopped: bool,
}

/// What the handle tells the task.
#[derive(Debug, Clone, Copy)]
struct Control {
    interval: Duration,
    /// How to sign off, once asked to stop.
    stopping: Option<Farewell>,
}

/// The last request of a stopped keep-alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Farewell {
    /// `hb_done`.
    Done,
    /// `hb_fail` with this exit code.
    Fail(u8),
}

/// A running keep-alive task (see [`HeartbeatClient::keep_alive`]).
///
/// Stop it with [`shutdown`](Self::shutdown), which sends `hb_done`.
///
/// **Dropping** the handle without `shutdown` aborts the task at once (a beat
/// in flight is abandoned) and sends **no** `hb_done`: the server then sees
/// the application go late (WARNING, then CRITICAL) and finally expire.
/// `Drop` never blocks and never waits for the network.
///
/// ```no_run
/// # #[cfg(feature = "reqwest")]
/// # async fn run() -> heartbeat_sdk::Result<()> {
/// use std::time::Duration;
/// use heartbeat_sdk::{HeartbeatClient, KeepAlive};
///
/// let client = HeartbeatClient::from_env()?;
/// let keep_alive = client.keep_alive(KeepAlive::every(Duration::from_secs(5)));
/// // ... the application runs ...
/// keep_alive.set_interval(Duration::from_secs(1)); // busy: beat now, then every second
/// // ...
/// let goodbye = keep_alive.shutdown().await?; // hb_done sent and answered
/// # let _ = goodbye; Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "dropping a KeepAliveHandle stops the keep-alive at once, without hb_done"]
pub struct KeepAliveHandle {
    control: watch::Sender<Control>,
    state: watch::Receiver<KeepAliveState>,
    task: Option<JoinHandle<Option<Result<String>>>>,
    shutdown_timeout: Duration,
}

impl HeartbeatClient {
    /// Start a keep-alive task on the current tokio runtime: `hb_init` now,
    /// then `hb_ping` every interval, until the handle is shut down or
    /// dropped. See [`KeepAlive`] for the timeout, backoff and re-init rules.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like `tokio::spawn`; use
    /// [`keep_alive_on`](Self::keep_alive_on) to name the runtime.
    ///
    /// ```no_run
    /// # #[cfg(feature = "reqwest")]
    /// # async fn run() -> heartbeat_sdk::Result<()> {
    /// use std::time::Duration;
    /// use heartbeat_sdk::{HeartbeatClient, KeepAlive};
    ///
    /// let keep_alive = HeartbeatClient::from_env()?.keep_alive(KeepAlive::every(Duration::from_secs(2)));
    /// // ... each beat promises a timeout of 4 s; the server sees the app OK while this runs
    /// keep_alive.shutdown().await?;
    /// # Ok(()) }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "keepalive")))]
    pub fn keep_alive(&self, config: KeepAlive) -> KeepAliveHandle {
        self.keep_alive_on(&tokio::runtime::Handle::current(), config)
    }

    /// Like [`keep_alive`](Self::keep_alive), on the given tokio runtime;
    /// callable from any thread.
    ///
    /// ```no_run
    /// # #[cfg(feature = "reqwest")]
    /// # fn run() -> heartbeat_sdk::Result<()> {
    /// use std::time::Duration;
    /// use heartbeat_sdk::{HeartbeatClient, KeepAlive};
    ///
    /// let runtime = tokio::runtime::Runtime::new().unwrap();
    /// let client = HeartbeatClient::from_env()?;
    /// let keep_alive = client.keep_alive_on(runtime.handle(), KeepAlive::every(Duration::from_secs(2)));
    /// runtime.block_on(keep_alive.shutdown())?;
    /// # Ok(()) }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "keepalive")))]
    pub fn keep_alive_on(
        &self,
        runtime: &tokio::runtime::Handle,
        config: KeepAlive,
    ) -> KeepAliveHandle {
        let (control, control_rx) = watch::channel(Control {
            interval: config.interval,
            stopping: None,
        });
        let (state_tx, state) = watch::channel(KeepAliveState {
            interval: config.interval,
            ..KeepAliveState::default()
        });
        let shutdown_timeout = config.shutdown_timeout;
        let task = runtime.spawn(run(self.clone(), config, control_rx, state_tx));
        KeepAliveHandle {
            control,
            state,
            task: Some(task),
            shutdown_timeout,
        }
    }
}

impl KeepAliveHandle {
    /// Change the interval: one beat right away, then one every `interval`
    /// (the promised timeout follows). `Duration::ZERO` pauses the task (no beat is
    /// sent; the server will see the application go late); a later non-zero
    /// interval resumes it with a beat at once. Like the JavaScript client's
    /// `setInterval`.
    ///
    /// ```no_run
    /// # async fn run(keep_alive: heartbeat_sdk::KeepAliveHandle) {
    /// use std::time::Duration;
    /// keep_alive.set_interval(Duration::from_millis(500)); // faster
    /// keep_alive.set_interval(Duration::ZERO);              // pause
    /// keep_alive.set_interval(Duration::from_secs(5));      // resume
    /// # }
    /// ```
    pub fn set_interval(&self, interval: Duration) {
        self.control
            .send_modify(|control| control.interval = interval);
    }

    /// The interval last set.
    ///
    /// ```no_run
    /// # fn run(keep_alive: heartbeat_sdk::KeepAliveHandle) {
    /// println!("beating every {:?}", keep_alive.interval());
    /// # }
    /// ```
    pub fn interval(&self) -> Duration {
        self.control.borrow().interval
    }

    /// A snapshot of what the task has done so far.
    ///
    /// ```no_run
    /// # fn run(keep_alive: heartbeat_sdk::KeepAliveHandle) {
    /// let state = keep_alive.state();
    /// println!("{} beats answered, {} failed", state.beats_ok, state.beats_failed);
    /// # }
    /// ```
    pub fn state(&self) -> KeepAliveState {
        self.state.borrow().clone()
    }

    /// A receiver that is told of every change of [`state`](Self::state),
    /// e.g. to wait for the first answered beat:
    ///
    /// ```no_run
    /// # async fn run(keep_alive: heartbeat_sdk::KeepAliveHandle) {
    /// let mut states = keep_alive.subscribe();
    /// states.wait_for(|s| s.beats_ok >= 1).await.unwrap();
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<KeepAliveState> {
        self.state.clone()
    }

    /// Stop the task and sign off: let a beat in flight finish, send
    /// `hb_done` (with [`KeepAlive::done_timeout`]), and return the server's
    /// goodbye. The whole shutdown is bounded by
    /// [`KeepAlive::shutdown_timeout`]; past it the task is aborted and
    /// [`Error::ShutdownTimeout`] is returned. A failed `hb_done` is its own
    /// error; a task that stopped on its own (it panicked) is
    /// [`Error::Task`]. Must be awaited inside the tokio runtime.
    ///
    /// ```no_run
    /// # async fn run(keep_alive: heartbeat_sdk::KeepAliveHandle) -> heartbeat_sdk::Result<()> {
    /// let goodbye = keep_alive.shutdown().await?;
    /// assert_eq!(goodbye, "So Long, and Thanks for All the Fish!");
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(self) -> Result<String> {
        self.stop(Farewell::Done).await
    }

    /// [`shutdown`](Self::shutdown) for a run that failed: the last request
    /// is `hb_fail` with exit `code` ([`HeartbeatClient::fail`]) instead of
    /// `hb_done`, sent once a beat in flight has finished (so no ping can
    /// recover the app after it). Against a server without the extension
    /// (the reference) the error is [`Error::Status`] with `status: 400`,
    /// and nothing else was sent.
    pub async fn fail(self, code: u8) -> Result<String> {
        self.stop(Farewell::Fail(code)).await
    }

    async fn stop(mut self, farewell: Farewell) -> Result<String> {
        self.control
            .send_modify(|control| control.stopping = Some(farewell));
        let Some(task) = self.task.take() else {
            return Err(Error::task("the keep-alive task is already gone"));
        };
        let abort = task.abort_handle();
        match tokio::time::timeout(self.shutdown_timeout, task).await {
            Ok(Ok(Some(result))) => result,
            Ok(Ok(None)) => Err(Error::task("the keep-alive task ended without signing off")),
            Ok(Err(join)) => Err(Error::task(format!(
                "the keep-alive task stopped before signing off: {join}"
            ))),
            Err(_) => {
                abort.abort();
                Err(Error::ShutdownTimeout {
                    timeout: self.shutdown_timeout,
                })
            }
        }
    }
}

impl Drop for KeepAliveHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The keep-alive task. Returns `Some(done's result)` when asked to stop,
/// `None` if the handle vanished without asking.
async fn run(
    client: HeartbeatClient,
    config: KeepAlive,
    mut control: watch::Receiver<Control>,
    state: watch::Sender<KeepAliveState>,
) -> Option<Result<String>> {
    let mut interval = control.borrow_and_update().interval;
    let mut next = (!interval.is_zero()).then(Instant::now);
    let mut need_init = true;
    let mut failures: u32 = 0;
    let farewell = loop {
        // asked to stop before this task first ran (or while a beat was in
        // flight): the change may already be marked seen, so look at the
        // value itself, not only for a change
        if let Some(stopping) = control.borrow().stopping {
            break stopping;
        }
        tokio::select! {
            biased;
            changed = control.changed() => {
                if changed.is_err() {
                    return None;
                }
                let Control { interval: new, stopping } = *control.borrow_and_update();
                if let Some(stopping) = stopping {
                    break stopping;
                }
                interval = new;
                state.send_modify(|s| s.interval = interval);
                next = (!interval.is_zero()).then(Instant::now);
                continue;
            }
            () = sleep_until(next) => {}
        }
        let timeout = config.timeout_for(interval);
        let started = Instant::now();
        let init = need_init;
        let result = if init {
            client.init(timeout, ErrorPolicy::Raise).await
        } else {
            client.ping(timeout, ErrorPolicy::Raise).await
        };
        let now = Instant::now();
        match result {
            Ok(granted) => {
                failures = 0;
                need_init = false;
                state.send_modify(|s| {
                    s.beats_ok += 1;
                    s.inits_ok += u64::from(init);
                    s.consecutive_failures = 0;
                    s.granted = Some(granted);
                });
                let due = after(started, interval);
                next = Some(if due > now { due } else { after(now, interval) });
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                need_init = true;
                let delay = config.backoff(interval, failures);
                tracing::warn!(
                    url = client.url(),
                    app_id = client.app_id(),
                    failures,
                    retry_in = ?delay,
                    %error,
                    "keep-alive beat failed"
                );
                state.send_modify(|s| {
                    s.beats_failed += 1;
                    s.consecutive_failures = failures;
                    s.last_error = Some(Arc::new(error));
                });
                next = Some(after(now, delay));
            }
        }
    };
    let result = match farewell {
        Farewell::Done => client.done(config.done_timeout, ErrorPolicy::Raise).await,
        Farewell::Fail(code) => client.fail(code, ErrorPolicy::Raise).await,
    };
    state.send_modify(|s| s.stopped = true);
    Some(result)
}

/// `at + d`, or far in the future when that overflows.
fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

/// Sleep until `deadline`; forever when there is none (paused).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_is_twice_the_interval_unless_a_margin_is_set() {
        let s = Duration::from_secs;
        assert_eq!(KeepAlive::every(s(3)).timeout(), s(6));
        assert_eq!(KeepAlive::every(s(3)).margin(s(1)).timeout(), s(4));
        assert_eq!(
            KeepAlive::every(s(3)).margin(s(1)).timeout_for(s(10)),
            s(11)
        );
    }

    #[test]
    fn the_timeout_is_capped_at_the_largest_protocol_timeout() {
        let max = Duration::from_millis(protocol::MAX_TIMEOUT_MS);
        // 25 days: twice that is over the cap
        let long = Duration::from_secs(25 * 24 * 60 * 60);
        assert_eq!(KeepAlive::every(long).timeout(), max);
        assert_eq!(KeepAlive::every(Duration::MAX).timeout(), max);
        assert_eq!(KeepAlive::every(max).margin(Duration::MAX).timeout(), max);
        assert_eq!(
            KeepAlive::every(max - Duration::from_secs(1))
                .margin(Duration::from_millis(500))
                .timeout(),
            max - Duration::from_millis(500)
        );
        // and the capped timeout is one the client sends
        assert_eq!(
            protocol::timeout_ms(KeepAlive::every(long).timeout()).unwrap(),
            protocol::MAX_TIMEOUT_MS
        );
    }

    #[test]
    fn backoff_starts_within_one_interval_and_is_capped() {
        let s = Duration::from_secs;
        let config = KeepAlive::every(s(1)).max_backoff(s(10));
        for _ in 0..50 {
            let first = config.backoff(s(1), 1);
            assert!(first >= s(1) / 2 && first <= s(1), "{first:?}");
            let third = config.backoff(s(1), 3);
            assert!(third >= s(2) && third <= s(4), "{third:?}");
            let late = config.backoff(s(1), 40);
            assert!(late >= s(5) && late <= s(10), "{late:?}");
            // the cap is never below the interval
            let long = config.backoff(s(60), 5);
            assert!(long >= s(30) && long <= s(60), "{long:?}");
        }
    }

    #[test]
    fn after_never_overflows() {
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now);
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}

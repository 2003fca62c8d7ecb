//! [`RetryPolicy`]: try a failed request again, with jittered exponential
//! backoff, within a total time budget.
//!
//! The client applies it above the [`Transport`](crate::Transport) trait, so
//! every transport gets it. The backoff and jitter helpers here are shared
//! with the keep-alive task.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::transport::timer;

/// How many times a client call is tried, and how long it waits in between.
///
/// Off by default: [`RetryPolicy::none`] (one attempt). Set one with
/// [`ClientBuilder::retry`](crate::ClientBuilder::retry); it then applies to
/// every call of that client, over any transport.
///
/// - **What is retried:** failures that another attempt may cure: transport
///   errors (refused, timed out, cut off) and HTTP `5xx` replies. Never a
///   `4xx`, a reply that does not parse, an oversized reply, or an invalid
///   argument.
/// - **Backoff:** before retry *n* (n = 1, 2, ...) the client waits
///   `initial_backoff × 2^(n-1)`, capped at `max_backoff`, then jittered to a
///   uniformly random point between half of that and all of it, so that many
///   clients restarted together do not retry in step.
/// - **Budget:** with [`budget`](Self::budget) set, the whole call (attempts
///   and waits) stays within it: each attempt's timeout is cut to what is left
///   of the budget, and no retry starts whose backoff would run past it.
/// - The [`ErrorPolicy`](crate::ErrorPolicy) of the call applies after the
///   last attempt: only the final error is raised (or replaced by the
///   fallback).
///
/// Backoff waits use tokio's timer when called inside a tokio runtime (the
/// runtime must have its timer enabled, as `#[tokio::main]` does), otherwise
/// async-io's timer, which the `surf` feature brings and which works under
/// any executor. A build with neither (no `reqwest`, `keepalive` nor
/// `server`, and no `surf`), or a caller outside tokio without `surf`, has
/// no timer: there the retries go out without waiting (still at most
/// [`max_attempts`](Self::max_attempts) of them, within the budget). No
/// thread is ever spawned to wait.
///
/// ```
/// use std::time::Duration;
/// use heartbeat_sdk::RetryPolicy;
///
/// let policy = RetryPolicy::new(4)
///     .initial_backoff(Duration::from_millis(200))
///     .max_backoff(Duration::from_secs(1))
///     .budget(Duration::from_secs(5));
/// assert_eq!(policy.max_attempts(), 4);
/// assert_eq!(RetryPolicy::default(), RetryPolicy::none());
/// # #[cfg(feature = "reqwest")]
/// let client = heartbeat_sdk::HeartbeatClient::builder().retry(policy).build().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    budget: Option<Duration>,
}

impl RetryPolicy {
    /// The first backoff unless set: 100 ms.
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
    /// The longest backoff unless set: 2 s.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);

    /// One attempt, no retry: the default.
    ///
    /// ```
    /// assert_eq!(heartbeat_sdk::RetryPolicy::none().max_attempts(), 1);
    /// ```
    pub const fn none() -> RetryPolicy {
        RetryPolicy {
            attempts: 1,
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            budget: None,
        }
    }

    /// Up to `attempts` tries in all (0 counts as 1), with the default
    /// backoff (100 ms doubling up to 2 s) and no time budget.
    ///
    /// ```
    /// assert_eq!(heartbeat_sdk::RetryPolicy::new(3).max_attempts(), 3);
    /// assert_eq!(heartbeat_sdk::RetryPolicy::new(0).max_attempts(), 1);
    /// ```
    pub const fn new(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts: if attempts == 0 { 1 } else { attempts },
            ..RetryPolicy::none()
        }
    }

    /// The wait before the first retry (before jitter).
    ///
    /// ```
    /// use std::time::Duration;
    /// let policy = heartbeat_sdk::RetryPolicy::new(3).initial_backoff(Duration::from_millis(50));
    /// # let _ = policy;
    /// ```
    pub const fn initial_backoff(mut self, backoff: Duration) -> RetryPolicy {
        self.initial_backoff = backoff;
        self
    }

    /// The longest wait between two attempts (before jitter).
    ///
    /// ```
    /// use std::time::Duration;
    /// let policy = heartbeat_sdk::RetryPolicy::new(8).max_backoff(Duration::from_secs(5));
    /// # let _ = policy;
    /// ```
    pub const fn max_backoff(mut self, backoff: Duration) -> RetryPolicy {
        self.max_backoff = backoff;
        self
    }

    /// The total time one call may take, attempts and waits included.
    /// A zero budget means a single attempt with the client's usual timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let policy = heartbeat_sdk::RetryPolicy::new(10).budget(Duration::from_secs(3));
    /// # let _ = policy;
    /// ```
    pub const fn budget(mut self, budget: Duration) -> RetryPolicy {
        self.budget = Some(budget);
        self
    }

    /// The most attempts a call makes (at least 1).
    ///
    /// ```
    /// assert_eq!(heartbeat_sdk::RetryPolicy::new(2).max_attempts(), 2);
    /// ```
    pub const fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// The jittered wait before attempt `n + 1` (`n` counts from 1): the
    /// same doubling, cap and jitter as [`run`](Self::run), for loops that
    /// retry on their own terms (the server's notifications).
    #[cfg(feature = "notify")]
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        jitter(exponential(self.initial_backoff, self.max_backoff, n))
    }

    /// Run `attempt` until it succeeds, fails for good, or the attempts or
    /// the budget run out. `attempt` gets the timeout to use for its request.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        request_timeout: Duration,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let budget = self.budget.filter(|budget| !budget.is_zero());
        let start = now();
        let mut tries: u32 = 0;
        loop {
            tries += 1;
            let timeout = match budget {
                Some(budget) => request_timeout.min(budget.saturating_sub(elapsed(start))),
                None => request_timeout,
            };
            let error = match attempt(timeout).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if tries >= self.attempts || !is_retryable(&error) {
                return Err(error);
            }
            let delay = jitter(exponential(self.initial_backoff, self.max_backoff, tries));
            if budget.is_some_and(|budget| elapsed(start).saturating_add(delay) >= budget) {
                return Err(error);
            }
            tracing::warn!(attempt = tries, of = self.attempts, retry_in = ?delay, %error, "heartbeat request failed, retrying");
            sleep(delay).await;
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::none()
    }
}

/// Failures another attempt may cure: no reply at all, or a 5xx.
fn is_retryable(error: &Error) -> bool {
    match error {
        Error::Transport { source, .. } => !source.is_body_too_large(),
        Error::Status { status, .. } => (500..600).contains(status),
        _ => false,
    }
}

/// `initial × 2^(n-1)`, capped at `cap` (n counts from 1).
pub(crate) fn exponential(initial: Duration, cap: Duration, n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(31);
    initial
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(cap)
}

/// A uniformly random duration between `d / 2` and `d`.
pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos = d.as_nanos();
    let half = nanos / 2;
    // span × r / 2^64 without overflowing u128 (a Duration has < 2^94 ns)
    let (span, r) = (nanos - half, u128::from(random_u64()));
    let extra = (span >> 64) * r + (((span & u128::from(u64::MAX)) * r) >> 64);
    let total = half + extra;
    let secs = u64::try_from(total / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (total % 1_000_000_000) as u32)
}

/// A random number from the standard library's per-process random hash keys,
/// a counter and the time: plenty for jitter, no dependency.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

/// The current instant, on tokio's clock when tokio is compiled in (so that
/// a paused test clock applies), else the system's. The client's per-request
/// deadlines use it too.
pub(crate) fn now() -> Instant {
    #[cfg(any(feature = "reqwest", feature = "keepalive", feature = "server"))]
    {
        tokio::time::Instant::now().into_std()
    }
    #[cfg(not(any(feature = "reqwest", feature = "keepalive", feature = "server")))]
    {
        Instant::now()
    }
}

/// The time since `start`, on the clock of [`now`].
pub(crate) fn elapsed(start: Instant) -> Duration {
    now().saturating_duration_since(start)
}

/// Wait `d` on the crate's one timer ([`timer`]): tokio's inside a tokio
/// runtime, else async-io's when `surf` brings it; with neither, the retry
/// goes out at once (logged), as documented on [`RetryPolicy`].
async fn sleep(d: Duration) {
    if !timer::sleep(d).await {
        tracing::debug!(backoff = ?d, "no timer outside a tokio runtime in this build: retrying at once");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TransportError;

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        assert_eq!(exponential(ms(100), ms(1000), 1), ms(100));
        assert_eq!(exponential(ms(100), ms(1000), 2), ms(200));
        assert_eq!(exponential(ms(100), ms(1000), 4), ms(800));
        assert_eq!(exponential(ms(100), ms(1000), 5), ms(1000));
        assert_eq!(exponential(ms(100), ms(1000), u32::MAX), ms(1000));
        assert_eq!(exponential(Duration::MAX, Duration::MAX, 40), Duration::MAX);
    }

    #[test]
    fn jitter_stays_between_half_and_all_and_varies() {
        let d = Duration::from_millis(1000);
        let samples: Vec<Duration> = (0..200).map(|_| jitter(d)).collect();
        assert!(
            samples.iter().all(|s| *s >= d / 2 && *s <= d),
            "{samples:?}"
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(
            distinct.len() > 150,
            "jitter must vary: {} distinct",
            distinct.len()
        );
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        assert!(jitter(Duration::MAX) >= Duration::MAX / 2);
    }

    /// Durations past 2^64 ns take the high half of the multiplication:
    /// they spread over the whole upper half too (64 draws all in the lower
    /// quarter of it would happen with probability 2^-128).
    #[test]
    fn max_attempts_is_what_was_asked() {
        assert_eq!(RetryPolicy::new(3).max_attempts(), 3);
        assert_eq!(RetryPolicy::none().max_attempts(), 1);
    }

    #[test]
    fn jitter_of_huge_durations_spreads_too() {
        let d = Duration::MAX;
        let draws: Vec<Duration> = (0..64).map(|_| jitter(d)).collect();
        assert!(draws.iter().all(|j| *j >= d / 2), "{draws:?}");
        assert!(draws.iter().any(|j| *j > d / 8 * 5), "{draws:?}");
    }

    #[test]
    fn only_transport_errors_and_5xx_are_retried() {
        let transport = |e: TransportError| Error::Transport {
            url: "u".into(),
            source: e,
        };
        let status = |status| Error::Status {
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(is_retryable(&transport(TransportError::connect("x"))));
        assert!(is_retryable(&transport(TransportError::timeout("x"))));
        assert!(is_retryable(&transport(TransportError::other("x"))));
        assert!(!is_retryable(&transport(TransportError::body_too_large(1))));
        assert!(is_retryable(&status(500)));
        assert!(is_retryable(&status(503)));
        assert!(!is_retryable(&status(400)));
        assert!(!is_retryable(&status(404)));
        assert!(!is_retryable(&Error::Parse {
            url: "u".into(),
            reason: "r".into(),
            body: String::new(),
        }));
        assert!(!is_retryable(&Error::Config { reason: "r".into() }));
        assert!(!is_retryable(&Error::Task { reason: "r".into() }));
        assert!(!is_retryable(&Error::Build {
            reason: "r".into(),
            source: None
        }));
    }

    /// Outside tokio the backoff waits on async-io's timer (no thread of
    /// our own): a plain executor sees the retries spaced out.
    #[cfg(feature = "surf")]
    #[test]
    fn the_backoff_waits_without_any_runtime() {
        assert!(tokio::runtime::Handle::try_current().is_err());
        let start = Instant::now();
        let mut calls = 0;
        let result: Result<u32> = block_on(
            RetryPolicy::new(3)
                .initial_backoff(Duration::from_millis(10))
                .run(Duration::from_secs(1), |_| {
                    calls += 1;
                    let attempt = calls;
                    async move {
                        if attempt < 3 {
                            Err(Error::Transport {
                                url: "u".into(),
                                source: TransportError::connect("refused"),
                            })
                        } else {
                            Ok(attempt)
                        }
                    }
                }),
        );
        assert_eq!(result.unwrap(), 3);
        // two waits of at least 5 ms and 10 ms (half of 10 and 20)
        assert!(start.elapsed() >= Duration::from_millis(15));
    }

    /// A minimal executor: poll on this thread, park until woken.
    #[cfg(feature = "surf")]
    fn block_on<F: Future>(future: F) -> F::Output {
        use std::sync::Arc;
        use std::task::{Context, Poll, Waker};
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
                return value;
            }
            std::thread::park();
        }
    }
}

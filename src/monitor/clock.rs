//! Time for the registry: the system's monotonic clock, or a manual one for tests.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// A source of monotonic time for the [`Registry`](super::Registry).
pub trait Clock: Debug + Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;

    /// The wall-clock time of `at`, an instant of this clock (the dates
    /// of notifications and history). The default dates it back from the
    /// system's time now.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use heartbeat_sdk::server::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let start = clock.now();
    /// clock.advance(Duration::from_secs(60));
    /// // a manual clock's wall time moves with it, not with the system's
    /// let gap = clock.wall(clock.now()).duration_since(clock.wall(start)).unwrap();
    /// assert_eq!(gap, Duration::from_secs(60));
    /// ```
    fn wall(&self, at: Instant) -> SystemTime {
        let now = self.now();
        let wall = SystemTime::now();
        if at <= now {
            wall.checked_sub(now - at).unwrap_or(wall)
        } else {
            wall.checked_add(at - now).unwrap_or(wall)
        }
    }
}

/// The system's monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use heartbeat_sdk::server::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(3));
/// assert_eq!(clock.now() - start, Duration::from_secs(3));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    base: Instant,
    /// The wall-clock time at `base`.
    base_wall: SystemTime,
    offset: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// A manual clock standing at the current instant.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            base_wall: SystemTime::now(),
            offset: Arc::default(),
        }
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(PoisonError::into_inner);
        *offset = offset.saturating_add(by);
    }

    /// How far the clock has been moved since it was made.
    pub fn elapsed(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    /// The system's time when the clock was made, plus how far `at` is
    /// from then on this clock.
    fn wall(&self, at: Instant) -> SystemTime {
        let wall = if at >= self.base {
            self.base_wall.checked_add(at - self.base)
        } else {
            self.base_wall.checked_sub(self.base - at)
        };
        wall.unwrap_or(self.base_wall)
    }
}

//! The one timer the crate waits on: the seam's deadline and the retry
//! backoff.
//!
//! Which timer runs depends on the build and on where the caller is:
//!
//! | inside a tokio runtime | tokio compiled in (`reqwest`, `keepalive`, `server`) | `surf` (async-io) | timer used |
//! |---|---|---|---|
//! | yes | yes | any | tokio's (a paused test clock applies) |
//! | no | any | yes | async-io's (its own thread, any executor or none) |
//! | no | any | no | none |
//!
//! With no timer a deadline is not enforced above the transport (the
//! transport's own, if any, applies) and a backoff is not waited: a retry
//! goes out at once. Only a build without `reqwest`, `surf`, `keepalive` and
//! `server`, or a caller outside tokio in a build without `surf`, is in that
//! case; no operating-system thread is ever spawned to wait.

use std::future::Future;
use std::time::Duration;

/// Run `future` for at most `limit`: `None` when the deadline came first
/// (the future is then dropped). A future that completes is always
/// preferred to a deadline that passed in the same poll.
pub(crate) async fn deadline<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    #[cfg(any(feature = "reqwest", feature = "keepalive", feature = "server"))]
    if tokio::runtime::Handle::try_current().is_ok() {
        return tokio::time::timeout(limit, future).await.ok();
    }
    #[cfg(feature = "surf")]
    {
        use futures_lite::FutureExt;
        let reply = async { Some(future.await) };
        let timer = async {
            async_io::Timer::after(limit).await;
            None
        };
        reply.or(timer).await
    }
    #[cfg(not(feature = "surf"))]
    {
        let _ = limit;
        Some(future.await)
    }
}

/// Wait `duration`; returns `false` at once when there is no timer here
/// (see the module docs).
pub(crate) async fn sleep(duration: Duration) -> bool {
    #[cfg(any(feature = "reqwest", feature = "keepalive", feature = "server"))]
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::sleep(duration).await;
        return true;
    }
    #[cfg(feature = "surf")]
    {
        async_io::Timer::after(duration).await;
        true
    }
    #[cfg(not(feature = "surf"))]
    {
        let _ = duration;
        false
    }
}

#[cfg(all(
    test,
    any(
        feature = "reqwest",
        feature = "keepalive",
        feature = "server",
        feature = "surf"
    )
))]
mod tests {
    use super::*;

    #[cfg(any(feature = "reqwest", feature = "keepalive", feature = "server"))]
    #[tokio::test(start_paused = true)]
    async fn inside_tokio_the_deadline_runs_on_tokio_s_clock() {
        let start = tokio::time::Instant::now();
        let late = deadline(Duration::from_secs(5), std::future::pending::<()>()).await;
        assert_eq!(late, None);
        // the paused clock moved exactly to the deadline, at no real cost
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(deadline(Duration::ZERO, async { 7 }).await, Some(7));
    }

    #[cfg(any(feature = "reqwest", feature = "keepalive", feature = "server"))]
    #[tokio::test(start_paused = true)]
    async fn inside_tokio_sleep_runs_on_tokio_s_clock() {
        let start = tokio::time::Instant::now();
        assert!(sleep(Duration::from_secs(30)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[cfg(feature = "surf")]
    #[test]
    fn outside_tokio_async_io_keeps_the_deadline_and_the_sleep() {
        assert!(tokio::runtime::Handle::try_current().is_err());
        let late = futures_lite::future::block_on(deadline(
            Duration::from_millis(20),
            std::future::pending::<()>(),
        ));
        assert_eq!(late, None);
        let start = std::time::Instant::now();
        assert!(futures_lite::future::block_on(sleep(
            Duration::from_millis(20)
        )));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}

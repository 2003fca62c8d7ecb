//! Connection bookkeeping for the HTTP front end: which connections are
//! waiting for a request (silent since they connected, or kept alive after
//! a reply) and since when, so that a server at its connection cap can close
//! the one waiting longest to make room for a new client; the back-off after
//! a failed `accept`; and the log of evictions, one info line per burst.
//!
//! A connection's state changes on three signals: bytes read from its
//! socket (a request is coming: busy), its reply body dropped by hyper once
//! written (answered), and hyper finding nothing more to read after that
//! (idle: hyper waits for the next request). Only connections that have not
//! sent a byte of a request (fresh or idle) are ever closed to make room;
//! one that is reading or answering a request never is. (A client that
//! connects and stays silent would otherwise hold its slot for the whole
//! head timeout: enough of them keep a full server from serving anyone.)

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Accepted, no byte received yet: may be closed to make room (and is
/// closed by the head timeout if it stays silent).
const FRESH: u8 = 0;
/// A request is being read or answered.
const BUSY: u8 = 1;
/// The reply is written; hyper has not yet gone back to waiting.
const ANSWERED: u8 = 2;
/// Kept alive, waiting for the next request: may be closed to make room.
const IDLE: u8 = 3;
/// Chosen to be closed; whatever arrives on it now is not served.
const EVICTED: u8 = 4;

/// The open connections of one server.
#[derive(Debug)]
pub(super) struct Connections {
    epoch: Instant,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Set while the accept loop waits for a connection to turn idle.
    waiting: AtomicBool,
    became_idle: Notify,
}

/// One connection's state, shared by its socket wrapper, its service and
/// the accept loop.
#[derive(Debug)]
pub(super) struct Conn {
    peer: IpAddr,
    state: AtomicU8,
    /// Microseconds from [`Connections::epoch`] to when it was accepted
    /// (while fresh) or last turned idle: since when it has been waiting.
    idle_since_us: AtomicU64,
    evict: Notify,
    connections: Arc<Connections>,
}

/// A connection closed to make room: who it was and how long it had waited
/// for a request (since it connected, or since its last reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Evicted {
    pub peer: IpAddr,
    pub idle_for: Duration,
}

impl Connections {
    pub(super) fn new() -> Arc<Connections> {
        Arc::new(Connections {
            epoch: Instant::now(),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            became_idle: Notify::new(),
        })
    }

    /// Track a new connection from `peer` until the returned registration
    /// is dropped.
    pub(super) fn register(self: &Arc<Self>, peer: IpAddr) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            peer,
            state: AtomicU8::new(FRESH),
            idle_since_us: AtomicU64::new(self.now_us()),
            evict: Notify::new(),
            connections: Arc::clone(self),
        });
        self.lock().insert(id, Arc::clone(&conn));
        Registration { id, conn }
    }

    /// Close the connection that has waited longest for a request (fresh
    /// or idle), if any is waiting: it is marked so that nothing more is
    /// read from it, and its task is told to drop it (which releases its
    /// slot).
    pub(super) fn evict_longest_waiting(&self) -> Option<Evicted> {
        let open = self.lock();
        loop {
            // ties (same microsecond) go to the one accepted first
            let (_, oldest, state) = open
                .iter()
                .filter_map(|(id, conn)| {
                    let state = conn.state.load(Ordering::SeqCst);
                    matches!(state, FRESH | IDLE).then_some((id, conn, state))
                })
                .min_by_key(|(id, conn, _)| (conn.idle_since_us.load(Ordering::SeqCst), **id))?;
            // it may have turned busy since the scan: then look again
            if oldest
                .state
                .compare_exchange(state, EVICTED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                oldest.evict.notify_one();
                let since = oldest.idle_since_us.load(Ordering::SeqCst);
                return Some(Evicted {
                    peer: oldest.peer,
                    idle_for: Duration::from_micros(self.now_us().saturating_sub(since)),
                });
            }
        }
    }

    /// Wait until some connection turns idle (or a spurious wake-up): the
    /// accept loop's cue to try [`evict_longest_waiting`](Self::evict_longest_waiting)
    /// again. Turn-idle notices are only sent while someone waits here.
    pub(super) async fn some_became_idle(&self) {
        struct Waiting<'a>(&'a AtomicBool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let notified = self.became_idle.notified();
        let _waiting = Waiting(&self.waiting);
        self.waiting.store(true, Ordering::SeqCst);
        notified.await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl Conn {
    /// A request starts (its head was parsed): the connection is busy.
    pub(super) fn request_started(&self) {
        let _ = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                (s != EVICTED).then_some(BUSY)
            });
    }

    /// Bytes arrived; false if the connection was evicted first, in which
    /// case they must not be served.
    fn bytes_read(&self) -> bool {
        self.state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                (s != EVICTED).then_some(BUSY)
            })
            .is_ok()
    }

    /// The reply has been written in full.
    fn reply_finished(&self) {
        let _ = self
            .state
            .compare_exchange(BUSY, ANSWERED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Hyper found nothing to read: after a reply, it now waits for the
    /// next request.
    fn read_pending(&self) {
        if self.state.load(Ordering::SeqCst) != ANSWERED {
            return;
        }
        self.idle_since_us
            .store(self.connections.now_us(), Ordering::SeqCst);
        if self
            .state
            .compare_exchange(ANSWERED, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            && self.connections.waiting.load(Ordering::SeqCst)
        {
            self.connections.became_idle.notify_one();
        }
    }

    /// Resolves once the connection is chosen to be closed.
    pub(super) async fn evicted(&self) {
        self.evict.notified().await;
    }
}

/// A connection's entry in [`Connections`], removed on drop.
#[derive(Debug)]
pub(super) struct Registration {
    id: u64,
    conn: Arc<Conn>,
}

impl Registration {
    /// The connection's shared state.
    pub(super) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.conn.connections.lock().remove(&self.id);
    }
}

/// A socket that reports reads to its [`Conn`], and fails reads once the
/// connection is evicted.
#[derive(Debug)]
pub(super) struct TrackedIo<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T> TrackedIo<T> {
    pub(super) fn new(inner: T, conn: Arc<Conn>) -> Self {
        TrackedIo { inner, conn }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if this.conn.bytes_read() {
                    Poll::Ready(Ok(()))
                } else {
                    buf.set_filled(before);
                    Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()))
                }
            }
            Poll::Pending => {
                this.conn.read_pending();
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A reply body that tells its [`Conn`] when hyper is done with it (has
/// written it in full, or given up): hyper drops the body then.
#[derive(Debug)]
pub(super) struct TrackedBody<B> {
    inner: B,
    _reply: ReplyGuard,
}

#[derive(Debug)]
struct ReplyGuard(Arc<Conn>);

impl Drop for ReplyGuard {
    fn drop(&mut self) {
        self.0.reply_finished();
    }
}

impl<B> TrackedBody<B> {
    /// `body`, reporting to `conn` when dropped.
    pub(super) fn new(body: B, conn: Arc<Conn>) -> Self {
        TrackedBody {
            inner: body,
            _reply: ReplyGuard(conn),
        }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts the connections closed to make room, so that a flood of
/// connections at the cap logs two info lines, not one per eviction: the
/// first eviction of a burst, and the end of the burst (the next connection
/// that finds a free slot) with how many were closed; the others go to debug.
#[derive(Debug, Default)]
pub(super) struct EvictionLog {
    evicted: u64,
}

impl EvictionLog {
    /// Record an eviction: whether it starts a burst (and so is logged at info).
    pub(super) fn evicted(&mut self) -> bool {
        self.evicted = self.evicted.saturating_add(1);
        self.evicted == 1
    }

    /// Record a connection that found a free slot: the number of evictions
    /// of the burst it ends, if more than the one logged at its start.
    pub(super) fn room_found(&mut self) -> Option<u64> {
        let evicted = std::mem::take(&mut self.evicted);
        (evicted > 1).then_some(evicted)
    }
}

/// Pauses after failed accepts (typically `EMFILE`, out of file
/// descriptors), doubling from 10 ms up to 1 s, so that a burst of failures
/// neither spins the accept loop nor floods the log: only the first failure
/// of a burst is logged, and the end of the burst once.
#[derive(Debug, Default)]
pub(super) struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// Record a failed accept: how long to pause, and whether this failure
    /// starts a burst (and so is to be logged).
    pub(super) fn failed(&mut self) -> (Duration, bool) {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(7);
        let pause = (Self::FIRST * 2u32.pow(doublings)).min(Self::MAX);
        (pause, self.failures == 1)
    }

    /// Record a successful accept: the number of failures of the burst it
    /// ends, if there was one.
    pub(super) fn succeeded(&mut self) -> Option<u32> {
        (self.failures > 0).then(|| std::mem::take(&mut self.failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Drive `conn` through one request and reply, to idle.
    fn serve_one(conn: &Arc<Conn>) {
        assert!(conn.bytes_read());
        conn.request_started();
        drop(TrackedBody::new((), Arc::clone(conn)));
        conn.read_pending();
    }

    #[test]
    fn waiting_connections_are_evicted_longest_waiting_first_busy_ones_never() {
        let connections = Connections::new();
        let [a, b, c, d, e] = [(); 5].map(|()| connections.register(PEER));
        for (since, reg) in [&a, &b, &c].into_iter().enumerate() {
            serve_one(reg.conn());
            reg.conn()
                .idle_since_us
                .store(since as u64 + 10, Ordering::SeqCst);
        }
        // e stays fresh (silent since it connected), from before b and c idled
        e.conn().idle_since_us.store(10, Ordering::SeqCst);
        // a turns busy again (the next request is arriving), d is answering
        assert!(a.conn().bytes_read());
        assert!(d.conn().bytes_read());
        d.conn().request_started();
        d.conn().read_pending(); // a body still to come: not idle
        let first = connections.evict_longest_waiting().expect("e is silent");
        assert_eq!(first.peer, PEER);
        assert_eq!(e.conn().state.load(Ordering::SeqCst), EVICTED);
        assert!(!e.conn().bytes_read(), "nothing read once evicted");
        connections.evict_longest_waiting().expect("b is idle");
        assert_eq!(b.conn().state.load(Ordering::SeqCst), EVICTED);
        assert!(!b.conn().bytes_read(), "nothing read once evicted");
        connections.evict_longest_waiting().expect("c is idle");
        assert_eq!(c.conn().state.load(Ordering::SeqCst), EVICTED);
        assert_eq!(
            connections.evict_longest_waiting(),
            None,
            "a and d are busy"
        );
        assert_eq!(a.conn().state.load(Ordering::SeqCst), BUSY);
        drop((a, b, c, d, e));
        assert!(connections.lock().is_empty(), "registrations removed");
    }

    #[test]
    fn evictions_log_the_start_of_a_burst_and_count_the_rest() {
        let mut log = EvictionLog::default();
        assert_eq!(log.room_found(), None);
        assert!(log.evicted(), "the first of a burst");
        assert_eq!(log.room_found(), None, "a burst of one: already logged");
        let logged: Vec<bool> = (0..5).map(|_| log.evicted()).collect();
        assert_eq!(logged, [true, false, false, false, false]);
        assert_eq!(log.room_found(), Some(5));
        assert_eq!(log.room_found(), None);
        assert!(log.evicted(), "a new burst");
    }

    #[test]
    fn accept_failures_back_off_and_log_once_per_burst() {
        let mut backoff = AcceptBackoff::default();
        assert_eq!(backoff.succeeded(), None);
        let pauses: Vec<(Duration, bool)> = (0..12).map(|_| backoff.failed()).collect();
        assert_eq!(pauses[0], (Duration::from_millis(10), true));
        assert_eq!(pauses[1], (Duration::from_millis(20), false));
        assert!(pauses[1..].iter().all(|(_, log)| !log), "{pauses:?}");
        assert!(pauses.windows(2).all(|w| w[0].0 <= w[1].0), "{pauses:?}");
        assert_eq!(pauses[11].0, Duration::from_secs(1));
        assert_eq!(backoff.succeeded(), Some(12));
        assert_eq!(backoff.succeeded(), None);
        assert_eq!(backoff.failed(), (Duration::from_millis(10), true));
    }
}

//! Sending replies: the body type that renders a whole-registry reply a
//! chunk at a time as hyper asks for it, and the write timeout that drops a
//! client that stops reading.
//!
//! Memory per connection stays bounded: hyper polls the body for the next
//! chunk only once its write buffer holds less than `max_buf_size` (16 KiB
//! here), so a connection holds the snapshot (shared keys, 32 bytes per
//! record), at most one chunk in hyper's buffer and one being rendered,
//! plus the kernel's socket buffers. And the number of such bodies is
//! capped (`ServerBuilder::max_streamed_replies`): each holds its slot until
//! dropped, so stalled readers cannot pile up snapshots (a snapshot also
//! keeps alive the keys of applications gone since it was taken).
//!
//! The sort of the snapshot and the first chunk are done on tokio's blocking
//! pool (`respond` in `respond.rs`): at 100 000 applications they take tens of
//! milliseconds, which on an async worker would stall every connection it
//! serves. Sorting lazily a chunk at a time would not help: the first key
//! of a sorted list needs a pass over all of them. The later chunks are
//! rendered inline, 32 KiB each, as hyper asks for them.
//!
//! Hyper has no write timeout, so [`WriteTimeout`] wraps the connection's
//! I/O: when a write (or flush) has been pending, with nothing accepted by
//! the socket, for the configured time, it fails with `TimedOut` and hyper
//! drops the connection, its body and snapshot with it. Only writes that
//! are stuck are timed: a kept-alive connection waiting for its next
//! request writes nothing, and is left to the head timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::monitor::service::Chunks;

/// A write timeout that never fires in practice (30 years).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// Largest chunk of a streamed reply, in bytes.
pub(crate) const CHUNK: usize = 32 * 1024;

/// A reply body: whole (sent with `Content-Length`), or rendered a chunk at
/// a time (chunked over HTTP/1.1, close-delimited over HTTP/1.0).
#[derive(Debug)]
pub(crate) enum ReplyBody {
    /// The whole body, until it is taken.
    Full(Option<Bytes>),
    /// A first chunk already rendered, then the rest; and the slot it takes
    /// among the streamed replies in progress, freed when it is dropped.
    Chunked {
        first: Option<Bytes>,
        rest: Box<Chunks>,
        _slot: OwnedSemaphorePermit,
    },
}

impl ReplyBody {
    /// `chunks` as a body: whole if it fits in one chunk (so small replies
    /// keep their `Content-Length`, and `slot` is freed at once), else
    /// streamed, holding `slot` until dropped.
    pub(crate) fn stream(mut chunks: Chunks, slot: OwnedSemaphorePermit) -> ReplyBody {
        let first = chunks.next().map(Bytes::from).unwrap_or_default();
        if chunks.is_done() {
            ReplyBody::Full(Some(first))
        } else {
            ReplyBody::Chunked {
                first: Some(first),
                rest: Box::new(chunks),
                _slot: slot,
            }
        }
    }

    /// Whether it is sent without a length (chunked, or close-delimited).
    pub(crate) fn is_streamed(&self) -> bool {
        matches!(self, ReplyBody::Chunked { .. })
    }
}

impl From<String> for ReplyBody {
    fn from(body: String) -> ReplyBody {
        ReplyBody::Full(Some(Bytes::from(body)))
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = match self.get_mut() {
            ReplyBody::Full(body) => body.take(),
            ReplyBody::Chunked { first, rest, .. } => {
                first.take().or_else(|| rest.next().map(Bytes::from))
            }
        };
        Poll::Ready(next.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplyBody::Full(body) => body.as_ref().is_none_or(Bytes::is_empty),
            ReplyBody::Chunked { first, rest, .. } => first.is_none() && rest.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Full(body) => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
            ReplyBody::Chunked { .. } => SizeHint::default(),
        }
    }
}

/// A connection's I/O whose writes fail with `TimedOut` once they have made
/// no progress for `timeout`.
#[derive(Debug)]
pub(crate) struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Armed when a write went pending after progress; disarmed by progress.
    stall: Pin<Box<Sleep>>,
    armed: bool,
}

impl<T> WriteTimeout<T> {
    pub(crate) fn new(inner: T, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stall: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// Passes `poll` through, timing how long it stays pending.
    fn timed<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if !self.armed {
            self.armed = true;
            let now = Instant::now();
            let deadline = now.checked_add(self.timeout).unwrap_or(now + FAR_FUTURE);
            self.stall.as_mut().reset(deadline);
        }
        match self.stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "client read nothing for {} ms: reply dropped",
                    self.timeout.as_millis()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: Read + Unpin> Read for WriteTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for WriteTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.timed(cx, poll)
    }
}

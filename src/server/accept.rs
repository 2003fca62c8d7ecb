//! The accept loop ([`serve`]): connections under their limits, hyper's
//! HTTP/1 on each, the graceful drain at shutdown; and the always-on
//! sweeper that turns deadlines into events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};

use super::access::Access;
use super::conns::{AcceptBackoff, Connections, EvictionLog, TrackedBody, TrackedIo};
use super::respond::{respond, Peers};
use super::socket::Socket;
use super::stream::WriteTimeout;
use crate::monitor::SharedRegistry;

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The longest the sweeper sleeps: a bound on how late a crossing is seen
/// when the registry's clock is not the system's (a `ManualClock` that was
/// advanced) or drifted from tokio's timer.
const MAX_SWEEP_WAIT: Duration = Duration::from_secs(1);

/// The always-on sweeper: emits each threshold crossing (WARNING,
/// CRITICAL, expiry, an expected app going missing) at its instant, then
/// sleeps until the next one, or until `wake` says an earlier one appeared.
pub(super) async fn sweep(state: Arc<SharedRegistry>, wake: Arc<Notify>) {
    loop {
        let next = state.sweep();
        let now = state.clock().now();
        let wait = next.map_or(MAX_SWEEP_WAIT, |due| {
            due.saturating_duration_since(now)
                .clamp(Duration::from_millis(1), MAX_SWEEP_WAIT)
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
    }
}

/// What [`serve`] enforces per connection and overall.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) head_timeout: Duration,
    pub(super) write_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) max_streamed_replies: usize,
}

pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<SharedRegistry>,
    access: Arc<Access>,
    #[cfg(feature = "web-config")] tls: Option<super::web_config::TlsAcceptorHandle>,
    limits: Limits,
    mut stopped: oneshot::Receiver<()>,
) {
    let Limits {
        head_timeout,
        write_timeout,
        max_connections,
        max_streamed_replies,
    } = limits;
    // one permit per whole-registry reply in progress: see `respond`
    let streams = Arc::new(Semaphore::new(max_streamed_replies));
    // One permit per open connection: when none is left, a new client's
    // connection takes the slot of the one waiting longest for a request
    // (silent or idle), or waits (and later clients queue in the listen
    // backlog) until one frees up.
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD)
        // a client that shuts its write side after the request (`nc -N`,
        // some shell scripts) still gets its reply
        .half_close(true)
        .keep_alive(true);
    let connections = Connections::new();
    let mut backoff = AcceptBackoff::default();
    let mut evictions = EvictionLog::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // e.g. out of file descriptors: back off instead of
                    // spinning, and log the first failure of a burst only
                    let (pause, first) = backoff.failed();
                    if first {
                        tracing::warn!(%error, "accept failed: pausing; further failures until an accept succeeds are not logged");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        _ = &mut stopped => break,
                    }
                }
            },
            _ = &mut stopped => break,
        };
        if let Some(failures) = backoff.succeeded() {
            tracing::warn!(failures, "accepting again after failed accepts");
        }
        let peer = peer.ip().to_canonical();
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                if let Some(evicted) = evictions.room_found() {
                    tracing::info!(evicted, "connection cap no longer reached: connections closed to make room meanwhile");
                }
                permit
            }
            Err(_) => tokio::select! {
                permit = make_room(&permits, &connections, &mut evictions) => permit,
                _ = &mut stopped => break,
            },
        };
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map_or(peer, |addr| addr.ip().to_canonical());
        let peers = Peers { peer, local };
        let registration = connections.register(peer);
        let conn = Arc::clone(registration.conn());
        let state = state.clone();
        let access = Arc::clone(&access);
        let streams = Arc::clone(&streams);
        let service = {
            let conn = Arc::clone(&conn);
            service_fn(move |request| {
                conn.request_started();
                let conn = Arc::clone(&conn);
                let streams = Arc::clone(&streams);
                let response = respond(
                    state.clone(),
                    Arc::clone(&access),
                    streams,
                    peers,
                    head_timeout,
                    request,
                );
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, conn)))
                }
            })
        };
        let watcher = graceful.watcher();
        let builder = builder.clone();
        #[cfg(feature = "web-config")]
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = async {
                #[cfg(feature = "web-config")]
                let socket = match &tls {
                    // a stalled handshake is a silent connection: under
                    // the head timeout, and evicted first when full
                    Some(tls) => match tokio::time::timeout(head_timeout, tls.accept(stream)).await
                    {
                        Ok(Ok(stream)) => Socket::Tls(Box::new(stream)),
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_elapsed) => {
                            tracing::debug!(%peer, "TLS handshake not completed in time");
                            return;
                        }
                    },
                    None => Socket::Plain(stream),
                };
                #[cfg(not(feature = "web-config"))]
                let socket = Socket::Plain(stream);
                let io = WriteTimeout::new(
                    TokioIo::new(TrackedIo::new(socket, Arc::clone(&conn))),
                    write_timeout,
                );
                if let Err(error) = watcher.watch(builder.serve_connection(io, service)).await {
                    if error.is_parse() || error.is_parse_too_large() {
                        // hyper answered 400 or 431
                        tracing::info!(%peer, %error, "request refused");
                    } else {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                }
            };
            tokio::select! {
                () = served => {}
                // dropping the idle connection closes it
                () = conn.evicted() => {}
            }
            drop(registration);
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// A slot for a new connection when all are taken: close the connection
/// that has waited longest for a request (silent or idle) and take its
/// slot; when all are busy, wait for one to turn idle or for any to close.
/// The first eviction of a burst is logged at info, the others at debug.
async fn make_room(
    permits: &Arc<Semaphore>,
    connections: &Connections,
    evictions: &mut EvictionLog,
) -> OwnedSemaphorePermit {
    loop {
        if let Some(evicted) = connections.evict_longest_waiting() {
            let (peer, idle_ms) = (evicted.peer, evicted.idle_for.as_millis());
            if evictions.evicted() {
                tracing::info!(%peer, idle_ms, "connection cap reached: closed the connection waiting longest for a request; further ones until the cap is no longer reached are logged at debug");
            } else {
                tracing::debug!(%peer, idle_ms, "connection cap reached: closed the connection waiting longest for a request");
            }
            // its task ends at once and releases its permit
            if let Ok(permit) = permits.clone().acquire_owned().await {
                return permit;
            }
        }
        tokio::select! {
            permit = permits.clone().acquire_owned() => if let Ok(permit) = permit {
                return permit;
            },
            () = connections.some_became_idle() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Server;
    use std::net::{IpAddr, SocketAddr};

    /// A client that stops reading a 40 MB `/metrics` is dropped once the
    /// reply has made no progress for the write timeout: its snapshot is
    /// freed (no key of the registry is shared any more), its reply ends
    /// short, and the server, which holds no lock for it, keeps answering
    /// meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_stalls_is_dropped_and_frees_its_reply() {
        use crate::monitor::ManualClock;
        use std::io::{Read, Write};
        use std::net::TcpStream;
        use std::time::Instant;

        const APPS: usize = 20_000;
        const HANG_GUARD: Duration = Duration::from_secs(60);
        let local = IpAddr::from([127, 0, 0, 1]);
        let server = Server::builder(SocketAddr::new(local, 0))
            .clock(ManualClock::new())
            .max_apps(APPS + 1)
            .write_timeout(Duration::from_millis(300))
            .start()
            .await
            .unwrap();
        let whole = server.registry().with_registry(|registry, now| {
            for i in 0..APPS {
                let id = format!("app-{i:06}-{}", "x".repeat(990));
                registry
                    .init(&id, local, Duration::from_secs(600), now)
                    .unwrap();
            }
            registry.take_events();
            crate::monitor::metrics::render(registry, now).len()
        });
        let held = || {
            server
                .registry()
                .with_registry(|registry, _| registry.keys_held_by_replies())
        };
        assert_eq!(held(), 0);
        let addr = server.local_addr();
        let connect = move |request: &str| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream
        };
        // reads the head of the reply, then nothing
        let mut stalled = tokio::task::spawn_blocking(move || {
            let mut stream = connect("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut head = [0u8; 16];
            stream.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200 OK\r");
            stream
        })
        .await
        .unwrap();
        assert_eq!(held(), APPS, "the reply holds its snapshot");
        let mut other = connect("GET /hb_ping?0&appid=other HTTP/1.0\r\n\r\n");
        let reply = tokio::task::spawn_blocking(move || {
            let mut reply = Vec::new();
            other.read_to_end(&mut reply).unwrap();
            reply
        })
        .await
        .unwrap();
        assert!(reply.ends_with(b"\r\n\r\n1000"), "answered meanwhile");

        let since = Instant::now();
        while held() > 0 {
            assert!(
                since.elapsed() < HANG_GUARD,
                "the stalled reply is never dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rest = tokio::task::spawn_blocking(move || {
            let mut rest = Vec::new();
            stalled
                .read_to_end(&mut rest)
                .expect("the server closed the connection");
            rest
        })
        .await
        .unwrap();
        assert!(
            rest.len() < whole / 2,
            "the client got {} of {whole} bytes: the reply was not dropped",
            rest.len()
        );
        server.shutdown().await;
    }
}

//! `connect_timeout`: a connection that cannot be set up fails with a
//! timeout after the connect timeout, long before the request timeout.
//!
//! Nothing here blackholes a SYN deterministically (this machine even
//! completes connections to 10.255.255.1), so two local stand-ins:
//!
//! - `https://` to a listener that accepts and never answers the TLS
//!   handshake: reqwest's connect timeout covers the whole connector (TCP
//!   and TLS), so it fires; works on every platform.
//! - `http://` to a listener whose accept queue is full (`listen(0)`, one
//!   connection queued and never accepted): Linux then drops further SYNs,
//!   so the TCP connect itself hangs. A probe checks this first; where the
//!   kernel behaves otherwise, the test says so and skips.
//!
//! The request timeout is 60 s and the connect timeout 5 s, longer than the
//! transports' default (2 s): the failure must be a timeout that comes no
//! earlier than 5 s (so the default did not fire: the configured value was
//! applied) and within 30 s (so the request timeout did not fire either).
#![cfg(any(feature = "reqwest", feature = "surf"))]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient};
use tokio::net::{TcpSocket, TcpStream};

/// Longer than the default connect timeout, so the default firing instead
/// of this one fails the test.
const CONNECT: Duration = Duration::from_secs(5);
const REQUEST: Duration = Duration::from_secs(60);
/// Well before `REQUEST`, far after `CONNECT`.
const BOUND: Duration = Duration::from_secs(30);

/// Assert that `init` through `client` fails with a timeout, after at
/// least `CONNECT` and well before `REQUEST`.
async fn assert_connect_timeout(client: &HeartbeatClient) {
    assert!(CONNECT > heartbeat_sdk::transport::DEFAULT_CONNECT_TIMEOUT);
    let start = Instant::now();
    let result = client
        .init(Duration::from_secs(2), ErrorPolicy::Raise)
        .await;
    let elapsed = start.elapsed();
    let err = result.expect_err("nothing answers");
    assert!(
        matches!(&err, Error::Transport { source, .. } if source.is_timeout()),
        "a typed timeout: {err:?}"
    );
    assert!(
        elapsed >= CONNECT,
        "gave up before the connect timeout: {elapsed:?}"
    );
    assert!(
        elapsed < BOUND,
        "the connect timeout ({CONNECT:?}) did not apply: {elapsed:?}"
    );
}

/// A listener that accepts and then never says a word; returns its address
/// (the accepted connections are held open until the runtime ends).
#[cfg(feature = "reqwest")]
async fn silent_listener() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn a_tls_handshake_that_never_answers_hits_the_transports_connect_timeout() {
    let addr = silent_listener().await;
    let transport = heartbeat_sdk::transport::ReqwestTransport::builder()
        .connect_timeout(CONNECT)
        .timeout(REQUEST)
        .build()
        .unwrap();
    let client = HeartbeatClient::builder_with_transport(transport)
        .url(format!("https://{addr}"))
        .app_id("unanswered")
        .request_timeout(REQUEST)
        .build()
        .unwrap();
    assert_connect_timeout(&client).await;
}

/// A listener on 127.0.0.1 whose accept queue is full, and the connection
/// that fills it; `None` when a further connect is not left hanging here.
async fn full_backlog() -> Option<(tokio::net::TcpListener, TcpStream, SocketAddr)> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let filler = TcpStream::connect(addr).await.unwrap();
    // the probe: a connect that neither succeeds nor fails in 1 s
    match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
        Err(_elapsed) => Some((listener, filler, addr)),
        Ok(outcome) => {
            eprintln!("skipped: a connect to a full accept queue does not hang here ({outcome:?})");
            None
        }
    }
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn a_connect_that_gets_no_syn_ack_hits_the_clients_connect_timeout() {
    let Some((_listener, _filler, addr)) = full_backlog().await else {
        return;
    };
    // the client builder's own setting, passed to its default transport
    let client = HeartbeatClient::builder()
        .url(format!("http://{addr}"))
        .app_id("unanswered")
        .connect_timeout(CONNECT)
        .request_timeout(REQUEST)
        .build()
        .unwrap();
    assert_connect_timeout(&client).await;
}

/// The surf transport's connect timeout (curl's), on the same full queue.
#[cfg(feature = "surf")]
#[tokio::test]
async fn a_connect_that_gets_no_syn_ack_hits_the_surf_transports_connect_timeout() {
    let Some((_listener, _filler, addr)) = full_backlog().await else {
        return;
    };
    let transport = heartbeat_sdk::transport::SurfTransport::builder()
        .connect_timeout(CONNECT)
        .timeout(REQUEST)
        .build()
        .unwrap();
    let client = HeartbeatClient::builder_with_transport(transport)
        .url(format!("http://{addr}"))
        .app_id("unanswered")
        .request_timeout(REQUEST)
        .build()
        .unwrap();
    assert_connect_timeout(&client).await;
}

//! The embedded server's life: a graceful shutdown with a request in
//! flight, a `ServerHandle` dropped without `shutdown()`, and expiry on the
//! real clock.
//!
//! A request is held "in flight" without any timing: it is sent with
//! `Expect: 100-continue` and its body held back; hyper answers
//! `100 Continue` only once the server's handler is reading the body, so
//! after that line the request is being served, and it completes when the
//! body is sent. Every wait polls with a generous deadline.
#![cfg(feature = "server")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heartbeat_sdk::server::{RegistryConfig, Server, ServerHandle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The longest any single wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

async fn start() -> ServerHandle {
    Server::builder("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

/// A request the server is serving: its head sent and read, its body not
/// yet sent.
struct InFlight {
    stream: BufReader<TcpStream>,
    body: Vec<u8>,
}

impl InFlight {
    /// `POST /hb_init?5000` for `app`, held once the server reads its body.
    async fn start(addr: SocketAddr, app: &'static str) -> InFlight {
        let body = format!("appid={app}").into_bytes();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /hb_init?5000 HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(DEADLINE, stream.read_line(&mut line))
            .await
            .expect("100 Continue in time")
            .unwrap();
        assert_eq!(
            line, "HTTP/1.1 100 Continue\r\n",
            "the handler reads the body"
        );
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        assert_eq!(line, "\r\n");
        InFlight { stream, body }
    }

    /// Send the body; the whole reply (the connection is closed after it
    /// when the server is shutting down), or what arrived before it closed.
    async fn finish(mut self) -> String {
        // the server may already have closed: what it said is the answer
        let _ = self.stream.get_mut().write_all(&self.body).await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, self.stream.read_to_end(&mut reply))
            .await
            .expect("the reply (or the close) in time");
        String::from_utf8_lossy(&reply).into_owned()
    }
}

/// A kept-alive connection that has had its one request answered and is
/// now idle.
async fn idle_connection(addr: SocketAddr) -> BufReader<TcpStream> {
    let mut stream = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let request = format!("GET /hb_init?5000&appid=idle HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut length = None;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = Some(value.trim().parse::<usize>().unwrap());
        }
        assert!(
            !line.to_ascii_lowercase().starts_with("connection: close"),
            "{line}"
        );
    }
    let mut body = vec![0; length.expect("a Content-Length")];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(body, b"6000");
    stream
}

/// Assert that the server closes `idle` (EOF, nothing more said).
async fn assert_closed(mut idle: BufReader<TcpStream>) {
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection closed in time")
        .unwrap();
    assert_eq!(rest, b"", "closed without a word");
}

/// Poll until a new connection to `addr` is refused.
async fn until_refused(addr: SocketAddr) {
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {}
        }
        assert!(
            start.elapsed() < DEADLINE,
            "new connections still accepted after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `shutdown()` stops accepting at once, closes idle connections, lets the
/// request in flight complete (and waits for it), then returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_connections_and_completes_the_request_in_flight() {
    let server = start().await;
    let addr = server.local_addr();
    let idle = idle_connection(addr).await;
    let in_flight = InFlight::start(addr, "in-flight").await;

    let mut shutdown = tokio::spawn(server.shutdown());
    until_refused(addr).await;
    assert_closed(idle).await;
    // Shutdown waits for the request (up to its 5 s grace, counted from the
    // spawn): it must not return while the body is held. Watched for
    // 500 ms, short enough to end well inside the grace even when the steps
    // above were slow; on a loaded machine a broken shutdown might be slower
    // than that (the test then passes wrongly), never the other way round.
    assert!(
        !shutdown.is_finished(),
        "shutdown returned with a request in flight"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut shutdown)
            .await
            .is_err(),
        "shutdown returned with a request in flight"
    );

    let reply = in_flight.finish().await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
    assert!(
        reply.ends_with("\r\n\r\n6000"),
        "granted 5 s + 1 s: {reply:?}"
    );
    tokio::time::timeout(DEADLINE, shutdown)
        .await
        .expect("shutdown returns once the request is done")
        .unwrap();
}

/// Dropping the handle without `shutdown()`: the server stops accepting
/// at once and closes idle connections, but a request already being served
/// still completes (its connection task is not aborted: it is told to
/// close after its reply), and the registry it answers from lives on until
/// then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_accepting_and_lets_the_request_in_flight_finish() {
    let server = start().await;
    let addr = server.local_addr();
    let idle = idle_connection(addr).await;
    let in_flight = InFlight::start(addr, "dropped").await;

    drop(server);
    until_refused(addr).await;
    assert_closed(idle).await;

    let reply = in_flight.finish().await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
    assert!(reply.ends_with("\r\n\r\n6000"), "{reply:?}");
}

/// Expiry on the real clock (`SystemClock`): an app promising 500 ms (no
/// tolerance) is OK at first, then late (WARNING from 3× the timeout,
/// CRITICAL from 5×), then dropped at 6× (3 s). Observed over HTTP by
/// polling; only the order is asserted, and the bound is generous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_stops_beating_goes_late_then_expires_on_the_real_clock() {
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .config(RegistryConfig {
            tolerance: Duration::ZERO,
            ..RegistryConfig::default()
        })
        .start()
        .await
        .unwrap();
    let url = server.url();
    let get = |path: &'static str| {
        let url = url.clone();
        async move {
            let mut stream = TcpStream::connect(url.trim_start_matches("http://"))
                .await
                .unwrap();
            stream
                .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await.unwrap();
            reply
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_owned())
                .unwrap_or_default()
        }
    };
    assert_eq!(get("/hb_init?500&appid=real-clock").await, "500");

    // what each poll saw: the state word of the status line, or "gone"
    let mut seen: Vec<String> = Vec::new();
    let start = Instant::now();
    loop {
        let list = get("/list").await;
        let now = if list.contains("real-clock") {
            let status = get("/status?0&appid=real-clock").await;
            if status.contains("no application record") {
                "gone".to_owned() // expired between the two requests
            } else {
                status.split_whitespace().next().unwrap_or("").to_owned()
            }
        } else {
            "gone".to_owned()
        };
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == "gone" {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "not expired in time: {seen:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen.first().map(String::as_str), Some("OK"), "{seen:?}");
    let order = ["OK", "WARNING", "CRITICAL", "gone"];
    let ranks: Vec<usize> = seen
        .iter()
        .map(|s| {
            order
                .iter()
                .position(|o| o == s)
                .unwrap_or_else(|| panic!("{s:?} in {seen:?}"))
        })
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] < w[1]),
        "OK, then later states only, then gone: {seen:?}"
    );
    assert!(
        seen.iter().any(|s| s == "WARNING" || s == "CRITICAL"),
        "late before it expired: {seen:?}"
    );
    let counters = server
        .registry()
        .with_registry(|registry, _| registry.counters());
    assert_eq!(counters.expiries, 1);
    server.shutdown().await;
}

//! Big replies of the embedded server (issue 10, item 6): `/list`, the host
//! `/status` and `/metrics` with many applications are streamed in bounded
//! chunks from a snapshot, byte for byte what they were; HTTP/1.0 clients
//! get a close-delimited body; a client that stops reading is dropped after
//! the write timeout and frees its reply; one that reads slowly, or idles
//! between requests, is not.
#![cfg(feature = "server")]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use heartbeat_sdk::monitor::metrics;
use heartbeat_sdk::monitor::HostStatus;
use heartbeat_sdk::protocol;
use heartbeat_sdk::server::{ManualClock, Server, ServerBuilder, ServerHandle};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The server's largest chunk (`src/server/http/stream.rs`).
const CHUNK: usize = 32 * 1024;
/// Only a guard against hanging: every wait below ends on an event.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A server on a frozen clock, so that replies can be compared with the
/// registry's own rendering.
async fn start(
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> (ServerHandle, ManualClock) {
    let clock = ManualClock::new();
    let server = configure(
        Server::builder("127.0.0.1:0".parse().unwrap())
            .clock(clock.clone())
            .max_apps(1_000_000),
    )
    .start()
    .await
    .unwrap();
    (server, clock)
}

/// Registers `count` apps with ids of `id_len` bytes (with a `"` and a `\`,
/// which `/metrics` escapes), straight into the registry.
fn populate(server: &ServerHandle, count: usize, id_len: usize) {
    server.registry().with_registry(|registry, now| {
        for i in 0..count {
            let mut id = format!("app-{i:06}-q\"b\\-");
            id.extend(std::iter::repeat_n('x', id_len.saturating_sub(id.len())));
            registry
                .init(&id, LOCAL, Duration::from_secs(600), now)
                .unwrap();
        }
        registry.take_events();
    });
}

/// The reply to `target`, rendered whole from the registry's typed
/// answers with the protocol's line functions (and [`metrics::render`]).
fn expected(server: &ServerHandle, target: &str) -> String {
    server
        .registry()
        .with_registry(|registry, now| match target {
            "/list" => registry
                .list(now)
                .iter()
                .map(|key| format!("{key}\n"))
                .collect(),
            "/status" => match registry.host_status(now) {
                HostStatus::Multiple(keys) => protocol::multiple_line(keys),
                other => panic!("expected several applications, got {other:?}"),
            },
            "/metrics" => metrics::render(registry, now),
            _ => unreachable!(),
        })
}

/// Send `request` on a new connection and read until the server closes it.
fn exchange(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .expect("the server closes the connection after the reply");
    reply
}

fn split_head(reply: &[u8]) -> (String, &[u8]) {
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    (
        String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase(),
        &reply[end + 4..],
    )
}

/// The chunks of a `Transfer-Encoding: chunked` body, which must be whole.
fn dechunk(mut body: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk-size line");
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap(), 16)
            .expect("a hex chunk size");
        body = &body[line_end + 2..];
        if size == 0 {
            assert_eq!(body, b"\r\n", "nothing after the last chunk");
            return chunks;
        }
        assert!(body.len() >= size + 2, "the reply was cut short");
        chunks.push(&body[..size]);
        assert_eq!(&body[size..size + 2], b"\r\n");
        body = &body[size + 2..];
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Over HTTP/1.1 the big replies come chunked, in chunks of at most 32 KiB,
/// and join to exactly what the registry renders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_replies_come_in_bounded_chunks_byte_for_byte() {
    let (server, _clock) = start(|s| s).await;
    populate(&server, 2_000, 300);
    let addr = server.local_addr();
    for (target, content_type) in [
        ("/list", "text/plain"),
        ("/status", "text/plain"),
        ("/metrics", metrics::CONTENT_TYPE),
    ] {
        let whole = expected(&server, target);
        assert!(whole.len() > 10 * CHUNK, "{target}: {} bytes", whole.len());
        let reply = blocking(move || {
            exchange(
                addr,
                &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            )
        })
        .await;
        let (head, body) = split_head(&reply);
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(
            head.contains(&format!(
                "\r\ncontent-type: {}",
                content_type.to_ascii_lowercase()
            )),
            "{head}"
        );
        // the reference's paths keep CORS for the JS client; `/metrics`,
        // an operator's view, is same-origin
        assert_eq!(
            head.contains("\r\naccess-control-allow-origin: *"),
            target != "/metrics",
            "{head}"
        );
        let chunks = dechunk(body);
        assert!(chunks.len() > 10, "{target}: {} chunks", chunks.len());
        for chunk in &chunks {
            assert!(
                !chunk.is_empty() && chunk.len() <= CHUNK,
                "{target}: a chunk of {} bytes",
                chunk.len()
            );
        }
        assert!(
            chunks.concat() == whole.as_bytes(),
            "{target}: body differs"
        );
    }
    server.shutdown().await;
}

/// The reference's clients speak HTTP/1.0: a streamed reply to them has no
/// length and ends when the server closes the connection, even when they
/// ask for keep-alive, and says so (`Connection: close`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_get_big_replies_whole_and_close_delimited() {
    let (server, _clock) = start(|s| s).await;
    populate(&server, 3_000, 300);
    let addr = server.local_addr();
    let whole = expected(&server, "/list");
    assert!(whole.len() > 10 * CHUNK);
    for request in [
        "GET /list HTTP/1.0\r\n\r\n",
        "GET /list HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ] {
        let reply = blocking(move || exchange(addr, request)).await;
        let (head, body) = split_head(&reply);
        assert!(head.contains(" 200 ok\r\n"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(head.contains("\r\ncontent-type: text/plain"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(!head.contains("keep-alive"), "{head}");
        assert!(body == whole.as_bytes(), "{request:?}: body differs");
    }
    // a small reply keeps its Content-Length
    let reply = blocking(move || exchange(addr, "GET /hb_ping?0&appid=x HTTP/1.0\r\n\r\n")).await;
    let (head, body) = split_head(&reply);
    assert!(head.contains("\r\ncontent-length: 4"), "{head}");
    assert_eq!(body, b"1000");
    server.shutdown().await;
}

/// An HTTP/1.0 client that asks for keep-alive and pipelines a second
/// request behind a streamed reply is told `Connection: close`: the reply
/// ends with the connection, and the second request is neither answered
/// nor run (it must be sent again). A small reply keeps the connection
/// alive, and a request pipelined behind it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_behind_a_streamed_reply_is_told_close() {
    let (server, _clock) = start(|s| s).await;
    populate(&server, 3_000, 300);
    let addr = server.local_addr();
    let whole = expected(&server, "/list");
    assert!(whole.len() > 10 * CHUNK);
    let reply = blocking(move || {
        exchange(
            addr,
            "GET /list HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
             GET /hb_init?1&appid=second HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )
    })
    .await;
    let (head, body) = split_head(&reply);
    assert!(head.starts_with("http/1.0 200 ok\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");
    assert!(
        body == whole.as_bytes(),
        "one reply, whole, and nothing after it"
    );
    assert_eq!(
        expected(&server, "/list"),
        whole,
        "the second request was not run"
    );

    let reply = blocking(move || {
        exchange(
            addr,
            "GET /hb_ping?0&appid=x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
             GET /hb_ping?0&appid=y HTTP/1.0\r\n\r\n",
        )
    })
    .await;
    let reply = String::from_utf8(reply).unwrap().to_ascii_lowercase();
    let (first, second) = reply.split_at(reply.rfind("http/1.0 ").expect("two replies"));
    assert!(first.contains("\r\nconnection: keep-alive\r\n"), "{first}");
    assert!(first.ends_with("\r\n\r\n1000"), "{first}");
    assert!(second.starts_with("http/1.0 200 ok\r\n"), "{second}");
    assert!(second.ends_with("\r\n\r\n1000"), "{second}");
    server.shutdown().await;
}

/// With at most 2 whole-registry replies in progress, a third, while two
/// clients stall reading `/metrics`, gets `503` with `Retry-After: 1` and a
/// one-line reason, while pings and app statuses are still answered; once
/// the stalled clients are gone, whole-registry replies are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_on_streamed_replies_they_get_503_and_pings_do_not() {
    let (server, _clock) = start(|s| {
        s.max_streamed_replies(2)
            .write_timeout(HANG_GUARD)
            .head_timeout(HANG_GUARD)
    })
    .await;
    // /metrics is about 40 MB: far more than the sockets' buffers hold
    populate(&server, 20_000, 1_000);
    let addr = server.local_addr();
    let stalled = blocking(move || {
        [
            stalled_reader(addr, "/metrics"),
            stalled_reader(addr, "/metrics"),
        ]
    })
    .await;
    for target in ["/list", "/status", "/metrics"] {
        let reply = blocking(move || {
            exchange(
                addr,
                &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            )
        })
        .await;
        let (head, body) = split_head(&reply);
        assert!(
            head.starts_with("http/1.1 503 service unavailable\r\n"),
            "{target}: {head}"
        );
        assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
        let body = std::str::from_utf8(body).unwrap();
        assert!(body.starts_with("ERROR: "), "{body}");
        assert!(!body.contains('\n'), "one line: {body:?}");
    }
    for target in ["/hb_ping?0&appid=p", "/status?appid=p"] {
        let reply =
            blocking(move || exchange(addr, &format!("GET {target} HTTP/1.0\r\n\r\n"))).await;
        let (head, _) = split_head(&reply);
        assert!(head.starts_with("http/1.0 200 ok\r\n"), "{target}: {head}");
    }
    drop(stalled);
    // their replies end when the server next writes to the closed sockets
    let since = Instant::now();
    let whole = expected(&server, "/list");
    loop {
        let reply = blocking(move || {
            exchange(
                addr,
                "GET /list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        })
        .await;
        let (head, body) = split_head(&reply);
        if head.starts_with("http/1.1 200 ok\r\n") {
            assert!(dechunk(body).concat() == whole.as_bytes());
            break;
        }
        assert!(head.starts_with("http/1.1 503 "), "{head}");
        assert!(
            since.elapsed() < HANG_GUARD,
            "the stalled replies are never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

/// A connection to a server whose client reads the reply head of `target`
/// and then nothing more.
fn stalled_reader(addr: SocketAddr, target: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK\r");
    stream
}

// A client that stops reading is dropped after the write timeout and frees
// its reply's snapshot: the unit test
// `server::http::tests::a_reader_that_stalls_is_dropped_and_frees_its_reply`
// (it counts the registry's shared keys, which only the crate can see).

/// The write timeout times stuck writes only: a client that reads a 20 MB
/// `/list` 1 MiB at a time with pauses, over several write timeouts, gets
/// all of it, and a kept-alive connection idle for several write timeouts
/// is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_and_idle_connections_outlive_the_write_timeout() {
    let write_timeout = Duration::from_millis(1500);
    let (server, _clock) = start(|s| {
        s.write_timeout(write_timeout)
            .head_timeout(Duration::from_secs(60))
    })
    .await;
    populate(&server, 20_000, 1_000);
    let addr = server.local_addr();
    let whole = expected(&server, "/list");

    let body = blocking(move || {
        let mut stream = stalled_reader(addr, "/list");
        let mut reply = b"HTTP/1.1 200 OK\r".to_vec();
        let mut buf = vec![0u8; 1 << 20];
        let since = Instant::now();
        loop {
            // pause for a fraction of the write timeout, then take up to 1 MiB
            std::thread::sleep(write_timeout / 5);
            stream.set_nonblocking(true).unwrap();
            let mut ended = false;
            let mut taken = 0;
            while taken < buf.len() {
                match stream.read(&mut buf[taken..]) {
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(n) => taken += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read failed after {} bytes: {e}", reply.len()),
                }
            }
            reply.extend_from_slice(&buf[..taken]);
            stream.set_nonblocking(false).unwrap();
            if ended || reply.ends_with(b"\r\n0\r\n\r\n") {
                return (reply, since.elapsed());
            }
        }
    })
    .await;
    let (body, took) = body;
    assert!(
        took > 2 * write_timeout,
        "read in {took:?}: not slow enough"
    );
    let (_, chunked) = split_head(&body);
    assert!(dechunk(chunked).concat() == whole.as_bytes());

    let answers = blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
        let mut answers = Vec::new();
        for round in 0..2 {
            if round > 0 {
                // idle, kept alive, for several write timeouts
                std::thread::sleep(write_timeout * 3);
            }
            stream
                .write_all(b"GET /hb_ping?0&appid=idle HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).unwrap();
            answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        answers
    })
    .await;
    for answer in answers {
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n1000"), "{answer}");
    }
    server.shutdown().await;
}

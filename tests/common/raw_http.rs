//! Tiny raw-socket HTTP servers for replies wiremock cannot make: HTTP/1.0
//! close-delimited bodies, bodies dripped slowly, oversized bodies.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// Serve each of the next `count` connections by reading the request head
/// and writing `reply` (the whole raw response) then closing. Returns the
/// base URL. The thread ends after `count` connections.
pub fn serve_raw(reply: Vec<u8>, count: usize) -> String {
    serve_with(count, move |mut stream| {
        let _ = stream.write_all(&reply);
    })
}

/// Like [`serve_raw`], but writes the reply one byte every `pause`.
pub fn serve_dripping(reply: Vec<u8>, pause: Duration, count: usize) -> String {
    serve_with(count, move |mut stream| {
        for byte in &reply {
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
            let _ = stream.flush();
            thread::sleep(pause);
        }
    })
}

fn serve_with(count: usize, answer: impl Fn(TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            read_head(&mut stream);
            answer(stream);
        }
    });
    format!("http://{addr}")
}

/// Read until the end of the request head and any form body we send.
fn read_head(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while let Ok(n) = stream.read(&mut byte) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The reference server's reply shape: HTTP/1.0, no Content-Length, closed.
pub fn http10(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11\r\nContent-type: text/plain\r\nAccess-Control-Allow-Origin: *\r\n\r\n{body}"
    )
    .into_bytes()
}

/// Like [`serve_raw`], but writes `head` at once and then `body` one byte
/// every `pause`: the reply starts in time and never finishes in time.
pub fn serve_head_then_drip(head: Vec<u8>, body: Vec<u8>, pause: Duration, count: usize) -> String {
    serve_with(count, move |mut stream| {
        if stream.write_all(&head).is_err() {
            return;
        }
        for byte in &body {
            let _ = stream.flush();
            thread::sleep(pause);
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
        }
    })
}

/// When a [`KeepAliveServer`] closes a kept-alive connection.
#[derive(Debug, Clone, Copy)]
pub enum Closing {
    /// After this long without a request, like a server's idle timeout;
    /// the FIN then takes a moment to reach the client (up to
    /// [`FIN_IN_FLIGHT`]): a request arriving in that window met a closed
    /// connection and is cut off unanswered, as when the idle timeout fires
    /// just as the client reuses the connection.
    AfterIdle(Duration),
    /// As soon as the next request on it arrives, without answering: the
    /// race of an idle timeout firing just as the client reuses the
    /// connection, made certain.
    OnNextRequest,
}

/// How long an idle-closed connection of [`Closing::AfterIdle`] still takes
/// (and cuts off) a request before its socket is really closed.
pub const FIN_IN_FLIGHT: Duration = Duration::from_secs(5);

/// One request a [`KeepAliveServer`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Which connection (numbered from 0 in the order accepted).
    pub connection: usize,
    /// The request target (`/hb_ping?...`).
    pub target: String,
    /// Answered, or cut off unanswered.
    pub answered: bool,
}

/// A raw HTTP/1.1 server that answers with keep-alive and then closes its
/// connections as [`Closing`] says. One thread per connection.
pub struct KeepAliveServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Requests answered.
    pub answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Connections closed for being idle ([`Closing::AfterIdle`]).
    pub closed_idle: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Requests that arrived on a connection the server had closed (or
    /// closed as they arrived) and were cut off unanswered.
    pub cut_off: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Every request received, in order.
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl KeepAliveServer {
    /// Start serving every request with `200` and `body`, until the process ends.
    pub fn start(body: &'static str, closing: Closing) -> KeepAliveServer {
        use std::sync::atomic::Ordering::SeqCst;

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = KeepAliveServer {
            url: format!("http://{}", listener.local_addr().unwrap()),
            answered: Default::default(),
            closed_idle: Default::default(),
            cut_off: Default::default(),
            received: Default::default(),
        };
        let (answered, closed_idle, cut_off, received) = (
            server.answered.clone(),
            server.closed_idle.clone(),
            server.cut_off.clone(),
            server.received.clone(),
        );
        thread::spawn(move || {
            for (connection, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let (answered, closed_idle, cut_off, received) = (
                    answered.clone(),
                    closed_idle.clone(),
                    cut_off.clone(),
                    received.clone(),
                );
                thread::spawn(move || {
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                        body.len()
                    );
                    let record = |target: String, was_answered: bool| {
                        received.lock().unwrap().push(Received {
                            connection,
                            target,
                            answered: was_answered,
                        });
                    };
                    let mut wait = Duration::from_secs(5);
                    let mut served = false;
                    let mut idle_closed = false;
                    loop {
                        match read_request(&mut stream, wait) {
                            Request::Complete(target)
                                if idle_closed
                                    || (served && matches!(closing, Closing::OnNextRequest)) =>
                            {
                                cut_off.fetch_add(1, SeqCst);
                                record(target, false);
                                return;
                            }
                            Request::Complete(target) => {
                                // counted before the reply is written: once
                                // the client has it, the count must show it
                                answered.fetch_add(1, SeqCst);
                                record(target, true);
                                if stream.write_all(reply.as_bytes()).is_err() {
                                    answered.fetch_sub(1, SeqCst);
                                    return;
                                }
                                served = true;
                                if let Closing::AfterIdle(idle) = closing {
                                    wait = idle;
                                }
                            }
                            Request::Idle
                                if !idle_closed
                                    && served
                                    && matches!(closing, Closing::AfterIdle(_)) =>
                            {
                                // closed for being idle; the FIN is on its way
                                closed_idle.fetch_add(1, SeqCst);
                                idle_closed = true;
                                wait = FIN_IN_FLIGHT;
                            }
                            Request::Idle | Request::Closed => return,
                        }
                    }
                });
            }
        });
        server
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

enum Request {
    /// A whole request arrived: its target.
    Complete(String),
    Idle,
    Closed,
}

/// Read one request head (and its Content-Length body) within `wait`.
fn read_request(stream: &mut TcpStream, wait: Duration) -> Request {
    stream.set_read_timeout(Some(wait)).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Request::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return if buf.is_empty() {
                    Request::Idle
                } else {
                    Request::Closed
                };
            }
            Err(_) => return Request::Closed,
        }
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(str::to_owned))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let target = head
                    .lines()
                    .next()
                    .and_then(|line| line.split(' ').nth(1))
                    .unwrap_or_default()
                    .to_owned();
                return Request::Complete(target);
            }
        }
    }
}

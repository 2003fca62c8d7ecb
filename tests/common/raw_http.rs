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

#![cfg(feature = "server")]
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use heartbeat_sdk::server::Server;
use heartbeat_sdk::transport::{HttpRequest, Method, Transport};

fn raw(addr: std::net::SocketAddr, req: &[u8], shut: bool) -> (String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req).unwrap();
    if shut { s.shutdown(std::net::Shutdown::Write).unwrap(); }
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    (format!("{r:?} {}", String::from_utf8_lossy(&out[..out.len().min(300)])), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).head_timeout(Duration::from_millis(300)).start().await.unwrap();
    let addr = server.local_addr();
    tokio::task::spawn_blocking(move || {
        let big = format!("GET /list HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
        println!("big header: {:?}", raw(addr, big.as_bytes(), false));
        let big = format!("GET /hb_ping?1&appid={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000));
        println!("big uri: {:?}", raw(addr, big.as_bytes(), false));
        let mut many = String::from("GET /list HTTP/1.1\r\n");
        for i in 0..150 { many.push_str(&format!("X-{i}: y\r\n")); }
        many.push_str("\r\n");
        println!("many headers: {:?}", raw(addr, many.as_bytes(), false));
        println!("nothing: {:?}", raw(addr, b"", false));
        println!("partial: {:?}", raw(addr, b"GET /list HTTP/1.1\r\n", false));
        println!("partial shut: {:?}", raw(addr, b"GET /list HTTP/1.1\r\n", true));
        println!("garbage: {:?}", raw(addr, b"\x00\xff garbage\r\n\r\n", true));
        println!("keepalive idle: {:?}", raw(addr, b"GET /list HTTP/1.1\r\nHost: x\r\n\r\n", false));
        println!("http09: {:?}", raw(addr, b"GET /list\r\n\r\n", true));
        println!("cl short: {:?}", raw(addr, b"POST /list HTTP/1.1\r\nContent-Length: 50\r\n\r\nab", true));
        println!("expect: {:?}", raw(addr, b"POST /hb_init?1 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n", true));
        println!("abs uri: {:?}", raw(addr, b"GET http://x/list HTTP/1.1\r\n\r\n", true));
        println!("star: {:?}", raw(addr, b"OPTIONS * HTTP/1.1\r\n\r\n", true));
        println!("connect: {:?}", raw(addr, b"CONNECT x:1 HTTP/1.1\r\n\r\n", true));
        println!("h2: {:?}", raw(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true));
        println!("bad ver: {:?}", raw(addr, b"GET / HTTP/3.7\r\n\r\n", true));
    }).await.unwrap();

    // close-under-it server
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(3) {
            let mut s = s.unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            println!("srv got {}", n);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n3000").unwrap();
            let n = s.read(&mut buf).unwrap();
            println!("srv got second {}", n);
            drop(s);
        }
    });
    let req = |url: String| HttpRequest { method: Method::Get, url, form: None, timeout: Duration::from_secs(2), body_limit: 1000 };
    let t = heartbeat_sdk::transport::ReqwestTransport::new().unwrap();
    println!("rq1 {:?}", t.send(req(format!("http://{a}/x"))).await.map(|r| r.status));
    let e = t.send(req(format!("http://{a}/x"))).await.unwrap_err();
    println!("rq2 {e:?}");
    let mut src: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = src { println!("  chain: {s} / {s:?}"); src = s.source(); }
    #[cfg(feature = "surf")]
    {
        let t = heartbeat_sdk::transport::SurfTransport::new().unwrap();
        println!("sf1 {:?}", t.send(req(format!("http://{a}/x"))).await.map(|r| r.status));
        println!("sf2 {:?}", t.send(req(format!("http://{a}/x"))).await.map(|r| r.status));
    }
}

//! The embedded server end to end: the client over every transport, raw
//! HTTP byte for byte against PROTOCOL.md, and every bad input answered.
#![cfg(feature = "server")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use heartbeat_sdk::server::{Expected, ManualClock, Server, ServerHandle};
use heartbeat_sdk::{ErrorPolicy, HeartbeatClient, State, Transport};

async fn start() -> ServerHandle {
    Server::builder("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

async fn start_with(clock: &ManualClock) -> ServerHandle {
    Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .start()
        .await
        .unwrap()
}

/// Send raw bytes on a new connection, read until the server closes it.
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// `(status code, body)` of a `Connection: close` request.
fn call(addr: SocketAddr, method: &str, target: &str) -> (u16, String) {
    let reply = raw(
        addr,
        &format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
    );
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {reply:?}"));
    (status, body.to_owned())
}

/// Run `f` on a blocking thread (the raw helpers block).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn life_cycle(transport: impl Transport + 'static, url: String, app: &str) {
    let client = HeartbeatClient::builder_with_transport(transport)
        .url(url)
        .app_id(app)
        .build()
        .unwrap();
    let key = format!("{app} @ 127.0.0.1");
    assert!(!client
        .list(ErrorPolicy::Raise)
        .await
        .unwrap()
        .contains(&key));
    let granted = client
        .init(Duration::from_millis(500), ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(granted, Duration::from_millis(1500));
    assert!(client
        .list(ErrorPolicy::Raise)
        .await
        .unwrap()
        .contains(&key));
    let granted = client
        .ping(Duration::from_millis(2000), ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(granted, Duration::from_millis(3000));
    let status = client.status(Some(app), ErrorPolicy::Raise).await.unwrap();
    assert_eq!(status.state(), State::Ok, "{status}");
    assert_eq!(status.app(), Some(key.as_str()));
    assert_eq!(status.granted(), Some(Duration::from_millis(3000)));
    let bye = client.done_now(ErrorPolicy::Raise).await.unwrap();
    assert_eq!(bye, "So Long, and Thanks for All the Fish!");
    assert!(!client
        .list(ErrorPolicy::Raise)
        .await
        .unwrap()
        .contains(&key));
    let status = client.status(Some(app), ErrorPolicy::Raise).await.unwrap();
    assert_eq!(
        status.to_string(),
        format!("CRITICAL - no application record for queried ID: [{key}]")
    );
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn reqwest_client_life_cycle() {
    let server = start().await;
    let transport = heartbeat_sdk::transport::ReqwestTransport::new().unwrap();
    life_cycle(transport, server.url(), "rq [app]/ü&=?+1").await;
    server.shutdown().await;
}

#[cfg(feature = "surf")]
#[tokio::test]
async fn surf_client_life_cycle() {
    let server = start().await;
    let transport = heartbeat_sdk::transport::SurfTransport::new().unwrap();
    life_cycle(transport, server.url(), "surf [app]/ü&=?+1").await;
    server.shutdown().await;
}

#[cfg(feature = "mock")]
#[tokio::test]
async fn mock_client_life_cycle() {
    // the mock answers from the same registry code, with no socket at all
    let mock = heartbeat_sdk::testing::MockTransport::new();
    life_cycle(mock, "http://127.0.0.1:1".into(), "mock [app]/ü&=?+1").await;
}

#[tokio::test]
async fn replies_are_byte_identical_to_the_protocol_samples() {
    let clock = ManualClock::new();
    let server = start_with(&clock).await;
    let addr = server.local_addr();
    let get = move |target: &'static str| blocking(move || call(addr, "GET", target));

    assert_eq!(
        get("/status").await,
        (
            200,
            "UNKNOWN - no heartbeat clients at the moment...".into()
        )
    );
    assert_eq!(get("/list").await, (200, String::new()));
    assert_eq!(get("/hb_ping?2000&appid=ID").await, (200, "3000".into()));
    assert_eq!(get("/list").await, (200, "ID @ 127.0.0.1\n".into()));
    for (advance_ms, line) in [
        (1_560, "OK - fine application [ID @ 127.0.0.1]| od=0.52;3;5;0;6 delay=3000ms;;; "),
        (7_740, "WARNING - somewhat late application [ID @ 127.0.0.1]| od=3.10;3;5;0;6 delay=3000ms;;; "),
        (5_910, "CRITICAL - quite late application [ID @ 127.0.0.1]| od=5.07;3;5;0;6 delay=3000ms;;; "),
    ] {
        clock.advance(Duration::from_millis(advance_ms));
        assert_eq!(get("/status?0&appid=ID").await, (200, line.to_owned()));
        assert_eq!(get("/status").await, (200, line.to_owned()), "one app: host status is its status");
    }
    clock.advance(Duration::from_millis(2_790)); // od = 6.0: dropped
    assert_eq!(
        get("/status?0&appid=ID").await,
        (
            200,
            "CRITICAL - no application record for queried ID: [ID @ 127.0.0.1]".into()
        )
    );
    assert_eq!(get("/list").await, (200, String::new()));

    for app in ["A", "B", "C"] {
        let target: &'static str = Box::leak(format!("/hb_init?1000&appid={app}").into_boxed_str());
        assert_eq!(get(target).await, (200, "2000".into()));
    }
    assert_eq!(
        get("/status").await,
        (
            200,
            "WARNING - multiple (3) applications: [A @ 127.0.0.1,B @ 127.0.0.1,C @ 127.0.0.1]"
                .into()
        )
    );
    assert_eq!(
        get("/hb_done?0&appid=B").await,
        (200, "So Long, and Thanks for All the Fish!".into())
    );
    assert_eq!(
        get("/hb_done?0&appid=never-seen").await,
        (200, "So Long, and Thanks for All the Fish!".into())
    );
    assert_eq!(
        get("/list").await,
        (200, "A @ 127.0.0.1\nC @ 127.0.0.1\n".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn every_command_by_get_and_by_post() {
    let server = start().await;
    let addr = server.local_addr();
    for method in ["GET", "POST"] {
        let c = |target: &'static str| blocking(move || call(addr, method, target));
        assert_eq!(
            c("/hb_init?10&appid=m").await,
            (200, "1010".into()),
            "{method}"
        );
        assert_eq!(
            c("/hb_ping?&appid=m").await,
            (200, "1000".into()),
            "{method}: empty timeout is 0"
        );
        assert_eq!(
            c("/list").await,
            (200, "m @ 127.0.0.1\n".into()),
            "{method}"
        );
        assert_eq!(
            c("/status?0&appid=m").await.1.split(' ').next(),
            Some("OK"),
            "{method}"
        );
        assert_eq!(c("/hb_done?0&appid=m").await.0, 200, "{method}");
        assert_eq!(c("/list").await, (200, String::new()), "{method}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_400_with_a_reason_and_registers_nothing() {
    let server = start().await;
    let addr = server.local_addr();
    for target in [
        "/hb_init?abc&appid=y",
        "/hb_init?-5&appid=y",
        "/hb_ping?99999999999999999999&appid=y",
        "/hb_ping?4294967296&appid=y",
        "/hb_init?1000",
        "/hb_init?1000&appid=",
        "/hb_done?0",
        "/hb_ping?1000&appid=%zz",
        "/hb_ping?1000&appid=%ff%fe",
        "/nonsense?1000&appid=y",
        // `/` is the dashboard (the one path the reference refuses that
        // this server answers, with `/api/v1/apps`); `/x/` is still unknown
        "/x/",
    ] {
        let (status, body) = blocking(move || call(addr, "GET", target)).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.starts_with("ERROR: "), "{target}: {body}");
        assert!(!body.contains('\n'), "one line: {body:?}");
    }
    let (_, body) = blocking(move || call(addr, "GET", "/nonsense?1&appid=y")).await;
    assert_eq!(
        body,
        "ERROR: cannot process your request: [/nonsense?1&appid=y]"
    );
    let (status, _) = blocking(move || call(addr, "GET", "/list")).await;
    assert_eq!(status, 200);
    let (_, list) = blocking(move || call(addr, "GET", "/list")).await;
    assert_eq!(list, "", "nothing was registered");
    let (status, _) = blocking(move || call(addr, "PUT", "/list")).await;
    assert_eq!(status, 405);
    server.shutdown().await;
}

/// Issue 10: ids that would forge perfdata (`|`) or fake lines (U+2028,
/// U+2029, bidi controls) get a 400 with the reason, by query or form, and
/// register nothing; the host's check keeps working.
#[tokio::test]
async fn ids_that_would_corrupt_a_reply_line_get_a_400() {
    let server = start().await;
    let addr = server.local_addr();
    let forged = "kiosk%7C%20od%3D0.00%3B3%3B5%3B0%3B6%20delay%3D86400000ms%3B%3B%3B%20";
    let cases = [
        (forged, "'|'"),
        ("a|b", "'|'"),
        ("x%E2%80%A8Tetris%20%40%2010.0.0.5", "U+2028"),
        ("x%E2%80%A9y", "U+2029"),
        ("%E2%80%AEkcir", "U+202E"),
        ("a%E2%81%A6b%E2%81%A9", "U+2066"),
    ];
    for (id, reason) in cases {
        for command in ["hb_init", "hb_ping", "hb_done", "status"] {
            let target = format!("/{command}?1000&appid={id}");
            let (status, body) = blocking(move || call(addr, "GET", &target)).await;
            assert_eq!(status, 400, "{command} {id}: {body}");
            assert!(
                body.starts_with("ERROR: appid refused: it contains"),
                "{body}"
            );
            assert!(body.contains(reason), "{body} should name {reason}");
            assert!(!body.contains(['\n', '\r']), "one line: {body:?}");
        }
        let request = format!(
            "POST /hb_init?1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\nappid={id}",
            "appid=".len() + id.len()
        );
        let reply = blocking(move || raw(addr, &request)).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "form {id}: {reply}");
    }
    assert_eq!(
        blocking(move || call(addr, "GET", "/list")).await,
        (200, String::new())
    );
    // a forged line cannot reach the check: the host status is still plain
    blocking(move || call(addr, "GET", "/hb_init?1000&appid=kiosk")).await;
    let (_, status) = blocking(move || call(addr, "GET", "/status")).await;
    let parsed = heartbeat_sdk::Status::parse(&status).unwrap();
    assert_eq!(parsed.state(), State::Ok, "{status}");
    assert!(parsed.unparsed_perfdata().is_empty(), "{status}");
    server.shutdown().await;
}

/// Issue 10: `+` in the query is a literal `+`, as in the reference (whose
/// shell, Python and browser clients put ids into URLs unencoded); in a
/// form body it is a space (HTML form rules).
#[tokio::test]
async fn plus_is_literal_in_the_query_and_a_space_in_a_form_body() {
    let server = start().await;
    let addr = server.local_addr();
    let get = move |target: &'static str| blocking(move || call(addr, "GET", target));
    assert_eq!(get("/hb_init?1000&appid=a+b").await, (200, "2000".into()));
    assert_eq!(get("/hb_ping?1000&appid=C++").await, (200, "2000".into()));
    assert_eq!(
        get("/list").await,
        (200, "C++ @ 127.0.0.1\na+b @ 127.0.0.1\n".into())
    );
    let (_, status) = get("/status?0&appid=a+b").await;
    assert!(
        status.starts_with("OK - fine application [a+b @ 127.0.0.1]|"),
        "{status}"
    );
    let (_, status) = get("/status?0&appid=a%2Bb").await;
    assert!(
        status.starts_with("OK - fine application [a+b @ 127.0.0.1]|"),
        "{status}"
    );
    assert_eq!(get("/hb_done?0&appid=C++").await.0, 200);

    let form = "POST /hb_init?500 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n\r\nappid=c+d";
    let reply = blocking(move || raw(addr, form)).await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("1500"),
        "{reply}"
    );
    assert_eq!(
        get("/list").await,
        (200, "a+b @ 127.0.0.1\nc d @ 127.0.0.1\n".into())
    );

    // the SDK's client encodes '+' as %2B: the same id either way
    #[cfg(any(feature = "reqwest", feature = "surf"))]
    {
        let client = HeartbeatClient::builder()
            .url(server.url())
            .app_id("a+b")
            .build()
            .unwrap();
        client.done_now(ErrorPolicy::Raise).await.unwrap();
        assert_eq!(get("/list").await, (200, "c d @ 127.0.0.1\n".into()));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn http10_requests_and_keep_alive_and_headers() {
    let server = start().await;
    let addr = server.local_addr();
    let reply = blocking(move || raw(addr, "GET /hb_ping?1000&appid=old HTTP/1.0\r\n\r\n")).await;
    assert!(reply.starts_with("HTTP/1."), "{reply}");
    assert!(reply.contains(" 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\n2000"), "{reply}");
    let lower = reply.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/plain\r\n"), "{reply}");
    assert!(
        lower.contains("access-control-allow-origin: *\r\n"),
        "{reply}"
    );

    // HTTP/1.1: two requests on one kept-alive connection
    let reply = blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answers = String::new();
        for connection in ["keep-alive", "close"] {
            let request =
                format!("GET /list HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n");
            stream.write_all(request.as_bytes()).unwrap();
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap();
            answers.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        answers
    })
    .await;
    assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 2, "{reply}");
    assert!(reply.contains("old @ 127.0.0.1\n"), "{reply}");
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_expose_apps_and_counters() {
    let server = start().await;
    let addr = server.local_addr();
    blocking(move || {
        call(addr, "GET", "/hb_init?1000&appid=a%22b");
        call(addr, "GET", "/hb_ping?1000&appid=a%22b");
        call(addr, "GET", "/hb_done?0&appid=zz");
    })
    .await;
    let (status, body) = blocking(move || call(addr, "GET", "/metrics")).await;
    assert_eq!(status, 200);
    assert!(body.contains("heartbeat_inits_total 1\n"), "{body}");
    assert!(body.contains("heartbeat_pings_total 1\n"), "{body}");
    assert!(body.contains("heartbeat_dones_total 1\n"), "{body}");
    assert!(
        body.contains(
            "heartbeat_app_granted_timeout_seconds{app=\"a\\\"b\",host=\"127.0.0.1\"} 2\n"
        ),
        "{body}"
    );
    let reply = blocking(move || raw(addr, "GET /metrics HTTP/1.0\r\n\r\n")).await;
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{reply}"
    );
    server.shutdown().await;
}

/// An expected application over HTTP: missing, then tracked, then kept
/// past the drop ratio, then missing again after `done`.
#[tokio::test]
async fn expected_application_over_http() {
    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .expect("job".parse::<Expected>().unwrap())
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    let get = move |target: &'static str| blocking(move || call(addr, "GET", target));
    let missing = "CRITICAL - expected application has not reported [job]";
    assert_eq!(get("/status?0&appid=job").await, (200, missing.to_owned()));
    assert_eq!(get("/status").await, (200, missing.to_owned()));
    assert_eq!(get("/list").await, (200, String::new()));
    let (_, metrics) = get("/metrics").await;
    assert!(
        metrics.contains("heartbeat_app_up{app=\"job\",host=\"\"} 0\n"),
        "{metrics}"
    );
    assert_eq!(get("/hb_init?0&appid=job").await, (200, "1000".to_owned()));
    assert_eq!(
        get("/status?0&appid=job").await.1,
        "OK - fine application [job @ 127.0.0.1]| od=0.00;3;5;0;6 delay=1000ms;;; "
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        get("/status?0&appid=job").await.1,
        "CRITICAL - quite late application [job @ 127.0.0.1]| od=60.00;3;5;0;6 delay=1000ms;;; "
    );
    assert_eq!(get("/list").await.1, "job @ 127.0.0.1\n");
    get("/hb_done?0&appid=job").await;
    assert_eq!(get("/status?0&appid=job").await.1, missing);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let server = start().await;
    let addr = server.local_addr();
    server.shutdown().await;
    assert!(TcpStream::connect(addr).is_err());
}

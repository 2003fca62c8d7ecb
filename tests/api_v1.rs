//! `GET /api/v1/apps` and `GET /` on the real server (issue 12): the exact
//! JSON of `docs/api-v1.md` for a small registry, its headers, hostile ids
//! escaped in the JSON and on the page, and a big registry streamed in
//! bounded chunks without holding the registry.
#![cfg(all(feature = "server", feature = "reqwest"))]
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heartbeat_sdk::server::{ManualClock, Server, ServerHandle};
use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
use serde_json::Value;

const HOSTILE: &str = "<img src=x onerror=alert(1)>";

async fn start(clock: &ManualClock) -> ServerHandle {
    Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .start()
        .await
        .unwrap()
}

/// `init` for `id` with `timeout_ms` through the SDK.
async fn init(server: &ServerHandle, id: &str, timeout_ms: u64) {
    let client = HeartbeatClient::builder()
        .url(server.url())
        .app_id(id)
        .build()
        .unwrap();
    client
        .init(Duration::from_millis(timeout_ms), ErrorPolicy::Raise)
        .await
        .unwrap();
}

/// A reply's head (lower-cased header names) and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// `GET target` over HTTP/1.1, `Connection: close`; a chunked body is
/// decoded and the size of each chunk returned.
fn get(addr: SocketAddr, target: &str) -> (Reply, Vec<usize>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    split_reply(&raw)
}

fn split_reply(raw: &[u8]) -> (Reply, Vec<usize>) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let (status, headers) = parse_head(std::str::from_utf8(&raw[..end]).unwrap());
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked");
    let (body, sizes) = if chunked {
        dechunk(rest)
    } else {
        (rest.to_vec(), vec![])
    };
    (
        Reply {
            status,
            headers,
            body,
        },
        sizes,
    )
}

fn dechunk(mut rest: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let (mut body, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return (body, sizes);
        }
        body.extend_from_slice(&rest[..size]);
        sizes.push(size);
        assert_eq!(&rest[size..size + 2], b"\r\n");
        rest = &rest[size + 2..];
    }
}

/// `2026-11-25T10:00:01.234Z` as ms since the epoch (checks the format).
fn epoch_ms(time: &str) -> u64 {
    let b = time.as_bytes();
    assert_eq!(b.len(), 24, "{time}");
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        assert_eq!(b[i], c, "{time}");
    }
    let n = |r: std::ops::Range<usize>| time[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Howard Hinnant's days_from_civil
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = days * 86_400_000
        + n(11..13) * 3_600_000
        + n(14..16) * 60_000
        + n(17..19) * 1000
        + n(20..23);
    u64::try_from(ms).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_registry_is_answered_exactly_with_its_headers() {
    let clock = ManualClock::new();
    let server = start(&clock).await;
    let addr = server.local_addr();
    init(&server, "projector-b", 10_000).await;
    clock.advance(Duration::from_millis(35_840));
    init(&server, "kiosk-1", 2000).await;
    clock.advance(Duration::from_millis(1560));

    let before = now_ms();
    let (reply, _) = tokio::task::spawn_blocking(move || get(addr, "/api/v1/apps"))
        .await
        .unwrap();
    let after = now_ms();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    // same-origin: a page from elsewhere cannot read it (issue 21)
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str()),
        "a small reply keeps its Content-Length"
    );

    let doc: Value = serde_json::from_slice(&reply.body).unwrap();
    let generated = doc["generated_at"].as_str().unwrap().to_owned();
    let generated_ms = epoch_ms(&generated);
    assert!(
        (before..=after).contains(&generated_ms),
        "{generated} is the system time of the request"
    );
    // ages from the server's (manual) clock; last_seen = generated_at - age
    let kiosk = doc["apps"][0]["last_seen"].as_str().unwrap().to_owned();
    let projector = doc["apps"][1]["last_seen"].as_str().unwrap().to_owned();
    assert_eq!(epoch_ms(&kiosk), generated_ms - 1560);
    assert_eq!(epoch_ms(&projector), generated_ms - 37_400);
    let expected = concat!(
        r#"{"version":1,"generated_at":"G","#,
        r#""thresholds":{"warn_ratio":3.0,"crit_ratio":5.0,"drop_ratio":6.0,"tolerance_ms":1000},"#,
        r#""counters":{"inits":2,"pings":0,"dones":0,"expiries":0,"refusals":0,"fails":0},"#,
        r#""counts":{"ok":1,"warning":1,"critical":0,"missing":0},"apps":["#,
        r#"{"key":"kiosk-1 @ 127.0.0.1","id":"kiosk-1","host":"127.0.0.1","state":"ok","#,
        r#""overdue_ratio":0.52,"granted_ms":3000,"last_seen":"K","#,
        r#""last_seen_ago_ms":1560,"expected":false,"missing":false,"failed":null,"#,
        // tracked since registration, all of it OK (this half hour)
        r#""uptime_24h":1.0,"uptime_7d":1.0,"#,
        r#""strip_24h":"-----------------------------------------------o"},"#,
        r#"{"key":"projector-b @ 127.0.0.1","id":"projector-b","host":"127.0.0.1","state":"warning","#,
        r#""overdue_ratio":3.4,"granted_ms":11000,"last_seen":"P","#,
        r#""last_seen_ago_ms":37400,"expected":false,"missing":false,"failed":null,"#,
        // WARNING since 33 s: not CRITICAL, so up
        r#""uptime_24h":1.0,"uptime_7d":1.0,"#,
        r#""strip_24h":"-----------------------------------------------w"}]}"#,
        "\n"
    );
    let text = reply
        .text()
        .replace(&generated, "G")
        .replace(&kiosk, "K")
        .replace(&projector, "P");
    assert_eq!(text, expected);

    // the reference's replies keep their headers: no Cache-Control
    let (list, _) = tokio::task::spawn_blocking(move || get(addr, "/list"))
        .await
        .unwrap();
    assert_eq!(list.header("content-type"), Some("text/plain"));
    assert_eq!(list.header("cache-control"), None);
    assert_eq!(
        list.header("x-content-type-options"),
        None,
        "the reference's headers"
    );
    assert_eq!(
        list.text(),
        "kiosk-1 @ 127.0.0.1\nprojector-b @ 127.0.0.1\n"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_are_json_strings_and_html_text() {
    let clock = ManualClock::new();
    let server = start(&clock).await;
    let addr = server.local_addr();
    let ids = [
        HOSTILE,
        r#"q"uote\back"#,
        "</script><script>alert(3)</script>",
        "x' onmouseover='alert(2)",
        "é 漢 😀",
    ];
    for id in ids {
        init(&server, id, 1000).await;
    }
    let (reply, _) = tokio::task::spawn_blocking(move || get(addr, "/api/v1/apps"))
        .await
        .unwrap();
    let text = reply.text();
    assert!(text.contains(r#""id":"q\"uote\\back""#), "{text}");
    let doc: Value = serde_json::from_str(text).unwrap();
    let mut got: Vec<&str> = doc["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["id"].as_str().unwrap())
        .collect();
    got.sort_unstable();
    let mut want = ids.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "every id parses back to itself");

    let (page, _) = tokio::task::spawn_blocking(move || get(addr, "/"))
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("access-control-allow-origin"), None);
    let html = page.text();
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("' onmouseover"), "{html}");
    assert_eq!(html.matches("<script").count(), 1, "the page's own only");
    assert!(html.contains(r#"<td class="app-id">&lt;img src=x onerror=alert(1)&gt;</td>"#));
    assert!(
        html.contains(r#"<b data-count="ok">5</b>"#),
        "rendered on the server"
    );
    server.shutdown().await;
}

/// 99 999 apps with 161-byte ids (about 52 MB of JSON) come in chunks of at most 32 KiB,
/// and the registry answers pings while the reply is half read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_registry_is_streamed_in_bounded_chunks() {
    // one below the default cap, so that `other` gets in
    const APPS: usize = 99_999;
    const CHUNK: usize = 32 * 1024;
    let clock = ManualClock::new();
    let server = start(&clock).await;
    let addr = server.local_addr();
    let local = "127.0.0.1".parse().unwrap();
    server.registry().with_registry(|registry, now| {
        for i in 0..APPS {
            let id = format!("app-{i:06}-{}", "x".repeat(150));
            registry
                .init(&id, local, Duration::from_secs(600), now)
                .unwrap();
        }
        registry.take_events();
    });
    let raw = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        write!(
            stream,
            "GET /api/v1/apps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = vec![0u8; 4096];
        stream.read_exact(&mut raw).unwrap();
        // half read: another client is answered meanwhile
        let mut other = TcpStream::connect(addr).unwrap();
        other
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        other
            .write_all(b"GET /hb_ping?0&appid=other HTTP/1.0\r\n\r\n")
            .unwrap();
        let mut pong = Vec::new();
        other.read_to_end(&mut pong).unwrap();
        assert!(pong.ends_with(b"\r\n\r\n1000"), "answered meanwhile");
        stream.read_to_end(&mut raw).unwrap();
        raw
    })
    .await
    .unwrap();
    let (reply, sizes) = split_reply(&raw);
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.body.len() > 50_000_000, "{} bytes", reply.body.len());
    assert!(
        sizes.iter().all(|&size| size <= CHUNK),
        "a chunk over {CHUNK} bytes: {:?}",
        sizes.iter().max()
    );
    assert!(
        sizes.len() >= reply.body.len() / CHUNK,
        "{} chunks",
        sizes.len()
    );
    let doc: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(doc["apps"].as_array().unwrap().len(), APPS);
    assert_eq!(doc["counts"]["ok"], APPS);
    // the snapshot is of the request: `other` came later
    assert_eq!(doc["counters"]["pings"], 0);
    server.shutdown().await;
}

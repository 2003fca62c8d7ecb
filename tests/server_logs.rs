//! What the server logs, and at which level. In a test binary of their own:
//! they install `tracing` subscribers, and tracing's per-callsite interest
//! cache can miss a scoped subscriber while other tests' threads hit the
//! same callsites for the first time.
#![cfg(feature = "server")]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heartbeat_sdk::server::{
    ManualClock, RegistryConfig, Server, ServerBuilder, ServerHandle, SharedRegistry,
};

/// The tests here run one at a time: a subscriber made while another test
/// hits a callsite for the first time could miss it (see above).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

async fn start(server: ServerBuilder) -> ServerHandle {
    server.start().await.unwrap()
}

fn local() -> ServerBuilder {
    Server::builder("127.0.0.1:0".parse().unwrap())
}

#[path = "support/log_capture.rs"]
mod log_capture;
use log_capture::Captured;

#[test]
fn binding_beyond_loopback_is_warned_about() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let captured = Captured::default();
        let subscriber = captured.subscriber(tracing::Level::WARN);
        let _guard = tracing::subscriber::set_default(subscriber);

        let loopback = start(local()).await;
        loopback.shutdown().await;
        assert!(
            !captured.text().contains("non-loopback"),
            "no warning on 127.0.0.1: {}",
            captured.text()
        );

        let everywhere = start(Server::builder("0.0.0.0:0".parse().unwrap())).await;
        let port = everywhere.local_addr().port();
        everywhere.shutdown().await;
        let log = captured.text();
        let line = log
            .lines()
            .find(|l| l.contains("non-loopback"))
            .unwrap_or_else(|| panic!("no warning for 0.0.0.0: {log:?}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(&format!("0.0.0.0:{port}")), "{line}");
    });
}

/// Log lines of `level` in `log`.
fn lines_at<'a>(log: &'a str, level: &str) -> Vec<&'a str> {
    let tag = format!(" {level} ");
    log.lines().filter(|l| l.contains(&tag)).collect()
}

/// Constructions, destructions, state changes, expiries and refusals are logged at info,
/// once each; a ping or init of a known app only at debug. Ids are escaped:
/// a line separator in an id cannot split or forge a log line.
#[test]
fn updates_log_at_debug_and_everything_else_at_info() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::DEBUG);
    let dispatch = tracing::Dispatch::new(subscriber);
    let clock = ManualClock::new();
    let registry = SharedRegistry::new(RegistryConfig::default(), Arc::new(clock.clone()));
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // one step: the request, and the info lines it must add
    let step = |target: &str, info: &[&str]| {
        let before = captured.text();
        let reply =
            tracing::dispatcher::with_default(&dispatch, || registry.handle(target, None, peer));
        let log = captured.text()[before.len()..].to_owned();
        let infos = lines_at(&log, "INFO");
        assert_eq!(infos.len(), info.len(), "{target}: {log}");
        for (line, expected) in infos.iter().zip(info) {
            assert!(
                line.contains(expected),
                "{target}: {line:?} vs {expected:?}"
            );
        }
        (reply.status, log)
    };
    let (status, _) = step(
        "/hb_init?1000&appid=a%E2%80%A8b",
        &["request refused: ERROR: appid refused: it contains the Unicode line break U+2028"],
    );
    assert_eq!(status, 400, "a line separator in an id is refused");
    let (status, _) = step(
        "/hb_init?1000&appid=a%5Db",
        &["Construction of [a]b @ 127.0.0.1]"],
    );
    assert_eq!(status, 200);
    for _ in 0..3 {
        let (status, log) = step("/hb_ping?1000&appid=a%5Db", &[]);
        assert_eq!(status, 200);
        assert_eq!(lines_at(&log, "DEBUG").len(), 1, "{log}");
        assert!(log.ends_with("Update of [a]b @ 127.0.0.1]\n"), "{log:?}");
    }
    let (status, _) = step("/hb_init?1000&appid=a%5Db", &[]);
    assert_eq!(status, 200, "an init of a known app is an update");
    step(
        "/hb_done?0&appid=a%5Db",
        &["Destruction of [a]b @ 127.0.0.1]"],
    );
    step(
        "/hb_ping?0&appid=gone",
        &["Construction of [gone @ 127.0.0.1]"],
    );
    clock.advance(Duration::from_secs(60));
    // the crossings on the way are logged too, each once
    step(
        "/list",
        &[
            "Lateness of [gone @ 127.0.0.1]: WARNING",
            "Lateness of [gone @ 127.0.0.1]: CRITICAL",
            "Expiry of [gone @ 127.0.0.1]",
        ],
    );
    let (status, _) = step(
        "/hb_pong?1&appid=x",
        &["request refused: ERROR: cannot process your request: [/hb_pong?1&appid=x]"],
    );
    assert_eq!(status, 400);
    let full = SharedRegistry::new(
        RegistryConfig {
            max_apps: 0,
            ..RegistryConfig::default()
        },
        Arc::new(clock.clone()),
    );
    let before = captured.text().len();
    tracing::dispatcher::with_default(&dispatch, || {
        assert_eq!(full.handle("/hb_ping?1&appid=y", None, peer).status, 503);
    });
    let log = captured.text()[before..].to_owned();
    assert_eq!(lines_at(&log, "INFO").len(), 1, "{log}");
    assert!(log.contains("Refusal of [y @ 127.0.0.1]"), "{log}");
    assert!(
        !captured.text().contains('\u{2028}'),
        "no raw line separator in the log"
    );
}

/// At the connection cap, a flood of new connections closes one waiting
/// connection each: the first eviction of the burst is logged at info, the
/// others at debug only, and the end of the burst (a connection that finds
/// a free slot) at info once, with how many were closed.
#[test]
fn evictions_log_one_info_line_per_burst() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // the server's tasks run on this thread, under the subscriber
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::DEBUG);
    let _guard = tracing::subscriber::set_default(subscriber);
    const FLOOD: usize = 6;
    runtime.block_on(async {
        let server = start(
            local()
                .max_connections(2)
                .head_timeout(Duration::from_secs(60)),
        )
        .await;
        let addr = server.local_addr();
        let ping = |stream: &mut TcpStream| {
            stream
                .write_all(b"GET /hb_ping?0&appid=a HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut reply = Vec::new();
            let mut buf = [0u8; 1024];
            while !reply.ends_with(b"\r\n\r\n1000") {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "closed before the reply");
                reply.extend_from_slice(&buf[..n]);
            }
        };
        // two silent connections fill the cap; each of the FLOOD pings
        // after them (kept alive) closes the connection waiting longest
        let clients = tokio::task::spawn_blocking(move || {
            let mut open: Vec<TcpStream> =
                (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
            for _ in 0..FLOOD {
                let mut stream = TcpStream::connect(addr).unwrap();
                ping(&mut stream);
                open.push(stream);
            }
            open
        })
        .await
        .unwrap();
        let log = captured.text();
        let evictions = |level| {
            lines_at(&log, level)
                .into_iter()
                .filter(|l| l.contains("connection cap reached"))
                .count()
        };
        assert_eq!(evictions("INFO"), 1, "{log}");
        assert_eq!(evictions("DEBUG"), FLOOD - 1, "{log}");
        // the cap is no longer reached once the clients are gone: a new
        // connection (maybe after a few more evictions, while the server
        // drops the closed ones) ends the burst
        drop(clients);
        for attempt in 0.. {
            assert!(attempt < 1000, "the burst never ends: {}", captured.text());
            tokio::task::spawn_blocking(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                ping(&mut stream);
            })
            .await
            .unwrap();
            let log = captured.text();
            if let Some(end) = log
                .lines()
                .find(|l| l.contains("connection cap no longer reached"))
            {
                assert!(end.contains(" INFO "), "{end}");
                let debug = lines_at(&log, "DEBUG")
                    .into_iter()
                    .filter(|l| l.contains("connection cap reached"))
                    .count();
                assert!(
                    end.contains(&format!("evicted={}", debug + 1)),
                    "{end} after {debug} debug lines"
                );
                break;
            }
        }
        let log = captured.text();
        assert_eq!(
            lines_at(&log, "INFO")
                .into_iter()
                .filter(|l| l.contains("connection cap"))
                .count(),
            2,
            "{log}"
        );
        server.shutdown().await;
    });
}

/// A whole-registry request refused past `max_streamed_replies` is logged
/// at debug only: a crowd of scrapers cannot flood the log.
#[test]
fn streamed_replies_refused_past_the_cap_log_at_debug() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::DEBUG);
    let _guard = tracing::subscriber::set_default(subscriber);
    runtime.block_on(async {
        let server = start(local().max_apps(1_000_000).max_streamed_replies(1)).await;
        // /metrics is about 40 MB: far more than the sockets' buffers hold
        server.registry().with_registry(|registry, now| {
            let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
            for i in 0..20_000 {
                let id = format!("app-{i:06}-{}", "x".repeat(990));
                registry
                    .init(&id, local, Duration::from_secs(600), now)
                    .unwrap();
            }
            registry.take_events();
        });
        let addr = server.local_addr();
        let get = move |target: &str| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            stream
                .write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).unwrap();
            (stream, String::from_utf8_lossy(&head[9..]).into_owned())
        };
        let (stalled, refused) = tokio::task::spawn_blocking(move || {
            let (stalled, status) = get("/metrics");
            assert_eq!(status, "200");
            let (_, refused) = get("/list");
            (stalled, refused)
        })
        .await
        .unwrap();
        assert_eq!(refused, "503");
        let log = captured.text();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("too many whole-registry replies"))
            .collect();
        assert_eq!(refusals.len(), 1, "{log}");
        assert!(refusals[0].contains(" DEBUG "), "{log}");
        drop(stalled);
        server.shutdown().await;
    });
}

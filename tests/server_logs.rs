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
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
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

/// Constructions, destructions, expiries and refusals are logged at info,
/// once each; a ping or init of a known app only at debug. Ids are escaped:
/// a line separator in an id cannot split or forge a log line.
#[test]
fn updates_log_at_debug_and_everything_else_at_info() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
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
    step("/list", &["Expiry of [gone @ 127.0.0.1]"]);
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

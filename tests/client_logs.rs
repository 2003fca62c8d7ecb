//! What the client logs, and at which level (issue 13): a failure swallowed
//! by `ErrorPolicy::Fallback` is one `warn` (the log is its only trace), a
//! failure returned under `Raise` only a `debug`, and a keep-alive's or the
//! demo's failed beat one `warn` of their own, never repeated by the client,
//! and nothing at `error`. In a test binary of its own with one global
//! subscriber, and one test at a time (see tests/server_logs.rs on
//! tracing's per-callsite interest cache).
#![cfg(all(feature = "mock", feature = "keepalive"))]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use heartbeat_sdk::testing::{MockFailure, MockTransport};
use heartbeat_sdk::{ErrorPolicy, HeartbeatClient, KeepAlive};

#[path = "support/log_capture.rs"]
mod log_capture;
use log_capture::Captured;

/// One log line of this crate: its level and the rest.
#[derive(Debug)]
struct Line {
    level: String,
    text: String,
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Run `scenario` alone, and return the crate's log lines it produced.
fn logged(scenario: impl FnOnce()) -> Vec<Line> {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let captured = CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::TRACE)
            .init();
        captured
    });
    captured.clear();
    scenario();
    let text = captured.text();
    text.lines()
        .filter_map(|line| {
            let (level, rest) = line.trim_start().split_once(' ')?;
            rest.starts_with("heartbeat_sdk").then(|| Line {
                level: level.to_owned(),
                text: rest.to_owned(),
            })
        })
        .collect()
}

fn at<'a>(lines: &'a [Line], level: &str) -> Vec<&'a Line> {
    lines.iter().filter(|l| l.level == level).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

fn client(mock: &MockTransport) -> HeartbeatClient {
    HeartbeatClient::builder_with_transport(mock.clone())
        .app_id("logged")
        .build()
        .unwrap()
}

#[test]
fn a_swallowed_failure_is_one_warning() {
    let mock = MockTransport::new();
    let lines = logged(|| {
        mock.fail_next(1, MockFailure::Refused);
        let granted = runtime().block_on(client(&mock).ping(
            Duration::from_secs(1),
            ErrorPolicy::Fallback(Duration::ZERO),
        ));
        assert_eq!(granted.unwrap(), Duration::ZERO);
    });
    let warnings = at(&lines, "WARN");
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(
        warnings[0].text.contains("heartbeat request failed"),
        "{lines:#?}"
    );
    assert!(
        warnings[0].text.contains("http://127.0.0.1:8888"),
        "{lines:#?}"
    );
    assert!(at(&lines, "ERROR").is_empty(), "{lines:#?}");
}

#[test]
fn a_raised_failure_is_only_a_debug_line() {
    let mock = MockTransport::new();
    let lines = logged(|| {
        mock.fail_next(1, MockFailure::status(500, "boom"));
        let error = runtime()
            .block_on(client(&mock).ping(Duration::from_secs(1), ErrorPolicy::Raise))
            .unwrap_err();
        assert!(matches!(
            error,
            heartbeat_sdk::Error::Status { status: 500, .. }
        ));
    });
    assert!(at(&lines, "ERROR").is_empty(), "{lines:#?}");
    assert!(at(&lines, "WARN").is_empty(), "{lines:#?}");
    let failures: Vec<_> = at(&lines, "DEBUG")
        .into_iter()
        .filter(|l| l.text.contains("heartbeat request failed"))
        .collect();
    assert_eq!(failures.len(), 1, "{lines:#?}");
}

#[test]
fn a_failed_keep_alive_beat_is_logged_once_with_its_context() {
    let mock = MockTransport::new();
    let lines = logged(|| {
        runtime().block_on(async {
            mock.fail_next(1, MockFailure::Refused);
            let handle = client(&mock).keep_alive(KeepAlive::every(Duration::from_secs(1)));
            handle
                .subscribe()
                .wait_for(|s| s.beats_failed == 1 && s.beats_ok >= 1)
                .await
                .unwrap();
            handle.shutdown().await.unwrap();
        });
    });
    assert!(at(&lines, "ERROR").is_empty(), "{lines:#?}");
    let warnings = at(&lines, "WARN");
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(
        warnings[0].text.starts_with("heartbeat_sdk::keepalive"),
        "{lines:#?}"
    );
    assert!(
        warnings[0].text.contains("keep-alive beat failed"),
        "{lines:#?}"
    );
    assert!(warnings[0].text.contains("failures=1"), "{lines:#?}");
}

#[cfg(feature = "server")]
#[test]
fn a_failed_demo_ping_is_logged_once_by_the_demo() {
    use heartbeat_sdk::demo::{run, DemoOptions};
    let mock = MockTransport::new();
    let lines = logged(|| {
        runtime().block_on(async {
            let client = client(&mock);
            // the init and the only ping fail; list, status, done answer
            mock.fail_next(2, MockFailure::Refused);
            let options = DemoOptions {
                max_beats: Some(1),
                ..DemoOptions::default()
            };
            let report = run(&client, &options, std::future::pending())
                .await
                .unwrap();
            assert_eq!(report.failed, 1);
        });
    });
    assert!(at(&lines, "ERROR").is_empty(), "{lines:#?}");
    let warnings = at(&lines, "WARN");
    assert!(
        warnings
            .iter()
            .all(|l| l.text.starts_with("heartbeat_sdk::demo")),
        "{lines:#?}"
    );
    assert_eq!(warnings.len(), 2, "{lines:#?}");
    assert!(warnings[0].text.contains("hb_init failed"), "{lines:#?}");
    assert!(warnings[1].text.contains("hb_ping failed"), "{lines:#?}");
}

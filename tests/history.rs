//! The event history (`GET /api/v1/events`, `HeartbeatClient::events`,
//! `heartbeat history`): the state changes of an application, newest
//! first, dated at the instants they happened, on the manual clock.
#![cfg(all(feature = "server", feature = "serde"))]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use heartbeat_sdk::protocol::history::{parse_events, EventsQuery};
use heartbeat_sdk::protocol::notification::Change;
use heartbeat_sdk::protocol::parse_time;
use heartbeat_sdk::server::{Clock, ManualClock, RegistryConfig, SharedRegistry};
use heartbeat_sdk::State;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

#[test]
fn warning_critical_and_recovery_are_in_the_history_at_their_instants() {
    let clock = ManualClock::new();
    let shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(clock.clone()));
    let start = clock.wall(clock.now());
    assert_eq!(
        shared
            .handle("/hb_init?1000&appid=kiosk-3", None, PEER)
            .body,
        "2000"
    );
    clock.advance(Duration::from_secs(11)); // past warn (6 s) and crit (10 s)
    shared.sweep();
    shared.handle("/hb_ping?1000&appid=kiosk-3", None, PEER);
    shared.handle("/hb_ping?1000&appid=kiosk-3", None, PEER); // an update: not history
    let reply = shared.handle("/api/v1/events?app=kiosk-3", None, PEER);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    let events = parse_events(reply.body.as_bytes()).unwrap();
    assert_eq!(events.app, "kiosk-3");
    assert_eq!(events.total, 4);
    let seen: Vec<_> = events
        .events
        .iter()
        .map(|e| (e.event, e.previous, e.state))
        .collect();
    let (ok, warn, crit) = (Some(State::Ok), Some(State::Warning), Some(State::Critical));
    assert_eq!(
        seen,
        [
            (Change::Recovered, crit, ok),
            (Change::Critical, warn, crit),
            (Change::Warning, ok, warn),
            (Change::Created, None, ok),
        ]
    );
    // written in whole milliseconds: an instant up to 1 ms before the exact one
    let start_ms = start - Duration::from_millis(1);
    let after = |i: usize| {
        parse_time(&events.events[i].at)
            .unwrap()
            .duration_since(start_ms)
            .unwrap()
    };
    // on the manual clock's wall time: at the crossings, not the sweep
    assert!(after(3) <= Duration::from_millis(1), "created at the start");
    assert_eq!(after(2) - after(3), Duration::from_secs(6));
    assert_eq!(after(1) - after(3), Duration::from_secs(10));
    assert_eq!(after(0) - after(3), Duration::from_secs(11));
    assert_eq!(events.events[1].host.as_deref(), Some("10.0.0.5"));
    assert_eq!(events.events[1].overdue, Some(5.0));

    // since, limit and host narrow it; total counts what is held
    let since = start + Duration::from_secs(8);
    let query = EventsQuery::new("kiosk-3").since(since).limit(1);
    let narrowed = parse_events(
        shared
            .handle(&query.request().target, None, PEER)
            .body
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(narrowed.events.len(), 1);
    assert_eq!(narrowed.events[0].event, Change::Recovered);
    let elsewhere = EventsQuery::new("kiosk-3").host("10.0.0.6".parse().unwrap());
    let none = parse_events(
        shared
            .handle(&elsewhere.request().target, None, PEER)
            .body
            .as_bytes(),
    )
    .unwrap();
    assert!(none.events.is_empty());
    assert_eq!(none.total, 0);
}

#[test]
fn done_expiry_and_a_missing_expected_app_are_history_too() {
    let clock = ManualClock::new();
    let shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(clock.clone()));
    shared.with_registry(|r, _| r.expect("backup".parse().unwrap()));
    shared.handle("/hb_init?1000&appid=a", None, PEER);
    shared.handle("/hb_done?0&appid=a", None, PEER);
    shared.handle("/hb_init?1000&appid=b", None, PEER);
    clock.advance(Duration::from_secs(13)); // past drop (12 s)
    shared.sweep();
    let kinds = |app: &str| -> Vec<Change> {
        let body = shared
            .handle(&format!("/api/v1/events?app={app}"), None, PEER)
            .body;
        parse_events(body.as_bytes())
            .unwrap()
            .events
            .iter()
            .map(|e| e.event)
            .collect()
    };
    assert_eq!(kinds("a"), [Change::Done, Change::Created]);
    assert_eq!(
        kinds("b"),
        [
            Change::Expired,
            Change::Critical,
            Change::Warning,
            Change::Created
        ]
    );
    assert_eq!(kinds("backup"), [Change::ExpectedMissing]);
}

#[test]
fn bad_queries_are_one_line_errors_and_hostile_ids_stay_json() {
    let shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(ManualClock::new()));
    for target in [
        "/api/v1/events",
        "/api/v1/events?app=a&limit=0",
        "/api/v1/events?app=a&since=%0Aforged",
        "/api/v1/events?app=a%7Cb",
    ] {
        let reply = shared.handle(target, None, PEER);
        assert_eq!(reply.status, 400, "{target}");
        assert!(
            reply.body.starts_with("ERROR: "),
            "{target}: {}",
            reply.body
        );
        assert!(!reply.body.contains('\n'), "{target}: {}", reply.body);
    }
    let id = "</script><b>\"x\"";
    let encoded = "%3C%2Fscript%3E%3Cb%3E%22x%22";
    shared.handle(&format!("/hb_init?1000&appid={encoded}"), None, PEER);
    let reply = shared.handle(&format!("/api/v1/events?app={encoded}"), None, PEER);
    // JSON, never a page: a browser does not run what an id holds
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(parse_events(reply.body.as_bytes()).unwrap().app, id);
}

/// The client reads it over HTTP from the real server; the reference
/// (here: a server without the API) is `Unsupported`.
#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reads_the_history_of_the_real_server() {
    use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient};
    let server = heartbeat_sdk::server::Server::builder("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let client = HeartbeatClient::builder()
        .url(server.url())
        .app_id("kiosk")
        .build()
        .unwrap();
    client
        .init(Duration::from_secs(5), ErrorPolicy::Raise)
        .await
        .unwrap();
    client
        .done(Duration::ZERO, ErrorPolicy::Raise)
        .await
        .unwrap();
    let events = client
        .events(&EventsQuery::new("kiosk"), ErrorPolicy::Raise)
        .await
        .unwrap();
    let kinds: Vec<_> = events.events.iter().map(|e| e.event).collect();
    assert_eq!(kinds, [Change::Done, Change::Created]);
    assert_eq!(events.events[0].host.as_deref(), Some("127.0.0.1"));
    server.shutdown().await;

    let reference = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(
            wiremock::ResponseTemplate::new(400)
                .set_body_string("ERROR: cannot process your request"),
        )
        .mount(&reference)
        .await;
    let old = HeartbeatClient::builder()
        .url(reference.uri())
        .app_id("kiosk")
        .build()
        .unwrap();
    let err = old
        .events(&EventsQuery::new("kiosk"), ErrorPolicy::Raise)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unsupported { status: 400, .. }),
        "{err:?}"
    );
}

/// `heartbeat history APP_ID`: one line per change, newest first.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_history() {
    let server = heartbeat_sdk::server::Server::builder("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let url = server.url();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_heartbeat"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let args = |extra: &[&str]| {
        let mut all = vec!["--url".to_owned(), url.clone()];
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };
    let out = run(args(&["--app-id", "kiosk", "init", "5000"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = run(args(&["--app-id", "kiosk", "done"])).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = run(args(&["history", "kiosk"])).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("  done  ") && lines[0].ends_with("OK -> -"),
        "{text}"
    );
    assert!(
        lines[1].contains("  created  ") && lines[1].ends_with("- -> OK"),
        "{text}"
    );
    assert!(lines[1].contains("127.0.0.1"), "{text}");
    let out = run(args(&["history", "kiosk", "--json", "--limit", "1"]))
        .await
        .unwrap();
    let events = parse_events(&out.stdout).unwrap();
    assert_eq!(events.events.len(), 1);
    assert_eq!(events.total, 2);
    server.shutdown().await;
}

/// `/api/v1/apps` says how long each app was up over the last day and
/// week, and where: the strip's last half-hour slot holds the CRITICAL.
#[test]
fn uptime_and_the_strip_come_from_the_history() {
    let clock = ManualClock::new();
    let shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(clock.clone()));
    shared.handle("/hb_init?1000&appid=kiosk-3", None, PEER); // granted 2 s
    clock.advance(Duration::from_secs(11)); // CRITICAL at 10 s
    shared.sweep();
    shared.handle("/hb_ping?1000&appid=kiosk-3", None, PEER); // OK at 11 s
    clock.advance(Duration::from_secs(9)); // now: 20 s
    let apps: serde_json::Value =
        serde_json::from_str(&shared.handle("/api/v1/apps", None, PEER).body).unwrap();
    let app = &apps["apps"][0];
    // 1 s CRITICAL of 20 s tracked
    let day = app["uptime_24h"].as_f64().unwrap();
    assert!((day - 0.95).abs() < 1e-9, "{app}");
    assert!(
        (app["uptime_7d"].as_f64().unwrap() - 0.95).abs() < 1e-9,
        "{app}"
    );
    let strip = app["strip_24h"].as_str().unwrap();
    assert_eq!(strip, format!("{}c", "-".repeat(47)), "{app}");
    assert_eq!(app["failed"], serde_json::Value::Null);
}

/// `hb_fail?CODE`: CRITICAL with the code in every view, history and
/// metrics, until the next ping.
#[test]
fn a_failed_run_is_critical_everywhere_until_the_next_ping() {
    let clock = ManualClock::new();
    let shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(clock.clone()));
    shared.handle("/hb_init?60000&appid=backup", None, PEER);
    let reply = shared.handle("/hb_fail?3&appid=backup", Some(b"appid=backup"), PEER);
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "Failure recorded: exit code 3")
    );
    let status = shared.handle("/status?appid=backup", None, PEER).body;
    assert!(
        status.starts_with("CRITICAL - application [backup @ 10.0.0.5] failed with exit code 3|"),
        "{status}"
    );
    let apps: serde_json::Value =
        serde_json::from_str(&shared.handle("/api/v1/apps", None, PEER).body).unwrap();
    assert_eq!(apps["apps"][0]["state"], "critical");
    assert_eq!(apps["apps"][0]["failed"], 3);
    assert_eq!(apps["counters"]["fails"], 1);
    let metrics = shared.handle("/metrics", None, PEER).body;
    assert!(metrics.contains("\nheartbeat_fails_total 1\n"), "{metrics}");
    assert!(
        metrics.contains("heartbeat_app_up{app=\"backup\",host=\"10.0.0.5\"} 0"),
        "{metrics}"
    );
    let events = parse_events(
        shared
            .handle("/api/v1/events?app=backup", None, PEER)
            .body
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(events.events[0].event, Change::Failed);
    assert_eq!(events.events[0].exit_code, Some(3));
    assert_eq!(events.events[0].state, Some(State::Critical));
    // a bad code is a 400 that changes nothing
    let bad = shared.handle("/hb_fail?300&appid=backup", None, PEER);
    assert_eq!(bad.status, 400);
    assert!(
        bad.body
            .contains("exit code must be a whole number from 0 to 255"),
        "{}",
        bad.body
    );
    // the next run's ping clears it
    clock.advance(Duration::from_secs(1));
    shared.handle("/hb_ping?60000&appid=backup", None, PEER);
    let status = shared.handle("/status?appid=backup", None, PEER).body;
    assert!(
        status.starts_with("OK - fine application [backup @ 10.0.0.5]"),
        "{status}"
    );
}

/// With `--state` the history, and a failed run, outlive the server: a
/// restart reads the `events` table back.
#[cfg(all(feature = "state", feature = "reqwest"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_history_and_the_failure() {
    use heartbeat_sdk::server::Server;
    use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
    let dir = std::env::temp_dir().join(format!("hb-history-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.db");
    let start = || {
        Server::builder("127.0.0.1:0".parse().unwrap())
            .state(&state)
            .start()
    };
    let server = start().await.unwrap();
    let client = |server: &heartbeat_sdk::server::ServerHandle| {
        HeartbeatClient::builder()
            .url(server.url())
            .app_id("kiosk-3")
            .build()
            .unwrap()
    };
    let kiosk = client(&server);
    kiosk
        .init(Duration::from_secs(60), ErrorPolicy::Raise)
        .await
        .unwrap();
    kiosk.fail(2, ErrorPolicy::Raise).await.unwrap();
    let before = kiosk
        .events(&EventsQuery::new("kiosk-3"), ErrorPolicy::Raise)
        .await
        .unwrap();
    server.shutdown().await; // commits
    let server = start().await.unwrap();
    let kiosk = client(&server);
    let after = kiosk
        .events(&EventsQuery::new("kiosk-3"), ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(after.events, before.events);
    let kinds: Vec<_> = after.events.iter().map(|e| e.event).collect();
    assert_eq!(kinds, [Change::Failed, Change::Created]);
    let status = kiosk
        .status(Some("kiosk-3"), ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(status.state(), State::Critical);
    assert!(
        status.message().ends_with("failed with exit code 2"),
        "{}",
        status.message()
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An app CRITICAL at shutdown is restored OK (a fresh grace): the
/// history says so with a `restored` change (so its uptime counts it up
/// from the restart on, instead of CRITICAL for ever).
#[cfg(feature = "state")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_app_gets_a_restored_change_where_the_history_disagrees() {
    use heartbeat_sdk::server::Server;
    let dir = std::env::temp_dir().join(format!("hb-history-restored-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.db");
    let clock = ManualClock::new();
    let start = |clock: &ManualClock| {
        Server::builder("127.0.0.1:0".parse().unwrap())
            .clock(clock.clone())
            .state(&state)
            .start()
    };
    let server = start(&clock).await.unwrap();
    server
        .registry()
        .handle("/hb_init?1000&appid=late", None, PEER);
    server
        .registry()
        .handle("/hb_init?60000&appid=fine", None, PEER);
    clock.advance(Duration::from_secs(11)); // late: CRITICAL at 10 s
    server.registry().sweep();
    server.shutdown().await;
    let clock = ManualClock::new();
    let server = start(&clock).await.unwrap();
    let events = |app: &str| {
        parse_events(
            server
                .registry()
                .handle(&format!("/api/v1/events?app={app}"), None, PEER)
                .body
                .as_bytes(),
        )
        .unwrap()
    };
    let late = events("late");
    let kinds: Vec<_> = late.events.iter().map(|e| e.event).collect();
    assert_eq!(
        kinds,
        [
            Change::Restored,
            Change::Critical,
            Change::Warning,
            Change::Created
        ]
    );
    assert_eq!(late.events[0].previous, Some(State::Critical));
    assert_eq!(late.events[0].state, Some(State::Ok));
    assert_eq!(events("fine").total, 1, "the history agrees: nothing added");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

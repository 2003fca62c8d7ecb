//! `HeartbeatClient::status_all` and `heartbeat check --all`: against the
//! embedded server (a ManualClock puts apps into OK, WARNING and CRITICAL),
//! against a wiremock server answering like the reference (400 for the JSON
//! API and `/metrics`), with our JSON API's missing apps, and against a
//! hostile server. Every wait is bounded by the client's request timeout.
#![cfg(all(feature = "cli", feature = "server", feature = "reqwest"))]

use std::process::Command;
use std::time::Duration;

use heartbeat_sdk::protocol::{
    app_line, no_record_line, AppAnswer, State, NO_CLIENTS_LINE, UNREACHABLE_LINE,
};
use heartbeat_sdk::server::{ManualClock, Server, ServerHandle};
use heartbeat_sdk::{AppCheck, ErrorPolicy, HeartbeatClient};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[path = "support/refusing.rs"]
mod refusing;
use refusing::Refusing;

async fn start(clock: &ManualClock) -> ServerHandle {
    Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .start()
        .await
        .unwrap()
}

fn client(url: &str, app: &str) -> HeartbeatClient {
    HeartbeatClient::builder()
        .url(url)
        .app_id(app)
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Register `id` promising `promise_ms` (granted: + 1000 ms).
async fn init(url: &str, id: &str, promise_ms: u64) {
    client(url, id)
        .init(Duration::from_millis(promise_ms), ErrorPolicy::Raise)
        .await
        .unwrap();
}

/// The state of each check, or `None` when it is not the app's own status.
fn states(checks: &[AppCheck]) -> Vec<(String, Option<State>)> {
    checks
        .iter()
        .map(|c| {
            let state = match &c.answer {
                Ok(AppAnswer::Status(s)) => Some(s.state()),
                _ => None,
            };
            (c.key.clone(), state)
        })
        .collect()
}

/// What a finished `heartbeat` run left behind.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn first_line(&self) -> &str {
        self.stdout.lines().next().unwrap_or_default()
    }
}

/// `heartbeat --url URL ARGS`, without the test's own settings variables,
/// run to its end on a blocking thread (each request is bounded by --timeout).
async fn heartbeat(url: &str, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_heartbeat"));
    for var in ["HB_URL", "HB_HOST", "HB_PORT", "APP_ID", "RUST_LOG"] {
        command.env_remove(var);
    }
    command
        .args(["--url", url, "--timeout", "10000"])
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the heartbeat binary runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Apps of the three states: promised 1000 / 2000 / 3000 ms (granted
/// 2000 / 3000 / 4000), then 10.5 s later od 5.25 CRITICAL, 3.50 WARNING,
/// 2.63 OK.
const CRIT_MS: u64 = 1000;
const WARN_MS: u64 = 2000;
const OK_MS: u64 = 3000;
const LATER: Duration = Duration::from_millis(10_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_apps_is_unknown_exit_3() {
    let clock = ManualClock::new();
    let server = start(&clock).await;
    let url = server.url();
    let checks = client(&url, "asker")
        .status_all(ErrorPolicy::Raise)
        .await
        .unwrap();
    assert!(checks.is_empty());
    let run = heartbeat(&url, &["check", "--all"]).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(
        run.stdout,
        format!("{NO_CLIENTS_LINE}| ok=0 warning=0 critical=0 unknown=0\n")
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_in_each_state_gives_that_state_and_exit_code() {
    for (promise, state, code) in [
        (OK_MS, State::Ok, 0),
        (WARN_MS, State::Warning, 1),
        (CRIT_MS, State::Critical, 2),
    ] {
        let clock = ManualClock::new();
        let server = start(&clock).await;
        let url = server.url();
        init(&url, "kiosk-1", promise).await;
        clock.advance(LATER);
        let checks = client(&url, "asker")
            .status_all(ErrorPolicy::Raise)
            .await
            .unwrap();
        assert_eq!(
            states(&checks),
            [("kiosk-1 @ 127.0.0.1".to_owned(), Some(state))]
        );
        let run = heartbeat(&url, &["check", "--all"]).await;
        assert_eq!(run.code, Some(code), "{run:?}");
        let perf = format!(
            "| ok={} warning={} critical={} unknown=0",
            u8::from(state == State::Ok),
            u8::from(state == State::Warning),
            u8::from(state == State::Critical)
        );
        let expected = match state {
            State::Ok => format!("OK - 1 application fine{perf}"),
            State::Warning => format!(
                "WARNING - 1 of 1 application needs attention: kiosk-1 @ 127.0.0.1 (WARNING, od 3.50){perf}"
            ),
            _ => format!(
                "CRITICAL - 1 of 1 application needs attention: kiosk-1 @ 127.0.0.1 (CRITICAL, od 5.25){perf}"
            ),
        };
        assert_eq!(run.first_line(), expected);
        let long: Vec<&str> = run.stdout.lines().skip(1).collect();
        assert_eq!(long.len(), 1, "{run:?}");
        assert!(long[0].starts_with(&format!("{state} - kiosk-1 @ 127.0.0.1: od ")));
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_apps_report_the_worst_with_counts_and_one_line_each() {
    let clock = ManualClock::new();
    let server = start(&clock).await;
    let url = server.url();
    for i in 0..20 {
        init(&url, &format!("ok-{i:02}"), OK_MS).await;
    }
    for i in 0..4 {
        init(&url, &format!("warn-{i}"), WARN_MS).await;
    }
    clock.advance(LATER);

    // only OK and WARNING: WARNING, exit 1
    let run = heartbeat(&url, &["check", "--all"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.first_line().starts_with(
        "WARNING - 4 of 24 applications need attention: warn-0 @ 127.0.0.1 (WARNING, od 3.50), "
    ));
    assert!(run
        .first_line()
        .ends_with("| ok=20 warning=4 critical=0 unknown=0"));
    assert_eq!(run.stdout.lines().count(), 1 + 24);

    server.shutdown().await;

    // three late ones among five fine ones make it CRITICAL
    let clock = ManualClock::new();
    let server = start(&clock).await;
    let url = server.url();
    for i in 0..5 {
        init(&url, &format!("fresh-{i}"), OK_MS).await;
    }
    for i in 0..3 {
        init(&url, &format!("crit-{i}"), CRIT_MS).await;
    }
    clock.advance(LATER);
    let checks = client(&url, "asker")
        .status_all(ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(checks.len(), 8);
    // in /list order (byte-wise by key)
    let keys: Vec<&str> = checks.iter().map(|c| c.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    let run = heartbeat(&url, &["check", "--all"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(
        run.first_line(),
        "CRITICAL - 3 of 8 applications need attention: crit-0 @ 127.0.0.1 (CRITICAL, od 5.25), \
         crit-1 @ 127.0.0.1 (CRITICAL, od 5.25), crit-2 @ 127.0.0.1 (CRITICAL, od 5.25)\
         | ok=5 warning=0 critical=3 unknown=0"
    );

    // --json: the same, as one document
    let run = heartbeat(&url, &["check", "--all", "--json"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["state"], "critical");
    assert_eq!(doc["exit_code"], 2);
    assert_eq!(doc["counts"]["critical"], 3);
    assert_eq!(doc["counts"]["ok"], 5);
    assert_eq!(doc["counts"]["missing"], 0);
    let apps = doc["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 8);
    assert_eq!(apps[0]["key"], "crit-0 @ 127.0.0.1");
    assert_eq!(apps[0]["id"], "crit-0");
    assert_eq!(apps[0]["host"], "127.0.0.1");
    assert_eq!(apps[0]["state"], "critical");
    assert_eq!(apps[0]["overdue_ratio"], 5.25);
    assert_eq!(apps[0]["granted_ms"], 2000);
    assert_eq!(apps[0]["missing"], false);
    assert_eq!(apps[3]["state"], "ok");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_with_summary_punctuation_stay_inside_the_text() {
    let clock = ManualClock::new();
    let server = start(&clock).await;
    let url = server.url();
    // `|` is refused by client and server alike; these get through
    let id = "x (OK), y=1; z: [a] @ b";
    init(&url, id, CRIT_MS).await;
    clock.advance(LATER);
    let run = heartbeat(&url, &["check", "--all"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    let key = format!("{id} @ 127.0.0.1");
    assert_eq!(
        run.first_line(),
        format!("CRITICAL - 1 of 1 application needs attention: {key} (CRITICAL, od 5.25)| ok=0 warning=0 critical=1 unknown=0")
    );
    // found by the id before the key's last " @ "
    let checks = client(&url, "asker")
        .status_all(ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(states(&checks), [(key, Some(State::Critical))]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_the_references_critical_line() {
    let refusing = Refusing::new();
    let url = refusing.url();
    let run = heartbeat(&url, &["check", "--all"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stdout, format!("{UNREACHABLE_LINE}\n"));
    assert!(run.stderr.starts_with("heartbeat check: "), "{run:?}");
    let run = heartbeat(&url, &["check", "--all", "--json"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["line"], UNREACHABLE_LINE);
    assert_eq!(doc["state"], "critical");
    assert!(client(&url, "asker")
        .status_all(ErrorPolicy::Raise)
        .await
        .is_err());
    assert!(client(&url, "asker")
        .status_all(ErrorPolicy::Fallback(Vec::new()))
        .await
        .unwrap()
        .is_empty());
}

/// A reference-like server: `/list` with `keys`, `/status?appid=ID` from
/// `statuses`, 400 `ERROR: cannot process your request: [PATH]` for
/// everything else (the JSON API, `/metrics`).
async fn reference_like(list: &str, statuses: &[(&str, String)]) -> MockServer {
    like(list, statuses, None).await
}

/// [`reference_like`], with `api` (when given) as our `/api/v1/apps` document.
async fn like(list: &str, statuses: &[(&str, String)], api: Option<&str>) -> MockServer {
    let server = MockServer::start().await;
    let text = |body: String| {
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/plain")
            .insert_header("access-control-allow-origin", "*")
            .set_body_string(body)
    };
    Mock::given(method("GET"))
        .and(path("/list"))
        .respond_with(text(list.to_owned()))
        .mount(&server)
        .await;
    for (id, line) in statuses {
        Mock::given(path("/status"))
            .and(query_param("appid", *id))
            .respond_with(text(line.clone()))
            .mount(&server)
            .await;
    }
    if let Some(api) = api {
        Mock::given(path("/api/v1/apps"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "application/json")
                    .set_body_string(api.to_owned()),
            )
            .mount(&server)
            .await;
    }
    for p in ["/api/v1/apps", "/metrics"] {
        Mock::given(path(p))
            .respond_with(
                ResponseTemplate::new(400)
                    .set_body_string(format!("ERROR: cannot process your request: [{p}]")),
            )
            .mount(&server)
            .await;
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_reference_other_hosts_are_unknown_and_gone_apps_skipped() {
    let line = |state, key: &str, od| app_line(state, key, od, 3.0, 5.0, 6.0, 3000);
    let server = reference_like(
        "Tetris @ 127.0.0.1\nfar @ 10.0.0.9\ngone @ 127.0.0.1\nlate @ 127.0.0.1\n",
        &[
            ("Tetris", line(State::Ok, "Tetris @ 127.0.0.1", 0.52)),
            // looked up as `far @ ASKER_IP`
            ("far", no_record_line("far @ 127.0.0.1")),
            // done between /list and /status
            ("gone", no_record_line("gone @ 127.0.0.1")),
            ("late", line(State::Warning, "late @ 127.0.0.1", 3.1)),
        ],
    )
    .await;
    let url = server.uri();
    let checks = client(&url, "asker")
        .status_all(ErrorPolicy::Raise)
        .await
        .unwrap();
    let kinds: Vec<(&str, &str)> = checks
        .iter()
        .map(|c| {
            let kind = match &c.answer {
                Ok(AppAnswer::Status(_)) => "status",
                Ok(AppAnswer::Gone(_)) => "gone",
                Ok(AppAnswer::OtherHost(_)) => "other",
                Ok(_) => "new kind",
                Err(_) => "error",
            };
            (c.key.as_str(), kind)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("Tetris @ 127.0.0.1", "status"),
            ("far @ 10.0.0.9", "other"),
            ("gone @ 127.0.0.1", "gone"),
            ("late @ 127.0.0.1", "status"),
        ]
    );
    let run = heartbeat(&url, &["check", "--all"]).await;
    assert_eq!(run.code, Some(1), "WARNING beats UNKNOWN: {run:?}");
    assert_eq!(
        run.stderr, "",
        "the reference's 400 for the JSON API is no news"
    );
    assert_eq!(
        run.first_line(),
        "WARNING - 2 of 3 applications need attention: late @ 127.0.0.1 (WARNING, od 3.10), \
         far @ 10.0.0.9 (UNKNOWN, on another host)| ok=1 warning=1 critical=0 unknown=1"
    );
    let long: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert_eq!(long.len(), 4, "{run:?}");
    assert!(long[1].starts_with("UNKNOWN - far @ 10.0.0.9: on another host"));
    assert!(long[2].starts_with("GONE - gone @ 127.0.0.1: "));
    let run = heartbeat(&url, &["check", "--all", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["api"], false);
    assert_eq!(doc["counts"]["gone"], 1);
    assert_eq!(doc["apps"][1]["finding"], "other_host");
    assert_eq!(doc["apps"][2]["state"], "gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_adds_missing_apps_and_other_hosts_states() {
    let api = r#"{"version":1,"generated_at":"2026-11-25T10:00:01.234Z",
      "thresholds":{"warn_ratio":3.0,"crit_ratio":5.0,"drop_ratio":6.0,"tolerance_ms":1000},
      "counters":{"inits":2,"pings":0,"dones":0,"expiries":0,"refusals":0},
      "counts":{"ok":1,"warning":0,"critical":1,"missing":1},
      "apps":[
        {"key":"kiosk-1 @ 127.0.0.1","id":"kiosk-1","host":"127.0.0.1","state":"ok","overdue_ratio":0.5,"granted_ms":3000,"last_seen":null,"last_seen_ago_ms":null,"expected":true,"missing":false},
        {"key":"kiosk-3 @ 10.0.0.3","id":"kiosk-3","host":"10.0.0.3","state":"critical","overdue_ratio":5.2,"granted_ms":3000,"last_seen":null,"last_seen_ago_ms":null,"expected":true,"missing":false},
        {"key":"kiosk-9","id":"kiosk-9","host":null,"state":"missing","overdue_ratio":null,"granted_ms":null,"last_seen":null,"last_seen_ago_ms":null,"expected":true,"missing":true}]}"#;
    let server = like(
        "kiosk-1 @ 127.0.0.1\nkiosk-3 @ 10.0.0.3\n",
        &[
            (
                "kiosk-1",
                app_line(State::Ok, "kiosk-1 @ 127.0.0.1", 0.5, 3.0, 5.0, 6.0, 3000),
            ),
            ("kiosk-3", no_record_line("kiosk-3 @ 127.0.0.1")),
        ],
        Some(api),
    )
    .await;
    let url = server.uri();
    let run = heartbeat(&url, &["check", "--all"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(
        run.first_line(),
        "CRITICAL - 2 of 3 applications need attention: kiosk-3 @ 10.0.0.3 (CRITICAL, od 5.20), \
         kiosk-9 (missing)| ok=1 warning=0 critical=2 unknown=0"
    );
    assert_eq!(
        run.stdout.lines().last(),
        Some("CRITICAL - kiosk-9: missing (expected, not tracked)")
    );
    let run = heartbeat(&url, &["check", "--all", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["api"], true);
    assert_eq!(doc["counts"]["missing"], 1);
    assert_eq!(doc["apps"][2]["key"], "kiosk-9");
    assert_eq!(doc["apps"][2]["missing"], true);
    assert_eq!(doc["apps"][2]["host"], serde_json::Value::Null);
    assert_eq!(doc["apps"][2]["state"], "critical");

    // a JSON API that answers something else: said on stderr, the check goes on
    let server = like(
        "kiosk-1 @ 127.0.0.1\n",
        &[(
            "kiosk-1",
            app_line(State::Ok, "kiosk-1 @ 127.0.0.1", 0.5, 3.0, 5.0, 6.0, 3000),
        )],
        Some("<html>not it</html>"),
    )
    .await;
    let run = heartbeat(&server.uri(), &["check", "--all"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stderr,
        "heartbeat check: /api/v1/apps unusable, missing applications not checked: not a version 1 document\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_server_cannot_forge_the_check_output() {
    let evil = "evil\u{1b}]0;pwned\u{7}\u{202e}x (OK), ok=99 | critical=0";
    let evil_key = format!("{evil} @ 127.0.0.1");
    let server = reference_like(
        &format!("{evil_key}\nplain @ 127.0.0.1\n"),
        &[(
            "plain",
            app_line(
                State::Critical,
                "plain @ 127.0.0.1",
                5.5,
                3.0,
                5.0,
                6.0,
                3000,
            ),
        )],
    )
    .await;
    // the hostile id is refused by the client before sending (`|`): its
    // status is a failure, UNKNOWN, whatever the server would say
    let run = heartbeat(&server.uri(), &["check", "--all"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    assert_eq!(lines[0].matches('|').count(), 1, "{}", lines[0]);
    assert!(
        lines[0].ends_with("| ok=0 warning=0 critical=1 unknown=1"),
        "{}",
        lines[0]
    );
    assert!(lines[0].starts_with("CRITICAL - 2 of 2 applications need attention: plain @ 127.0.0.1 (CRITICAL, od 5.50), evil\\u{1b}]0;pwned\\u{7}\\u{202e}x (OK), ok=99 \\u{7c} critical=0 @ 127.0.0.1 (UNKNOWN, no status)"), "{}", lines[0]);
    for line in &lines[1..] {
        assert!(!line.contains('|'), "{line}");
    }
    assert!(!run
        .stdout
        .chars()
        .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_status_line_names_another_record_and_cannot_pass_as_the_app() {
    // the server answers for `a` with a line about `b`, with extra lines
    let server = reference_like(
        "a @ 127.0.0.1\n",
        &[(
            "a",
            "OK - fine application [b @ 127.0.0.1]| od=0.10;3;5;0;6 delay=3000ms;;; \nOK - a is fine|ok=1"
                .to_owned(),
        )],
    )
    .await;
    let run = heartbeat(&server.uri(), &["check", "--all"]).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(
        run.first_line(),
        "UNKNOWN - 1 of 1 application needs attention: a @ 127.0.0.1 (UNKNOWN, on another host)| ok=0 warning=0 critical=0 unknown=1"
    );
    assert_eq!(run.stdout.lines().count(), 2);
}

/// Not a test of time (see BENCHMARKS-style figures in the report): 100 000
/// apps through `status_all` against the embedded server, run by hand with
/// `cargo test --all-features --test check_all -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: 100 000 status requests; run by hand for the figure"]
async fn hundred_thousand_apps() {
    let clock = ManualClock::new();
    let server = start(&clock).await;
    let localhost = "127.0.0.1".parse().unwrap();
    server.registry().with_registry(|registry, now| {
        for i in 0..100_000 {
            registry
                .init(
                    &format!("app-{i:06}"),
                    localhost,
                    Duration::from_secs(9),
                    now,
                )
                .unwrap();
        }
    });
    let started = std::time::Instant::now();
    let checks = client(&server.url(), "asker")
        .status_all(ErrorPolicy::Raise)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(checks.len(), 100_000);
    assert!(checks
        .iter()
        .all(|c| matches!(&c.answer, Ok(AppAnswer::Status(s)) if s.state() == State::Ok)));
    println!("status_all over 100 000 apps: {took:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn at_most_eight_statuses_in_flight_in_list_order_and_one_failure_stays_its_own() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use heartbeat_sdk::transport::{self, HttpResponse};
    use heartbeat_sdk::STATUS_ALL_CONCURRENCY;

    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let list: String = (0..50)
        .map(|i| format!("app-{i:02} @ 127.0.0.1\n"))
        .collect();
    let (now, max) = (in_flight.clone(), most.clone());
    let server = transport::from_fn(move |request| {
        let target = request.target().to_owned();
        let (now, max, list) = (now.clone(), max.clone(), list.clone());
        async move {
            if target.starts_with("/list") {
                return Ok(HttpResponse::new(200, list));
            }
            let id = target
                .split('&')
                .find_map(|p| p.strip_prefix("appid="))
                .unwrap()
                .to_owned();
            let n: usize = id[4..].parse().unwrap();
            let inside = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(inside, Ordering::SeqCst);
            // later ones may finish first
            for _ in 0..(7 - n % 7) {
                tokio::task::yield_now().await;
            }
            now.fetch_sub(1, Ordering::SeqCst);
            if n == 13 {
                return Ok(HttpResponse::new(500, "boom"));
            }
            let key = format!("{id} @ 127.0.0.1");
            Ok(HttpResponse::new(
                200,
                app_line(State::Ok, &key, 0.1, 3.0, 5.0, 6.0, 3000),
            ))
        }
    });
    let client = HeartbeatClient::builder_with_transport(server)
        .build()
        .unwrap();
    let checks = client.status_all(ErrorPolicy::Raise).await.unwrap();
    assert_eq!(most.load(Ordering::SeqCst), STATUS_ALL_CONCURRENCY);
    assert_eq!(STATUS_ALL_CONCURRENCY, 8);
    let keys: Vec<String> = checks.iter().map(|c| c.key.clone()).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("app-{i:02} @ 127.0.0.1")).collect();
    assert_eq!(keys, expected);
    for (i, check) in checks.iter().enumerate() {
        match (&check.answer, i) {
            (Err(heartbeat_sdk::Error::Status { status: 500, .. }), 13) => {}
            (Ok(AppAnswer::Status(status)), i) if i != 13 => {
                assert_eq!(status.app(), Some(check.key.as_str()));
            }
            (other, i) => panic!("{i}: {other:?}"),
        }
    }
}

/// Against our own server with an expected app that never reported: the
/// JSON API names it, and the check is CRITICAL although every tracked app
/// is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_app_missing_from_our_server_is_critical() {
    use heartbeat_sdk::server::{Expected, Server};
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .expect(Expected::any_host("kiosk-9").unwrap())
        .start()
        .await
        .unwrap();
    let url = server.url();
    init(&url, "kiosk-1", OK_MS).await;
    let run = heartbeat(&url, &["check", "--all"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.first_line().starts_with("CRITICAL - "), "{run:?}");
    assert!(run.first_line().contains("kiosk-9"), "{run:?}");
    assert!(run.first_line().contains("missing"), "{run:?}");
    assert!(run.stdout.contains("kiosk-1 @ 127.0.0.1"), "{run:?}");
    server.shutdown().await;
}

/// A server that lists many apps and answers each status slowly cannot
/// hold the check past its `--deadline`: UNKNOWN, exit 3 (without the
/// deadline this one would take 5 × 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_cannot_hold_the_check_past_its_deadline() {
    let server = MockServer::start().await;
    let list: String = (0..40).map(|i| format!("app-{i} @ 10.0.0.1\n")).collect();
    Mock::given(path("/list"))
        .respond_with(ResponseTemplate::new(200).set_body_string(list))
        .mount(&server)
        .await;
    Mock::given(path("/status"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("OK - fine application [x]| od=0.10;3;5;0;6 delay=1000ms;;; ")
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    let run = heartbeat(&server.uri(), &["check", "--all", "--deadline", "300"]).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(
        run.stdout,
        "UNKNOWN - check --all did not finish within its deadline of 300 ms\n"
    );
    let run = heartbeat(
        &server.uri(),
        &["check", "--all", "--json", "--deadline", "300"],
    )
    .await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stdout.contains(r#""state":"unknown""#), "{run:?}");
}

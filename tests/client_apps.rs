//! `HeartbeatClient::apps()` (feature `serde`) against wiremock: the
//! document of docs/api-v1.md, a server without the API (the reference
//! answers 400), HTML, malformed JSON, and the body cap.
#![cfg(all(feature = "serde", feature = "reqwest"))]

use std::time::{Duration, UNIX_EPOCH};

use heartbeat_sdk::protocol::apps::{AppState, Apps};
use heartbeat_sdk::protocol::max_apps_body;
use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient, RetryPolicy};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The example document of docs/api-v1.md, read from the file itself.
fn api_example() -> &'static str {
    let doc = include_str!("../docs/api-v1.md");
    let start = doc.find("```json\n").expect("a json block") + "```json\n".len();
    let len = doc[start..].find("```").expect("its end");
    &doc[start..start + len]
}

/// A server answering every `GET /api/v1/apps` with `status`, `body` and
/// `content_type`, exactly `times` times.
async fn serving(status: u16, body: &str, content_type: &str, times: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/apps"))
        .respond_with(
            ResponseTemplate::new(status)
                .insert_header("content-type", content_type)
                .set_body_string(body),
        )
        .expect(times)
        .mount(&server)
        .await;
    server
}

fn client(server: &MockServer) -> HeartbeatClient {
    HeartbeatClient::builder()
        .url(server.uri())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_example_document_arrives_as_typed_records() {
    let server = serving(200, api_example(), "application/json", 1).await;
    let apps = client(&server).apps(ErrorPolicy::Raise).await.unwrap();
    assert_eq!(apps.version, 1);
    assert_eq!(
        apps.generated_at,
        UNIX_EPOCH + Duration::from_millis(1_795_600_801_234)
    );
    assert_eq!(apps.apps.len(), 4);
    let kiosk = &apps.apps[0];
    assert_eq!(
        (kiosk.key.as_str(), kiosk.id.as_str(), kiosk.host.as_deref()),
        ("kiosk-1 @ 127.0.0.1", "kiosk-1", Some("127.0.0.1"))
    );
    assert_eq!(kiosk.state, AppState::Ok);
    assert_eq!(kiosk.overdue_ratio, Some(0.52));
    assert_eq!(kiosk.granted, Some(Duration::from_secs(3)));
    assert_eq!(
        kiosk.last_seen,
        Some(UNIX_EPOCH + Duration::from_millis(1_795_600_800_000))
    );
    assert_eq!(kiosk.last_seen_ago, Some(Duration::from_millis(1234)));
    assert!(kiosk.expected && !kiosk.missing);
    // a hostile id arrives verbatim: escaping is the renderer's job
    assert_eq!(apps.apps[1].id, "<img src=x onerror=alert(1)>");
    assert_eq!(apps.apps[2].state, AppState::Warning);
    assert_eq!(apps.apps[2].granted, Some(Duration::from_secs(11)));
    let missing = &apps.apps[3];
    assert_eq!(missing.state, AppState::Missing);
    assert!(missing.missing && missing.expected);
    assert_eq!(
        (
            &missing.host,
            missing.granted,
            missing.last_seen,
            missing.last_seen_ago
        ),
        (&None, None, None, None)
    );
    // one GET of the first page, by key, as large as pages go
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.query(), Some("limit=1000"));
}

#[tokio::test]
async fn only_missing_apps_and_unknown_fields() {
    let doc = concat!(
        r#"{"version":1,"generated_at":"2026-11-25T10:00:01.234Z","later":{"x":1},"#,
        r#""thresholds":{"warn_ratio":1.5,"crit_ratio":2.0,"drop_ratio":2.5,"tolerance_ms":250},"#,
        r#""counters":{"inits":0,"pings":0,"dones":0,"expiries":3,"refusals":0},"#,
        r#""counts":{"ok":0,"warning":0,"critical":0,"missing":2},"apps":["#,
        r#"{"key":"a","id":"a","host":null,"state":"missing","overdue_ratio":null,"granted_ms":null,"#,
        r#""last_seen":null,"last_seen_ago_ms":null,"expected":true,"missing":true,"note":"new"},"#,
        r#"{"key":"b \"quoted\"","id":"b \"quoted\"","host":null,"state":"paused","overdue_ratio":null,"#,
        r#""granted_ms":null,"last_seen":null,"last_seen_ago_ms":null,"expected":true,"missing":true}]}"#
    );
    let server = serving(200, doc, "application/json", 1).await;
    let apps = client(&server).apps(ErrorPolicy::Raise).await.unwrap();
    assert_eq!(apps.thresholds.tolerance, Duration::from_millis(250));
    assert_eq!(apps.counters.expiries, 3);
    assert_eq!(apps.counts.missing, 2);
    assert_eq!(apps.apps[1].key, "b \"quoted\"");
    // a state this version does not know is grey (missing)
    assert!(apps.apps.iter().all(|app| app.state == AppState::Missing));
}

#[tokio::test]
async fn a_server_without_the_api_is_unsupported_not_a_parse_error() {
    let reference = "ERROR: cannot process your request: [/api/v1/apps]";
    let server = serving(400, reference, "text/plain", 2).await;
    let client = client(&server);
    match client.apps(ErrorPolicy::Raise).await {
        Err(Error::Unsupported { url, status: 400 }) => {
            assert_eq!(url, format!("{}/api/v1/apps?limit=1000", server.uri()));
        }
        other => panic!("{other:?}"),
    }
    let fallback = client
        .apps(ErrorPolicy::Fallback(Apps::default()))
        .await
        .unwrap();
    assert_eq!(fallback, Apps::default());
    assert!(fallback.apps.is_empty());
}

#[tokio::test]
async fn not_found_and_html_are_unsupported_too() {
    let server = serving(404, "not here", "text/plain", 1).await;
    assert!(matches!(
        client(&server).apps(ErrorPolicy::Raise).await,
        Err(Error::Unsupported { status: 404, .. })
    ));
    let page = "<!DOCTYPE html><html><body>{\"version\":1}</body></html>";
    let server = serving(200, page, "text/html", 1).await;
    let error = client(&server).apps(ErrorPolicy::Raise).await.unwrap_err();
    assert!(
        matches!(error, Error::Unsupported { status: 200, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("does not offer"), "{error}");
}

#[tokio::test]
async fn a_server_error_stays_a_status_error_and_is_retried() {
    let server = serving(503, "busy", "text/plain", 2).await;
    let client = HeartbeatClient::builder()
        .url(server.uri())
        .retry(RetryPolicy::new(2).initial_backoff(Duration::from_millis(1)))
        .build()
        .unwrap();
    assert!(matches!(
        client.apps(ErrorPolicy::Raise).await,
        Err(Error::Status { status: 503, .. })
    ));
}

#[tokio::test]
async fn json_that_is_not_the_document_is_a_parse_error_with_an_excerpt_of_the_body() {
    let example = api_example();
    let cut = &example[..example.len() / 2];
    let wrong_time = example.replace("2026-11-25T10:00:01.234Z", "yesterday");
    let no_apps = example.replace("\"apps\"", "\"applications\"");
    for body in [cut, "[]", "{}", r#"{"version":1}"#, &wrong_time, &no_apps] {
        let server = serving(200, body, "application/json", 1).await;
        match client(&server).apps(ErrorPolicy::Raise).await {
            Err(Error::Parse {
                body: kept, reason, ..
            }) => {
                // an excerpt, as every parse error keeps: never a whole
                // listing a second time (issue 21)
                assert_eq!(kept, heartbeat_sdk::protocol::excerpt(body.as_bytes()));
                assert!(kept.len() <= body.len().max(200), "{kept}");
                assert!(reason.contains("JSON API"), "{reason}");
            }
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_body_cap_follows_max_apps() {
    // the example's 4 short entries fit the cap for 1 entry (4 749 bytes
    // each); one padded past it does not
    let server = serving(200, api_example(), "application/json", 1).await;
    let small = HeartbeatClient::builder()
        .url(server.uri())
        .max_apps(1)
        .build()
        .unwrap();
    assert_eq!(small.apps(ErrorPolicy::Raise).await.unwrap().apps.len(), 4);
    let padded = format!("{}{}", api_example(), " ".repeat(max_apps_body(1)));
    let server = serving(200, &padded, "application/json", 2).await;
    let small = HeartbeatClient::builder()
        .url(server.uri())
        .max_apps(1)
        .build()
        .unwrap();
    let error = small.apps(ErrorPolicy::Raise).await.unwrap_err();
    assert!(
        error
            .transport_error()
            .is_some_and(|e| e.is_body_too_large()),
        "{error:?}"
    );
    // the default cap reads it
    assert_eq!(
        client(&server)
            .apps(ErrorPolicy::Raise)
            .await
            .map(|apps| apps.apps.len())
            .ok(),
        Some(4)
    );
}

/// The typed client against the embedded server itself: a tracked app, an
/// expected one that has reported, and an expected one that never did.
#[cfg(feature = "server")]
#[tokio::test]
async fn apps_against_the_embedded_server_with_expected_apps() {
    use heartbeat_sdk::server::{Expected, Server};
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .expect(Expected::any_host("kiosk-1").unwrap())
        .expect(Expected::any_host("kiosk-9").unwrap())
        .start()
        .await
        .unwrap();
    for id in ["kiosk-1", "extra"] {
        HeartbeatClient::builder()
            .url(server.url())
            .app_id(id)
            .build()
            .unwrap()
            .init(Duration::from_secs(60), ErrorPolicy::Raise)
            .await
            .unwrap();
    }
    let client = HeartbeatClient::builder()
        .url(server.url())
        .build()
        .unwrap();
    let apps = client.apps(ErrorPolicy::Raise).await.unwrap();
    let by_id = |id: &str| {
        apps.apps
            .iter()
            .find(|a| a.id == id)
            .unwrap_or_else(|| panic!("{id}: {apps:?}"))
    };
    let tracked = by_id("kiosk-1");
    assert_eq!(tracked.key, "kiosk-1 @ 127.0.0.1");
    assert_eq!(tracked.host.as_deref(), Some("127.0.0.1"));
    assert_eq!(tracked.state, AppState::Ok);
    assert_eq!(tracked.granted, Some(Duration::from_secs(61)));
    assert!(tracked.expected && !tracked.missing, "{tracked:?}");
    let extra = by_id("extra");
    assert!(!extra.expected && !extra.missing, "{extra:?}");
    let missing = by_id("kiosk-9");
    assert_eq!(missing.state, AppState::Missing);
    assert!(missing.expected && missing.missing, "{missing:?}");
    assert_eq!((missing.host.as_deref(), missing.last_seen), (None, None));
    assert_eq!(apps.apps.len(), 3);
    assert_eq!((apps.counts.ok, apps.counts.missing), (2, 1));
    server.shutdown().await;
}

/// A page of the example's first app whose `next_cursor` is `cursor`.
fn page_with_cursor(cursor: &str) -> String {
    let doc: serde_json::Value = serde_json::from_str(api_example()).unwrap();
    let mut doc = doc;
    doc["apps"] = serde_json::Value::Array(vec![doc["apps"][0].clone()]);
    doc["page"] = serde_json::json!({"matched": 1_000_000, "next_cursor": cursor});
    doc.to_string()
}

/// Pages a hostile (or broken) server hands out: cursor `n % cycle`
/// on the `n`th page (a cycle of `usize::MAX`: a new cursor each time).
struct EndlessPages {
    served: std::sync::atomic::AtomicUsize,
    cycle: usize,
}

impl EndlessPages {
    fn new(cycle: usize) -> EndlessPages {
        EndlessPages {
            served: 0.into(),
            cycle,
        }
    }
}

impl wiremock::Respond for EndlessPages {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let n = self
            .served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/json")
            .set_body_string(page_with_cursor(&format!("i{:x}.61", n % self.cycle)))
    }
}

/// A server answering `/api/v1/apps` with `pages`.
async fn paging(pages: EndlessPages) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/apps"))
        .respond_with(pages)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn pages_that_do_not_end_are_a_parse_error_not_a_loop() {
    // the same cursor again: stopped at the second page
    let server = serving(200, &page_with_cursor("i0.61"), "application/json", 2).await;
    let error = client(&server).apps(ErrorPolicy::Raise).await.unwrap_err();
    assert!(
        matches!(&error, Error::Parse { reason, .. } if reason.contains("do not end")),
        "{error:?}"
    );
    // an empty page that names a next one: stopped there
    let mut empty: serde_json::Value = serde_json::from_str(&page_with_cursor("i0.61")).unwrap();
    empty["apps"] = serde_json::json!([]);
    let server = serving(200, &empty.to_string(), "application/json", 1).await;
    let error = client(&server).apps(ErrorPolicy::Raise).await.unwrap_err();
    assert!(
        matches!(&error, Error::Parse { reason, .. } if reason.contains("do not end")),
        "{error:?}"
    );
    // two cursors in turn (A, B, A, ...): stopped at the first repeat,
    // the third page, long before max_apps
    let server = paging(EndlessPages::new(2)).await;
    let error = client(&server).apps(ErrorPolicy::Raise).await.unwrap_err();
    assert!(
        matches!(&error, Error::Parse { reason, .. } if reason.contains("do not end")),
        "{error:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    // a new cursor each time: stopped past max_apps applications
    let server = paging(EndlessPages::new(usize::MAX)).await;
    let small = HeartbeatClient::builder()
        .url(server.uri())
        .max_apps(5)
        .build()
        .unwrap();
    let error = small.apps(ErrorPolicy::Raise).await.unwrap_err();
    assert!(
        matches!(&error, Error::Parse { reason, .. } if reason.contains("more than max_apps (5)")),
        "{error:?}"
    );
    let asked = server.received_requests().await.unwrap().len();
    assert_eq!(asked, 6, "one page per application, up to max_apps + 1");
    // and a fallback covers both
    let fallback = small
        .apps(ErrorPolicy::Fallback(Apps::default()))
        .await
        .unwrap();
    assert!(fallback.apps.is_empty());
}

/// Every page of a fleet bigger than one page, through the embedded
/// server: each row once, in key order (missing apps by key too), and a
/// filtered, sorted page of the problems.
#[cfg(feature = "server")]
#[tokio::test]
async fn apps_reads_every_page_and_apps_page_one_of_them() {
    use heartbeat_sdk::protocol::apps::{AppsQuery, AppsSort, MAX_PAGE_LIMIT};
    use heartbeat_sdk::server::{Expected, ManualClock, Server};
    use std::net::IpAddr;
    const APPS: usize = 2 * MAX_PAGE_LIMIT + 345;
    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .expect(Expected::any_host("app-0000500x").unwrap())
        .start()
        .await
        .unwrap();
    let local = IpAddr::from([127, 0, 0, 1]);
    server.registry().with_registry(|registry, now| {
        for i in 0..APPS {
            // every 100th promises 1 ms: CRITICAL after the clock moves
            let timeout = Duration::from_millis(if i % 100 == 0 { 1 } else { 600_000 });
            registry
                .init(&format!("app-{i:08}"), local, timeout, now)
                .unwrap();
        }
    });
    clock.advance(Duration::from_millis(5_500));
    let client = HeartbeatClient::builder()
        .url(server.url())
        .build()
        .unwrap();
    let apps = client.apps(ErrorPolicy::Raise).await.unwrap();
    assert_eq!(apps.page, None);
    let keys: Vec<&str> = apps.apps.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys.len(), APPS + 1);
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "key order, each once");
    assert!(keys.contains(&"app-0000500x"), "the missing app too");
    assert_eq!(apps.counts.critical, (APPS / 100 + 1) as u64);

    let worst = AppsQuery::new()
        .state(AppState::Critical)
        .state(AppState::Missing)
        .sort(AppsSort::Overdue)
        .limit(10);
    let page = client.apps_page(&worst, ErrorPolicy::Raise).await.unwrap();
    let info = page.page.clone().unwrap();
    assert_eq!(info.matched, (APPS / 100 + 2) as u64);
    assert_eq!(page.apps.len(), 10);
    assert!(page.apps.iter().all(|a| a.state == AppState::Critical));
    assert!(info.next_cursor.is_some());
    let rest = client
        .apps_page(
            &worst.clone().limit(1000).after(info.next_cursor.unwrap()),
            ErrorPolicy::Raise,
        )
        .await
        .unwrap();
    assert_eq!(rest.apps.len() as u64, info.matched - 10);
    assert_eq!(
        rest.apps.last().unwrap().state,
        AppState::Missing,
        "missing after CRITICAL"
    );
    assert_eq!(rest.page.unwrap().next_cursor, None);
    server.shutdown().await;
}

//! Webhooks (`ServerBuilder::webhook`, `serve --webhook`): every state
//! change arrives once, in order, as the documented JSON; a receiver that
//! fails is retried until it accepts; one that refuses does not block the
//! rest; a Slack receiver gets escaped text; the server serves while every
//! sink is unreachable. The receiver is a wiremock server.
#![cfg(feature = "notify")]

#[path = "support/notify.rs"]
mod notify;

use std::time::Duration;

use heartbeat_sdk::protocol::notification::{Change, StateChange};
use heartbeat_sdk::protocol::parse_time;
use heartbeat_sdk::server::{ManualClock, Server, ServerHandle, WebhookFormat};
use heartbeat_sdk::{RetryPolicy, State};
use notify::{get, sample, wait_for};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A quick backoff, so retries in tests take milliseconds.
fn quick() -> RetryPolicy {
    RetryPolicy::new(u32::MAX)
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
}

async fn receiver(status: u16) -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&receiver)
        .await;
    receiver
}

/// A receiver that answers `status` to the first `times` notifications,
/// then `then`.
async fn receiver_failing(status: u16, times: u64, then: u16) -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .up_to_n_times(times)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(then))
        .mount(&receiver)
        .await;
    receiver
}

async fn server(clock: &ManualClock, hook: &MockServer, format: WebhookFormat) -> ServerHandle {
    let url = format!("{}/hook", hook.uri()).parse().unwrap();
    Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .webhook(url, format)
        .notify_retry(quick())
        .start()
        .await
        .unwrap()
}

/// The bodies the receiver got, once it has `n` of them.
async fn bodies(receiver: &MockServer, n: usize) -> Vec<serde_json::Value> {
    wait_for(&format!("{n} notifications"), || async {
        let got = receiver.received_requests().await.unwrap_or_default();
        (got.len() >= n).then(|| {
            got.iter()
                .map(|r| serde_json::from_slice(&r.body).unwrap())
                .collect()
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_arrives_once_in_order_as_the_documented_json() {
    let clock = ManualClock::new();
    let hook = receiver(200).await;
    let server = server(&clock, &hook, WebhookFormat::Json).await;
    let url = server.url();
    get(&format!("{url}/hb_init?1000&appid=kiosk-3")).await; // granted 2 s
    clock.advance(Duration::from_millis(6500)); // past warn (6 s)
    server.registry().sweep();
    clock.advance(Duration::from_millis(4000)); // past crit (10 s)
    server.registry().sweep();
    get(&format!("{url}/hb_ping?1000&appid=kiosk-3")).await;
    get(&format!("{url}/hb_done?0&appid=kiosk-3")).await;
    let bodies = bodies(&hook, 5).await;
    let changes: Vec<StateChange> = bodies
        .iter()
        .map(|b| serde_json::from_value(b.clone()).unwrap())
        .collect();
    let seen: Vec<_> = changes
        .iter()
        .map(|c| (c.event, c.previous, c.state, c.overdue))
        .collect();
    let (ok, warn, crit) = (Some(State::Ok), Some(State::Warning), Some(State::Critical));
    assert_eq!(
        seen,
        [
            (Change::Created, None, ok, None),
            (Change::Warning, ok, warn, Some(3.0)),
            (Change::Critical, warn, crit, Some(5.0)),
            (Change::Recovered, crit, ok, None),
            (Change::Done, ok, None, None),
        ]
    );
    for (change, body) in changes.iter().zip(&bodies) {
        assert_eq!(change.app, "kiosk-3");
        assert_eq!(change.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(change.server, url);
        assert_eq!(change.dashboard, format!("{url}/"));
        assert_eq!(change.coalesced, 0);
        // every documented field is there, none left out when null
        let fields = body.as_object().unwrap();
        for field in [
            "event",
            "app",
            "host",
            "previous",
            "state",
            "overdue",
            "at",
            "coalesced",
            "dashboard",
            "server",
        ] {
            assert!(fields.contains_key(field), "{field} missing in {body}");
        }
    }
    // the crossings are dated at their instants (on the manual clock's
    // wall time): warning 6 s after the init, critical 4 s later, not
    // when the sweep noticed them
    let at: Vec<_> = changes.iter().map(|c| parse_time(&c.at).unwrap()).collect();
    let gap = |a: usize, b: usize| at[b].duration_since(at[a]).unwrap();
    assert_eq!(gap(0, 1), Duration::from_secs(6));
    assert_eq!(gap(1, 2), Duration::from_secs(4));
    assert_eq!(gap(2, 3), Duration::from_millis(500));
    let metrics = get(&format!("{url}/metrics")).await;
    assert_eq!(
        sample(
            &metrics,
            "heartbeat_notifications_sent_total{sink=\"webhook-1\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "heartbeat_notifications_pending{sink=\"webhook-1\"}"
        ),
        Some(0.0)
    );
    server.shutdown().await;
    assert_eq!(
        hook.received_requests().await.unwrap().len(),
        5,
        "each change once"
    );
}

/// A receiver that fails a few times gets the notification once it
/// answers; the failures are counted, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_until_it_accepts() {
    let clock = ManualClock::new();
    let hook = receiver_failing(500, 3, 200).await;
    let server = server(&clock, &hook, WebhookFormat::Json).await;
    let url = server.url();
    get(&format!("{url}/hb_init?1000&appid=flaky")).await;
    let bodies = bodies(&hook, 4).await;
    assert_eq!(bodies.len(), 4, "three failures, then the one accepted");
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "the same notification each time"
    );
    let metrics = wait_for("the delivery counted", || async {
        let metrics = get(&format!("{url}/metrics")).await;
        (sample(
            &metrics,
            "heartbeat_notifications_sent_total{sink=\"webhook-1\"}",
        ) == Some(1.0))
        .then_some(metrics)
    })
    .await;
    assert_eq!(
        sample(
            &metrics,
            "heartbeat_notifications_failed_total{sink=\"webhook-1\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "heartbeat_notifications_dropped_total{sink=\"webhook-1\"}"
        ),
        Some(0.0)
    );
    server.shutdown().await;
}

/// A 4xx refusal drops that notification (counted) and the next ones still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notification_is_dropped_and_the_next_goes() {
    let clock = ManualClock::new();
    let hook = receiver_failing(400, 1, 204).await;
    let server = server(&clock, &hook, WebhookFormat::Json).await;
    let url = server.url();
    get(&format!("{url}/hb_init?1000&appid=a")).await;
    get(&format!("{url}/hb_done?0&appid=a")).await;
    let bodies = bodies(&hook, 2).await;
    assert_eq!(bodies[0]["event"], "created");
    assert_eq!(bodies[1]["event"], "done");
    let metrics = wait_for("the refusal counted", || async {
        let metrics = get(&format!("{url}/metrics")).await;
        (sample(
            &metrics,
            "heartbeat_notifications_sent_total{sink=\"webhook-1\"}",
        ) == Some(1.0))
        .then_some(metrics)
    })
    .await;
    assert_eq!(
        sample(
            &metrics,
            "heartbeat_notifications_dropped_total{sink=\"webhook-1\"}"
        ),
        Some(1.0)
    );
    server.shutdown().await;
}

/// A Slack webhook gets `{"text": ...}`; a hostile id cannot mention,
/// link or break out of its code span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_webhook_gets_escaped_text() {
    let clock = ManualClock::new();
    let hook = receiver(200).await;
    let server = server(&clock, &hook, WebhookFormat::Slack).await;
    let id = "%3C%21channel%3E%20%40here%20%60x%60%20%3Chttp%3A%2F%2Fevil%3E%20%5Ba%5D(http%3A%2F%2Fevil)";
    get(&format!("{}/hb_init?1000&appid={id}", server.url())).await;
    let bodies = bodies(&hook, 1).await;
    let object = bodies[0].as_object().unwrap();
    assert_eq!(object.len(), 1, "only text: {object:?}");
    let text = object["text"].as_str().unwrap();
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(
        !text.contains("<!channel>") && !text.contains("<http://evil"),
        "{text}"
    );
    assert!(!text.contains("@here"), "{text}");
    assert_eq!(text.matches('`').count(), 4, "{text}");
    assert!(
        text.ends_with(&format!("<{}/|dashboard>", server.url())),
        "{text}"
    );
    server.shutdown().await;
}

/// With every sink unreachable the server starts, answers, and counts
/// the failed attempts and what waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_while_every_sink_is_down() {
    // a port nobody listens on: bound, then closed
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .webhook(format!("{down}/hook").parse().unwrap(), WebhookFormat::Json)
        .alertmanager(down.parse().unwrap())
        .expect("backup".parse().unwrap())
        .notify_retry(quick())
        .start()
        .await
        .unwrap();
    let url = server.url();
    assert_eq!(get(&format!("{url}/hb_init?1000&appid=a")).await, "2000");
    let metrics = wait_for("failed attempts on both sinks", || async {
        let metrics = get(&format!("{url}/metrics")).await;
        let failed = |sink: &str| {
            sample(
                &metrics,
                &format!("heartbeat_notifications_failed_total{{sink=\"{sink}\"}}"),
            )
        };
        (failed("webhook-1") >= Some(2.0) && failed("alertmanager-1") >= Some(2.0))
            .then_some(metrics)
    })
    .await;
    // the webhook holds the expected app's absence and the creation
    let pending = sample(
        &metrics,
        "heartbeat_notifications_pending{sink=\"webhook-1\"}",
    );
    assert_eq!(pending, Some(2.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "heartbeat_notifications_pending{sink=\"alertmanager-1\"}"
        ),
        Some(1.0)
    );
    assert_eq!(get(&format!("{url}/hb_ping?1000&appid=a")).await, "2000");
    server.shutdown().await;
}

/// `heartbeat serve --webhook URL --expect ID`: the flags reach the
/// server; the missing expected app is notified at start.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_webhook_flags() {
    let hook = receiver(200).await;
    let webhook = format!("{}/hook", hook.uri());
    let serve = tokio::task::spawn_blocking(move || {
        notify::Serve::start(&[
            "--webhook",
            &webhook,
            "--webhook-format",
            "json",
            "--expect",
            "backup",
            "--external-url",
            "https://monitor.example/",
        ])
    })
    .await
    .unwrap();
    let bodies = bodies(&hook, 1).await;
    assert_eq!(bodies[0]["event"], "expected-missing");
    assert_eq!(bodies[0]["app"], "backup");
    assert!(bodies[0]["host"].is_null());
    assert_eq!(bodies[0]["state"], "critical");
    assert_eq!(bodies[0]["dashboard"], "https://monitor.example/");
    assert_eq!(bodies[0]["server"], "https://monitor.example");
    drop(serve);
}

/// `kill -9` of `serve --state` while the receiver is down, then a
/// restart: the queued notification is in the outbox and arrives, once.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_survives_kill_9_in_the_outbox() {
    let hook = receiver(503).await;
    let dir = std::env::temp_dir().join(format!("hb-outbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.db").display().to_string();
    let webhook = format!("{}/hook", hook.uri());
    let args = move || {
        let (state, webhook) = (state.clone(), webhook.clone());
        move || {
            notify::Serve::start(&[
                "--state",
                &state,
                "--state-commit-ms",
                "20",
                "--webhook",
                &webhook,
            ])
        }
    };
    let first = tokio::task::spawn_blocking(args()).await.unwrap();
    get(&format!("{}/hb_init?60000&appid=nightly", first.url)).await;
    // the receiver refused it, and the outbox holds it on disk
    wait_for("a failed attempt and a commit", || async {
        let metrics = get(&format!("{}/metrics", first.url)).await;
        let failed = sample(
            &metrics,
            "heartbeat_notifications_failed_total{sink=\"webhook-1\"}",
        );
        let pending = sample(&metrics, "heartbeat_state_pending");
        let commits = sample(&metrics, "heartbeat_state_commits_total");
        (failed >= Some(1.0) && pending == Some(0.0) && commits >= Some(1.0)).then_some(())
    })
    .await;
    first.kill();
    hook.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let second = tokio::task::spawn_blocking(args()).await.unwrap();
    let bodies = bodies(&hook, 1).await;
    assert_eq!(bodies[0]["event"], "created");
    assert_eq!(bodies[0]["app"], "nightly");
    wait_for("the delivery counted", || async {
        let metrics = get(&format!("{}/metrics", second.url)).await;
        (sample(
            &metrics,
            "heartbeat_notifications_sent_total{sink=\"webhook-1\"}",
        ) == Some(1.0))
        .then_some(())
    })
    .await;
    assert_eq!(
        hook.received_requests().await.unwrap().len(),
        1,
        "once, not twice"
    );
    second.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

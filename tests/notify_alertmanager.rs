//! Alerts against the real Alertmanager (Debian's
//! `prometheus-alertmanager`, started by each test on a loopback port with
//! a temporary config and storage; `.ci/run` installs it): an app that
//! goes silent is an active alert with the documented labels, its
//! recovery resolves it, and two servers of an HA pair make one alert.
#![cfg(feature = "notify")]

#[path = "support/notify.rs"]
mod notify;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use heartbeat_sdk::server::{ManualClock, Server};
use heartbeat_sdk::RetryPolicy;
use notify::{get, sample, wait_for};

/// A running Alertmanager, killed when dropped.
struct Alertmanager {
    url: String,
    child: Child,
    _dir: TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Alertmanager binary, or `None` (a skip) where it is not installed
/// and `HB_REQUIRE_TOOLS` is not set.
fn binary() -> Option<&'static str> {
    for name in ["prometheus-alertmanager", "alertmanager"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if found {
            return Some(name);
        }
    }
    // .ci/run installs it and sets this: there a skip would hide a test
    assert!(
        std::env::var_os("HB_REQUIRE_TOOLS").is_none(),
        "HB_REQUIRE_TOOLS is set but prometheus-alertmanager was not found"
    );
    println!("prometheus-alertmanager not found: skipped");
    None
}

/// Starts an Alertmanager on a free loopback port and waits until it is ready.
async fn alertmanager() -> Option<Alertmanager> {
    let binary = binary()?;
    let dir = std::env::temp_dir().join(format!(
        "hb-am-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let dir = TempDir(dir);
    let config = dir.0.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: none\n  group_wait: 0s\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.0.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("alertmanager starts");
    let am = Alertmanager {
        url: format!("http://127.0.0.1:{port}"),
        child,
        _dir: dir,
    };
    let ready = format!("{}/-/ready", am.url);
    wait_for("alertmanager ready", || async {
        let reply = reqwest::get(&ready).await.ok()?;
        reply.status().is_success().then_some(())
    })
    .await;
    Some(am)
}

/// The alerts Alertmanager holds (active ones: resolved alerts are not listed).
async fn alerts(am: &Alertmanager) -> Vec<serde_json::Value> {
    let body = get(&format!("{}/api/v2/alerts", am.url)).await;
    serde_json::from_str(&body).unwrap()
}

fn quick() -> RetryPolicy {
    RetryPolicy::new(u32::MAX)
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_app_is_an_alert_until_it_beats_again() {
    let Some(am) = alertmanager().await else {
        return;
    };
    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .alertmanager(am.url.parse().unwrap())
        .notify_retry(quick())
        .start()
        .await
        .unwrap();
    let url = server.url();
    get(&format!("{url}/hb_init?1000&appid=kiosk-3")).await; // granted 2 s
    clock.advance(Duration::from_millis(10_500)); // past crit (10 s)
    server.registry().sweep();
    let alert = wait_for("the alert in Alertmanager", || async {
        alerts(&am).await.into_iter().next()
    })
    .await;
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "HeartbeatAppDown");
    assert_eq!(labels["app"], "kiosk-3");
    assert_eq!(labels["host"], "127.0.0.1");
    assert_eq!(labels["severity"], "critical");
    assert!(labels.get("instance").is_none(), "{alert}");
    assert_eq!(alert["annotations"]["instance"], url);
    assert!(alert["annotations"]["summary"]
        .as_str()
        .unwrap()
        .contains("kiosk-3"));
    assert_eq!(alert["generatorURL"], format!("{url}/"));
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(alerts(&am).await.len(), 1);

    get(&format!("{url}/hb_ping?1000&appid=kiosk-3")).await;
    wait_for("the alert resolved", || async {
        alerts(&am).await.is_empty().then_some(())
    })
    .await;
    let metrics = get(&format!("{url}/metrics")).await;
    let sent = sample(
        &metrics,
        "heartbeat_notifications_sent_total{sink=\"alertmanager-1\"}",
    );
    assert!(sent >= Some(2.0), "fired and resolved: {sent:?}");
    server.shutdown().await;
}

/// Two `heartbeat serve` with the same `--expect` list, both pushing to
/// one Alertmanager: one alert, not two (the servers differ only in the
/// `instance` annotation).
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_pair_raises_one_alert() {
    let Some(am) = alertmanager().await else {
        return;
    };
    let am_url = am.url.clone();
    let (a, b) = tokio::task::spawn_blocking(move || {
        let args = ["--expect", "backup", "--alertmanager", &am_url];
        (notify::Serve::start(&args), notify::Serve::start(&args))
    })
    .await
    .unwrap();
    for server in [&a, &b] {
        wait_for("both servers delivered", || async {
            let metrics = get(&format!("{}/metrics", server.url)).await;
            let sent = sample(
                &metrics,
                "heartbeat_notifications_sent_total{sink=\"alertmanager-1\"}",
            );
            (sent >= Some(1.0)).then_some(())
        })
        .await;
    }
    let alerts = alerts(&am).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["app"], "backup");
    assert!(alerts[0]["labels"].get("host").is_none());
    let instance = alerts[0]["annotations"]["instance"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(instance == a.url || instance == b.url, "{instance}");
    a.kill();
    b.kill();
}

/// `heartbeat wrap -- sh -c 'exit 3'` against our server: the run's
/// failure is CRITICAL with its exit code, a webhook and an alert, until
/// the next run's init resolves it.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wrapped_run_is_a_webhook_and_an_alert() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let Some(am) = alertmanager().await else {
        return;
    };
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .alertmanager(am.url.parse().unwrap())
        .webhook(
            format!("{}/hook", hook.uri()).parse().unwrap(),
            heartbeat_sdk::server::WebhookFormat::Json,
        )
        .notify_retry(quick())
        .start()
        .await
        .unwrap();
    let url = server.url();
    let wrap = |script: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_heartbeat"))
                .args(["--url", &url, "wrap", "--all", "--app-id", "nightly", "--"])
                .args(["sh", "-c", script])
                .env_remove("RUST_LOG")
                .status()
                .unwrap()
        })
    };
    assert_eq!(wrap("exit 3").await.unwrap().code(), Some(3));
    let alert = wait_for("the failure's alert in Alertmanager", || async {
        alerts(&am).await.into_iter().next()
    })
    .await;
    assert_eq!(alert["labels"]["app"], "nightly");
    assert_eq!(alert["labels"]["severity"], "critical");
    let description = alert["annotations"]["description"].as_str().unwrap();
    assert!(description.contains("failed with exit code 3"), "{alert}");
    let failed = wait_for("the failure's webhook", || async {
        let got = hook.received_requests().await.unwrap_or_default();
        got.iter()
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
            .find(|b| b["event"] == "failed")
    })
    .await;
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["state"], "critical");
    assert_eq!(failed["app"], "nightly");
    let status = get(&format!("{url}/status?appid=nightly")).await;
    assert!(status.contains("failed with exit code 3|"), "{status}");

    // the next run succeeds: its init resolves the alert
    assert_eq!(wrap("exit 0").await.unwrap().code(), Some(0));
    wait_for("the alert resolved", || async {
        alerts(&am).await.is_empty().then_some(())
    })
    .await;
    server.shutdown().await;
}

/// A failed run restored from `--state` is CRITICAL after a restart, and
/// so an alert: the restarted server raises it although no event
/// announces it (the first server had no Alertmanager at all here).
#[cfg(feature = "state")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_failure_is_alerted_after_a_restart() {
    let Some(am) = alertmanager().await else {
        return;
    };
    let dir = TempDir(std::env::temp_dir().join(format!("hb-am-restart-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let state = dir.0.join("state.db");
    let first = Server::builder("127.0.0.1:0".parse().unwrap())
        .state(&state)
        .start()
        .await
        .unwrap();
    let url = first.url();
    get(&format!("{url}/hb_init?60000&appid=backup")).await;
    assert_eq!(
        get(&format!("{url}/hb_fail?2&appid=backup")).await,
        "Failure recorded: exit code 2"
    );
    first.shutdown().await;
    assert!(alerts(&am).await.is_empty());

    let second = Server::builder("127.0.0.1:0".parse().unwrap())
        .state(&state)
        .alertmanager(am.url.parse().unwrap())
        .notify_retry(quick())
        .start()
        .await
        .unwrap();
    let alert = wait_for("the restored failure's alert", || async {
        alerts(&am).await.into_iter().next()
    })
    .await;
    assert_eq!(alert["labels"]["app"], "backup");
    assert!(alert["annotations"]["description"]
        .as_str()
        .unwrap()
        .contains("failed with exit code 2"));
    second.shutdown().await;
}

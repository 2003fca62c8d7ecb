//! `/metrics` scraped by a real Prometheus (Debian's `prometheus`, started
//! on a loopback port with a temporary config; `.ci/run` installs it) with
//! `per_app_metrics(Problems)`: only the apps that need attention have
//! series, the counts per state are there, `heartbeat_app_up == 0` finds
//! the late and the missing ones, and an app that recovers drops out of
//! that query at the next scrape (its series go stale), so an alert on it
//! resolves.
//!
//! Waits are on Prometheus' scrapes (1 s apart), polled with a deadline.
#![cfg(all(feature = "server", feature = "reqwest"))]

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use heartbeat_sdk::server::{Expected, ManualClock, PerAppMetrics, Server};

struct Prometheus {
    url: String,
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Prometheus scraping `target` every second, or `None` (a skip) where it
/// is not installed and `HB_REQUIRE_TOOLS` is not set.
fn prometheus(target: std::net::SocketAddr) -> Option<Prometheus> {
    if Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        assert!(
            std::env::var_os("HB_REQUIRE_TOOLS").is_none(),
            "HB_REQUIRE_TOOLS is set but prometheus was not found"
        );
        println!("prometheus not found: skipped");
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "hb-prom-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: heartbeat\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    Some(Prometheus {
        url: format!("http://127.0.0.1:{port}"),
        child,
        dir,
    })
}

/// The result of an instant query, once `ready` accepts it (polled until a
/// deadline: each new scrape can change the answer).
async fn query_until(
    prom: &Prometheus,
    query: &str,
    ready: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let url = format!("{}/api/v1/query", prom.url);
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::Client::new();
    loop {
        let reply = client.get(&url).query(&[("query", query)]).send().await;
        if let Ok(reply) = reply {
            let text = reply.text().await.unwrap_or_default();
            if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) {
                let result = doc["data"]["result"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if ready(&result) {
                    return result;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered {query} as expected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn app_labels(result: &[serde_json::Value]) -> Vec<String> {
    let mut apps: Vec<String> = result
        .iter()
        .map(|s| s["metric"]["app"].as_str().unwrap_or_default().to_owned())
        .collect();
    apps.sort();
    apps
}

fn value(result: &[serde_json::Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_only_the_problems_and_an_alert_resolves_on_recovery() {
    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .per_app_metrics(PerAppMetrics::Problems)
        .expect(Expected::any_host("absent").unwrap())
        .start()
        .await
        .unwrap();
    let Some(prom) = prometheus(server.local_addr()) else {
        return;
    };
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    server.registry().with_registry(|registry, now| {
        for i in 0..1000 {
            registry
                .init(
                    &format!("kiosk-{i:04}"),
                    local,
                    Duration::from_secs(600),
                    now,
                )
                .unwrap();
        }
        for id in ["late-1", "late-2", "late-3"] {
            registry.init(id, local, Duration::ZERO, now).unwrap();
        }
    });
    // 1 s granted, 5.5 s on: the three are CRITICAL
    clock.advance(Duration::from_millis(5_500));

    let ok = query_until(&prom, r#"heartbeat_apps_by_state{state="ok"}"#, |r| {
        value(r) == Some(1000.0)
    })
    .await;
    assert_eq!(ok.len(), 1);
    let down = query_until(&prom, "heartbeat_app_up == 0", |r| r.len() == 4).await;
    assert_eq!(app_labels(&down), ["absent", "late-1", "late-2", "late-3"]);
    let series = query_until(&prom, "count(heartbeat_app_up)", |r| !r.is_empty()).await;
    assert_eq!(value(&series), Some(4.0), "no series for the 1000 OK apps");
    let samples = query_until(&prom, r#"scrape_samples_scraped{job="heartbeat"}"#, |r| {
        !r.is_empty()
    })
    .await;
    assert!(value(&samples).is_some_and(|n| n < 60.0), "{samples:?}");

    // two of them beat again: at the next scrape they are no longer down
    server.registry().with_registry(|registry, now| {
        for id in ["late-1", "late-2"] {
            registry
                .ping(id, local, Duration::from_secs(600), now)
                .unwrap();
        }
    });
    let down = query_until(&prom, "heartbeat_app_up == 0", |r| r.len() == 2).await;
    assert_eq!(app_labels(&down), ["absent", "late-3"]);
    let ok = query_until(&prom, r#"heartbeat_apps_by_state{state="ok"}"#, |r| {
        value(r) == Some(1002.0)
    })
    .await;
    assert_eq!(ok.len(), 1);
    drop(prom);
    server.shutdown().await;
}

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
use std::time::Duration;

use heartbeat_sdk::server::{Expected, ManualClock, PerAppMetrics, Server};

#[path = "support/prometheus.rs"]
mod prometheus;
use prometheus::{prometheus, query_until};

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
    let Some(prom) = prometheus(&format!(
        "  - job_name: heartbeat\n    static_configs:\n      - targets: ['{}']\n",
        server.local_addr()
    )) else {
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

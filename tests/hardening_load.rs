//! Load on loopback (issue 7): 1 000 simulated apps × 20 pings through the
//! real server over 50 concurrent connections, nothing lost or mixed up;
//! and a longer soak, ignored by default, that stops by itself:
//!
//! ```sh
//! SOAK_SECS=300 cargo test --release --all-features --test hardening_load -- --ignored --nocapture
//! ```
#![cfg(all(feature = "server", feature = "reqwest"))]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use heartbeat_sdk::server::{Server, ServerHandle};
use heartbeat_sdk::transport::ReqwestTransport;
use heartbeat_sdk::{ErrorPolicy, HeartbeatClient, State};

const APPS: usize = 1_000;
const PINGS: usize = 20;
const CONNECTIONS: usize = 50;

async fn start() -> ServerHandle {
    Server::builder("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

fn app_id(i: usize) -> String {
    format!("load-{i:04}")
}

fn key(i: usize) -> String {
    format!("{} @ 127.0.0.1", app_id(i))
}

/// Each app promises its own timeout, so a reply delivered to the wrong
/// app, or a record updated for the wrong one, shows.
fn promise(i: usize) -> Duration {
    Duration::from_millis(60_000 + i as u64)
}

/// One client per app over one shared connection pool.
fn clients(server: &ServerHandle, apps: usize) -> Vec<HeartbeatClient> {
    let transport = ReqwestTransport::new().unwrap();
    (0..apps)
        .map(|i| {
            HeartbeatClient::builder_with_transport(transport.clone())
                .url(server.url())
                .app_id(app_id(i))
                .request_timeout(Duration::from_secs(10))
                .build()
                .unwrap()
        })
        .collect()
}

/// Run `work(app)` for every app, `CONNECTIONS` apps at a time: worker `w`
/// takes apps `w`, `w + 50`, ..., so at most 50 requests are in flight.
async fn for_all_apps<F, Fut>(clients: &[HeartbeatClient], work: F)
where
    F: Fn(usize, HeartbeatClient) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let work = Arc::new(work);
    let mut workers = Vec::new();
    for w in 0..CONNECTIONS {
        let mine: Vec<(usize, HeartbeatClient)> = clients
            .iter()
            .enumerate()
            .skip(w)
            .step_by(CONNECTIONS)
            .map(|(i, c)| (i, c.clone()))
            .collect();
        let work = work.clone();
        workers.push(tokio::spawn(async move {
            for (i, client) in mine {
                work(i, client).await;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_apps_pinging_twenty_times_each_lose_nothing_and_mix_nothing_up() {
    let server = start().await;
    let clients = clients(&server, APPS);
    let started = Instant::now();

    // 20 rounds; within a round the 50 workers interleave their apps
    for round in 0..PINGS {
        for_all_apps(&clients, move |i, client| async move {
            let granted = client.ping(promise(i), ErrorPolicy::Raise).await;
            let granted = granted.unwrap_or_else(|e| panic!("app {i} round {round}: {e}"));
            assert_eq!(
                granted,
                promise(i) + Duration::from_secs(1),
                "app {i} got another app's reply"
            );
        })
        .await;
    }
    let pinging = started.elapsed();

    // every app listed, under its own id, once
    let list = clients[0].list(ErrorPolicy::Raise).await.unwrap();
    assert_eq!(list.len(), APPS);
    let expected: BTreeSet<String> = (0..APPS).map(key).collect();
    assert_eq!(list.iter().cloned().collect::<BTreeSet<_>>(), expected);
    // none lost: the server counted every ping; none mixed up: each record
    // holds its own app's timeout
    let (counters, records) = server.registry().with_registry(|r, now| {
        let records: Vec<(String, Duration)> =
            r.apps(now).map(|a| (a.key.to_owned(), a.granted)).collect();
        (r.counters(), records)
    });
    assert_eq!(counters.pings, (APPS * PINGS) as u64);
    assert_eq!(
        (counters.inits, counters.refused, counters.expiries),
        (0, 0, 0)
    );
    for (i, (record, granted)) in records.iter().enumerate() {
        assert_eq!(
            (record.as_str(), *granted),
            (key(i).as_str(), promise(i) + Duration::from_secs(1))
        );
    }
    // each app's own status, as it asks for it
    for_all_apps(&clients, |i, client| async move {
        let status = client
            .status(Some(client.app_id()), ErrorPolicy::Raise)
            .await
            .unwrap();
        assert_eq!(status.state(), State::Ok, "{status}");
        assert_eq!(status.app(), Some(key(i).as_str()));
        assert_eq!(status.granted(), Some(promise(i) + Duration::from_secs(1)));
    })
    .await;

    // then all sign off: the list is empty
    for_all_apps(&clients, |_, client| async move {
        let bye = client.done_now(ErrorPolicy::Raise).await.unwrap();
        assert_eq!(bye, "So Long, and Thanks for All the Fish!");
    })
    .await;
    assert!(clients[0]
        .list(ErrorPolicy::Raise)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        server.registry().with_registry(|r, _| r.counters().dones),
        APPS as u64
    );
    assert!(server.registry().with_registry(|r, _| r.is_empty()));

    let requests = APPS * (PINGS + 2) + 2;
    let took = started.elapsed();
    println!(
        "{APPS} apps x {PINGS} pings over {CONNECTIONS} connections: {} pings in {pinging:.2?}; {requests} requests in {took:.2?} ({:.0}/s)",
        APPS * PINGS,
        requests as f64 / took.as_secs_f64()
    );
    server.shutdown().await;
}

/// Resident memory of this process in KiB (Linux), for the soak's leak check.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A soak: `SOAK_APPS` apps (default 200) beat for `SOAK_SECS` (default 60)
/// with jittered intervals, sign off and re-register now and then, while a
/// checker compares the server with what the apps did. Stops by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long soak: run with --ignored (SOAK_SECS, SOAK_APPS)"]
async fn soak() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = env("SOAK_SECS", 60);
    let apps = env("SOAK_APPS", 200) as usize;
    let server = start().await;
    let clients = clients(&server, apps);
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let sent = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]); // inits, pings, dones
    let failures = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::new();
    for (i, client) in clients.iter().cloned().enumerate() {
        let (sent, failures) = (sent.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let beat = |result: heartbeat_sdk::Result<Duration>, which: usize| match result {
                Ok(_) => sent[which].fetch_add(1, Ordering::Relaxed),
                Err(_) => failures.fetch_add(1, Ordering::Relaxed),
            };
            beat(
                client
                    .init(Duration::from_secs(2), ErrorPolicy::Raise)
                    .await,
                0,
            );
            while Instant::now() < stop_at {
                tokio::time::sleep(Duration::from_millis(50 + next(200))).await;
                if next(50) == 0 {
                    let done = client
                        .done_now(ErrorPolicy::Raise)
                        .await
                        .map(|_| Duration::ZERO);
                    beat(done, 2);
                    beat(
                        client
                            .init(Duration::from_secs(2), ErrorPolicy::Raise)
                            .await,
                        0,
                    );
                } else {
                    beat(
                        client
                            .ping(Duration::from_secs(2), ErrorPolicy::Raise)
                            .await,
                        1,
                    );
                }
            }
            let done = client
                .done_now(ErrorPolicy::Raise)
                .await
                .map(|_| Duration::ZERO);
            beat(done, 2);
        }));
    }

    let observer = clients[0].clone();
    let mut rss_early = None;
    let mut checks = 0u64;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let list = observer
            .list(ErrorPolicy::Raise)
            .await
            .expect("list while soaking");
        assert!(
            list.len() <= apps,
            "{} apps listed, only {apps} exist",
            list.len()
        );
        assert!(
            list.iter()
                .all(|k| k.starts_with("load-") && k.ends_with(" @ 127.0.0.1")),
            "{list:?}"
        );
        let metrics = observer
            .get("/metrics", ErrorPolicy::Raise)
            .await
            .expect("metrics");
        assert!(metrics.contains("heartbeat_pings_total"));
        checks += 1;
        if checks == (secs / 10).max(1) {
            rss_early = rss_kib();
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let [inits, pings, dones] = [0, 1, 2].map(|k| sent[k].load(Ordering::Relaxed));
    let counters = server.registry().with_registry(|r, _| r.counters());
    println!(
        "soak: {apps} apps, {secs} s: {inits} inits, {pings} pings, {dones} dones, {} failures, {checks} checks, RSS {:?} -> {:?} KiB",
        failures.load(Ordering::Relaxed),
        rss_early,
        rss_kib()
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(
        (counters.inits, counters.pings, counters.dones),
        (inits, pings, dones)
    );
    assert_eq!(counters.expiries, 0, "no app beat late enough to expire");
    assert!(observer.list(ErrorPolicy::Raise).await.unwrap().is_empty());
    if let (Some(early), Some(late)) = (rss_early, rss_kib()) {
        assert!(
            late < early + 64 * 1024,
            "RSS grew from {early} to {late} KiB"
        );
    }
    server.shutdown().await;
}

//! IPv6 loopback: the embedded server bound to `[::1]`, the reqwest client
//! sending to `http://[::1]:PORT`. Records are keyed by the peer as the
//! server sees it, `ID @ ::1`. Skipped, with the reason printed, on a
//! machine without an IPv6 loopback.
#![cfg(all(feature = "server", feature = "reqwest"))]

use std::time::Duration;

use heartbeat_sdk::server::Server;
use heartbeat_sdk::{ErrorPolicy, HeartbeatClient, State};

const GOODBYE: &str = "So Long, and Thanks for All the Fish!";

#[tokio::test]
async fn client_and_server_speak_over_the_ipv6_loopback() {
    let server = match Server::builder("[::1]:0".parse().unwrap()).start().await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("skipped: no IPv6 loopback on this machine ([::1]: {error})");
            return;
        }
    };
    let url = server.url();
    assert!(url.starts_with("http://[::1]:"), "{url}");
    let client = HeartbeatClient::builder()
        .url(url.as_str())
        .app_id("six")
        .build()
        .unwrap();

    assert_eq!(
        client
            .init(Duration::from_secs(2), ErrorPolicy::Raise)
            .await
            .unwrap(),
        Duration::from_secs(3)
    );
    assert_eq!(
        client
            .ping(Duration::from_secs(2), ErrorPolicy::Raise)
            .await
            .unwrap(),
        Duration::from_secs(3)
    );
    assert_eq!(
        client.list(ErrorPolicy::Raise).await.unwrap(),
        vec!["six @ ::1"]
    );
    let status = client
        .status(Some("six"), ErrorPolicy::Raise)
        .await
        .unwrap();
    assert_eq!(status.state(), State::Ok, "{status:?}");
    assert!(status.raw().contains("[six @ ::1]"), "{status:?}");
    assert_eq!(client.done_now(ErrorPolicy::Raise).await.unwrap(), GOODBYE);
    assert_eq!(
        client.list(ErrorPolicy::Raise).await.unwrap(),
        Vec::<String>::new()
    );
    let counters = server
        .registry()
        .with_registry(|registry, _| registry.counters());
    assert_eq!((counters.inits, counters.pings, counters.dones), (1, 1, 1));
    server.shutdown().await;
}

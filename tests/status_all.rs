//! `HeartbeatClient::status_all` over the mock on tokio's paused clock: every
//! listed app's status, in `/list`'s order, never more than
//! `STATUS_ALL_CONCURRENCY` requests in flight (and that many when there is
//! work for them); and the client's accessors and `Debug`.
#![cfg(feature = "mock")]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use heartbeat_sdk::protocol::AppAnswer;
use heartbeat_sdk::testing::MockTransport;
use heartbeat_sdk::transport;
use heartbeat_sdk::{ErrorPolicy, HeartbeatClient, State, Transport, STATUS_ALL_CONCURRENCY};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test(start_paused = true)]
async fn every_app_in_list_order_with_a_bounded_number_in_flight() {
    let mock = MockTransport::new();
    // 20 apps; every third one is already late (promised 0 ms, 10 s ago)
    for i in 0..20 {
        let timeout = if i % 3 == 0 { 0 } else { 600_000 };
        let target = format!("/hb_init?{timeout}&appid=app{i:02}");
        assert_eq!(mock.registry().handle(&target, None, LOCAL).status, 200);
    }
    mock.advance(Duration::from_millis(3_500));

    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (in_flight, peak) = (Arc::clone(&now), Arc::clone(&most));
    let inner = mock.clone();
    let transport = transport::from_fn(move |request| {
        let (in_flight, peak, mock) = (Arc::clone(&in_flight), Arc::clone(&peak), inner.clone());
        async move {
            let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            mock.send(request).await
        }
    });
    let client = HeartbeatClient::builder_with_transport(transport)
        .app_id("asker")
        .build()
        .unwrap();

    let checks = client.status_all(ErrorPolicy::Raise).await.unwrap();
    assert_eq!(most.load(Ordering::SeqCst), STATUS_ALL_CONCURRENCY);
    let keys: Vec<String> = checks.iter().map(|c| c.key.clone()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("app{i:02} @ 127.0.0.1")).collect();
    assert_eq!(keys, expected);
    for (i, check) in checks.iter().enumerate() {
        let Ok(AppAnswer::Status(status)) = &check.answer else {
            panic!("{}: {:?}", check.key, check.answer);
        };
        let state = if i % 3 == 0 {
            State::Warning
        } else {
            State::Ok
        };
        assert_eq!(status.state(), state, "{}: {status}", check.key);
        assert_eq!(status.app(), Some(check.key.as_str()));
    }
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_list_is_the_error_or_the_fallback() {
    let mock = MockTransport::new();
    mock.fail_next(2, heartbeat_sdk::testing::MockFailure::Refused);
    let client = HeartbeatClient::builder_with_transport(mock)
        .build()
        .unwrap();
    assert!(client.status_all(ErrorPolicy::Raise).await.is_err());
    let fallback = client
        .status_all(ErrorPolicy::Fallback(Vec::new()))
        .await
        .unwrap();
    assert!(fallback.is_empty());
}

#[test]
fn the_client_says_where_and_who() {
    let builder = HeartbeatClient::builder_with_transport(MockTransport::new())
        .url("http://hb.example:9000")
        .app_id("kiosk-7");
    let debug = format!("{builder:?}");
    assert!(debug.starts_with("ClientBuilder {"), "{debug}");
    assert!(
        debug.contains("hb.example:9000") && debug.contains("\"kiosk-7\""),
        "{debug}"
    );
    let client = builder.build().unwrap();
    assert_eq!(client.url(), "http://hb.example:9000");
    assert_eq!(client.app_id(), "kiosk-7");
    let debug = format!("{client:?}");
    assert!(debug.starts_with("HeartbeatClient {"), "{debug}");
    assert!(
        debug.contains("hb.example:9000") && debug.contains("\"kiosk-7\""),
        "{debug}"
    );
}

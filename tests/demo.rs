//! The demo session, driven deterministically through the mock transport
//! with tokio's paused clock.
#![cfg(all(feature = "server", feature = "mock"))]

use std::time::Duration;

use heartbeat_sdk::demo::{run, DemoOptions};
use heartbeat_sdk::transport::{Method, MockFailure, MockTransport};
use heartbeat_sdk::{HeartbeatClient, State};

fn client(mock: &MockTransport) -> HeartbeatClient {
    HeartbeatClient::builder_with_transport(mock.clone())
        .app_id("demo")
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_bounded_session_beats_then_signs_off() {
    let mock = MockTransport::new();
    let options = DemoOptions {
        max_beats: Some(5),
        ..DemoOptions::default()
    };
    let report = run(&client(&mock), &options, std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.beats, 5);
    assert!(report.overdue <= 5);
    assert_eq!(report.failed, 0);
    assert_eq!(report.list_before, ["demo @ 127.0.0.1"]);
    assert_eq!(report.status_before.state(), State::Ok);
    assert_eq!(report.goodbye, "So Long, and Thanks for All the Fish!");
    assert!(report.list_after.is_empty());
    assert_eq!(report.status_after.state(), State::Critical);

    let paths: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.target().split('?').next().unwrap().to_owned())
        .collect();
    assert_eq!(paths[0], "/hb_init");
    assert_eq!(paths.iter().filter(|p| *p == "/hb_ping").count(), 5);
    assert_eq!(paths.iter().filter(|p| *p == "/hb_done").count(), 1);
    let done = mock
        .requests()
        .into_iter()
        .find(|r| r.target().starts_with("/hb_done"))
        .unwrap();
    assert_eq!(done.method(), Method::Post);
}

#[tokio::test(start_paused = true)]
async fn stopping_ends_the_loop_and_still_sends_done() {
    let mock = MockTransport::new();
    let stop = tokio::time::sleep(Duration::from_secs(30));
    let report = run(&client(&mock), &DemoOptions::default(), stop)
        .await
        .unwrap();
    assert!(
        report.beats >= 1,
        "30 s of beats with promises of at most 2 s"
    );
    assert_eq!(report.list_before, ["demo @ 127.0.0.1"]);
    assert!(report.list_after.is_empty());
}

#[tokio::test(start_paused = true)]
async fn failed_beats_are_counted_not_fatal() {
    let mock = MockTransport::new();
    mock.fail_next(3, MockFailure::Refused); // init and the first two pings
    let options = DemoOptions {
        max_beats: Some(4),
        ..DemoOptions::default()
    };
    let report = run(&client(&mock), &options, std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.beats, 4);
    assert_eq!(report.failed, 2);
    assert_eq!(
        report.list_before,
        ["demo @ 127.0.0.1"],
        "a later ping registered it"
    );
}

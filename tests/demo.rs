//! The demo session, driven deterministically through the mock transport
//! with tokio's paused clock.
//!
//! Every test registers a bystander app first: the demo reads `/list` with
//! an empty-list fallback, so without another app a failed list after
//! `hb_done` would look just like the right answer. And every reply is
//! recorded, so that "done was sent" and "the list after it was answered"
//! are checked on the wire, not only in the report.
#![cfg(all(feature = "server", feature = "mock"))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use heartbeat_sdk::demo::{run, DemoOptions};
use heartbeat_sdk::testing::{MockFailure, MockTransport};
use heartbeat_sdk::transport::{self, Method};
use heartbeat_sdk::{HeartbeatClient, State, Transport};

const GOODBYE: &str = "So Long, and Thanks for All the Fish!";
const BYSTANDER: &str = "bystander @ 127.0.0.1";
const DEMO: &str = "demo @ 127.0.0.1";

/// A request's path and its reply's status (`None`: no reply).
type Reply = (String, Option<u16>);

/// The mock with a bystander app, and the outcome of every request sent
/// through it.
#[derive(Debug, Clone, Default)]
struct Recorded {
    mock: MockTransport,
    replies: Arc<Mutex<Vec<Reply>>>,
}

impl Recorded {
    fn new() -> Recorded {
        let recorded = Recorded::default();
        recorded.mock.registry().with_registry(|r, now| {
            let localhost = "127.0.0.1".parse().unwrap();
            r.init("bystander", localhost, Duration::from_secs(24 * 3600), now)
                .unwrap();
        });
        recorded
    }

    fn transport(&self) -> impl Transport + 'static {
        let recorded = self.clone();
        transport::from_fn(move |request| {
            let recorded = recorded.clone();
            async move {
                let path = request.target().split('?').next().unwrap().to_owned();
                let reply = recorded.mock.send(request).await;
                let status = reply.as_ref().ok().map(|r| r.status());
                recorded.replies.lock().unwrap().push((path, status));
                reply
            }
        })
    }

    fn client(&self) -> HeartbeatClient {
        HeartbeatClient::builder_with_transport(self.transport())
            .app_id("demo")
            .build()
            .unwrap()
    }

    fn replies(&self) -> Vec<Reply> {
        self.replies.lock().unwrap().clone()
    }

    /// Done was sent and answered once, and the list and status after it
    /// were answered: the last five requests, on the wire; and the server
    /// ran one done and keeps only the bystander.
    fn assert_signed_off(&self) {
        let replies = self.replies();
        let answered = |path: &str| (path.to_owned(), Some(200));
        assert_eq!(
            replies[replies.len() - 5..],
            [
                answered("/list"),
                answered("/status"),
                answered("/hb_done"),
                answered("/list"),
                answered("/status")
            ],
            "{replies:?}"
        );
        let done = self
            .mock
            .requests()
            .into_iter()
            .filter(|r| r.target().starts_with("/hb_done"))
            .collect::<Vec<_>>();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].method(), Method::Post);
        let (dones, keys) = self.mock.registry().with_registry(|r, now| {
            let keys: Vec<String> = r.apps(now).map(|a| a.key.to_owned()).collect();
            (r.counters().dones, keys)
        });
        assert_eq!(dones, 1);
        assert_eq!(keys, [BYSTANDER]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_bounded_session_beats_then_signs_off() {
    let recorded = Recorded::new();
    let options = DemoOptions {
        max_beats: Some(5),
        ..DemoOptions::default()
    };
    let report = run(&recorded.client(), &options, std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.beats, 5);
    assert!(report.overdue <= 5);
    assert_eq!(report.failed, 0);
    assert_eq!(report.list_before, [BYSTANDER, DEMO]);
    assert_eq!(report.status_before.state(), State::Ok);
    assert_eq!(report.goodbye, GOODBYE);
    assert_eq!(report.list_after, [BYSTANDER]);
    assert_eq!(report.status_after.state(), State::Critical);
    assert!(
        report.status_after.raw().contains("no application record"),
        "{}",
        report.status_after
    );

    let replies = recorded.replies();
    assert_eq!(replies[0], ("/hb_init".to_owned(), Some(200)));
    let pings = replies.iter().filter(|(p, _)| p == "/hb_ping").count();
    assert_eq!(pings, 5);
    recorded.assert_signed_off();
}

#[tokio::test(start_paused = true)]
async fn stopping_ends_the_loop_and_still_sends_done() {
    let recorded = Recorded::new();
    let stop = tokio::time::sleep(Duration::from_secs(30));
    let report = run(&recorded.client(), &DemoOptions::default(), stop)
        .await
        .unwrap();
    assert!(
        report.beats >= 1,
        "30 s of beats with promises of at most 2 s"
    );
    assert_eq!(report.failed, 0);
    assert_eq!(report.list_before, [BYSTANDER, DEMO]);
    assert_eq!(report.goodbye, GOODBYE);
    assert_eq!(report.list_after, [BYSTANDER]);
    assert_eq!(report.status_after.state(), State::Critical);
    let pings = recorded
        .replies()
        .iter()
        .filter(|(p, _)| p == "/hb_ping")
        .count();
    assert_eq!(pings as u64, report.beats);
    recorded.assert_signed_off();
}

#[tokio::test(start_paused = true)]
async fn failed_beats_are_counted_not_fatal() {
    let recorded = Recorded::new();
    recorded.mock.fail_next(3, MockFailure::Refused); // init and the first two pings
    let options = DemoOptions {
        max_beats: Some(4),
        ..DemoOptions::default()
    };
    let report = run(&recorded.client(), &options, std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.beats, 4);
    assert_eq!(report.failed, 2);
    assert_eq!(
        report.list_before,
        [BYSTANDER, DEMO],
        "a later ping registered it"
    );
    assert_eq!(report.list_after, [BYSTANDER]);
    let failed = recorded
        .replies()
        .iter()
        .filter(|(_, status)| status.is_none())
        .count();
    assert_eq!(failed, 3);
    recorded.assert_signed_off();
}

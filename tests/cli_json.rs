//! `heartbeat list --json` and `heartbeat status --json [APP_ID]` against
//! the embedded server: one JSON document on one line, hostile ids escaped
//! by JSON, and the text output unchanged.
#![cfg(feature = "cli")]

use std::process::{Command, Stdio};
use std::time::Duration;

use heartbeat_sdk::server::{Server, ServerHandle};
use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
use serde_json::{json, Value};

#[path = "support/refusing.rs"]
mod refusing;
use refusing::Refusing;

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat");

/// What a finished run left behind.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `heartbeat --url URL ARGS` run to the end (bounded by the binary's own
/// request timeout), on a blocking thread.
async fn run(url: &str, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    for var in ["HB_URL", "HB_HOST", "HB_PORT", "APP_ID", "RUST_LOG"] {
        command.env_remove(var);
    }
    command
        .args(["--url", url, "--timeout", "20000"])
        .args(args)
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output().expect("heartbeat runs"))
        .await
        .unwrap();
    Output {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// The one JSON document a successful run printed, on one line.
#[track_caller]
fn document(output: &Output) -> Value {
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(output.stderr, "", "{output:?}");
    assert!(output.stdout.ends_with('\n'), "{output:?}");
    assert_eq!(output.stdout.lines().count(), 1, "one line: {output:?}");
    serde_json::from_str(&output.stdout).expect("one JSON document")
}

async fn start() -> ServerHandle {
    Server::builder("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

async fn init(server: &ServerHandle, app: &str) {
    HeartbeatClient::builder()
        .url(server.url())
        .app_id(app)
        .build()
        .unwrap()
        .init(Duration::from_secs(600), ErrorPolicy::Raise)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_status_as_json() {
    let server = start().await;
    let url = server.url();

    assert_eq!(
        document(&run(&url, &["list", "--json"]).await),
        json!({ "keys": [] })
    );
    let host = document(&run(&url, &["status", "--json"]).await);
    assert_eq!(host["state"], "unknown");
    assert_eq!(host["exit_code"], 3);
    assert_eq!(
        host["raw"],
        "UNKNOWN - no heartbeat clients at the moment..."
    );

    init(&server, "kiosk-1").await;
    assert_eq!(
        document(&run(&url, &["list", "--json"]).await),
        json!({ "keys": ["kiosk-1 @ 127.0.0.1"] })
    );
    let one = document(&run(&url, &["status", "--json", "kiosk-1"]).await);
    assert_eq!(one["state"], "ok");
    assert_eq!(one["exit_code"], 0);
    assert_eq!(one["app"], "kiosk-1 @ 127.0.0.1");
    assert_eq!(one["granted_ms"], 601_000);
    assert_eq!(one["unparsed_perfdata"], json!([]));
    assert_eq!(one["perfdata"][1]["label"], "delay");
    let raw = one["raw"].as_str().unwrap();
    assert!(
        raw.starts_with("OK - fine application [kiosk-1 @ 127.0.0.1]| od=0.0"),
        "{raw}"
    );
    // the document reads back as the status the text output prints
    let status: heartbeat_sdk::Status = serde_json::from_value(one.clone()).unwrap();
    assert_eq!(status.raw(), raw);
    let text = run(&url, &["status", "kiosk-1"]).await;
    assert_eq!(text.stdout, format!("{raw}\n"));

    let missing = document(&run(&url, &["status", "--json", "nobody"]).await);
    assert_eq!(missing["state"], "critical");
    assert_eq!(missing["app"], "nobody @ 127.0.0.1");
    assert_eq!(missing["granted_ms"], Value::Null);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_are_escaped_by_json_and_the_text_output_is_unchanged() {
    let server = start().await;
    let url = server.url();
    // quotes, a backslash, markup, a combining accent (which Rust's Debug
    // would print as `\u{301}`, not JSON)
    let id = "a\"},\"keys\":[\"forged\\ <b>&e\u{301}";
    init(&server, id).await;
    let key = format!("{id} @ 127.0.0.1");

    let list = run(&url, &["list", "--json"]).await;
    assert_eq!(document(&list), json!({ "keys": [key] }));
    assert!(
        list.stdout
            .contains("a\\\"},\\\"keys\\\":[\\\"forged\\\\ <b>&e\u{301}"),
        "{list:?}"
    );

    let status = document(&run(&url, &["status", "--json", id]).await);
    assert_eq!(status["app"], key.as_str());
    assert_eq!(status["state"], "ok");

    // without --json: as before, the key verbatim on its line
    let text = run(&url, &["list"]).await;
    assert_eq!(text.code, Some(0), "{text:?}");
    assert_eq!(text.stdout, format!("{key}\n"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_with_json_is_the_usual_one_line_error() {
    let refusing = Refusing::new();
    let url = refusing.url();
    for args in [&["list", "--json"][..], &["status", "--json"]] {
        let output = run(&url, args).await;
        assert_ne!(output.code, Some(0), "{output:?}");
        assert_eq!(output.stdout, "", "{output:?}");
        assert_eq!(output.stderr.lines().count(), 1, "{output:?}");
    }
}

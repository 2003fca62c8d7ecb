//! For the notification tests: plain HTTP GETs, waiting for a condition
//! (never a fixed sleep), reading a sample from `/metrics`, and a
//! `heartbeat serve` child process that is killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The body of `GET url` (panics on a transport error).
pub async fn get(url: &str) -> String {
    let reply = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    reply.text().await.unwrap()
}

/// Polls `check` every 20 ms until it returns `Some`, for at most 20 s
/// (a bound for a loaded machine, not a timing assertion).
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample `series` (name and labels, exactly) in a
/// `/metrics` body.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// A `heartbeat serve` process: its URL, killed (SIGKILL) when dropped.
pub struct Serve {
    pub url: String,
    child: Child,
}

impl Serve {
    /// Starts `heartbeat serve --bind 127.0.0.1:0 ARGS` and waits for its
    /// `listening on` line.
    pub fn start(args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_heartbeat"))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("heartbeat serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_owned();
        Serve { url, child }
    }

    /// `kill -9`, and wait for it to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A real Prometheus (Debian's `prometheus`, which `.ci/run` installs) on
//! a loopback port with a temporary config, and instant queries against
//! it; for `tests/metrics_scraped_by_prometheus.rs` and `tests/access.rs`.
//! Included with `#[path]`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    pub url: String,
    child: Child,
    /// Its config and data; files a scrape config names can go here too.
    pub dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Prometheus scraping every second with `scrape_configs` (YAML list
/// items, indented by two), or `None` (a skip) where it is not installed
/// and `HB_REQUIRE_TOOLS` is not set.
pub fn prometheus(scrape_configs: &str) -> Option<Prometheus> {
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
        format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{scrape_configs}"),
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
pub async fn query_until(
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

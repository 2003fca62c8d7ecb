//! The dashboard at fleet scale (issue 20).
//!
//! 1. **First paint at 100 000 apps**: headless Chromium (`$CHROME` or
//!    `chromium`, the flags of the tests) dumps the DOM of `/` served by an
//!    in-process server tracking 100 000 apps, 12 of them CRITICAL; the
//!    wall time from launch to the dump, against the same Chromium dumping
//!    an empty page (its own start-up), median of 5.
//! 2. **Bytes and time per refresh at 1 000 000 apps**: the page's refresh
//!    (`/api/v1/apps?sort=overdue&limit=100`), a search and the whole
//!    `/` over a plain socket: bytes, and the median time of 5.
//!
//! Plain `main`: it prints its figures. `HB_BENCH_ONLY=1|2` runs one part.
//!
//! `cargo bench --features server --bench dashboard`

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use heartbeat_sdk::server::{ManualClock, Server, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FLAGS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
];

/// A server tracking `apps` apps (`kiosk-000042`), 12 of them CRITICAL.
async fn fleet(apps: usize) -> ServerHandle {
    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .max_apps(apps)
        .start()
        .await
        .expect("server");
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    server.registry().with_registry(|registry, now| {
        for i in 0..apps {
            let late = i % (apps / 12) == 3 && i / (apps / 12) < 12;
            let ms = if late { 1 } else { 600_000 };
            registry
                .init(
                    &format!("kiosk-{i:07}"),
                    local,
                    Duration::from_millis(ms),
                    now,
                )
                .expect("room");
            if i % 4096 == 0 {
                registry.take_events();
            }
        }
        registry.take_events();
    });
    clock.advance(Duration::from_millis(5_500));
    server.registry().sweep();
    server
}

fn chrome() -> Option<String> {
    if let Ok(chrome) = std::env::var("CHROME") {
        return Some(chrome);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .map(str::to_owned)
}

/// Wall time of one `--dump-dom` of `url`, and the DOM.
fn dump(chrome: &str, url: &str) -> (Duration, String) {
    let profile = std::env::temp_dir().join(format!("hb-bench-dash-{}", std::process::id()));
    let start = Instant::now();
    let out = Command::new(chrome)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    let took = start.elapsed();
    let _ = std::fs::remove_dir_all(&profile);
    (took, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn first_paint() {
    let Some(chrome) = chrome() else {
        println!("dashboard: no chromium: first paint not measured");
        return;
    };
    let server = fleet(100_000).await;
    let url = format!("{}/", server.url());
    let (mut blank, mut page) = (Vec::new(), Vec::new());
    let mut rows = 0;
    for _ in 0..5 {
        let (chrome, url) = (chrome.clone(), url.clone());
        let (b, (p, dom)) = tokio::task::spawn_blocking(move || {
            (dump(&chrome, "about:blank").0, dump(&chrome, &url))
        })
        .await
        .unwrap();
        blank.push(b);
        page.push(p);
        rows = dom.matches(r#"<tr class="app "#).count();
        assert!(
            dom.contains(r#"<b data-count="critical">12</b>"#),
            "the counts"
        );
    }
    let (blank, page) = (median(blank), median(page));
    println!(
        "dashboard: first paint of 100000 apps in headless Chromium: {:.0} ms to the DOM dump \
         ({rows} rows), {:.0} ms of it Chromium's own start (about:blank): page {:.0} ms (target < 2000 ms)",
        ms(page),
        ms(blank),
        ms(page.saturating_sub(blank))
    );
    server.shutdown().await;
}

/// Bytes and time of `GET target`.
async fn get(addr: SocketAddr, target: &str) -> (usize, Duration) {
    let start = Instant::now();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).await.unwrap();
    let took = start.elapsed();
    let head = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (reply.len() - head, took)
}

async fn refreshes() {
    let server = fleet(1_000_000).await;
    for target in [
        "/api/v1/apps?sort=overdue&limit=100",
        "/api/v1/apps?sort=overdue&limit=100&q=kiosk-09",
        "/api/v1/apps?sort=overdue&limit=100&state=critical",
        "/",
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let (b, t) = get(server.local_addr(), target).await;
            bytes = b;
            times.push(t);
        }
        println!(
            "dashboard: 1000000 apps: {target}: {bytes} bytes (target < 100000), {:.0} ms (median of 5)",
            ms(median(times))
        );
    }
    server.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("HB_BENCH_ONLY").ok();
    runtime.block_on(async {
        if only.as_deref().is_none_or(|o| o == "1") {
            first_paint().await;
        }
        if only.as_deref().is_none_or(|o| o == "2") {
            refreshes().await;
        }
    });
}

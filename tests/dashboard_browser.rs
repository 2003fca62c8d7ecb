//! The dashboard in a real browser (issue 12): headless Chromium loads `/`
//! from the real server, with applications registered through the SDK, its
//! script refreshes from `/api/v1/apps`, and the rendered DOM is checked.
//! No browser on the machine: the tests say so on stderr and pass
//! (`.ci/run` installs Debian's `chromium`, so CI always runs them).
//!
//! Determinism: the server runs on a [`ManualClock`], so every state is
//! exact. Chromium runs with `--virtual-time-budget` (timers fire at once,
//! a pending fetch holds virtual time), and reaches the server through a
//! small proxy in this file that counts the page's `/api/v1/apps` fetches:
//! before it forwards the second one, the test moves the clock (an app goes
//! late) and waits for that to finish; from the third one on the proxy
//! answers `503` itself (the page must say it is stale). Nothing depends on
//! how fast the machine is: the proxy orders the events, not a timer.
//!
//! The server shows no *missing* application until an expected list is
//! configured; until then one test serves scripted JSON (a tiny server in
//! this file) to check the script's rendering of a missing row against the
//! shared golden markup.
#![cfg(all(feature = "server", feature = "reqwest"))]
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heartbeat_sdk::server::{ManualClock, Server, ServerHandle};
use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const PAGE: &str = include_str!("../src/monitor/render/dashboard.html");
const SCRIPT: &str = include_str!("../src/monitor/render/dashboard.js");
const GOLDEN_ROWS: &str = include_str!("data/dashboard_rows.html");
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
const HOSTILE_MARKER: &str = "<img src=x onerror=document.body.setAttribute('data-pwned','1')>";
/// The flags issue 12 asks for, on every run.
const FLAGS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
];

// ---------------------------------------------------------------- browser

/// `$CHROME` when set, else the first of chromium, chromium-browser,
/// google-chrome, google-chrome-stable on `PATH`.
fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|candidate| candidate.is_file())
}

/// Says so where CI logs show it (libtest does not capture direct writes).
fn skip(test: &str) {
    // .ci/run installs chromium and sets this: there a skip would hide a
    // test that never ran.
    assert!(
        std::env::var_os("HB_REQUIRE_TOOLS").is_none(),
        "HB_REQUIRE_TOOLS is set but no chromium was found ({test})"
    );
    let _ = writeln!(
        std::io::stderr(),
        "browser test skipped: no chromium found ({test}; set CHROME or install chromium)"
    );
}

fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_chromium();
    if found.is_none() {
        skip(test);
    }
    found
}

/// Runs headless Chromium with `args` (after the issue's flags and a fresh
/// profile), and returns its stdout. Panics with stderr when it fails or
/// takes more than two minutes.
fn run_chromium(chrome: &Path, args: &[String]) -> String {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let profile = std::env::temp_dir().join(format!(
        "hb-dashboard-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = Command::new(chrome)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chrome.display()));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    // A watchdog, not a wait for a result: the outcome is read from the DOM.
    // A page that opens a dialog (an `alert()` that got to run) hangs headless
    // Chromium, so a hang is a failure of the page, reported as such.
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&profile);
            panic!(
                "chromium hung for 45 s: did the page open a dialog (alert) or never settle? {}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&profile);
    let stdout = out.join().unwrap().expect("chromium's stdout is UTF-8");
    let stderr = err.join().unwrap();
    assert!(status.success(), "chromium failed ({status}): {stderr}");
    stdout
}

/// The DOM after the page's script ran for `virtual_ms` of virtual time
/// (timers run at once; network fetches pause the virtual clock).
async fn dump_dom(chrome: &Path, url: &str, virtual_ms: u64) -> String {
    let chrome = chrome.to_owned();
    let args = vec![
        format!("--virtual-time-budget={virtual_ms}"),
        "--dump-dom".to_owned(),
        url.to_owned(),
    ];
    tokio::task::spawn_blocking(move || run_chromium(&chrome, &args))
        .await
        .unwrap()
}

/// A PNG of the page at `width`×`height`, light or dark.
async fn screenshot(chrome: &Path, url: &str, file: &Path, size: (u32, u32), dark: bool) {
    let chrome = chrome.to_owned();
    let mut args = vec![
        "--virtual-time-budget=3000".to_owned(),
        "--hide-scrollbars".to_owned(),
        format!("--window-size={},{}", size.0, size.1),
        format!("--screenshot={}", file.display()),
    ];
    if dark {
        args.push("--blink-settings=preferredColorScheme=0".to_owned());
    } else {
        args.push("--blink-settings=preferredColorScheme=1".to_owned());
    }
    args.push(url.to_owned());
    let _ = std::fs::remove_file(file);
    tokio::task::spawn_blocking(move || run_chromium(&chrome, &args))
        .await
        .unwrap();
    let png = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        file.display()
    );
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_owned()
}

// ---------------------------------------------------------------- real server

async fn start_server(clock: &ManualClock) -> ServerHandle {
    Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .start()
        .await
        .unwrap()
}

fn client(server: &ServerHandle, id: &str) -> HeartbeatClient {
    HeartbeatClient::builder()
        .url(server.url())
        .app_id(id)
        .build()
        .unwrap()
}

/// Registers `(id, timeout_ms, age_ms)` through the SDK so that, once this
/// returns, each app's last init is `age_ms` old on `clock`.
async fn register(server: &ServerHandle, clock: &ManualClock, apps: &[(&str, u64, u64)]) {
    let mut apps = apps.to_vec();
    apps.sort_by_key(|&(_, _, age)| std::cmp::Reverse(age));
    let mut age_now = apps.first().map_or(0, |a| a.2);
    for (id, timeout_ms, age) in apps {
        clock.advance(Duration::from_millis(age_now - age));
        age_now = age;
        client(server, id)
            .init(Duration::from_millis(timeout_ms), ErrorPolicy::Raise)
            .await
            .unwrap();
    }
    clock.advance(Duration::from_millis(age_now));
}

/// A proxy in front of `upstream`, one request per connection. Before it
/// forwards the second `GET /api/v1/apps` it sends a `oneshot::Sender` on
/// `on_second` and waits until that is answered; from the `fail_from`-th
/// fetch on, it answers `503` itself.
struct Proxy {
    url: String,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

async fn proxy(
    upstream: SocketAddr,
    on_second: Option<mpsc::Sender<oneshot::Sender<()>>>,
    fail_from: Option<usize>,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let paths = Arc::new(Mutex::new(Vec::new()));
    let log = paths.clone();
    let fetches = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (log, fetches, on_second) = (log.clone(), fetches.clone(), on_second.clone());
            tokio::spawn(async move {
                let Some(path) = read_path(&mut conn).await else {
                    return;
                };
                log.lock().unwrap().push(path.clone());
                let n = match path.split('?').next().unwrap_or("") {
                    "/api/v1/apps" => fetches.fetch_add(1, Ordering::SeqCst) + 1,
                    _ => 0,
                };
                if let (2, Some(on_second)) = (n, on_second) {
                    let (done, wait) = oneshot::channel();
                    on_second.send(done).await.unwrap();
                    wait.await.unwrap();
                }
                if fail_from.is_some_and(|from| n >= from) {
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\
                              Connection: close\r\n\r\ndown\n",
                        )
                        .await;
                    let _ = conn.shutdown().await;
                    return;
                }
                let mut up = TcpStream::connect(upstream).await.unwrap();
                up.write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
                let _ = tokio::io::copy(&mut up, &mut conn).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Proxy { url, paths }
}

/// The path of the request on `conn` (its head read whole).
async fn read_path(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ').nth(1).map(str::to_owned)
}

// ---------------------------------------------------------------- scripted server

/// What the scripted server answers to the n-th `GET /api/v1/apps`: the n-th
/// body (the last one again once past the end), or a 503 past the end when
/// `then_fail`.
struct Script {
    bodies: Vec<Value>,
    then_fail: bool,
}

struct TestServer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    fn paths(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn start(script: Script) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let log = requests.clone();
    tokio::spawn(async move {
        let api_calls = Arc::new(AtomicUsize::new(0));
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let (log, script, api_calls) = (log.clone(), script.clone(), api_calls.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                log.lock().unwrap().push(path.clone());
                let (status, kind, body) = match path.split('?').next().unwrap_or("") {
                    "/" => ("200 OK", "text/html; charset=utf-8", PAGE.to_owned()),
                    "/dashboard.js" => ("200 OK", "text/javascript", SCRIPT.to_owned()),
                    "/api/v1/apps" => {
                        let n = api_calls.fetch_add(1, Ordering::SeqCst);
                        match script.bodies.get(n) {
                            Some(body) => ("200 OK", "application/json", body.to_string()),
                            None if script.then_fail => {
                                ("503 Service Unavailable", "text/plain", "down\n".to_owned())
                            }
                            None => (
                                "200 OK",
                                "application/json",
                                script.bodies.last().unwrap().to_string(),
                            ),
                        }
                    }
                    _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                     Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    TestServer { url, requests }
}

// ---------------------------------------------------------------- data

fn thresholds() -> Value {
    json!({"warn_ratio": 3.0, "crit_ratio": 5.0, "drop_ratio": 6.0, "tolerance_ms": 1000})
}

fn tracked(id: &str, host: &str, state: &str, ratio: f64, granted_ms: u64, ago_ms: u64) -> Value {
    json!({
        "key": format!("{id} @ {host}"), "id": id, "host": host, "state": state,
        "overdue_ratio": ratio, "granted_ms": granted_ms,
        "last_seen": "2026-11-25T10:00:00.000Z", "last_seen_ago_ms": ago_ms,
        "expected": false, "missing": false,
        "failed": null, "uptime_24h": 1.0, "uptime_7d": 1.0,
        "strip_24h": format!("{}o", "-".repeat(47)),
    })
}

fn missing(id: &str) -> Value {
    json!({
        "key": id, "id": id, "host": null, "state": "missing",
        "overdue_ratio": null, "granted_ms": null,
        "last_seen": null, "last_seen_ago_ms": null,
        "expected": true, "missing": true,
        "failed": null, "uptime_24h": null, "uptime_7d": null,
        "strip_24h": "-".repeat(48),
    })
}

fn document(apps: Vec<Value>) -> Value {
    let count = |s: &str| apps.iter().filter(|a| a["state"] == s).count();
    json!({
        "version": 1,
        "generated_at": "2026-11-25T10:00:01.234Z",
        "thresholds": thresholds(),
        "counters": {"inits": 7, "pings": 1234, "dones": 2, "expiries": 1, "refusals": 0},
        "counts": {
            "ok": count("ok"), "warning": count("warning"),
            "critical": count("critical"), "missing": count("missing"),
        },
        "apps": apps,
    })
}

// ---------------------------------------------------------------- DOM

/// The rows of a dumped DOM, in order: (serialized text of `td.app-id`,
/// the row's class attribute, the row's whole markup).
fn rows(dom: &str) -> Vec<(String, String, String)> {
    let tbody = dom
        .split_once(r#"<tbody id="apps">"#)
        .and_then(|(_, rest)| rest.split_once("</tbody>"))
        .map(|(rows, _)| rows)
        .unwrap_or_else(|| panic!("no tbody#apps in {dom}"));
    tbody
        .split("<tr ")
        .filter(|r| r.starts_with(r#"class="app "#))
        .map(|r| {
            let class = r["class=\"".len()..].split('"').next().unwrap().to_owned();
            let id = r
                .split_once(r#"<td class="app-id">"#)
                .and_then(|(_, rest)| rest.split_once("</td>"))
                .map(|(id, _)| id.to_owned())
                .unwrap_or_default();
            (
                id,
                class,
                format!("<tr {}", r.split("</tr>").next().unwrap()),
            )
        })
        .collect()
}

fn row<'a>(rows: &'a [(String, String, String)], id: &str) -> &'a (String, String, String) {
    rows.iter()
        .find(|(i, _, _)| i == id)
        .unwrap_or_else(|| panic!("no row for {id:?} in {rows:#?}"))
}

fn body_tag(dom: &str) -> &str {
    let start = dom.find("<body").expect("a body");
    &dom[start..start + dom[start..].find('>').unwrap()]
}

// ---------------------------------------------------------------- tests

/// Apps in every state the server knows, both hostile ids, and `late-app`,
/// OK at the first refresh and CRITICAL at the second, in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_refresh_in_place_hostile_ids_stay_text_and_failures_show_stale() {
    let Some(chrome) = chromium_or_skip("rows_refresh_in_place") else {
        return;
    };
    let clock = ManualClock::new();
    let server = start_server(&clock).await;
    // (id, promised timeout, age) at the first refresh: all OK but
    // audio-sync (WARNING 3.2)
    register(
        &server,
        &clock,
        &[
            ("projector-b", 10_000, 24_800),
            ("audio-sync", 5000, 19_200),
            ("late-app", 2000, 3000),
            (HOSTILE, 59_000, 600),
            (HOSTILE_MARKER, 59_000, 600),
            ("kiosk-1", 2000, 600),
        ],
    )
    .await;
    // before the second refresh: 12.6 s pass, kiosk-1 pinging 1.56 s before the end
    let (on_second, mut second) = mpsc::channel(1);
    let late = {
        let (clock, kiosk) = (clock.clone(), client(&server, "kiosk-1"));
        tokio::spawn(async move {
            let done: oneshot::Sender<()> = second.recv().await.unwrap();
            clock.advance(Duration::from_millis(11_040));
            kiosk
                .ping(Duration::from_millis(2000), ErrorPolicy::Raise)
                .await
                .unwrap();
            clock.advance(Duration::from_millis(1560));
            done.send(()).unwrap();
        })
    };
    let proxy = proxy(server.local_addr(), Some(on_second), Some(3)).await;
    let dom = dump_dom(&chrome, &proxy.url, 7000).await;
    late.await.unwrap();

    let paths = proxy.paths();
    assert_eq!(
        paths.iter().filter(|p| *p == "/").count(),
        1,
        "the page was loaded once, never reloaded: {paths:?}"
    );
    assert!(
        paths
            .iter()
            .filter(|p| p.starts_with("/api/v1/apps?"))
            .count()
            >= 3,
        "two good refreshes and at least one failed one: {paths:?}"
    );

    let rows = rows(&dom);
    assert_eq!(rows.len(), 6, "one row per app: {rows:#?}");
    for (id, class) in [
        ("kiosk-1", "app state-ok"),
        ("&lt;img src=x onerror=alert(1)&gt;", "app state-ok"),
    ] {
        assert_eq!(row(&rows, id).1, class, "{id}");
    }
    // these two moved on too, in place
    for (id, class, was) in [
        ("projector-b", "app state-warning changed", "ok"),
        ("audio-sync", "app state-critical changed", "warning"),
    ] {
        let (_, got, markup) = row(&rows, id);
        assert_eq!(got, class, "{markup}");
        let was = format!(r#"data-previous-state="{was}""#);
        assert!(markup.contains(&was), "{markup}");
    }

    // late-app was rendered OK by the first refresh and turned CRITICAL in
    // place on the second: same document, new class, the old state noted.
    let (_, class, late) = row(&rows, "late-app");
    assert_eq!(class, "app state-critical changed", "{late}");
    assert!(late.contains(r#"data-previous-state="ok""#), "{late}");
    assert!(
        late.contains(r#"<span class="badge">CRITICAL</span>"#),
        "{late}"
    );
    assert!(late.contains(r#"style="width:86.7%""#), "{late}");
    assert!(
        late.contains(r#"<span class="ratio">5.20</span>"#),
        "{late}"
    );

    // the JavaScript renderer builds exactly the markup the Rust one does
    // (kiosk-1 was WARNING earlier in this half hour: its strip says so)
    let golden = GOLDEN_ROWS
        .lines()
        .next()
        .unwrap()
        .replace(r#"class="s-o""#, r#"class="s-w""#);
    assert!(
        dom.contains(&golden),
        "missing golden row {golden}\nin {dom}"
    );

    // hostile ids are text: shown literally, no element made, nothing ran
    assert!(!dom.contains("<img"), "an <img> element was created: {dom}");
    row(
        &rows,
        "&lt;img src=x onerror=document.body.setAttribute('data-pwned','1')&gt;",
    );
    let body = body_tag(&dom);
    assert!(!body.contains("data-pwned"), "{body}");

    // counts from the last good document; a failed fetch keeps the rows and says stale
    for (state, n) in [("ok", 3), ("warning", 1), ("critical", 2), ("missing", 0)] {
        assert!(
            dom.contains(&format!(r#"<b data-count="{state}">{n}</b>"#)),
            "{state} {n}"
        );
    }
    assert!(dom.contains(
        r#"<p class="thresholds">warning from od 3, critical from 5, dropped at 6; tolerance 1 s</p>"#
    ));
    assert!(body.contains(r#"data-refreshes="2""#), "{body}");
    assert!(body.contains(r#"data-stale="true""#), "{body}");
    assert!(body.contains(r#"class="stale""#), "{body}");
    assert!(
        dom.contains("stale: no answer from the server, last update"),
        "{dom}"
    );
    server.shutdown().await;
}

/// "What happened to kiosk-3 last night": its row's 24 h strip holds the
/// CRITICAL, and its events (opened from the row, `#events=ID&host=IP`)
/// list the changes newest first. A hostile id's events stay text, and a
/// failed run shows its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strip_and_the_events_of_an_app_answer_what_happened() {
    let Some(chrome) = chromium_or_skip("the_strip_and_the_events") else {
        return;
    };
    let clock = ManualClock::new();
    let server = start_server(&clock).await;
    let local = std::net::Ipv4Addr::LOCALHOST.into();
    let hostile = heartbeat_sdk::protocol::encode_component(HOSTILE_MARKER);
    let registry = server.registry();
    registry.handle("/hb_init?1000&appid=kiosk-3", None, local); // granted 2 s
    registry.handle(&format!("/hb_init?60000&appid={hostile}"), None, local);
    clock.advance(Duration::from_secs(11)); // kiosk-3: WARNING at 6 s, CRITICAL at 10 s
    registry.sweep();
    registry.handle("/hb_ping?1000&appid=kiosk-3", None, local);
    registry.handle(&format!("/hb_fail?3&appid={hostile}"), None, local);
    clock.advance(Duration::from_secs(1));

    let dom = dump_dom(
        &chrome,
        &format!("{}/#events=kiosk-3&host=127.0.0.1", server.url()),
        3000,
    )
    .await;
    let first = rows(&dom);
    let (_, _, kiosk) = row(&first, "kiosk-3");
    assert!(
        kiosk.contains(r#"<rect class="s-c" x="47" width="1" height="1"></rect>"#),
        "the last half hour holds the CRITICAL: {kiosk}"
    );
    assert!(
        !kiosk.contains(r#"<span class="uptime" title="7 d: 100.0%">"#),
        "{kiosk}"
    );
    let events = dom
        .split_once(r#"<section class="panel" id="events">"#)
        .unwrap_or_else(|| panic!("the events are shown: {dom}"))
        .1;
    assert!(
        events.starts_with(r#"<h2 id="events-title">Events of kiosk-3 on 127.0.0.1</h2>"#),
        "{events}"
    );
    let order: Vec<&str> = events
        .split(r#"<li class="event event-"#)
        .skip(1)
        .map(|li| li.split('"').next().unwrap())
        .collect();
    assert_eq!(
        order,
        ["recovered", "critical", "warning", "created"],
        "{events}"
    );
    assert!(
        events.contains("critical: WARNING \u{2192} CRITICAL"),
        "{events}"
    );

    let dom = dump_dom(
        &chrome,
        &format!("{}/#events={hostile}&host=127.0.0.1", server.url()),
        3000,
    )
    .await;
    assert!(!dom.contains("<img"), "an <img> element was created: {dom}");
    assert!(!body_tag(&dom).contains("data-pwned"), "{}", body_tag(&dom));
    let events = dom
        .split_once(r#"<section class="panel" id="events">"#)
        .unwrap_or_else(|| panic!("the events are shown: {dom}"))
        .1;
    assert!(
        events.contains("Events of &lt;img src=x onerror=document.body.setAttribute('data-pwned','1')&gt; on 127.0.0.1"),
        "{events}"
    );
    assert!(
        events.contains("failed: OK \u{2192} CRITICAL (exit code 3)"),
        "{events}"
    );
    let second = rows(&dom);
    let (_, class, markup) = row(
        &second,
        "&lt;img src=x onerror=document.body.setAttribute('data-pwned','1')&gt;",
    );
    assert_eq!(class, "app state-critical");
    assert!(
        markup.contains(r#"<span class="exit">exit code 3</span>"#),
        "{markup}"
    );
    server.shutdown().await;
}

/// The rows are rendered by the server (the page reads without
/// JavaScript): with the API down from the first fetch, the browser shows
/// them as served, and says it is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_renders_the_rows_before_any_refresh() {
    let Some(chrome) = chromium_or_skip("the_server_renders_the_rows") else {
        return;
    };
    let clock = ManualClock::new();
    let server = start_server(&clock).await;
    register(
        &server,
        &clock,
        &[
            ("kiosk-1", 2000, 1560),
            ("projector-b", 10_000, 37_400),
            (HOSTILE, 2000, 300),
        ],
    )
    .await;
    let proxy = proxy(server.local_addr(), None, Some(1)).await;
    let dom = dump_dom(&chrome, &proxy.url, 3000).await;
    let paths = proxy.paths();
    assert_eq!(paths.iter().filter(|p| *p == "/").count(), 1, "{paths:?}");
    let rows = rows(&dom);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(row(&rows, "projector-b").1, "app state-warning");
    assert_eq!(
        row(&rows, "&lt;img src=x onerror=alert(1)&gt;").1,
        "app state-ok"
    );
    let golden = GOLDEN_ROWS.lines().next().unwrap();
    assert!(
        dom.contains(golden),
        "missing golden row {golden}\nin {dom}"
    );
    assert!(!dom.contains("<img"), "{dom}");
    let body = body_tag(&dom);
    assert!(body.contains(r#"data-refreshes="0""#), "{body}");
    assert!(body.contains(r#"data-stale="true""#), "{body}");
    server.shutdown().await;
}

/// The script renders a missing app (which the server lists once an
/// expected list is configured) exactly like the server's golden row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_renders_a_missing_app_like_the_server() {
    let Some(chrome) = chromium_or_skip("the_script_renders_a_missing_app") else {
        return;
    };
    let server = start(Script {
        bodies: vec![document(vec![
            tracked("kiosk-1", "127.0.0.1", "ok", 0.52, 3000, 1234),
            missing("kiosk-9"),
        ])],
        then_fail: false,
    })
    .await;
    let dom = dump_dom(&chrome, &server.url, 3000).await;
    assert!(server
        .paths()
        .iter()
        .any(|p| p == "/api/v1/apps?sort=overdue&limit=100"));
    for golden in GOLDEN_ROWS.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            dom.contains(golden),
            "missing golden row {golden}\nin {dom}"
        );
    }
    let body = body_tag(&dom);
    assert!(!body.contains(r#"data-refreshes="0""#), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screenshot_is_saved_to_target() {
    let Some(chrome) = chromium_or_skip("a_screenshot_is_saved_to_target") else {
        return;
    };
    let (server, _clock) = showcase().await;
    let file = target_dir().join("dashboard.png");
    screenshot(
        &chrome,
        &format!("{}/", server.url()),
        &file,
        (1100, 520),
        false,
    )
    .await;
    let _ = writeln!(
        std::io::stderr(),
        "dashboard screenshot: {}",
        file.display()
    );
    server.shutdown().await;
}

/// Desktop and phone, light and dark, to look at (`docs/dashboard.png` is
/// the desktop light one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes four screenshots to target/ for a human to look at"]
async fn screenshots_in_every_mode() {
    let Some(chrome) = chromium_or_skip("screenshots_in_every_mode") else {
        return;
    };
    let (server, _clock) = showcase().await;
    for (name, size, dark) in [
        ("desktop-light", (1100, 520), false),
        ("desktop-dark", (1100, 520), true),
        ("phone-light", (375, 900), false),
        ("phone-dark", (375, 900), true),
    ] {
        let file = target_dir().join(format!("dashboard-{name}.png"));
        screenshot(&chrome, &format!("{}/", server.url()), &file, size, dark).await;
        let _ = writeln!(std::io::stderr(), "{}", file.display());
    }
    server.shutdown().await;
}

/// A museum's morning on the real server, for the screenshots.
async fn showcase() -> (ServerHandle, ManualClock) {
    let clock = ManualClock::new();
    let server = start_server(&clock).await;
    register(
        &server,
        &clock,
        &[
            ("entrance-kiosk", 10_000, 4510),
            ("kiosk-1", 2000, 1560),
            ("vitrine-climate-2", 30_000, 34_720),
            ("projector-hall-b", 10_000, 37_400),
            ("audio-guide-sync", 5000, 31_800),
            (HOSTILE, 2000, 300),
        ],
    )
    .await;
    (server, clock)
}

/// The body of `GET path` from `server`, read whole over a plain socket.
async fn get_body(server: &ServerHandle, path: &str) -> Vec<u8> {
    let mut conn = TcpStream::connect(server.local_addr()).await.unwrap();
    conn.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).await.unwrap();
    let at = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    reply.split_off(at + 4)
}

/// An operator with 100 000 kiosks: the page shows the 12 that need
/// attention first, the counts of all of them, one page of 100 rows; a
/// search and a state filter (the view is the hash: `#q=...&state=...`)
/// narrow it; the first paint and each refresh stay small whatever the
/// fleet. (How fast: `cargo bench --bench dashboard`, BENCHMARKS.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_100_000_shows_its_12_problems_first_and_pages_through_the_rest() {
    let Some(chrome) = chromium_or_skip("a_fleet_of_100_000") else {
        return;
    };
    const FLEET: usize = 100_000;
    let late: Vec<usize> = (0..12).map(|k| 3 + k * 8_000).collect();
    let clock = ManualClock::new();
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .clock(clock.clone())
        .max_apps(FLEET)
        .start()
        .await
        .unwrap();
    let local = "127.0.0.1".parse().unwrap();
    server.registry().with_registry(|registry, now| {
        for i in 0..FLEET {
            // the late ones promised 1 ms: CRITICAL once 5.5 s have passed
            let ms = if late.contains(&i) { 1 } else { 600_000 };
            registry
                .init(
                    &format!("kiosk-{i:06}"),
                    local,
                    Duration::from_millis(ms),
                    now,
                )
                .unwrap();
        }
    });
    clock.advance(Duration::from_millis(5_500));

    let first_paint = get_body(&server, "/").await;
    assert!(first_paint.len() < 100_000, "{} bytes", first_paint.len());
    let refresh = get_body(&server, "/api/v1/apps?sort=overdue&limit=100").await;
    assert!(
        refresh.len() < 100_000,
        "{} bytes per refresh",
        refresh.len()
    );

    let dom = dump_dom(&chrome, &server.url(), 3000).await;
    let page = rows(&dom);
    assert_eq!(page.len(), 100, "one page");
    let want: Vec<String> = late.iter().map(|i| format!("kiosk-{i:06}")).collect();
    let mut first: Vec<String> = page[..12].iter().map(|r| r.0.clone()).collect();
    first.sort();
    assert_eq!(first, want, "the 12 late ones first");
    assert!(page[..12]
        .iter()
        .all(|r| r.1.starts_with("app state-critical")));
    assert!(page[12..].iter().all(|r| r.1.starts_with("app state-ok")));
    assert!(
        dom.contains(r#"<b data-count="critical">12</b>"#),
        "counts of all"
    );
    assert!(
        dom.contains(r#"<b data-count="ok">99988</b>"#),
        "counts of all"
    );
    assert!(dom.contains("<span id=\"range\">1\u{2013}100 of 100000</span>"));
    assert!(body_tag(&dom).contains(r#"data-matched="100000""#));
    assert!(
        dom.contains(r#"<button id="next" type="button">"#),
        "Next is enabled"
    );

    // a search: the ten kiosk-04200x, OK, by the same order
    let dom = dump_dom(&chrome, &format!("{}/#q=KIOSK-04200", server.url()), 3000).await;
    let ids: Vec<String> = rows(&dom).into_iter().map(|r| r.0).collect();
    let want: Vec<String> = (42_000..42_010).map(|i| format!("kiosk-{i:06}")).collect();
    assert_eq!(ids, want, "ASCII case ignored, by key within OK");
    assert!(dom.contains("<span id=\"range\">1\u{2013}10 of 10</span>"));
    assert!(dom.contains(r#"<button id="next" type="button" disabled="">"#));

    // one state: CRITICAL only, the card marked
    let dom = dump_dom(&chrome, &format!("{}/#state=critical", server.url()), 3000).await;
    assert_eq!(rows(&dom).len(), 12);
    assert!(
        dom.contains(r#"class="count state-critical active""#),
        "the card shows the filter"
    );

    // a filter that matches nothing says so
    let dom = dump_dom(&chrome, &format!("{}/#q=no-such-kiosk", server.url()), 3000).await;
    assert!(
        dom.contains("No application matches."),
        "{}",
        body_tag(&dom)
    );
    server.shutdown().await;
}

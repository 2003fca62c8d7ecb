//! Who may see and change what (`serve --web-config`, `--protect`,
//! `--allowed-host`, `--max-apps-per-host`), end to end over real sockets:
//! basic auth on the operator's views with the reference's paths open,
//! `--protect reference` closing them too, no CORS on the operator's views,
//! a foreign `Host` refused, one host's flood refused for itself alone,
//! https with a certificate made at run time (and replaced on disk), the
//! client's credentials, and none of them in a log line.
#![cfg(all(feature = "web-config", feature = "reqwest", feature = "rustls"))]

#[path = "support/log_capture.rs"]
mod log_capture;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use heartbeat_sdk::server::{Protect, Server, ServerBuilder, WebConfig};
use heartbeat_sdk::transport::ReqwestTransport;
use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient};
use log_capture::Captured;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

const USER: &str = "operator";
const PASSWORD: &str = "correct horse battery staple";

/// A fresh directory under the system's temporary one.
fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hb-access-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CA (its PEM) and, written to `dir`, a certificate it signed for
/// `localhost` and 127.0.0.1 (`server.crt`, `server.key`).
fn certificate(dir: &Path, name: &str) -> String {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("heartbeat-sdk access test CA {name}"),
    );
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    // the key first: a reload that sees the new certificate finds its key
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("server.crt"), leaf.pem()).unwrap();
    ca.pem()
}

/// `web.yml` in `dir` with `tls` (the certificate files) and/or the user.
fn web_config(dir: &Path, tls: bool, users: bool) -> WebConfig {
    let mut yaml = String::new();
    if tls {
        yaml.push_str("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
    }
    if users {
        let hash = bcrypt::hash(PASSWORD, 4).unwrap();
        yaml.push_str(&format!("basic_auth_users:\n  {USER}: '{hash}'\n"));
    }
    let path = dir.join("web.yml");
    std::fs::write(&path, yaml).unwrap();
    WebConfig::load(&path).unwrap()
}

fn builder() -> ServerBuilder {
    Server::builder("127.0.0.1:0".parse().unwrap())
}

/// One HTTP/1.0 exchange over plain TCP: status, lower-case head, body.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

fn raw(addr: SocketAddr, target: &str, headers: &str) -> Raw {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // a TLS port may close on plain text before all is written
    let _ = write!(stream, "GET {target} HTTP/1.0\r\n{headers}\r\n");
    let mut reply = Vec::new();
    // and then: what was read is the reply
    let _ = stream.read_to_end(&mut reply);
    parse(&reply)
}

/// [`raw`] from the local address `from` (another loopback address).
async fn raw_from(from: IpAddr, addr: SocketAddr, target: &str) -> Raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    parse(&reply)
}

fn parse(reply: &[u8]) -> Raw {
    let reply = String::from_utf8_lossy(reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Raw {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// `Authorization: Basic ...` for `user:password`, with its line end.
fn authorization(user: &str, password: &str) -> String {
    let auth = heartbeat_sdk::transport::BasicAuth::new(user, password);
    format!("Authorization: {}\r\n", auth.authorization())
}

const OPERATOR_VIEWS: [&str; 5] = [
    "/",
    "/dashboard.js",
    "/api/v1/apps",
    "/api/v1/events?app=x",
    "/metrics",
];
const REFERENCE_PATHS: [&str; 4] = [
    "/hb_init?5000&appid=kiosk",
    "/hb_ping?5000&appid=kiosk",
    "/list",
    "/status?0&appid=kiosk",
];

#[tokio::test]
async fn operator_views_need_credentials_and_the_reference_paths_stay_open() {
    let dir = temp_dir();
    let server = builder()
        .web_config(web_config(&dir, false, true))
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    let good = authorization(USER, PASSWORD);
    let wrong = authorization(USER, "guess");
    let stranger = authorization("mallory", PASSWORD);
    for view in OPERATOR_VIEWS {
        for headers in [
            String::new(),
            wrong.clone(),
            stranger.clone(),
            "Authorization: Basic !!!\r\n".to_owned(),
        ] {
            let reply = blocking(move || raw(addr, view, &headers)).await;
            assert_eq!(reply.status, 401, "{view}: {}", reply.head);
            assert!(
                reply
                    .head
                    .contains("\r\nwww-authenticate: basic realm=\"heartbeat\""),
                "{view}: {}",
                reply.head
            );
            assert!(
                !reply.head.contains("access-control-allow-origin"),
                "{view}"
            );
        }
        let headers = good.clone();
        let reply = blocking(move || raw(addr, view, &headers)).await;
        assert_eq!(reply.status, 200, "{view}: {}", reply.body);
        assert!(
            !reply.head.contains("access-control-allow-origin"),
            "an operator view is same-origin: {view}"
        );
    }
    for path in REFERENCE_PATHS {
        let reply = blocking(move || raw(addr, path, "")).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert!(
            reply.head.contains("\r\naccess-control-allow-origin: *"),
            "{path}"
        );
    }
    // the failures are counted; the scrape itself is authorised
    let headers = good.clone();
    let metrics = blocking(move || raw(addr, "/metrics", &headers)).await.body;
    assert!(
        metrics.contains("heartbeat_auth_failures_total{reason=\"missing\"} 5\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("heartbeat_auth_failures_total{reason=\"wrong\"} 15\n"),
        "{metrics}"
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_dashboard_sends_a_strict_policy_and_its_script_from_its_own_path() {
    let server = builder().start().await.unwrap();
    let addr = server.local_addr();
    let page = blocking(move || raw(addr, "/", "")).await;
    assert_eq!(page.status, 200);
    let csp = page
        .head
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .expect("a Content-Security-Policy")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let script_src = csp
        .split(';')
        .find(|d| d.trim().starts_with("script-src"))
        .unwrap();
    assert_eq!(
        script_src.trim(),
        "script-src 'self'",
        "no inline script: {csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(page
        .body
        .contains(r#"<script src="dashboard.js"></script>"#));
    assert!(!page.body.contains("<script>"), "no inline script");
    assert!(!page.head.contains("access-control-allow-origin"));
    let script = blocking(move || raw(addr, "/dashboard.js", "")).await;
    assert_eq!(script.status, 200);
    assert!(
        script.head.contains("content-type: text/javascript"),
        "{}",
        script.head
    );
    assert!(script.body.starts_with("\"use strict\";"));
    server.shutdown().await;
}

#[tokio::test]
async fn protect_reference_closes_every_path_and_the_client_sends_credentials() {
    let dir = temp_dir();
    let server = builder()
        .web_config(web_config(&dir, false, true))
        .protect(Protect::All)
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    for path in REFERENCE_PATHS.into_iter().chain(["/nonsense"]) {
        let reply = blocking(move || raw(addr, path, "")).await;
        assert_eq!(reply.status, 401, "{path}");
    }
    let anonymous = HeartbeatClient::builder()
        .url(server.url())
        .app_id("kiosk")
        .build()
        .unwrap();
    match anonymous
        .ping(Duration::from_secs(5), ErrorPolicy::Raise)
        .await
    {
        Err(Error::Status { status: 401, .. }) => {}
        other => panic!("expected a 401, got {other:?}"),
    }
    let client = HeartbeatClient::builder()
        .url(server.url())
        .app_id("kiosk")
        .basic_auth(USER, PASSWORD)
        .build()
        .unwrap();
    assert_eq!(
        client
            .init(Duration::from_secs(5), ErrorPolicy::Raise)
            .await
            .unwrap(),
        Duration::from_secs(6)
    );
    // the URL's userinfo works the same
    let from_url = HeartbeatClient::builder()
        .url(format!(
            "http://{USER}:{}@{addr}",
            PASSWORD.replace(' ', "%20")
        ))
        .app_id("kiosk")
        .build()
        .unwrap();
    assert!(!format!("{from_url:?}").contains("battery"), "{from_url:?}");
    let apps = from_url.apps(ErrorPolicy::Raise).await.unwrap();
    assert_eq!(apps.apps.len(), 1);
    assert!(from_url.list(ErrorPolicy::Raise).await.unwrap()[0].starts_with("kiosk @ "));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_foreign_host_is_refused_for_operator_views_only() {
    let server = builder()
        .allowed_host("monitor.test")
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    for view in OPERATOR_VIEWS {
        let reply = blocking(move || raw(addr, view, "Host: attacker.test\r\n")).await;
        assert_eq!(reply.status, 421, "{view}");
        assert!(!reply.head.contains("access-control-allow-origin"));
        let reply = blocking(move || raw(addr, view, "Host: MONITOR.test:8888\r\n")).await;
        assert_eq!(reply.status, 200, "{view}");
        let local = format!("Host: {addr}\r\n");
        let reply = blocking(move || raw(addr, view, &local)).await;
        assert_eq!(reply.status, 200, "the address reached: {view}");
    }
    for path in REFERENCE_PATHS {
        let reply = blocking(move || raw(addr, path, "Host: attacker.test\r\n")).await;
        assert_eq!(reply.status, 200, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn one_flooding_host_is_refused_for_itself_while_another_registers() {
    const SHARE: usize = 20;
    let server = builder()
        .max_apps(1000)
        .max_apps_per_host(SHARE)
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    let flooder: IpAddr = "127.0.0.2".parse().unwrap();
    for i in 0..SHARE {
        let target = format!("/hb_init?60000&appid=flood-{i}");
        let reply = raw_from(flooder, addr, &target).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let reply = raw_from(flooder, addr, "/hb_init?60000&appid=one-more").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("host share full"), "{}", reply.body);
    // a beat of a known one still passes; another host's new app too
    let reply = raw_from(flooder, addr, "/hb_ping?60000&appid=flood-0").await;
    assert_eq!(reply.status, 200);
    let reply = blocking(move || raw(addr, "/hb_init?60000&appid=kiosk", "")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let metrics = blocking(move || raw(addr, "/metrics", "")).await.body;
    assert!(
        metrics.contains("heartbeat_refused_total{reason=\"host_share\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("heartbeat_refused_total{reason=\"registry_full\"} 0\n"));
    server.shutdown().await;
}

/// A client for `url` trusting `ca` (PEM), with the operator's credentials.
fn https_client(url: &str, ca: &str) -> HeartbeatClient {
    let transport = ReqwestTransport::builder()
        .add_root_certificate(ca.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    HeartbeatClient::builder_with_transport(transport)
        .url(url)
        .app_id("secure-kiosk")
        .basic_auth(USER, PASSWORD)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_users_end_to_end_and_a_renewed_certificate_without_restart() {
    let dir = temp_dir();
    let first_ca = certificate(&dir, "first");
    let server = builder()
        .web_config(web_config(&dir, true, true))
        .start()
        .await
        .unwrap();
    let url = format!("https://localhost:{}", server.local_addr().port());
    assert!(server.url().starts_with("https://"));
    let client = https_client(&url, &first_ca);
    assert_eq!(
        client
            .init(Duration::from_secs(5), ErrorPolicy::Raise)
            .await
            .unwrap(),
        Duration::from_secs(6)
    );
    assert_eq!(client.apps(ErrorPolicy::Raise).await.unwrap().apps.len(), 1);
    // plain http to the TLS port gets no reply
    let addr = server.local_addr();
    let plain = blocking(move || raw(addr, "/list", "")).await;
    assert_eq!(plain.status, 0, "{}", plain.body);

    // renewed by another CA: the first CA's clients are refused from the
    // next connection on, the new CA's accepted
    let second_ca = certificate(&dir, "second");
    server.reload_tls();
    let fresh = https_client(&url, &first_ca);
    assert!(matches!(
        fresh.ping(Duration::from_secs(5), ErrorPolicy::Raise).await,
        Err(Error::Transport { .. })
    ));
    let renewed = https_client(&url, &second_ca);
    assert_eq!(
        renewed
            .ping(Duration::from_secs(5), ErrorPolicy::Raise)
            .await
            .unwrap(),
        Duration::from_secs(6)
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// On one thread, so that the server's tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn credentials_never_appear_in_logs_debug_output_or_errors() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber(tracing::Level::TRACE));
    let dir = temp_dir();
    let server = builder()
        .web_config(web_config(&dir, false, true))
        .protect(Protect::All)
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    let secret_url = format!("http://{USER}:hunter2-secret@{addr}");
    let wrong = HeartbeatClient::builder()
        .url(&secret_url)
        .app_id("kiosk")
        .build()
        .unwrap();
    let error = wrong
        .ping(Duration::from_secs(5), ErrorPolicy::Raise)
        .await
        .unwrap_err();
    let right = HeartbeatClient::builder()
        .url(server.url())
        .app_id("kiosk")
        .basic_auth(USER, PASSWORD)
        .build()
        .unwrap();
    right
        .ping(Duration::from_secs(5), ErrorPolicy::Raise)
        .await
        .unwrap();
    let bad_url = HeartbeatClient::builder()
        .url(format!("ftp://{USER}:hunter2-secret@{addr}"))
        .build()
        .unwrap_err();
    server.shutdown().await;
    let shown = format!(
        "{}\n{error}\n{error:?}\n{bad_url}\n{bad_url:?}\n{wrong:?}\n{right:?}",
        captured.text()
    );
    assert!(shown.contains("401"), "the failure is there: {shown}");
    for secret in [
        "hunter2-secret",
        PASSWORD,
        "aHVudGVyMi1zZWNyZXQ",
        "Basic b3Bl",
    ] {
        assert!(!shown.contains(secret), "{secret:?} shown in:\n{shown}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[path = "support/prometheus.rs"]
mod prometheus;

/// Debian's Prometheus scrapes the server over https with the web config's
/// user (`basic_auth`, `tls_config.ca_file`): `up` is 1; a second job with
/// a wrong password gets `up` 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_https_with_basic_auth() {
    let dir = temp_dir();
    let ca = certificate(&dir, "prometheus");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let server = builder()
        .web_config(web_config(&dir, true, true))
        .start()
        .await
        .unwrap();
    let target = format!("localhost:{}", server.local_addr().port());
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    basic_auth:\n      username: {USER}\n      \
             password: '{password}'\n    tls_config:\n      ca_file: '{}'\n    static_configs:\n      \
             - targets: ['{target}']\n",
            ca_file.display()
        )
    };
    let jobs = job("heartbeat", PASSWORD) + &job("heartbeat-wrong", "not the password");
    let Some(prom) = prometheus::prometheus(&jobs) else {
        return;
    };
    let up = |job: &'static str, want: &'static str| {
        let prom = &prom;
        async move {
            prometheus::query_until(prom, &format!("up{{job=\"{job}\"}}"), |r| {
                r.first()
                    .and_then(|s| s["value"][1].as_str())
                    .is_some_and(|v| v == want)
            })
            .await
        }
    };
    up("heartbeat", "1").await;
    up("heartbeat-wrong", "0").await;
    let scraped = prometheus::query_until(
        &prom,
        "heartbeat_auth_failures_total{job=\"heartbeat\",reason=\"wrong\"} > 0",
        |r| !r.is_empty(),
    )
    .await;
    assert_eq!(
        scraped.len(),
        1,
        "the wrong job's failures, as the right one scraped them"
    );
    drop(prom);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

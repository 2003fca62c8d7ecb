//! Real handshakes on loopback: certificates made at run time (rcgen), a
//! tokio-rustls client, the acceptor built from a web config file.

use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use super::*;
use crate::server::web_config::WebConfig;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory of its own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hb-web-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, PEM and DER.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("web-config test CA {n}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self) -> Issued {
        self.issue(&["client.test"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The server's files in `dir` (relative names, as a config would have).
fn install(dir: &TempDir, issued: &Issued) {
    dir.write("server.crt", &issued.cert_pem);
    dir.write("server.key", &issued.key_pem);
}

fn acceptor(dir: &TempDir, extra: &str, interval: Duration) -> TlsAcceptorHandle {
    let yaml =
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}");
    WebConfig::from_yaml(&yaml, &dir.0)
        .unwrap()
        .tls_acceptor_checking_every(interval)
        .unwrap()
        .expect("TLS configured")
}

/// A client trusting `ca`, showing `identity` if any, offering `alpn`.
fn client_with(
    ca: &Ca,
    identity: Option<&Issued>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[u8],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                vec![id.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

fn client(ca: &Ca, identity: Option<&Issued>) -> Arc<ClientConfig> {
    client_with(ca, identity, rustls::DEFAULT_VERSIONS, b"http/1.1")
}

#[derive(Debug)]
struct Outcome {
    /// The certificate the server showed, if the client got the server's
    /// bytes.
    client: Result<CertificateDer<'static>, String>,
    server: Result<(), String>,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.client.is_ok() && self.server.is_ok()
    }
}

/// One connection: the server accepts through `handle` and writes
/// "hello"; the client reads it all.
async fn handshake(handle: &TlsAcceptorHandle, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = handle.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = handle.accept(tcp).await.map_err(|e| e.to_string())?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.as_deref() != Some(b"http/1.1") {
            return Err(format!("ALPN {alpn:?}"));
        }
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .cloned()
            .ok_or("no server certificate")?;
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
        if got != b"hello" {
            return Err(format!("read {got:?}"));
        }
        Ok(peer)
    }
    .await;
    let server = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server side done")
        .expect("server side did not panic");
    Outcome { client, server }
}

#[tokio::test]
async fn server_certificate_verified_by_its_ca() {
    let dir = TempDir::new();
    let ca = Ca::new();
    let leaf = ca.server(&["localhost"]);
    install(&dir, &leaf);
    let handle = acceptor(&dir, "", CHECK_INTERVAL);
    let outcome = handshake(&handle, client(&ca, None)).await;
    assert_eq!(outcome.client.as_ref().ok(), Some(&leaf.der), "{outcome:?}");
    assert!(outcome.server.is_ok(), "{outcome:?}");
}

#[tokio::test]
async fn a_client_trusting_another_ca_refuses() {
    let dir = TempDir::new();
    install(&dir, &Ca::new().server(&["localhost"]));
    let handle = acceptor(&dir, "", CHECK_INTERVAL);
    let outcome = handshake(&handle, client(&Ca::new(), None)).await;
    let error = outcome.client.expect_err("client refuses");
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn alpn_is_http11_only() {
    let dir = TempDir::new();
    let ca = Ca::new();
    install(&dir, &ca.server(&["localhost"]));
    let handle = acceptor(&dir, "", CHECK_INTERVAL);
    let h2 = client_with(&ca, None, rustls::DEFAULT_VERSIONS, b"h2");
    let outcome = handshake(&handle, h2).await;
    assert!(outcome.server.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn tls_versions_are_enforced() {
    let dir = TempDir::new();
    let ca = Ca::new();
    install(&dir, &ca.server(&["localhost"]));
    let tls12 = || client_with(&ca, None, &[&rustls::version::TLS12], b"http/1.1");
    let tls13 = || client_with(&ca, None, &[&rustls::version::TLS13], b"http/1.1");

    let default = acceptor(&dir, "", CHECK_INTERVAL);
    assert!(handshake(&default, tls12()).await.succeeded());
    assert!(handshake(&default, tls13()).await.succeeded());

    let only13 = acceptor(&dir, "  min_version: TLS13\n", CHECK_INTERVAL);
    assert!(!handshake(&only13, tls12()).await.succeeded());
    assert!(handshake(&only13, tls13()).await.succeeded());

    let only12 = acceptor(&dir, "  max_version: TLS12\n", CHECK_INTERVAL);
    assert!(handshake(&only12, tls12()).await.succeeded());
    assert!(!handshake(&only12, tls13()).await.succeeded());
}

#[tokio::test]
async fn require_and_verify_client_cert() {
    let dir = TempDir::new();
    let ca = Ca::new();
    let clients = Ca::new();
    install(&dir, &ca.server(&["localhost"]));
    dir.write("clients.pem", &clients.pem());
    let handle = acceptor(
        &dir,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.pem\n",
        CHECK_INTERVAL,
    );

    let none = handshake(&handle, client(&ca, None)).await;
    assert!(none.server.is_err() && none.client.is_err(), "{none:?}");

    let good = handshake(&handle, client(&ca, Some(&clients.client()))).await;
    assert!(good.succeeded(), "{good:?}");

    let stranger = Ca::new().client();
    let other = handshake(&handle, client(&ca, Some(&stranger))).await;
    assert!(other.server.is_err() && other.client.is_err(), "{other:?}");
}

#[tokio::test]
async fn verify_client_cert_if_given() {
    let dir = TempDir::new();
    let ca = Ca::new();
    let clients = Ca::new();
    install(&dir, &ca.server(&["localhost"]));
    dir.write("clients.pem", &clients.pem());
    let handle = acceptor(
        &dir,
        "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: clients.pem\n",
        CHECK_INTERVAL,
    );
    assert!(handshake(&handle, client(&ca, None)).await.succeeded());
    assert!(handshake(&handle, client(&ca, Some(&clients.client())))
        .await
        .succeeded());
    let stranger = Ca::new().client();
    assert!(!handshake(&handle, client(&ca, Some(&stranger)))
        .await
        .succeeded());
}

#[tokio::test]
async fn require_any_client_cert_takes_any_but_none() {
    let dir = TempDir::new();
    let ca = Ca::new();
    install(&dir, &ca.server(&["localhost"]));
    let handle = acceptor(
        &dir,
        "  client_auth_type: RequireAnyClientCert\n",
        CHECK_INTERVAL,
    );
    assert!(!handshake(&handle, client(&ca, None)).await.succeeded());
    let stranger = Ca::new().client();
    assert!(handshake(&handle, client(&ca, Some(&stranger)))
        .await
        .succeeded());

    let request = acceptor(
        &dir,
        "  client_auth_type: RequestClientCert\n",
        CHECK_INTERVAL,
    );
    assert!(handshake(&request, client(&ca, None)).await.succeeded());
    assert!(handshake(&request, client(&ca, Some(&stranger)))
        .await
        .succeeded());
}

#[tokio::test]
async fn reload_presents_the_replaced_certificate() {
    let dir = TempDir::new();
    let ca = Ca::new();
    let old = ca.server(&["localhost"]);
    install(&dir, &old);
    // an hour: the automatic check does not run during the test
    let handle = acceptor(&dir, "", Duration::from_secs(3600));
    assert_eq!(
        handshake(&handle, client(&ca, None)).await.client,
        Ok(old.der.clone())
    );

    let new = ca.server(&["localhost", "renewed.example.test"]);
    install(&dir, &new);
    assert_eq!(
        handshake(&handle, client(&ca, None)).await.client,
        Ok(old.der.clone()),
        "not re-read before the interval"
    );
    handle.reload().unwrap();
    assert_eq!(
        handshake(&handle, client(&ca, None)).await.client,
        Ok(new.der)
    );
}

#[tokio::test]
async fn changed_files_are_picked_up_by_the_next_handshake() {
    let dir = TempDir::new();
    let ca = Ca::new();
    let old = ca.server(&["localhost"]);
    install(&dir, &old);
    let handle = acceptor(&dir, "", Duration::ZERO);
    assert_eq!(
        handshake(&handle, client(&ca, None)).await.client,
        Ok(old.der.clone())
    );

    // a longer SAN list: the length changes whatever the clock's grain
    let new = ca.server(&["localhost", "renewed.example.test"]);
    install(&dir, &new);
    assert_eq!(
        handshake(&handle, client(&ca, None)).await.client,
        Ok(new.der.clone())
    );
    // unchanged files: not read again (a key that no longer matches would fail)
    assert_eq!(
        handshake(&handle, client(&ca, None)).await.client,
        Ok(new.der)
    );
}

#[tokio::test]
async fn a_half_written_certificate_keeps_the_old_one() {
    let dir = TempDir::new();
    let ca = Ca::new();
    let old = ca.server(&["localhost"]);
    install(&dir, &old);
    let handle = acceptor(&dir, "", Duration::ZERO);

    let new = ca.server(&["localhost", "renewed.example.test"]);
    let half = &new.cert_pem[..new.cert_pem.len() / 2];
    dir.write("server.crt", half);
    for _ in 0..2 {
        let outcome = handshake(&handle, client(&ca, None)).await;
        assert_eq!(outcome.client, Ok(old.der.clone()), "{outcome:?}");
    }
    let warned = handle.cert.check.lock().unwrap().warned;
    assert!(warned.is_some(), "the failure was logged");
    let error = handle.reload().unwrap_err().to_string();
    assert!(error.starts_with("cert_file "), "{error}");
    assert_eq!(
        handshake(&handle, client(&ca, None)).await.client,
        Ok(old.der.clone())
    );

    // a new certificate with the old key: refused too (key mismatch)
    dir.write("server.crt", &new.cert_pem);
    assert_eq!(
        handshake(&handle, client(&ca, None)).await.client,
        Ok(old.der.clone())
    );
    // the key written as well: taken
    dir.write("server.key", &new.key_pem);
    assert_eq!(
        handshake(&handle, client(&ca, None)).await.client,
        Ok(new.der)
    );
    assert!(handle.cert.check.lock().unwrap().warned.is_none());
}

#[test]
fn unusable_files_are_refused_when_the_acceptor_is_built() {
    let dir = TempDir::new();
    let ca = Ca::new();
    let build = |extra: &str| {
        let yaml =
            format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}");
        WebConfig::from_yaml(&yaml, &dir.0)
            .unwrap()
            .tls_acceptor()
            .map(|_| ())
            .unwrap_err()
    };

    let error = build("");
    assert!(
        matches!(
            error,
            WebConfigError::Io {
                what: "cert_file",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("cannot read cert_file "),
        "{error}"
    );

    let leaf = ca.server(&["localhost"]);
    dir.write("server.crt", "not PEM at all\n");
    dir.write("server.key", &leaf.key_pem);
    let error = build("").to_string();
    assert!(error.contains("no PEM certificate found"), "{error}");

    dir.write("server.crt", &leaf.cert_pem);
    dir.write("server.key", &leaf.cert_pem);
    let error = build("").to_string();
    assert!(error.contains("no PEM private key found"), "{error}");

    dir.write("server.key", &ca.server(&["localhost"]).key_pem);
    let error = build("").to_string();
    assert!(error.contains("cannot be used with cert_file"), "{error}");

    install(&dir, &leaf);
    dir.write(
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let error = build("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n")
        .to_string();
    assert!(error.starts_with("client_ca_file "), "{error}");
    assert!(error.contains("no usable CA certificate"), "{error}");
}

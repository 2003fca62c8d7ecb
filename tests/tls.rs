//! `https://` end to end: the whole protocol over TLS, under rustls and
//! under native TLS, and a certificate the client does not trust refused.
//!
//! Each test makes a CA and a server certificate for `localhost` with
//! `rcgen`, and puts a TLS front (tokio-rustls, ring) before the embedded
//! server: the front terminates TLS and pipes the bytes to the server, so
//! the client speaks https and the server sees plain HTTP from 127.0.0.1.
//!
//! Which backend: with the features `rustls` and `native-tls` both on,
//! reqwest (and so `ReqwestTransport::builder()`) picks native TLS. The
//! per-backend tests wrap a `reqwest::Client` built with `use_rustls_tls()`
//! or `use_native_tls()`, and each proves which one answered by the error
//! a wrong certificate gets: a `rustls::Error` in the chain, or OpenSSL's
//! "certificate verify failed".
#![cfg(all(feature = "reqwest", any(feature = "rustls", feature = "native-tls")))]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use heartbeat_sdk::server::{Server, ServerHandle};
use heartbeat_sdk::transport::ReqwestTransport;
use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient, TransportErrorKind};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, pki_types};
use tokio_rustls::TlsAcceptor;

const GOODBYE: &str = "So Long, and Thanks for All the Fish!";
const APP: &str = "over-tls";

/// A CA, and a TLS server configuration with a certificate it signed.
struct Pki {
    /// The CA's certificate, PEM: what a client must trust.
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

/// A fresh CA and a certificate signed by it for `names` (DNS names).
fn pki(names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // a name of its own: a verifier picks the issuer among its roots by name
    static CAS: AtomicUsize = AtomicUsize::new(0);
    let n = CAS.fetch_add(1, Ordering::Relaxed);
    ca.distinguished_name
        .push(DnType::CommonName, format!("heartbeat-sdk test CA {n}"));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, names[0]);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )),
        )
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// The embedded server behind a TLS front on 127.0.0.1; returns the
/// server and the front's port.
async fn tls_server(config: Arc<rustls::ServerConfig>) -> (ServerHandle, u16) {
    let server = Server::builder("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let backend = server.local_addr();
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = front.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = front.accept().await else {
                return;
            };
            tokio::spawn(pipe(acceptor.clone(), stream, backend));
        }
    });
    (server, port)
}

/// Terminate TLS on `stream` and pipe it to `backend` until either side
/// closes. A failed handshake (the client refused the certificate) ends it.
async fn pipe(acceptor: TlsAcceptor, stream: TcpStream, backend: SocketAddr) {
    let Ok(mut tls) = acceptor.accept(stream).await else {
        return;
    };
    let Ok(mut plain) = TcpStream::connect(backend).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
}

fn client(transport: ReqwestTransport, url: String) -> HeartbeatClient {
    HeartbeatClient::builder_with_transport(transport)
        .url(url)
        .app_id(APP)
        .build()
        .unwrap()
}

/// Which TLS backend a reqwest client was built with.
#[derive(Debug, Clone, Copy)]
enum Backend {
    #[cfg(feature = "rustls")]
    Rustls,
    #[cfg(feature = "native-tls")]
    Native,
}

/// A reqwest client on `backend` trusting `ca_pem`, as a transport.
fn transport_on(backend: Backend, ca_pem: &str) -> ReqwestTransport {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    let builder = match backend {
        #[cfg(feature = "rustls")]
        Backend::Rustls => builder.use_rustls_tls(),
        #[cfg(feature = "native-tls")]
        Backend::Native => builder.use_native_tls(),
    };
    ReqwestTransport::from(builder.build().unwrap())
}

/// The backend `ReqwestTransport::builder()` uses: native TLS when its
/// feature is on, else rustls.
fn builders_backend() -> Backend {
    #[cfg(feature = "native-tls")]
    return Backend::Native;
    #[cfg(not(feature = "native-tls"))]
    return Backend::Rustls;
}

/// init, ping, list and done over `client`, checked against what the
/// server behind the TLS front counted.
async fn whole_protocol(client: &HeartbeatClient, server: &ServerHandle) {
    assert_eq!(
        client
            .init(Duration::from_secs(2), ErrorPolicy::Raise)
            .await
            .unwrap(),
        Duration::from_secs(3),
        "2 s promised + 1 s tolerance"
    );
    assert_eq!(
        client
            .ping(Duration::from_secs(4), ErrorPolicy::Raise)
            .await
            .unwrap(),
        Duration::from_secs(5)
    );
    assert_eq!(
        client.list(ErrorPolicy::Raise).await.unwrap(),
        vec![format!("{APP} @ 127.0.0.1")]
    );
    let status = client.status(Some(APP), ErrorPolicy::Raise).await.unwrap();
    assert_eq!(status.state(), heartbeat_sdk::State::Ok, "{status:?}");
    assert_eq!(client.done_now(ErrorPolicy::Raise).await.unwrap(), GOODBYE);
    let counters = server
        .registry()
        .with_registry(|registry, _| registry.counters());
    assert_eq!(
        (counters.inits, counters.pings, counters.dones),
        (1, 1, 1),
        "each request reached the server once, through TLS"
    );
}

/// The whole error chain's text, each cause's own message included (an
/// `io::Error`'s `source()` skips the error it wraps, so it is asked for
/// `get_ref()` too).
fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = cause {
        text.push_str(" / ");
        text.push_str(&e.to_string());
        cause = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    text
}

/// The `rustls::Error` in `err`'s chain, if rustls refused the connection.
#[cfg(feature = "rustls")]
fn rustls_error(err: &Error) -> Option<rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        cause = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Assert `result` is a refused connection (typed: `Error::Transport`, a
/// connect failure), refused by `backend`'s certificate check, and that
/// nothing reached the server.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: heartbeat_sdk::Result<T>,
    backend: Backend,
    server: &ServerHandle,
) {
    let err = result.expect_err("an untrusted certificate must be refused");
    assert!(
        matches!(&err, Error::Transport { source, .. } if source.is_connect()),
        "a typed connect failure: {err:?}"
    );
    let text = chain(&err);
    match backend {
        #[cfg(feature = "rustls")]
        Backend::Rustls => assert!(
            matches!(
                rustls_error(&err),
                Some(rustls::Error::InvalidCertificate(_))
            ),
            "rustls refused the certificate: {text}"
        ),
        #[cfg(feature = "native-tls")]
        Backend::Native => assert!(
            text.contains("certificate verify failed"),
            "OpenSSL refused the certificate: {text}"
        ),
    }
    let counters = server
        .registry()
        .with_registry(|registry, _| registry.counters());
    assert_eq!(
        (counters.inits, counters.pings),
        (0, 0),
        "nothing reached the server"
    );
}

/// The protocol over `backend`; then, on the same backend, a client that
/// trusts another CA, and one that reaches the right certificate under a
/// name it does not carry (127.0.0.1; it names localhost only), are refused.
async fn https_on(backend: Backend) {
    let good = pki(&["localhost"]);
    let (server, port) = tls_server(good.server.clone()).await;
    let https = format!("https://localhost:{port}");

    let stranger = pki(&["localhost"]);
    let other_ca = client(transport_on(backend, &stranger.ca_pem), https.clone());
    assert_refused(
        other_ca
            .init(Duration::from_secs(2), ErrorPolicy::Raise)
            .await,
        backend,
        &server,
    );
    let wrong_name = client(
        transport_on(backend, &good.ca_pem),
        format!("https://127.0.0.1:{port}"),
    );
    assert_refused(
        wrong_name
            .init(Duration::from_secs(2), ErrorPolicy::Raise)
            .await,
        backend,
        &server,
    );

    let trusted = client(transport_on(backend, &good.ca_pem), https);
    whole_protocol(&trusted, &server).await;
    server.shutdown().await;
}

#[cfg(feature = "rustls")]
#[tokio::test]
async fn https_under_rustls_and_a_wrong_certificate_refused() {
    https_on(Backend::Rustls).await;
}

#[cfg(feature = "native-tls")]
#[tokio::test]
async fn https_under_native_tls_and_a_wrong_certificate_refused() {
    https_on(Backend::Native).await;
}

/// `ReqwestTransportBuilder::add_root_certificate`: the client trusts the
/// CA given, and only it; the backend is reqwest's pick (see the module docs).
#[tokio::test]
async fn the_builder_trusts_the_root_certificate_it_is_given() {
    let good = pki(&["localhost"]);
    let (server, port) = tls_server(good.server.clone()).await;
    let https = format!("https://localhost:{port}");
    let builder = |pem: &str| {
        ReqwestTransport::builder()
            .add_root_certificate(pem.as_bytes())
            .unwrap()
            .build()
            .unwrap()
    };

    let untrusted = client(ReqwestTransport::new().unwrap(), https.clone());
    assert_refused(
        untrusted
            .init(Duration::from_secs(2), ErrorPolicy::Raise)
            .await,
        builders_backend(),
        &server,
    );
    let stranger = pki(&["localhost"]);
    let other_ca = client(builder(&stranger.ca_pem), https.clone());
    assert_refused(
        other_ca
            .init(Duration::from_secs(2), ErrorPolicy::Raise)
            .await,
        builders_backend(),
        &server,
    );

    // two roots in one PEM: the right one among them is enough
    let both = format!("{}{}", stranger.ca_pem, good.ca_pem);
    let trusted = client(builder(&both), https);
    whole_protocol(&trusted, &server).await;
    server.shutdown().await;
}

#[test]
fn a_root_certificate_that_is_not_pem_is_a_typed_error() {
    let good = pki(&["localhost"]);
    let body: String = good
        .ca_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let broken = good.ca_pem.replacen(&body[..8], "!!not64!", 1);
    for pem in [
        &b""[..],
        b"not a certificate",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        broken.as_bytes(),
    ] {
        let err = ReqwestTransport::builder()
            .add_root_certificate(pem)
            .expect_err("refused");
        assert_eq!(err.kind(), TransportErrorKind::Other, "{err:?}");
        assert!(err.to_string().contains("invalid PEM certificate"), "{err}");
    }
    assert!(ReqwestTransport::builder()
        .add_root_certificate(good.ca_pem.as_bytes())
        .is_ok());
}

//! TLS for the embedded server from a [`TlsSettings`]: rustls on ring,
//! ALPN `http/1.1` only, the client certificate policy of
//! `client_auth_type`, and a server certificate that follows its files.
//!
//! [`TlsAcceptorHandle::accept`] looks at the metadata (modification time,
//! length, inode) of `cert_file` and `key_file` at most once per
//! [`CHECK_INTERVAL`], and re-reads both when it changed; a reload that
//! fails (a file half written, a key that does not match yet) keeps the
//! certificate in use and is logged once per state of the files.
//! [`TlsAcceptorHandle::reload`] re-reads them at once (SIGHUP). The
//! client CA file is read once, when the acceptor is built.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::{self, CryptoProvider, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{
    self, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{ClientAuth, TlsSettings, TlsVersion, WebConfigError};

/// How often, at most, the certificate files' metadata is looked at.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The TLS side of the server: one per listener, cheap to clone; call
/// [`accept`](TlsAcceptorHandle::accept) on each accepted connection
/// (under a timeout of the caller's: a client may stall the handshake).
#[derive(Clone)]
pub(crate) struct TlsAcceptorHandle {
    acceptor: TlsAcceptor,
    cert: Arc<ReloadingCert>,
}

impl fmt::Debug for TlsAcceptorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptorHandle")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptorHandle {
    /// Reads the certificate, key and CA files of `settings` and builds
    /// the acceptor; the certificate files are looked at again at most
    /// once per `check_interval`.
    pub(crate) fn new(
        settings: &TlsSettings,
        check_interval: Duration,
    ) -> Result<TlsAcceptorHandle, WebConfigError> {
        let provider = Arc::new(crypto::ring::default_provider());
        let cert = Arc::new(ReloadingCert::new(
            settings.cert_file.clone(),
            settings.key_file.clone(),
            provider.clone(),
            check_interval,
        )?);
        let versions: Vec<&'static SupportedProtocolVersion> = [
            (TlsVersion::Tls12, &rustls::version::TLS12),
            (TlsVersion::Tls13, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(version, _)| (settings.min_version..=settings.max_version).contains(version))
        .map(|(_, version)| version)
        .collect();
        let verifier = client_verifier(settings, &provider)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|error| super::invalid("tls_server_config", error.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptorHandle {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
        })
    }

    /// The TLS handshake on an accepted connection, with the certificate
    /// re-read first if its files changed (see the module's doc).
    pub(crate) async fn accept<IO>(&self, io: IO) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.cert.refresh_if_due();
        self.acceptor.accept(io).await
    }

    /// Re-reads the certificate and key now; on an error the certificate
    /// in use stays (and the error is the caller's to log).
    pub(crate) fn reload(&self) -> Result<(), WebConfigError> {
        self.cert.reload()
    }
}

/// What a file looked like: a change of any of these is a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&metadata),
        })
    }
}

/// `cert_file` and `key_file`, as they looked (`None`: one could not be
/// looked at).
type Stamp = Option<(FileStamp, FileStamp)>;

/// The server certificate in use, and the files it came from.
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    interval: Duration,
    current: RwLock<Arc<CertifiedKey>>,
    check: Mutex<CheckState>,
}

#[derive(Debug)]
struct CheckState {
    /// When the files were last looked at.
    checked: Option<Instant>,
    /// How they looked when `current` was read from them.
    loaded: Stamp,
    /// How they looked when a reload last failed and was logged.
    warned: Option<Stamp>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn new(
        cert_file: PathBuf,
        key_file: PathBuf,
        provider: Arc<CryptoProvider>,
        interval: Duration,
    ) -> Result<ReloadingCert, WebConfigError> {
        let (key, loaded) = load_certified_key(&cert_file, &key_file, &provider)?;
        Ok(ReloadingCert {
            cert_file,
            key_file,
            provider,
            interval,
            current: RwLock::new(key),
            check: Mutex::new(CheckState {
                checked: Some(Instant::now()),
                loaded,
                warned: None,
            }),
        })
    }

    fn stamp(&self) -> Stamp {
        Some((
            FileStamp::of(&self.cert_file)?,
            FileStamp::of(&self.key_file)?,
        ))
    }

    fn install(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// Re-reads the files if the interval passed and they changed; a
    /// check in progress elsewhere is not waited for.
    fn refresh_if_due(&self) {
        let mut state = match self.check.try_lock() {
            Ok(state) => state,
            Err(TryLockError::WouldBlock) => return,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        let now = Instant::now();
        if state
            .checked
            .is_some_and(|at| now.saturating_duration_since(at) < self.interval)
        {
            return;
        }
        state.checked = Some(now);
        let stamp = self.stamp();
        if stamp.is_some() && stamp == state.loaded {
            return;
        }
        match load_certified_key(&self.cert_file, &self.key_file, &self.provider) {
            Ok((key, loaded)) => {
                self.install(key);
                state.loaded = loaded;
                state.warned = None;
                tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                if state.warned != Some(stamp) {
                    state.warned = Some(stamp);
                    tracing::warn!(%error, "TLS certificate files changed but cannot be used: keeping the previous certificate (not logged again until they change)");
                }
            }
        }
    }

    fn reload(&self) -> Result<(), WebConfigError> {
        let (key, loaded) = load_certified_key(&self.cert_file, &self.key_file, &self.provider)?;
        self.install(key);
        let mut state = self.check.lock().unwrap_or_else(PoisonError::into_inner);
        state.loaded = loaded;
        state.warned = None;
        Ok(())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The certificate chain and key of the files, checked to match, with how
/// the files looked just before they were read.
fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, Stamp), WebConfigError> {
    let stamp = FileStamp::of(cert_file).zip(FileStamp::of(key_file));
    let chain = read_certificates("cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| match error {
        pem::Error::NoItemsFound => WebConfigError::Certificate {
            what: "key_file",
            path: key_file.to_owned(),
            reason: "no PEM private key found".to_owned(),
        },
        error => pem_error("key_file", key_file, error),
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|error| {
        WebConfigError::Certificate {
            what: "key_file",
            path: key_file.to_owned(),
            reason: format!("cannot be used with cert_file: {error}"),
        }
    })?;
    Ok((Arc::new(certified), stamp))
}

/// Every certificate of a PEM file, at least one.
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(what, path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(what, path, error))?;
    if certificates.is_empty() {
        return Err(WebConfigError::Certificate {
            what,
            path: path.to_owned(),
            reason: "no PEM certificate found".to_owned(),
        });
    }
    Ok(certificates)
}

fn pem_error(what: &'static str, path: &Path, error: pem::Error) -> WebConfigError {
    match error {
        pem::Error::Io(source) => WebConfigError::Io {
            what,
            path: path.to_owned(),
            source,
        },
        error => WebConfigError::Certificate {
            what,
            path: path.to_owned(),
            reason: format!("invalid PEM: {error}"),
        },
    }
}

/// The client CAs of `client_ca_file`.
fn client_roots(path: &Path) -> Result<RootCertStore, WebConfigError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) =
        roots.add_parsable_certificates(read_certificates("client_ca_file", path)?);
    if added == 0 {
        return Err(WebConfigError::Certificate {
            what: "client_ca_file",
            path: path.to_owned(),
            reason: "no usable CA certificate".to_owned(),
        });
    }
    Ok(roots)
}

fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, WebConfigError> {
    let roots = settings
        .client_ca_file
        .as_deref()
        .map(|path| client_roots(path).map(|roots| (path, roots)))
        .transpose()?;
    let verifying = |roots: Option<(&Path, RootCertStore)>, optional: bool| {
        // parse_tls makes sure the verifying kinds have a client CA file
        let Some((path, roots)) = roots else {
            return Err(super::invalid(
                "tls_server_config",
                format!(
                    "client_auth_type {} needs client_ca_file",
                    settings.client_auth
                ),
            ));
        };
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder
            .build()
            .map_err(|error| WebConfigError::Certificate {
                what: "client_ca_file",
                path: path.to_owned(),
                reason: error.to_string(),
            })
    };
    let any =
        |mandatory: bool, roots: Option<(&Path, RootCertStore)>| -> Arc<dyn ClientCertVerifier> {
            Arc::new(AnyClientCert {
                mandatory,
                hints: roots.map(|(_, roots)| roots.subjects()).unwrap_or_default(),
                algorithms: provider.signature_verification_algorithms,
            })
        };
    Ok(match settings.client_auth {
        ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert => any(false, roots),
        ClientAuth::RequireAnyClientCert => any(true, roots),
        ClientAuth::VerifyClientCertIfGiven => verifying(roots, true)?,
        ClientAuth::RequireAndVerifyClientCert => verifying(roots, false)?,
    })
}

/// `RequestClientCert` and `RequireAnyClientCert`: a client certificate is
/// asked for and taken as it is (the client still proves it holds its
/// key); the CAs of `client_ca_file`, if any, are only hints.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;

//! The Prometheus exporter-toolkit web configuration file (feature
//! `web-config`; `--web.config.file` of Prometheus's exporters): TLS for the
//! embedded server and HTTP basic authentication, in the same YAML format,
//! so that one file serves both.
//!
//! [`WebConfig::load`] reads and checks the file: its keys, the TLS
//! settings' consistency, every bcrypt hash. The certificate files are read
//! when the TLS acceptor is built (and again whenever they change on disk).
//!
//! What is implemented, of exporter-toolkit's format:
//!
//! - `tls_server_config`: `cert_file`, `key_file` (both or neither),
//!   `client_auth_type`, `client_ca_file`, `min_version`, `max_version`
//!   (`TLS12`, `TLS13`; rustls has no TLS 1.0 or 1.1). Relative paths are
//!   taken from the config file's directory, as exporter-toolkit does.
//! - `http_server_config`: `headers` (the five exporter-toolkit allows, with
//!   its value checks); `http2` is accepted and has no effect (the server
//!   speaks HTTP/1.1 only).
//! - `basic_auth_users`: user name → bcrypt hash.
//!
//! Its other keys (`cert`, `key`, `client_ca` inline, `cipher_suites`,
//! `curve_preferences`, `prefer_server_cipher_suites`,
//! `client_allowed_sans`, `rate_limit`) are refused with "X is not
//! supported"; any other key is refused as unknown. An empty file means no
//! TLS and no authentication, as in exporter-toolkit.
mod basic_auth;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use serde::de::IgnoredAny;
use serde::Deserialize;

pub(crate) use basic_auth::{AuthCheck, Authenticator, Users};
pub(crate) use tls::TlsAcceptorHandle;

/// A checked web configuration file: TLS settings (if any), basic
/// authentication users (if any), extra response headers.
///
/// ```
/// use std::path::Path;
/// use heartbeat_sdk::server::{ClientAuth, WebConfig};
///
/// let yaml = "
/// tls_server_config:
///   cert_file: server.crt
///   key_file: server.key
/// basic_auth_users:
///   alice: $2b$04$Xq4EG9bsYnqJ6v6nIukWMORmbBd/jpV6BK/9lMTTSj4.7wgyizQR6
/// ";
/// let config = WebConfig::from_yaml(yaml, Path::new("/etc/heartbeat"))?;
/// let tls = config.tls().expect("TLS is configured");
/// assert_eq!(tls.cert_file, Path::new("/etc/heartbeat/server.crt"));
/// assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
/// assert!(config.has_users());
/// // the hash is never shown
/// assert!(!format!("{config:?}").contains("$2b$"));
/// # Ok::<(), heartbeat_sdk::server::WebConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    tls: Option<TlsSettings>,
    users: Users,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The `tls_server_config` of a [`WebConfig`], paths resolved against the
/// config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSettings {
    /// The server's certificate chain, PEM (`cert_file`), leaf first.
    pub cert_file: PathBuf,
    /// The server's private key, PEM (`key_file`): PKCS#8, PKCS#1 or SEC1.
    pub key_file: PathBuf,
    /// Whether clients must show a certificate, and whether it is verified
    /// (`client_auth_type`).
    pub client_auth: ClientAuth,
    /// The CAs client certificates are verified against, PEM
    /// (`client_ca_file`); read once, when the TLS acceptor is built.
    pub client_ca_file: Option<PathBuf>,
    /// The oldest TLS version accepted (`min_version`, default TLS 1.2).
    pub min_version: TlsVersion,
    /// The newest TLS version accepted (`max_version`, default TLS 1.3).
    pub max_version: TlsVersion,
}

/// `client_auth_type`: Go's `tls.ClientAuthType`, whose names the file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for (the default).
    #[default]
    NoClientCert,
    /// A client certificate is asked for, not required, and not verified.
    RequestClientCert,
    /// A client certificate is required, and not verified
    /// (`RequireClientCert` is accepted too, as in exporter-toolkit).
    RequireAnyClientCert,
    /// A client certificate is optional; one that is shown must chain to
    /// `client_ca_file`.
    VerifyClientCertIfGiven,
    /// A client certificate is required and must chain to `client_ca_file`:
    /// the only setting that authenticates clients.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const ALL: [ClientAuth; 5] = [
        ClientAuth::NoClientCert,
        ClientAuth::RequestClientCert,
        ClientAuth::RequireAnyClientCert,
        ClientAuth::VerifyClientCertIfGiven,
        ClientAuth::RequireAndVerifyClientCert,
    ];

    /// The name the file uses for this setting.
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::NoClientCert => "NoClientCert",
            ClientAuth::RequestClientCert => "RequestClientCert",
            ClientAuth::RequireAnyClientCert => "RequireAnyClientCert",
            ClientAuth::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            ClientAuth::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        }
    }

    /// Whether a certificate the client shows is verified against
    /// `client_ca_file` (which is then required).
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }

    fn from_name(name: &str) -> Option<ClientAuth> {
        if name == "RequireClientCert" {
            return Some(ClientAuth::RequireAnyClientCert);
        }
        ClientAuth::ALL.into_iter().find(|auth| auth.name() == name)
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A TLS protocol version (`min_version`, `max_version`); rustls
/// implements 1.2 and 1.3 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 (`TLS12`).
    Tls12,
    /// TLS 1.3 (`TLS13`).
    Tls13,
}

impl TlsVersion {
    /// The name the file uses for this version.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        }
    }

    fn parse(setting: &str, name: &str) -> Result<TlsVersion, WebConfigError> {
        match name {
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            "TLS10" | "TLS11" => Err(invalid(
                setting,
                format!("{name} is not supported by rustls (TLS12 and TLS13 are)"),
            )),
            _ => Err(invalid(
                setting,
                format!("unknown TLS version {name:?} (expected TLS12 or TLS13)"),
            )),
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a web configuration file, or a file it names, cannot be used. Its
/// `Display` is one line, meant to follow the file's name
/// (`serve: --web-config FILE: <reason>`), and never shows a password hash.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebConfigError {
    /// A file could not be read: the config file, a certificate, key or CA
    /// file (`what` says which).
    #[error("cannot read {what} {}: {source}", path.display())]
    Io {
        /// `"web config file"`, `"cert_file"`, `"key_file"` or `"client_ca_file"`.
        what: &'static str,
        /// The file, as resolved.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The file is not YAML, or not of the expected shape (an unknown key,
    /// a list where a map belongs...).
    #[error("invalid YAML: {message}")]
    Yaml {
        /// The line of the problem (1-based), when the parser says.
        line: Option<usize>,
        /// The parser's message, on one line.
        message: String,
    },
    /// A setting has a value that is refused, or settings that contradict
    /// each other.
    #[error("{setting}: {reason}")]
    Invalid {
        /// Where: `tls_server_config.min_version`, `basic_auth_users`...
        setting: String,
        /// Why.
        reason: String,
    },
    /// A key of exporter-toolkit's format that this server does not
    /// implement.
    #[error("{setting} is not supported{hint}")]
    Unsupported {
        /// The key, with its section: `tls_server_config.cipher_suites`.
        setting: &'static str,
        /// What to do instead, if anything (starts with `; ` when set).
        hint: &'static str,
    },
    /// A certificate, key or CA file was read but cannot be used (no PEM
    /// block of the right kind, a key that does not match the certificate...).
    #[error("{what} {}: {reason}", path.display())]
    Certificate {
        /// `"cert_file"`, `"key_file"` or `"client_ca_file"`.
        what: &'static str,
        /// The file, as resolved.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn invalid(setting: &str, reason: impl Into<String>) -> WebConfigError {
    WebConfigError::Invalid {
        setting: setting.to_owned(),
        reason: reason.into(),
    }
}

/// The file as written: every key exporter-toolkit knows, so that the ones
/// not implemented here get their own message.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cert: Option<IgnoredAny>,
    key: Option<IgnoredAny>,
    client_ca: Option<IgnoredAny>,
    cipher_suites: Option<IgnoredAny>,
    curve_preferences: Option<IgnoredAny>,
    prefer_server_cipher_suites: Option<IgnoredAny>,
    client_allowed_sans: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[allow(dead_code)] // accepted, no effect: HTTP/1.1 only
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The response headers `http_server_config.headers` may set, with the
/// values allowed (none listed: any), as exporter-toolkit has them.
const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl WebConfig {
    /// Reads and checks the file at `path`; relative paths in it are taken
    /// from `path`'s directory. The certificate files are not read yet
    /// (building the TLS acceptor does).
    pub fn load(path: impl AsRef<Path>) -> Result<WebConfig, WebConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Io {
            what: "web config file",
            path: path.to_owned(),
            source,
        })?;
        WebConfig::from_yaml(&text, path.parent().unwrap_or(Path::new("")))
    }

    /// Checks the file's text; relative paths in it are taken from
    /// `base_dir`.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<WebConfig, WebConfigError> {
        // an empty file (or only comments) is a null document: no settings
        let raw: Option<RawConfig> =
            yaml_serde::from_str(text).map_err(|error| WebConfigError::Yaml {
                line: error.location().map(|at| at.line()),
                message: error.to_string().replace(['\n', '\r'], " "),
            })?;
        let raw = raw.unwrap_or_default();
        if raw.rate_limit.is_some() {
            return Err(WebConfigError::Unsupported {
                setting: "rate_limit",
                hint: "",
            });
        }
        let tls = match raw.tls_server_config {
            Some(tls) => parse_tls(tls, base_dir)?,
            None => None,
        };
        let headers = match raw.http_server_config.and_then(|http| http.headers) {
            Some(headers) => parse_headers(headers)?,
            None => Vec::new(),
        };
        let users = Users::parse(raw.basic_auth_users.unwrap_or_default())?;
        Ok(WebConfig {
            tls,
            users,
            headers,
        })
    }

    /// The TLS settings, `None` when the file asks for plain HTTP.
    pub fn tls(&self) -> Option<&TlsSettings> {
        self.tls.as_ref()
    }

    /// Whether the file lists users: every request must then carry
    /// `Authorization: Basic` with one of them.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// The headers to add to every response (`http_server_config.headers`),
    /// those with a blank value left out.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The TLS acceptor for the file's TLS settings (`None`: plain HTTP),
    /// the certificate, key and CA files read now; see
    /// [`TlsAcceptorHandle`].
    pub(crate) fn tls_acceptor(&self) -> Result<Option<TlsAcceptorHandle>, WebConfigError> {
        self.tls_acceptor_checking_every(tls::CHECK_INTERVAL)
    }

    /// [`WebConfig::tls_acceptor`], looking at the certificate files'
    /// metadata at most once per `interval` (tests: zero).
    pub(crate) fn tls_acceptor_checking_every(
        &self,
        interval: Duration,
    ) -> Result<Option<TlsAcceptorHandle>, WebConfigError> {
        self.tls
            .as_ref()
            .map(|settings| TlsAcceptorHandle::new(settings, interval))
            .transpose()
    }

    /// The basic authentication of the file's users, `None` when it lists
    /// none (every request is let in).
    pub(crate) fn authenticator(&self) -> Option<Authenticator> {
        (!self.users.is_empty()).then(|| Authenticator::new(&self.users))
    }
}

/// A path setting: unset when absent or empty (as in Go), else resolved
/// against `base_dir`.
fn path_setting(value: Option<String>, base_dir: &Path) -> Option<PathBuf> {
    value
        .filter(|value| !value.is_empty())
        .map(|value| base_dir.join(value))
}

fn parse_tls(raw: RawTls, base_dir: &Path) -> Result<Option<TlsSettings>, WebConfigError> {
    let unsupported = [
        (
            raw.cert.is_some(),
            "tls_server_config.cert",
            "; use cert_file",
        ),
        (raw.key.is_some(), "tls_server_config.key", "; use key_file"),
        (
            raw.client_ca.is_some(),
            "tls_server_config.client_ca",
            "; use client_ca_file",
        ),
        (
            raw.cipher_suites.is_some(),
            "tls_server_config.cipher_suites",
            "; rustls's defaults are used",
        ),
        (
            raw.curve_preferences.is_some(),
            "tls_server_config.curve_preferences",
            "; rustls's defaults are used",
        ),
        (
            raw.prefer_server_cipher_suites.is_some(),
            "tls_server_config.prefer_server_cipher_suites",
            "",
        ),
        (
            raw.client_allowed_sans.is_some(),
            "tls_server_config.client_allowed_sans",
            "",
        ),
    ];
    if let Some((_, setting, hint)) = unsupported.into_iter().find(|(set, _, _)| *set) {
        return Err(WebConfigError::Unsupported { setting, hint });
    }
    let cert_file = path_setting(raw.cert_file, base_dir);
    let key_file = path_setting(raw.key_file, base_dir);
    let client_ca_file = path_setting(raw.client_ca_file, base_dir);
    let client_auth = match raw.client_auth_type.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(name) => Some(ClientAuth::from_name(name).ok_or_else(|| {
            let names: Vec<_> = ClientAuth::ALL.iter().map(|auth| auth.name()).collect();
            invalid(
                "tls_server_config.client_auth_type",
                format!("unknown value {name:?} (expected {})", names.join(", ")),
            )
        })?),
    };
    let version = |setting: &str, value: Option<String>, default: TlsVersion| {
        value
            .filter(|value| !value.is_empty())
            .map_or(Ok(default), |name| TlsVersion::parse(setting, &name))
    };
    let min_version = version(
        "tls_server_config.min_version",
        raw.min_version,
        TlsVersion::Tls12,
    )?;
    let max_version = version(
        "tls_server_config.max_version",
        raw.max_version,
        TlsVersion::Tls13,
    )?;
    let (cert_file, key_file) = match (cert_file, key_file) {
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => {
            return Err(invalid(
                "tls_server_config",
                "cert_file is set without key_file",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls_server_config",
                "key_file is set without cert_file",
            ))
        }
        (None, None) => {
            if client_auth.is_some() || client_ca_file.is_some() {
                return Err(invalid(
                    "tls_server_config",
                    "client_auth_type and client_ca_file need cert_file and key_file",
                ));
            }
            // a section with nothing set (or only versions): plain HTTP
            return Ok(None);
        }
    };
    let client_auth = client_auth.unwrap_or_default();
    if client_auth.verifies() && client_ca_file.is_none() {
        return Err(invalid(
            "tls_server_config",
            format!("client_auth_type {client_auth} needs client_ca_file"),
        ));
    }
    if client_auth == ClientAuth::NoClientCert && client_ca_file.is_some() {
        return Err(invalid(
            "tls_server_config",
            "client_ca_file is set but client_auth_type is NoClientCert \
             (RequireAndVerifyClientCert checks client certificates)",
        ));
    }
    if min_version > max_version {
        return Err(invalid(
            "tls_server_config",
            format!("min_version {min_version} is above max_version {max_version}"),
        ));
    }
    Ok(Some(TlsSettings {
        cert_file,
        key_file,
        client_auth,
        client_ca_file,
        min_version,
        max_version,
    }))
}

fn parse_headers(
    raw: BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, WebConfigError> {
    const SETTING: &str = "http_server_config.headers";
    let mut headers = Vec::new();
    for (name, value) in raw {
        let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(known, _)| *known == name) else {
            let known: Vec<_> = EXTRA_HEADERS.iter().map(|(known, _)| *known).collect();
            return Err(invalid(
                SETTING,
                format!(
                    "header {name:?} cannot be configured (only {})",
                    known.join(", ")
                ),
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(invalid(
                SETTING,
                format!(
                    "{name}: {value:?} is not allowed (expected {})",
                    allowed.join(" or ")
                ),
            ));
        }
        if value.is_empty() {
            continue;
        }
        let header_value = HeaderValue::from_str(&value)
            .map_err(|_| invalid(SETTING, format!("{name}: {value:?} is not a header value")))?;
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(SETTING, format!("{name:?} is not a header name")))?;
        headers.push((header_name, header_value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests;

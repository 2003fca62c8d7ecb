//! From the global options to [`Settings`] and a [`HeartbeatClient`].

use std::time::Duration;

use heartbeat_sdk::transport::DEFAULT_CONNECT_TIMEOUT;
use heartbeat_sdk::{Error, HeartbeatClient, Settings, TransportError};

use crate::args::{Global, TransportKind};

/// The settings: `--url` and `--app-id` (which clap already fills from
/// `HB_URL` and `APP_ID`) over the library's environment rules
/// (`HB_HOST`, `HB_PORT`, defaults).
pub fn settings(global: &Global) -> Result<Settings, Error> {
    Settings::from_vars(|name| match name {
        "HB_URL" if global.url.is_some() => global.url.clone(),
        "APP_ID" if global.app_id.is_some() => global.app_id.clone(),
        _ => std::env::var(name).ok(),
    })
}

/// A client over the chosen transport, with `--timeout` as the total
/// per-request time (and as the connect timeout when shorter than 2 s).
pub fn client(global: &Global) -> Result<HeartbeatClient, Error> {
    build(global, settings(global)?)
}

/// [`client`] for the monitoring queries (`list`, `status`, `check`), which
/// send no app id of their own: `--app-id` / `APP_ID` are not read, so an
/// empty `APP_ID` in a monitoring agent's environment cannot turn a check
/// into a false CRITICAL.
pub fn query_client(global: &Global) -> Result<HeartbeatClient, Error> {
    let settings = Settings::from_vars(|name| match name {
        "HB_URL" if global.url.is_some() => global.url.clone(),
        "APP_ID" => None,
        _ => std::env::var(name).ok(),
    })?;
    build(global, settings)
}

fn build(global: &Global, settings: Settings) -> Result<HeartbeatClient, Error> {
    let total = Duration::from_millis(global.timeout);
    let connect = total.min(DEFAULT_CONNECT_TIMEOUT);
    // a transport that cannot be built (its TLS backend, say) is a local
    // failure, not an unreachable server: exit::CANNOT_START
    let built = |source: TransportError| Error::Build {
        reason: "cannot set up the HTTP transport".to_owned(),
        source: Some(Box::new(source)),
    };
    let ca = global.ca_file.as_deref().map(read_ca_file).transpose()?;
    let builder = match global.transport {
        TransportKind::Reqwest => {
            let mut transport = heartbeat_sdk::transport::ReqwestTransport::builder()
                .connect_timeout(connect)
                .timeout(total);
            if let Some(pem) = &ca {
                transport = with_ca(transport, pem)?;
            }
            HeartbeatClient::builder_with_transport(transport.build().map_err(built)?)
        }
        #[cfg(feature = "surf")]
        TransportKind::Surf => {
            if ca.is_some() {
                return Err(Error::Config {
                    reason: "--ca-file needs --transport reqwest (surf uses curl's CA store)"
                        .to_owned(),
                });
            }
            HeartbeatClient::builder_with_transport(
                heartbeat_sdk::transport::SurfTransport::builder()
                    .connect_timeout(connect)
                    .timeout(total)
                    .build()
                    .map_err(built)?,
            )
        }
    };
    let mut builder = builder.settings(settings).request_timeout(total);
    if let Some(user) = &global.user {
        let Ok(password) = std::env::var("HB_PASSWORD") else {
            return Err(Error::Config {
                reason: "--user / HB_USER needs the password in HB_PASSWORD".to_owned(),
            });
        };
        builder = builder.basic_auth(user.clone(), password);
    }
    builder.build()
}

/// `transport` trusting the certificates of `pem` (`--ca-file`).
#[cfg(any(feature = "rustls", feature = "native-tls"))]
fn with_ca(
    transport: heartbeat_sdk::transport::ReqwestTransportBuilder,
    pem: &[u8],
) -> Result<heartbeat_sdk::transport::ReqwestTransportBuilder, Error> {
    transport
        .add_root_certificate(pem)
        .map_err(|source| Error::Build {
            reason: "--ca-file: not a PEM certificate".to_owned(),
            source: Some(Box::new(source)),
        })
}

/// Without a TLS backend there is no https:// to trust a CA for.
#[cfg(not(any(feature = "rustls", feature = "native-tls")))]
fn with_ca(
    _transport: heartbeat_sdk::transport::ReqwestTransportBuilder,
    _pem: &[u8],
) -> Result<heartbeat_sdk::transport::ReqwestTransportBuilder, Error> {
    Err(Error::Config {
        reason: "--ca-file needs a TLS backend (build with feature rustls or native-tls)"
            .to_owned(),
    })
}

/// The PEM text of `--ca-file`, at most 1 MiB.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    const MAX_CA_FILE: u64 = 1 << 20;
    let unusable = |reason: String| Error::Config {
        reason: format!(
            "--ca-file {}: {reason}",
            heartbeat_sdk::protocol::printable(&path.display().to_string())
        ),
    };
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CA_FILE + 1).read_to_end(&mut pem))
        .map_err(|e| unusable(e.to_string()))?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(unusable(format!("larger than {MAX_CA_FILE} bytes")));
    }
    Ok(pem)
}

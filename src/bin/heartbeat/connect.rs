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
    let builder = match global.transport {
        TransportKind::Reqwest => HeartbeatClient::builder_with_transport(
            heartbeat_sdk::transport::ReqwestTransport::builder()
                .connect_timeout(connect)
                .timeout(total)
                .build()
                .map_err(built)?,
        ),
        #[cfg(feature = "surf")]
        TransportKind::Surf => HeartbeatClient::builder_with_transport(
            heartbeat_sdk::transport::SurfTransport::builder()
                .connect_timeout(connect)
                .timeout(total)
                .build()
                .map_err(built)?,
        ),
    };
    builder.settings(settings).request_timeout(total).build()
}

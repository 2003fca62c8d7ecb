//! `serve`: the embedded heartbeat server as a program, a drop-in for the
//! reference server.

use heartbeat_sdk::server::Server;
use heartbeat_sdk::{Error, Settings};

use crate::args::{Global, ServeArgs};
use crate::{exit, output, signals};

/// Listen on `--bind`, else on the address of `--url` / `HB_URL`, else on
/// `HB_HOST`:`HB_PORT` (default `127.0.0.1:8888`); print
/// `listening on http://ADDR` on stdout; log every construction, update,
/// destruction and expiry (tracing, info); stop gracefully on Ctrl+C or
/// SIGTERM and return 0. `APP_ID` / `--app-id` play no part. A stdout or
/// stderr that is closed or full does not stop it: the address line and the
/// logs are then dropped, and the server serves on.
pub async fn run(global: &Global, args: &ServeArgs) -> u8 {
    let server = match args.bind {
        Some(addr) => Ok(Server::bind(addr)),
        None => Settings::url_from_vars(|name| match name {
            "HB_URL" if global.url.is_some() => global.url.clone(),
            _ => std::env::var(name).ok(),
        })
        .and_then(|url| Server::from_url(&url))
        .map_err(|error| match error {
            Error::InvalidUrl { url, reason } => Error::InvalidUrl {
                url,
                reason: format!("{reason}: use --bind"),
            },
            error => error,
        }),
    };
    let mut server = match server {
        Ok(server) => server,
        Err(error) => return exit::report("serve", &error),
    };
    if let Some(max_apps) = args.max_apps {
        server = server.max_apps(usize::try_from(max_apps).unwrap_or(usize::MAX));
    }
    let stop = match signals::interrupt_or_terminate() {
        Ok(stop) => stop,
        Err(error) => {
            eprintln!("heartbeat serve: cannot install signal handlers: {error}");
            return exit::UNREACHABLE;
        }
    };
    let handle = match server.start().await {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("heartbeat serve: cannot listen: {error}");
            return exit::UNREACHABLE;
        }
    };
    // best effort: a closed or full stdout (`serve | head -1`) or stderr
    // does not stop the server; it serves on until Ctrl+C or SIGTERM
    if let Err(output::Unwritten::Failed(error)) =
        output::stdout(&format!("listening on {}\n", handle.url()))
    {
        tracing::warn!("cannot write the address to stdout: {error}");
    }
    stop.await;
    tracing::info!("signal received: shutting down");
    handle.shutdown().await;
    exit::OK
}

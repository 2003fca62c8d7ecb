//! `demo`: the Python client's demo session (`heartbeat_sdk::demo`).

use heartbeat_sdk::demo::{run as run_demo, DemoOptions};
use heartbeat_sdk::server::{Server, ServerHandle};
use heartbeat_sdk::settings::names_a_server;
use heartbeat_sdk::Error;

use crate::args::{DemoArgs, Global};
use crate::{connect, exit, output, signals};

/// Run the demo session until Ctrl+C, SIGTERM or `--beats`, then print the
/// report. With no server configured (no `--url`, `HB_URL`, `HB_HOST` or
/// `HB_PORT`) it first starts the embedded server on a free loopback port.
/// A stdout that cannot be written ends the demo (see [`output`]): quietly
/// with 0 when the reader went away, else with [`exit::CANNOT_WRITE`].
pub async fn run(global: &Global, args: &DemoArgs) -> u8 {
    let stop = match signals::stop_signal("demo") {
        Ok(stop) => stop,
        Err(code) => return code,
    };
    let server = if server_configured(global) {
        None
    } else {
        match Server::builder(([127, 0, 0, 1], 0).into()).start().await {
            Ok(server) => Some(server),
            Err(error) => {
                output::error_line(&format!(
                    "heartbeat demo: cannot start the embedded server: {error}"
                ));
                return exit::CANNOT_LISTEN;
            }
        }
    };
    let announced = match &server {
        Some(server) => output::stdout(&format!(
            "no server configured: started the embedded heartbeat server at {}\n",
            server.url()
        )),
        None => Ok(()),
    };
    let code = match announced {
        Ok(()) => match session(global, args, server.as_ref(), stop).await {
            Ok(code) => code,
            Err(error) => exit::report("demo", &error),
        },
        Err(unwritten) => unwritten.exit_code("demo", exit::OK, exit::CANNOT_WRITE),
    };
    if let Some(server) = server {
        server.shutdown().await;
    }
    code
}

/// The session; `Ok` holds the exit code (0, or the one for a stdout that
/// cannot be written).
async fn session(
    global: &Global,
    args: &DemoArgs,
    server: Option<&ServerHandle>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<u8, Error> {
    let client = match server {
        Some(server) => connect::client(&Global {
            url: Some(server.url()),
            ..global.clone()
        })?,
        None => connect::client(global)?,
    };
    let banner = format!(
        "APP_ID: {}  HB_URL: {}  (Ctrl+C to stop)\n",
        client.app_id(),
        client.url()
    );
    if let Err(unwritten) = output::stdout(&banner) {
        return Ok(unwritten.exit_code("demo", exit::OK, exit::CANNOT_WRITE));
    }
    let options = DemoOptions {
        max_beats: args.beats,
        ..DemoOptions::default()
    };
    let report = run_demo(&client, &options, stop).await?;
    Ok(output::print(
        "demo",
        &format!("{report}\n"),
        exit::OK,
        exit::CANNOT_WRITE,
    ))
}

/// Whether the user named a server: `--url`/`HB_URL`, `HB_HOST` or `HB_PORT`
/// ([`names_a_server`], with `--url` standing for `HB_URL`).
fn server_configured(global: &Global) -> bool {
    names_a_server(|name| match name {
        "HB_URL" => global.url.clone(),
        _ => std::env::var(name).ok(),
    })
}

//! `demo`: the Python client's demo session (`heartbeat_sdk::demo`).

use heartbeat_sdk::demo::{run as run_demo, stop_signal, DemoOptions};
use heartbeat_sdk::server::{Server, ServerHandle};
use heartbeat_sdk::settings::names_a_server;
use heartbeat_sdk::Error;

use crate::args::{DemoArgs, Global};
use crate::{connect, exit};

/// Run the demo session until Ctrl+C, SIGTERM or `--beats`, then print the
/// report. With no server configured (no `--url`, `HB_URL`, `HB_HOST` or
/// `HB_PORT`) it first starts the embedded server on a free loopback port.
pub async fn run(global: &Global, args: &DemoArgs) -> u8 {
    let stop = match stop_signal() {
        Ok(stop) => stop,
        Err(error) => {
            eprintln!("heartbeat demo: cannot install signal handlers: {error}");
            return exit::UNREACHABLE;
        }
    };
    let server = if server_configured(global) {
        None
    } else {
        match Server::bind(([127, 0, 0, 1], 0).into()).start().await {
            Ok(server) => {
                println!(
                    "no server configured: started the embedded heartbeat server at {}",
                    server.url()
                );
                Some(server)
            }
            Err(error) => {
                eprintln!("heartbeat demo: cannot start the embedded server: {error}");
                return exit::UNREACHABLE;
            }
        }
    };
    let code = match session(global, args, server.as_ref(), stop).await {
        Ok(()) => exit::OK,
        Err(error) => exit::report("demo", &error),
    };
    if let Some(server) = server {
        server.shutdown().await;
    }
    code
}

async fn session(
    global: &Global,
    args: &DemoArgs,
    server: Option<&ServerHandle>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let client = match server {
        Some(server) => connect::client(&Global {
            url: Some(server.url()),
            ..global.clone()
        })?,
        None => connect::client(global)?,
    };
    println!(
        "APP_ID: {}  HB_URL: {}  (Ctrl+C to stop)",
        client.app_id(),
        client.url()
    );
    let options = DemoOptions {
        max_beats: args.beats,
        ..DemoOptions::default()
    };
    let report = run_demo(&client, &options, stop).await?;
    println!("{report}");
    Ok(())
}

/// Whether the user named a server: `--url`/`HB_URL`, `HB_HOST` or `HB_PORT`
/// ([`names_a_server`], with `--url` standing for `HB_URL`).
fn server_configured(global: &Global) -> bool {
    names_a_server(|name| match name {
        "HB_URL" => global.url.clone(),
        _ => std::env::var(name).ok(),
    })
}

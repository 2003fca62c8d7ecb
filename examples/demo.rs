//! The Python client's command-line demo, in Rust.
//!
//! Random promises of 100–2000 ms, random sleeps of up to seven times the
//! promise, every beat logged; Ctrl+C prints the list and status, sends
//! `hb_done`, and prints them again.
//!
//! With no server named (`HB_URL`, `HB_HOST` and `HB_PORT` all unset, as for
//! `heartbeat demo`) it starts the embedded server on a free loopback port
//! first, so one command runs the whole thing on a fresh machine:
//!
//! ```sh
//! cargo run --example demo --features server
//! HB_URL=http://127.0.0.1:8888 cargo run --example demo --features server  # against your server
//! HB_DEMO_BEATS=5 cargo run --example demo --features server                # stop after 5 pings
//! ```

#[cfg(any(feature = "reqwest", feature = "surf"))]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use heartbeat_sdk::demo::{run, DemoOptions};
    use heartbeat_sdk::server::Server;
    use heartbeat_sdk::settings::names_a_server;
    use heartbeat_sdk::{HeartbeatClient, Settings};

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let settings = Settings::from_env()?;
    let server = if names_a_server(|name| std::env::var(name).ok()) {
        None
    } else {
        let server = Server::builder(([127, 0, 0, 1], 0).into()).start().await?;
        println!(
            "no server configured: started the embedded heartbeat server at {}",
            server.url()
        );
        Some(server)
    };
    let mut builder = HeartbeatClient::builder().settings(settings);
    if let Some(server) = &server {
        builder = builder.url(server.url());
    }
    let client = builder.build()?;
    println!(
        "APP_ID: {}  HB_URL: {}  (Ctrl+C to stop)",
        client.app_id(),
        client.url()
    );

    let max_beats = match std::env::var("HB_DEMO_BEATS") {
        Ok(beats) => Some(beats.parse::<u64>()?),
        Err(_) => None,
    };
    let options = DemoOptions {
        max_beats,
        ..DemoOptions::default()
    };
    let stop = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            eprintln!("cannot listen for Ctrl+C ({error}): set HB_DEMO_BEATS to stop");
            std::future::pending::<()>().await;
        }
    };
    let report = run(&client, &options, stop).await?;
    println!("{report}");
    if let Some(server) = server {
        server.shutdown().await;
    }
    Ok(())
}

#[cfg(not(any(feature = "reqwest", feature = "surf")))]
fn main() {
    eprintln!("this example needs a transport: enable feature `reqwest` (default) or `surf`");
    std::process::exit(2);
}

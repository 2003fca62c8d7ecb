//! The Python client's `test.py`, in Rust: init, ping and done, each with a
//! fallback value so that the example exits 0 even with no server.
//!
//! ```sh
//! HB_URL=http://127.0.0.1:8888 APP_ID=basic_example cargo run --example basic
//! cargo run --example basic --no-default-features --features surf   # over surf
//! ```

#[cfg(any(feature = "reqwest", feature = "surf"))]
#[tokio::main]
async fn main() -> Result<(), heartbeat_sdk::Error> {
    use std::time::Duration;

    use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let client = HeartbeatClient::from_env()?;
    println!("APP_ID: {}", client.app_id());
    println!("HB_URL: {}", client.url());

    let granted = client
        .init(
            Duration::from_millis(500),
            ErrorPolicy::Fallback(Duration::ZERO),
        )
        .await?;
    println!("hb_init(500) -> {} ms", granted.as_millis());

    let granted = client
        .ping(
            Duration::from_millis(1000),
            ErrorPolicy::Fallback(Duration::ZERO),
        )
        .await?;
    println!("hb_ping(1000) -> {} ms", granted.as_millis());

    let goodbye = client
        .done(
            Duration::from_millis(2),
            ErrorPolicy::Fallback(String::from("(no reply)")),
        )
        .await?;
    println!("hb_done(2) -> {goodbye}");
    Ok(())
}

#[cfg(not(any(feature = "reqwest", feature = "surf")))]
fn main() {
    eprintln!("this example needs a transport: enable feature `reqwest` (default) or `surf`");
    std::process::exit(2);
}

//! The reference's `check_heartbeat.py` with the library alone: a Nagios
//! plugin that prints the host's status line (or APP_ID's, given as the
//! first argument) and exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; when
//! the server cannot be asked, `CRITICAL - cannot get heartbeat status from
//! HB server!` ([`UNREACHABLE_LINE`](heartbeat_sdk::protocol::UNREACHABLE_LINE))
//! and 2. `heartbeat check` does the same from the command line.
//!
//! ```sh
//! HB_URL=http://127.0.0.1:8888 cargo run --example check_heartbeat [APP_ID]
//! ```

#[cfg(any(feature = "reqwest", feature = "surf"))]
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    use heartbeat_sdk::protocol::{printable, UNREACHABLE_LINE};
    use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};

    let app = std::env::args().nth(1);
    let status = match HeartbeatClient::from_env() {
        Ok(client) => client.status(app.as_deref(), ErrorPolicy::Raise).await,
        Err(error) => Err(error),
    };
    match status {
        Ok(status) => {
            println!("{}", printable(status.raw().trim_end_matches(['\r', '\n'])));
            std::process::ExitCode::from(status.state().exit_code())
        }
        Err(_) => {
            println!("{UNREACHABLE_LINE}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(not(any(feature = "reqwest", feature = "surf")))]
fn main() {
    eprintln!("this example needs a transport: enable feature `reqwest` (default) or `surf`");
    std::process::exit(3);
}

//! `check`: a Nagios plugin, like the reference's `check_heartbeat.py`.

use heartbeat_sdk::protocol::{printable, UNREACHABLE_LINE};

use crate::args::Global;
use crate::beat::query_status;

/// Print the status line of the host or of `app` (control characters
/// escaped) and return its Nagios exit code (OK 0, WARNING 1, CRITICAL 2,
/// anything else 3); on any failure print [`UNREACHABLE_LINE`] (the reason
/// goes to stderr) and return 2.
pub async fn run(global: &Global, app: Option<&str>) -> u8 {
    match query_status(global, app).await {
        Ok(status) => {
            println!("{}", printable(status.raw().trim_end_matches(['\r', '\n'])));
            // exit_code() is 0..=3
            u8::try_from(status.state().exit_code()).unwrap_or(3)
        }
        Err(error) => {
            println!("{UNREACHABLE_LINE}");
            eprintln!("heartbeat check: {}", crate::exit::one_line(&error));
            2
        }
    }
}

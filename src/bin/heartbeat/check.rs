//! `check`: a Nagios plugin, like the reference's `check_heartbeat.py`.

use heartbeat_sdk::protocol::{printable, UNREACHABLE_LINE};

use crate::args::Global;
use crate::beat::query_status;
use crate::exit::one_line;
use crate::output;

/// Nagios' UNKNOWN: also the exit code when stdout cannot be written.
const UNKNOWN: u8 = 3;

/// Print the status line of the host or of `app` (control characters
/// escaped) and return its Nagios exit code (OK 0, WARNING 1, CRITICAL 2,
/// anything else 3); on any failure print [`UNREACHABLE_LINE`] (the reason
/// goes to stderr) and return 2. When stdout cannot be written, say so on
/// stderr and return 3 (UNKNOWN); a closed pipe keeps the state's code.
pub async fn run(global: &Global, app: Option<&str>) -> u8 {
    match query_status(global, app).await {
        Ok(status) => {
            let line = printable(status.raw().trim_end_matches(['\r', '\n']));
            let code = status.state().exit_code();
            output::print("check", &format!("{line}\n"), code, UNKNOWN)
        }
        Err(error) => {
            let code = output::print("check", &format!("{UNREACHABLE_LINE}\n"), 2, UNKNOWN);
            output::error_line(&format!("heartbeat check: {}", one_line(&error)));
            code
        }
    }
}

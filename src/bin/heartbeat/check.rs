//! `check`: a Nagios plugin, like the reference's `check_heartbeat.py`.

use crate::args::Global;
use crate::beat::query_status;

/// What the plugin prints when there is no status to judge.
pub const NO_STATUS: &str = "CRITICAL - cannot get heartbeat status from HB server!";

/// Print the status line of the host or of `app` and return its Nagios
/// exit code (OK 0, WARNING 1, CRITICAL 2, anything else 3); on any
/// failure print [`NO_STATUS`] (the reason goes to stderr) and return 2.
pub async fn run(global: &Global, app: Option<&str>) -> u8 {
    match query_status(global, app).await {
        Ok(status) => {
            println!("{}", status.raw().trim_end_matches(['\r', '\n']));
            // exit_code() is 0..=3
            u8::try_from(status.state().exit_code()).unwrap_or(3)
        }
        Err(error) => {
            println!("{NO_STATUS}");
            eprintln!("heartbeat check: {}", crate::exit::one_line(&error));
            2
        }
    }
}

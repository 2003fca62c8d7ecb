//! The reference's `check_heartbeat.py` with the library alone: a Nagios
//! plugin that prints the host's status line (or APP_ID's, given as the
//! first argument) and exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; when
//! the server cannot be asked, `CRITICAL - cannot get heartbeat status from
//! HB server!` ([`UNREACHABLE_LINE`](heartbeat_sdk::protocol::UNREACHABLE_LINE))
//! and 2. `heartbeat check` does the same from the command line.
//!
//! With `--all` instead of an id, a host check over every listed
//! application ([`HeartbeatClient::status_all`](heartbeat_sdk::HeartbeatClient::status_all)
//! and [`HostCheck`](heartbeat_sdk::host_check::HostCheck)): the worst state,
//! a summary line with counts as perfdata, one line per application.
//! `heartbeat check --all` also reports the server's missing expected
//! applications (from its JSON API).
//!
//! ```sh
//! HB_URL=http://127.0.0.1:8888 cargo run --example check_heartbeat [APP_ID | --all]
//! ```

#[cfg(any(feature = "reqwest", feature = "surf"))]
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    use heartbeat_sdk::host_check::{CheckedApp, Finding, HostCheck};
    use heartbeat_sdk::protocol::{printable, UNREACHABLE_LINE};
    use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};

    let arg = std::env::args().nth(1);
    let client = HeartbeatClient::from_env();
    if arg.as_deref() == Some("--all") {
        let checks = match client {
            Ok(client) => client.status_all(ErrorPolicy::Raise).await,
            Err(error) => Err(error),
        };
        let Ok(checks) = checks else {
            println!("{UNREACHABLE_LINE}");
            return std::process::ExitCode::from(2);
        };
        let apps = checks
            .into_iter()
            .map(|check| match &check.answer {
                Ok(answer) => CheckedApp::from_answer(check.key, answer),
                Err(error) => CheckedApp {
                    key: check.key,
                    finding: Finding::Failed(error.to_string()),
                },
            })
            .collect();
        let check = HostCheck::new(apps);
        print!("{}", check.output());
        return std::process::ExitCode::from(check.state().exit_code());
    }
    let status = match client {
        Ok(client) => client.status(arg.as_deref(), ErrorPolicy::Raise).await,
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

//! `init`, `ping`, `done`, `list` and `status`: one request, its answer on stdout.

use std::time::Duration;

use heartbeat_sdk::protocol::{printable, Beat};
use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient};

use crate::args::Global;
use crate::{connect, exit, output};

/// The subcommand's name: `init`, `ping` or `done`.
fn name(beat: Beat) -> &'static str {
    beat.path().trim_start_matches("/hb_")
}

/// Send `beat` promising `timeout_ms`; print the granted timeout in
/// milliseconds (init, ping) or the goodbye (done).
pub async fn beat(global: &Global, beat: Beat, timeout_ms: u64) -> u8 {
    let timeout = Duration::from_millis(timeout_ms);
    let reply = async {
        let client = connect::client(global)?;
        Ok::<_, Error>(match beat {
            Beat::Init => millis(client.init(timeout, ErrorPolicy::Raise).await?),
            Beat::Ping => millis(client.ping(timeout, ErrorPolicy::Raise).await?),
            Beat::Done => client.done(timeout, ErrorPolicy::Raise).await?,
        })
    };
    print_or_report(name(beat), reply.await)
}

/// Print the tracked applications, one per line (each made
/// [`printable`]).
pub async fn list(global: &Global) -> u8 {
    let reply = async {
        let client = connect::query_client(global)?;
        let apps = client.list(ErrorPolicy::Raise).await?;
        Ok(apps
            .iter()
            .map(|app| format!("{}\n", printable(app)))
            .collect::<String>())
    };
    match reply.await {
        Ok(lines) => output::print("list", &lines, exit::OK, exit::CANNOT_WRITE),
        Err(error) => exit::report("list", &error),
    }
}

/// Print the status line of the host (`app` = `None`) or of one application.
pub async fn status(global: &Global, app: Option<&str>) -> u8 {
    print_or_report(
        "status",
        query_status(global, app).await.map(|s| s.raw().to_owned()),
    )
}

/// Ask the server for the status of the host or of `app`.
pub async fn query_status(
    global: &Global,
    app: Option<&str>,
) -> Result<heartbeat_sdk::Status, Error> {
    let client: HeartbeatClient = connect::query_client(global)?;
    client.status(app, ErrorPolicy::Raise).await
}

fn millis(granted: Duration) -> String {
    granted.as_millis().to_string()
}

/// Print `reply` as one line on stdout (control characters escaped by
/// [`printable`]), or report the error on stderr.
fn print_or_report(what: &str, reply: Result<String, Error>) -> u8 {
    match reply {
        Ok(text) => output::print(
            what,
            &format!("{}\n", printable(text.trim_end_matches(['\r', '\n']))),
            exit::OK,
            exit::CANNOT_WRITE,
        ),
        Err(error) => exit::report(what, &error),
    }
}

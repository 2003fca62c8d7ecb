//! `init`, `ping`, `done`, `list` and `status`: one request, its answer on stdout.

use std::time::Duration;

use heartbeat_sdk::protocol::history::EventsQuery;
use heartbeat_sdk::protocol::{printable, Beat};
use heartbeat_sdk::{Error, ErrorPolicy, HeartbeatClient, State};

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
/// [`printable`]), or with `json` one JSON document, `{"keys":[...]}`
/// (the keys as `/list` gives them, escaped by JSON).
pub async fn list(global: &Global, json: bool) -> u8 {
    let reply = async {
        let client = connect::query_client(global)?;
        let apps = client.list(ErrorPolicy::Raise).await?;
        Ok(if json {
            json_line(&serde_json::json!({ "keys": apps }))
        } else {
            apps.iter()
                .map(|app| format!("{}\n", printable(app)))
                .collect::<String>()
        })
    };
    match reply.await {
        Ok(lines) => output::print("list", &lines, exit::OK, exit::CANNOT_WRITE),
        Err(error) => exit::report("list", &error),
    }
}

/// Print the status line of the host (`app` = `None`) or of one
/// application, or with `json` the parsed status as one JSON document (the
/// shape of `Status`'s `Serialize`, see `heartbeat_sdk::protocol::apps`).
pub async fn status(global: &Global, app: Option<&str>, json: bool) -> u8 {
    let status = query_status(global, app).await;
    if json {
        return match status {
            Ok(status) => {
                output::print("status", &json_line(&status), exit::OK, exit::CANNOT_WRITE)
            }
            Err(error) => exit::report("status", &error),
        };
    }
    print_or_report("status", status.map(|s| s.raw().to_owned()))
}

/// Print the history of one application, newest first: one line per
/// change (`TIME  CHANGE  HOST  BEFORE -> AFTER[  exit code N]`, the host through
/// `printable`), or with `json` the server's document on one line.
pub async fn history(global: &Global, query: &EventsQuery, json: bool) -> u8 {
    let reply = async {
        let client = connect::query_client(global)?;
        let events = client.events(query, ErrorPolicy::Raise).await?;
        if json {
            return Ok(json_line(&events));
        }
        let state = |s: Option<State>| s.map_or("-", State::as_str);
        let mut out = String::new();
        for e in &events.events {
            let code = e
                .exit_code
                .map_or(String::new(), |c| format!("  exit code {c}"));
            out.push_str(&format!(
                "{}  {:<16}  {:<15}  {} -> {}{code}\n",
                e.at,
                e.event.name(),
                printable(e.host.as_deref().unwrap_or("(any host)")),
                state(e.previous),
                state(e.state),
            ));
        }
        if events.events.is_empty() {
            out.push_str(&format!("no changes of {} held\n", printable(&events.app)));
        }
        Ok::<_, Error>(out)
    };
    match reply.await {
        Ok(lines) => output::print("history", &lines, exit::OK, exit::CANNOT_WRITE),
        Err(error) => exit::report("history", &error),
    }
}

/// `value` as one line of compact JSON (serde_json escapes every control
/// character, so a peer's text cannot break the line).
fn json_line(value: &impl serde::Serialize) -> String {
    // never fails for our values (string keys only); still no panic
    let mut line = serde_json::to_string(value).unwrap_or_else(|error| {
        serde_json::json!({ "error": format!("cannot write JSON: {error}") }).to_string()
    });
    line.push('\n');
    line
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

//! `check`: a Nagios plugin, like the reference's `check_heartbeat.py`, and
//! `check --all`, a host check over every application.
//!
//! # `check --all`
//!
//! [`HeartbeatClient::status_all`] (`/list`, then each app's `/status`),
//! then, when the server has it, `GET /api/v1/apps` (docs/api-v1.md) for
//! the expected applications that are missing (`"missing": true`, counted
//! CRITICAL) and for the state of the applications of other hosts, which
//! `/status` does not answer about by id. The reference server answers
//! `400` there: the check then goes on with what `/status` said. The JSON
//! API was chosen over `/metrics` because it carries keys, states and the
//! `missing` flag as typed fields, with a shape fixed by its document.
//!
//! Output: [`HostCheck::output`]: one line
//! `CRITICAL - 2 of 7 applications need attention: kiosk-3 (CRITICAL, od 5.20), kiosk-9 (missing)| ok=5 warning=0 critical=2 unknown=0`,
//! then one line per application; exit code of the worst state (OK <
//! UNKNOWN < WARNING < CRITICAL), UNKNOWN with no applications, and when
//! `/list` cannot be read, [`UNREACHABLE_LINE`] and 2.
//!
//! With `--json`, one JSON document instead (see [`json()`]).

use std::collections::{HashMap, HashSet};

use heartbeat_sdk::host_check::{CheckedApp, Finding, HostCheck};
use heartbeat_sdk::protocol::apps::{AppRecord, AppState, APPS_PATH};
use heartbeat_sdk::protocol::{printable, split_key, whole_ms, State, UNREACHABLE_LINE};
use heartbeat_sdk::{AppCheck, ErrorPolicy, HeartbeatClient};
use serde_json::{json, Value};

use crate::args::Global;
use crate::beat::query_status;
use crate::connect;
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
        Err(error) => unreachable(&error, None),
    }
}

/// `check --all [--json]`: see the module docs.
///
/// The whole check is bounded by `deadline` (each request by `--timeout`):
/// past it the check prints an UNKNOWN line and exits 3, so a server that
/// lists many apps and answers slowly cannot hold a monitoring agent.
pub async fn run_all(global: &Global, as_json: bool, deadline: std::time::Duration) -> u8 {
    let client = match connect::query_client(global) {
        Ok(client) => client,
        Err(error) => return unreachable(&error, as_json.then_some(())),
    };
    let gathered = async {
        let checks = client.status_all(ErrorPolicy::Raise).await?;
        Ok::<_, heartbeat_sdk::Error>((checks, api_apps(&client).await))
    };
    let (checks, api) = match tokio::time::timeout(deadline, gathered).await {
        Ok(Ok((checks, Ok(api)))) => (checks, api),
        // the server has the API but will not show it: what it hides may
        // be missing apps, so the check cannot say OK
        Ok(Ok((_, Err(status)))) => {
            let line = format!(
                "UNKNOWN - the server refused {APPS_PATH} (HTTP {status}): give credentials \
                 with --user / HB_USER and HB_PASSWORD"
            );
            return unknown(&line, as_json);
        }
        Ok(Err(error)) => return unreachable(&error, as_json.then_some(())),
        Err(_) => return out_of_time(deadline, as_json),
    };
    let check = host_check(checks, api.as_deref());
    let code = check.state().exit_code();
    let text = if as_json {
        format!("{}\n", json(&check, api.is_some()))
    } else {
        check.output()
    };
    output::print("check", &text, code, UNKNOWN)
}

/// `check --all` ran past its deadline: UNKNOWN (3), as a line or JSON.
fn out_of_time(deadline: std::time::Duration, as_json: bool) -> u8 {
    let line = format!(
        "UNKNOWN - check --all did not finish within its deadline of {} ms",
        deadline.as_millis()
    );
    unknown(&line, as_json)
}

/// `check --all` cannot tell: UNKNOWN (3) with `line`, as a line or JSON.
fn unknown(line: &str, as_json: bool) -> u8 {
    let text = if as_json {
        format!(
            "{}\n",
            json!({
                "version": 1,
                "state": "unknown",
                "exit_code": 3,
                "line": line,
                "api": false,
                "counts": counts_json(&HostCheck::new(Vec::new())),
                "apps": [],
            })
        )
    } else {
        format!("{line}\n")
    };
    output::print("check", &text, UNKNOWN, UNKNOWN)
}

/// Print [`UNREACHABLE_LINE`] (as JSON with `json`), the reason on stderr;
/// returns 2 (or 3 when stdout cannot be written).
fn unreachable(error: &heartbeat_sdk::Error, json: Option<()>) -> u8 {
    let text = match json {
        None => format!("{UNREACHABLE_LINE}\n"),
        Some(()) => format!(
            "{}\n",
            json!({
                "version": 1,
                "state": "critical",
                "exit_code": 2,
                "line": UNREACHABLE_LINE,
                "api": false,
                "counts": counts_json(&HostCheck::new(Vec::new())),
                "apps": [],
            })
        ),
    };
    let code = output::print("check", &text, 2, UNKNOWN);
    output::error_line(&format!("heartbeat check: {}", one_line(error)));
    code
}

/// `GET /api/v1/apps`, every page ([`HeartbeatClient::apps`]); `None`
/// when the server has no such API (the reference answers 400: said
/// nowhere) or it failed otherwise, or its reply is not a version-1
/// document (both said on stderr: the check then cannot see missing
/// applications).
///
/// `Err(status)` when the server refused it for want of credentials (401,
/// 403): it has the API, so the check cannot do without it.
async fn api_apps(client: &HeartbeatClient) -> Result<Option<Vec<AppRecord>>, u16> {
    let unusable = |reason: &str| {
        output::error_line(&format!(
            "heartbeat check: {APPS_PATH} unusable, missing applications not checked: {}",
            printable(reason)
        ));
    };
    Ok(match client.apps(ErrorPolicy::Raise).await {
        Ok(apps) => Some(apps.apps),
        Err(heartbeat_sdk::Error::Status {
            status: status @ (401 | 403),
            ..
        }) => return Err(status),
        Err(heartbeat_sdk::Error::Unsupported { status, .. }) if status != 200 => None,
        Err(heartbeat_sdk::Error::Unsupported { .. }) => {
            unusable("not a version 1 document");
            None
        }
        Err(heartbeat_sdk::Error::Parse { reason, .. }) => {
            unusable(&reason);
            None
        }
        Err(error) => {
            unusable(&one_line(&error));
            None
        }
    })
}

/// The host check of `checks` (in `/list` order), completed by the JSON
/// API's `api` when there is one: applications on another host take their
/// state from it, and its missing ones are added at the end, CRITICAL.
pub fn host_check(checks: Vec<AppCheck>, api: Option<&[AppRecord]>) -> HostCheck {
    let by_key: HashMap<&str, &AppRecord> = api
        .unwrap_or_default()
        .iter()
        .map(|app| (app.key.as_str(), app))
        .collect();
    let mut apps: Vec<CheckedApp> = checks
        .into_iter()
        .map(|check| {
            let checked = match &check.answer {
                Ok(answer) => CheckedApp::from_answer(check.key.clone(), answer),
                Err(error) => CheckedApp {
                    key: check.key.clone(),
                    finding: Finding::Failed(one_line(error)),
                },
            };
            match (&checked.finding, by_key.get(check.key.as_str())) {
                (Finding::OtherHost, Some(api)) if !api.missing => CheckedApp {
                    key: check.key,
                    finding: Finding::Tracked {
                        state: api_state(api.state),
                        overdue_ratio: api.overdue_ratio,
                        granted_ms: api.granted.map(whole_ms),
                    },
                },
                _ => checked,
            }
        })
        .collect();
    let listed: HashSet<String> = apps.iter().map(|app| app.key.clone()).collect();
    for app in api.unwrap_or_default() {
        if app.missing && !listed.contains(&app.key) {
            apps.push(CheckedApp {
                key: app.key.clone(),
                finding: Finding::Missing,
            });
        }
    }
    HostCheck::new(apps)
}

/// The Nagios state of an API state (a missing app is not tracked:
/// UNKNOWN here; `host_check` counts it CRITICAL as missing).
fn api_state(state: AppState) -> State {
    match state {
        AppState::Ok => State::Ok,
        AppState::Warning => State::Warning,
        AppState::Critical => State::Critical,
        _ => State::Unknown,
    }
}

/// A state's lowercase JSON name.
fn state_name(state: State) -> &'static str {
    match state {
        State::Ok => "ok",
        State::Warning => "warning",
        State::Critical => "critical",
        State::Unknown => "unknown",
    }
}

fn counts_json(check: &HostCheck) -> Value {
    let c = check.counts();
    json!({
        "ok": c.ok, "warning": c.warning, "critical": c.critical, "unknown": c.unknown,
        "missing": c.missing, "gone": c.gone,
    })
}

/// `check --all --json`: one document, every field always present.
///
/// ```json
/// {
///   "version": 1,
///   "state": "critical",            // worst: ok | warning | critical | unknown
///   "exit_code": 2,
///   "line": "CRITICAL - 2 of 7 applications need attention: ...| ok=5 warning=0 critical=2 unknown=0",
///   "api": true,                    // /api/v1/apps was read (missing apps were looked for)
///   "counts": { "ok": 5, "warning": 0, "critical": 2, "unknown": 0, "missing": 1, "gone": 0 },
///   "apps": [
///     { "key": "kiosk-3 @ 10.0.0.3", "id": "kiosk-3", "host": "10.0.0.3",
///       "state": "critical", "finding": "tracked", "overdue_ratio": 5.2,
///       "granted_ms": 3000, "missing": false, "reason": null }
///   ]
/// }
/// ```
///
/// `state` of an app: `ok`, `warning`, `critical`, `unknown`, or `gone`
/// (dropped between the list and its status; counted in no state).
/// `finding`: `tracked`, `missing`, `gone`, `other_host`, `failed`.
/// `host` is `null` for a key without ` @ `; `overdue_ratio`, `granted_ms`
/// are `null` unless tracked; `reason` is the failure of a `failed` app.
/// Keys and reasons are JSON strings as the server sent them (escaped by
/// JSON only). `counts.critical` includes the missing apps.
pub fn json(check: &HostCheck, api: bool) -> Value {
    let apps: Vec<Value> = check
        .apps()
        .iter()
        .map(|app| {
            let (id, host) = split_key(&app.key);
            let (finding, od, granted, reason) = match &app.finding {
                Finding::Tracked {
                    overdue_ratio,
                    granted_ms,
                    ..
                } => ("tracked", *overdue_ratio, *granted_ms, None),
                Finding::Missing => ("missing", None, None, None),
                Finding::Gone => ("gone", None, None, None),
                Finding::OtherHost => ("other_host", None, None, None),
                Finding::Failed(reason) => ("failed", None, None, Some(reason.as_str())),
                _ => ("unknown", None, None, None),
            };
            json!({
                "key": app.key,
                "id": id,
                "host": host,
                "state": app.state().map_or("gone", state_name),
                "finding": finding,
                "overdue_ratio": od,
                "granted_ms": granted,
                "missing": app.is_missing(),
                "reason": reason,
            })
        })
        .collect();
    let state = check.state();
    json!({
        "version": 1,
        "state": state_name(state),
        "exit_code": state.exit_code(),
        "line": check.line(),
        "api": api,
        "counts": counts_json(check),
        "apps": apps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_apps_come_last_and_other_hosts_take_the_api_state() {
        use heartbeat_sdk::protocol::{no_record_line, AppAnswer, Status};
        let parse = |s: &str| Status::parse(s).unwrap();
        let doc = r#"{"version":1,"generated_at":"2026-11-25T10:00:00.000Z",
            "thresholds":{"warn_ratio":3.0,"crit_ratio":5.0,"drop_ratio":6.0,"tolerance_ms":1000},
            "counters":{"inits":1,"pings":0,"dones":0,"expiries":0,"refusals":0},
            "counts":{"ok":0,"warning":0,"critical":1,"missing":1},
            "apps":[{"key":"far @ 10.0.0.9","id":"far","host":"10.0.0.9","state":"critical",
                     "overdue_ratio":5.5,"granted_ms":2000,"last_seen":null,"last_seen_ago_ms":null,
                     "expected":false,"missing":false},
                    {"key":"kiosk-9","id":"kiosk-9","host":null,"state":"missing","overdue_ratio":null,
                     "granted_ms":null,"last_seen":null,"last_seen_ago_ms":null,"expected":true,"missing":true}]}"#;
        let api = heartbeat_sdk::protocol::apps::parse_apps(doc.as_bytes())
            .unwrap()
            .apps;
        let far = || {
            AppCheck::new(
                "far @ 10.0.0.9",
                Ok(AppAnswer::classify(
                    "far @ 10.0.0.9",
                    parse(&no_record_line("far @ 127.0.0.1")),
                )),
            )
        };
        let with_api = host_check(vec![far()], Some(&api));
        assert_eq!(with_api.state(), State::Critical);
        assert_eq!(with_api.apps()[1].key, "kiosk-9");
        assert!(with_api.apps()[1].is_missing());
        assert_eq!(with_api.counts().critical, 2);
        let without = host_check(vec![far()], None);
        assert_eq!(without.state(), State::Unknown);
        assert_eq!(without.apps().len(), 1);
    }
}

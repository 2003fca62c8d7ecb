//! An independent model of the heartbeat server, the oracle of
//! `tests/hardening_server.rs`' generated requests (issue 14).
//!
//! Written from `PROTOCOL.md` and the documented limits (TESTING.md), not from `src/protocol/`:
//! it imports nothing from `heartbeat_sdk`, decodes with its own code and
//! keeps its own registry (who is tracked under which key, with which
//! granted timeout, last seen when, on its own millisecond clock), so a
//! decoding or bookkeeping bug in the crate cannot be mirrored by its oracle.
//! Included with `#[path]`, like `log_capture.rs`.
//!
//! The request rules it encodes:
//! - `/` and `/api/v1/apps` are matched as whole paths (dashboard, JSON);
//!   otherwise the command is the last path segment (`hb_init`, `hb_ping`,
//!   `hb_done`, `list`, `status`, `metrics`); anything else is
//!   `400 ERROR: cannot process your request: [TARGET]`;
//! - the query is split on `&` first, then each element on its first `=`,
//!   and only then percent-decoded (so `appid=a%26b` is the id `a&b`); in
//!   the query `+` is a literal `+`, in a form body it is a space;
//! - the first element is the bare timeout (empty: 0) unless it has a `=`,
//!   then it is a parameter and the timeout is 0; a timeout is whole
//!   milliseconds, `0..=u32::MAX`; `list`, `status` and `metrics` ignore it;
//! - `appid` (its name may itself be percent-encoded) comes from the query,
//!   or when the query has none, from the form body; the first one wins,
//!   unknown parameters are ignored;
//! - an id is refused when empty (400), over 1 024 bytes (414), or holding
//!   a control character, `|`, U+2028/U+2029 or a bidi control (400);
//! - init and ping grant the timeout plus 1 000 ms; a new key past
//!   `max_apps` gets `503`; done answers the goodbye whether known or not;
//! - the overdue ratio is the time since the last init/ping over the
//!   granted timeout: OK below 3, WARNING below 5, CRITICAL from 5, and the
//!   record is dropped at 6, before any command that reaches the registry.
//!
//! The texts of the error bodies other than the unknown-command one are
//! the crate's own wording (PROTOCOL.md only asks for a clear reason): they
//! are pinned here on purpose, so a change of wording is a visible change.
#![allow(dead_code)] // not every includer uses every helper

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The goodbye of `hb_done` (PROTOCOL.md).
pub const GOODBYE: &str = "So Long, and Thanks for All the Fish!";
/// Longest accepted id, in bytes after decoding (TESTING.md, Limits: 414 past it).
pub const MAX_ID_LEN: usize = 1024;
/// Largest accepted timeout, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = u32::MAX as u64;
/// What the server adds to the asked timeout (PROTOCOL.md).
pub const TOLERANCE_MS: u64 = 1000;
/// Overdue ratios: WARNING from, CRITICAL from, dropped at.
pub const WARN: u64 = 3;
pub const CRIT: u64 = 5;
pub const DROP: u64 = 6;

/// The totals `/metrics` exposes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub inits: u64,
    pub pings: u64,
    pub dones: u64,
    pub expiries: u64,
    pub refused: u64,
}

#[derive(Debug, Clone)]
struct App {
    id: String,
    /// The peer's address as the key shows it, empty for bare keys.
    host: String,
    last_ms: u64,
    granted_ms: u64,
}

/// What the model expects a request to get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// This status and exactly this body.
    Exact(u16, String),
    /// `/metrics`: 200, and the values [`Model::check_metrics`] compares.
    Metrics,
    /// The dashboard (`/`): 200; the HTML is not modelled.
    Page(&'static str),
    /// `/api/v1/apps`: 200, and the document [`Model::check_apps_json`]
    /// compares.
    AppsJson,
}

/// What a request decodes to, in the model's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Beat {
        command: &'static str,
        id: String,
        timeout_ms: u64,
    },
    List,
    Status(Option<String>),
    Metrics,
    Page(&'static str),
}

/// A refused request: its status and the reason after `ERROR: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        reason: reason.into(),
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `%XX` decoding; `+` is a space only in a form body. `None` when a `%`
/// is not followed by two hex digits.
pub fn percent_decode(raw: &[u8], form: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            b'%' => {
                let [h, l, ..] = tail else { return None };
                out.push(hex(*h)? * 16 + hex(*l)?);
                rest = &tail[2..];
                continue;
            }
            b'+' if form => out.push(b' '),
            b => out.push(b),
        }
        rest = tail;
    }
    Some(out)
}

/// Percent-encodes everything but the unreserved characters (RFC 3986).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// How an error message shows text it echoes: control characters, Unicode
/// line breaks and bidi controls escaped as Rust's `escape_default` does.
pub fn shown(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_bidi(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An echoed timeout: its first 64 characters, `...` when cut.
fn echo(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}...", shown(&text[..cut])),
        None => shown(text),
    }
}

fn decode_text(raw: &[u8], what: &str, form: bool) -> Result<String, Refusal> {
    let bytes = percent_decode(raw, form)
        .ok_or_else(|| refuse(format!("invalid percent-encoding in {what}")))?;
    String::from_utf8(bytes)
        .map_err(|_| refuse(format!("{what} is not valid UTF-8 after percent-decoding")))
}

fn timeout_of(raw: &[u8]) -> Result<u64, Refusal> {
    let text = decode_text(raw, "timeout", false)?;
    if text.is_empty() {
        return Ok(0);
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = text.strip_prefix('-') {
        if digits(rest) {
            return Err(refuse(format!(
                "timeout must not be negative, got [{}]",
                echo(&text)
            )));
        }
    }
    if !digits(&text) {
        return Err(refuse(format!(
            "timeout must be a whole number of milliseconds, got [{}]",
            echo(&text)
        )));
    }
    let value = text.trim_start_matches('0');
    // more than 10 significant digits is past u32::MAX whatever they are
    match value.len() <= 10 && value.parse::<u64>().unwrap_or(0) <= MAX_TIMEOUT_MS {
        true => Ok(value.parse().unwrap_or(0)),
        false => Err(refuse(format!(
            "timeout [{}] exceeds the maximum of {MAX_TIMEOUT_MS} ms",
            echo(&text)
        ))),
    }
}

/// The first `appid` among `params` (each `name=value`, or a bare `name`
/// with an empty value), decoded; a parameter whose name does not decode
/// is not `appid`.
fn appid_in<'a>(
    params: impl Iterator<Item = &'a [u8]>,
    form: bool,
) -> Result<Option<String>, Refusal> {
    for param in params.filter(|p| !p.is_empty()) {
        let (name, value) = match param.iter().position(|&b| b == b'=') {
            Some(i) => (&param[..i], &param[i + 1..]),
            None => (param, &b""[..]),
        };
        if percent_decode(name, form).as_deref() == Some(b"appid") {
            return decode_text(value, "appid", form).map(Some);
        }
    }
    Ok(None)
}

fn check_id(id: &str, command: &str) -> Result<(), Refusal> {
    if id.is_empty() {
        return Err(refuse(format!("empty appid for {command}")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Refusal {
            status: 414,
            reason: format!(
                "appid is {} bytes long, the maximum is {MAX_ID_LEN}",
                id.len()
            ),
        });
    }
    for c in id.chars() {
        let why = if c.is_control() {
            return Err(refuse("appid must not contain control characters"));
        } else if c == '|' {
            "it contains '|', which would start the perfdata of a Nagios plugin line".to_owned()
        } else if matches!(c, '\u{2028}' | '\u{2029}') {
            format!("it contains the Unicode line break U+{:04X}", c as u32)
        } else if is_bidi(c) {
            format!("it contains the bidirectional control U+{:04X}", c as u32)
        } else {
            continue;
        };
        return Err(refuse(format!("appid refused: {why}")));
    }
    Ok(())
}

/// Decodes a request-target and optional form body by the rules above.
pub fn decode(target: &str, form: Option<&[u8]>) -> Result<Decoded, Refusal> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/" => return Ok(Decoded::Page("dashboard")),
        "/api/v1/apps" => return Ok(Decoded::Page("apps")),
        _ => {}
    }
    let command = match path.rsplit('/').next().unwrap_or(path) {
        "hb_init" => "hb_init",
        "hb_ping" => "hb_ping",
        "hb_done" => "hb_done",
        "status" => "status",
        "list" => return Ok(Decoded::List),
        "metrics" => return Ok(Decoded::Metrics),
        _ => {
            return Err(refuse(format!(
                "cannot process your request: [{}]",
                shown(target)
            )))
        }
    };
    let elements: Vec<&[u8]> = query.as_bytes().split(|&b| b == b'&').collect();
    let (timeout, params) = match elements[0].contains(&b'=') {
        true => (&b""[..], &elements[..]),
        false => (elements[0], &elements[1..]),
    };
    let timeout_ms = match command {
        "status" => 0,
        _ => timeout_of(timeout)?,
    };
    let id = match appid_in(params.iter().copied(), false)? {
        Some(id) => Some(id),
        None => match form {
            Some(body) => appid_in(body.split(|&b| b == b'&'), true)?,
            None => None,
        },
    };
    if let Some(id) = &id {
        check_id(id, command)?;
    }
    match (command, id) {
        ("status", id) => Ok(Decoded::Status(id)),
        (command, Some(id)) => Ok(Decoded::Beat {
            command,
            id,
            timeout_ms,
        }),
        (command, None) => Err(refuse(format!("missing appid parameter for {command}"))),
    }
}

/// The model's registry.
#[derive(Debug, Clone)]
pub struct Model {
    max_apps: usize,
    key_by_peer: bool,
    now_ms: u64,
    apps: BTreeMap<String, App>,
    totals: Totals,
}

impl Model {
    pub fn new(max_apps: usize, key_by_peer: bool) -> Model {
        Model {
            max_apps,
            key_by_peer,
            now_ms: 0,
            apps: BTreeMap::new(),
            totals: Totals::default(),
        }
    }

    /// Moves the model's clock on (the server's manual clock moves alike),
    /// dropping the overdue: the server's sweeper does so on the clock,
    /// whether a request comes or not.
    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        self.expire();
    }

    /// Tracked keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.apps.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    fn key(&self, id: &str, peer: IpAddr) -> (String, String) {
        match self.key_by_peer {
            true => {
                let host = peer.to_canonical().to_string();
                (format!("{id} @ {host}"), host)
            }
            false => (id.to_owned(), String::new()),
        }
    }

    fn elapsed(&self, app: &App) -> u64 {
        self.now_ms - app.last_ms
    }

    /// 0 OK, 1 WARNING, 2 CRITICAL, by integer comparison.
    fn state(&self, app: &App) -> u8 {
        let (elapsed, granted) = (self.elapsed(app), app.granted_ms);
        match () {
            _ if elapsed < WARN * granted => 0,
            _ if elapsed < CRIT * granted => 1,
            _ => 2,
        }
    }

    fn ratio(&self, app: &App) -> f64 {
        self.elapsed(app) as f64 / app.granted_ms as f64
    }

    fn line(&self, key: &str, app: &App) -> String {
        let what = [
            "OK - fine",
            "WARNING - somewhat late",
            "CRITICAL - quite late",
        ][self.state(app) as usize];
        format!(
            "{what} application [{key}]| od={:.2};{WARN};{CRIT};0;{DROP} delay={}ms;;; ",
            self.ratio(app),
            app.granted_ms
        )
    }

    fn expire(&mut self) {
        let now = self.now_ms;
        let before = self.apps.len();
        self.apps
            .retain(|_, app| now - app.last_ms < DROP * app.granted_ms);
        self.totals.expiries += (before - self.apps.len()) as u64;
    }

    /// What `target` (and `form`) from `peer` gets, applied to the model.
    pub fn request(&mut self, target: &str, form: Option<&[u8]>, peer: IpAddr) -> Expect {
        let decoded = match decode(target, form) {
            Ok(decoded) => decoded,
            Err(refusal) => {
                return Expect::Exact(refusal.status, format!("ERROR: {}", refusal.reason))
            }
        };
        // every command that reaches the registry drops the overdue first
        self.expire();
        let ok = |body: String| Expect::Exact(200, body);
        match decoded {
            Decoded::Beat {
                command: "hb_done",
                id,
                ..
            } => {
                self.totals.dones += 1;
                let (key, _) = self.key(&id, peer);
                self.apps.remove(&key);
                ok(GOODBYE.to_owned())
            }
            Decoded::Beat {
                command,
                id,
                timeout_ms,
            } => {
                let (key, host) = self.key(&id, peer);
                if !self.apps.contains_key(&key) && self.apps.len() >= self.max_apps {
                    self.totals.refused += 1;
                    return Expect::Exact(
                        503,
                        format!(
                            "ERROR: registry full: already tracking the maximum of {} applications",
                            self.max_apps
                        ),
                    );
                }
                let granted_ms = timeout_ms + TOLERANCE_MS;
                let app = App {
                    id,
                    host,
                    last_ms: self.now_ms,
                    granted_ms,
                };
                self.apps.insert(key, app);
                match command {
                    "hb_init" => self.totals.inits += 1,
                    _ => self.totals.pings += 1,
                }
                ok(granted_ms.to_string())
            }
            Decoded::List => ok(self.apps.keys().map(|k| format!("{k}\n")).collect()),
            Decoded::Status(None) => ok(match self.apps.len() {
                0 => "UNKNOWN - no heartbeat clients at the moment...".to_owned(),
                1 => {
                    let (key, app) = self.apps.iter().next().unwrap();
                    self.line(key, app)
                }
                n => {
                    let keys: Vec<&str> = self.keys().collect();
                    format!(
                        "WARNING - multiple ({n}) applications: [{}]",
                        keys.join(",")
                    )
                }
            }),
            Decoded::Status(Some(id)) => {
                let (key, _) = self.key(&id, peer);
                ok(match self.apps.get(&key) {
                    Some(app) => self.line(&key, app),
                    None => format!("CRITICAL - no application record for queried ID: [{key}]"),
                })
            }
            Decoded::Metrics => Expect::Metrics,
            Decoded::Page("apps") => Expect::AppsJson,
            Decoded::Page(page) => Expect::Page(page),
        }
    }

    /// Compares a `/metrics` body with the model: the totals and the number
    /// of apps exactly, and per app (`app` and `host` labels) `up`, `state`,
    /// the overdue ratio and the granted timeout exactly, and the last-seen
    /// timestamps relative to each other (their origin is the server's wall
    /// clock; their differences are the model's, to the millisecond).
    pub fn check_metrics(&self, text: &str) -> Result<(), String> {
        let samples = parse_exposition(text)?;
        let scalar = |name: &str| -> Result<&str, String> {
            samples
                .get(&(name.to_owned(), None))
                .map(String::as_str)
                .ok_or_else(|| format!("no {name} in {text}"))
        };
        let t = self.totals;
        for (name, want) in [
            ("heartbeat_apps", self.apps.len() as u64),
            ("heartbeat_inits_total", t.inits),
            ("heartbeat_pings_total", t.pings),
            ("heartbeat_dones_total", t.dones),
            // the generators never send hb_fail
            ("heartbeat_fails_total", 0),
            ("heartbeat_expiries_total", t.expiries),
            ("heartbeat_refused_total:registry_full", t.refused),
            // the generators set no share per host
            ("heartbeat_refused_total:host_share", 0),
        ] {
            let got = scalar(name)?;
            if got != want.to_string() {
                return Err(format!("{name}: got {got}, model {want}"));
            }
        }
        let in_state = |code: u8| self.apps.values().filter(|a| self.state(a) == code).count();
        for (state, want) in [
            ("ok", in_state(0)),
            ("warning", in_state(1)),
            ("critical", in_state(2)),
            ("missing", 0),
        ] {
            let name = format!("heartbeat_apps_by_state:{state}");
            let got = scalar(&name)?;
            if got != want.to_string() {
                return Err(format!("{name}: got {got}, model {want}"));
            }
        }
        let mut want: BTreeMap<(String, Option<(String, String)>), String> = BTreeMap::new();
        let mut seen_ms = BTreeMap::new();
        for app in self.apps.values() {
            let labels = Some((app.id.clone(), app.host.clone()));
            let state = self.state(app);
            for (family, value) in [
                ("heartbeat_app_up", u8::from(state != 2).to_string()),
                ("heartbeat_app_state", state.to_string()),
                ("heartbeat_app_overdue_ratio", self.ratio(app).to_string()),
                (
                    "heartbeat_app_granted_timeout_seconds",
                    (app.granted_ms as f64 / 1000.0).to_string(),
                ),
            ] {
                want.insert((family.to_owned(), labels.clone()), value);
            }
            seen_ms.insert(labels, app.last_ms);
        }
        let mut got = samples.clone();
        got.retain(|(name, labels), _| {
            labels.is_some() && name != "heartbeat_app_last_seen_timestamp_seconds"
        });
        if got != want {
            let extra: Vec<_> = got
                .iter()
                .filter(|(k, v)| want.get(*k) != Some(v))
                .collect();
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .collect();
            return Err(format!("per-app samples: got but not predicted {extra:?}; predicted but not got {missing:?}"));
        }
        // last seen: one per app, and pairwise differences as in the model
        let mut first: Option<(u64, u64)> = None;
        let mut apps_seen = BTreeSet::new();
        for ((name, labels), value) in &samples {
            if name != "heartbeat_app_last_seen_timestamp_seconds" {
                continue;
            }
            let Some(&model_ms) = seen_ms.get(labels) else {
                return Err(format!("last seen of an app the model lacks: {labels:?}"));
            };
            apps_seen.insert(labels.clone());
            let (secs, millis) = value
                .split_once('.')
                .ok_or_else(|| format!("last seen {value:?}"))?;
            let wall_ms = secs.parse::<u64>().map_err(|e| format!("{value}: {e}"))? * 1000
                + millis.parse::<u64>().map_err(|e| format!("{value}: {e}"))?;
            match first {
                None => first = Some((wall_ms, model_ms)),
                Some((wall0, model0)) => {
                    if wall_ms as i128 - wall0 as i128 != model_ms as i128 - model0 as i128 {
                        return Err(format!(
                            "last seen of {labels:?}: {wall_ms} - {wall0} ms on the server, {model_ms} - {model0} in the model"
                        ));
                    }
                }
            }
        }
        if apps_seen.len() != seen_ms.len() {
            return Err(format!(
                "last seen for {} apps, model has {}",
                apps_seen.len(),
                seen_ms.len()
            ));
        }
        Ok(())
    }
}

impl Model {
    /// Compares a `/api/v1/apps` document (docs/api-v1.md) with the model:
    /// everything but the two wall-clock times (`generated_at`, and each
    /// app's `last_seen`, which must be strings) exactly: thresholds,
    /// counters, counts, and per app in key order its key, id, host, state,
    /// overdue ratio, granted timeout and age.
    pub fn check_apps_json(&self, body: &str) -> Result<(), String> {
        use serde_json::{json, Value};
        let mut got: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
        let wall = |v: Option<Value>| match v {
            Some(Value::String(_)) => Ok(()),
            other => Err(format!("a time should be a string, got {other:?}")),
        };
        let top = got.as_object_mut().ok_or("not an object")?;
        wall(top.remove("generated_at"))?;
        let got_apps = top
            .get_mut("apps")
            .and_then(Value::as_array_mut)
            .ok_or("no apps array")?;
        if got_apps.len() != self.apps.len() {
            return Err(format!(
                "{} apps, model {}: {body}",
                got_apps.len(),
                self.apps.len()
            ));
        }
        for (app, model) in got_apps.iter_mut().zip(self.apps.values()) {
            let app = app.as_object_mut().ok_or("an app is not an object")?;
            wall(app.remove("last_seen"))?;
            // serde_json (without `float_roundtrip`) may read a float one
            // ulp off what was written: the ratio is compared to 1e-12 here
            // (exactly in `check_metrics`)
            let ratio = app.remove("overdue_ratio").and_then(|v| v.as_f64());
            let want = self.ratio(model);
            match ratio {
                Some(r) if (r - want).abs() <= 1e-12 * want.max(1.0) => {}
                other => return Err(format!("overdue ratio {other:?}, model {want}: {body}")),
            }
            // the history's figures (the model keeps no history): their shape
            for uptime in ["uptime_24h", "uptime_7d"] {
                match app.remove(uptime) {
                    Some(Value::Null) => {}
                    Some(Value::Number(n))
                        if n.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)) => {}
                    other => return Err(format!("{uptime} {other:?}: {body}")),
                }
            }
            match app.remove("strip_24h") {
                Some(Value::String(s))
                    if s.len() == 48 && s.bytes().all(|b| b"-owc".contains(&b)) => {}
                other => return Err(format!("strip_24h {other:?}: {body}")),
            }
        }
        let t = self.totals;
        let mut counts = [0u64; 3];
        let apps: Vec<Value> = self
            .apps
            .iter()
            .map(|(key, app)| {
                let state = self.state(app);
                counts[state as usize] += 1;
                let state = ["ok", "warning", "critical"][state as usize];
                json!({
                    "key": key,
                    "id": app.id,
                    "host": if self.key_by_peer { json!(app.host) } else { Value::Null },
                    "state": state,
                    "granted_ms": app.granted_ms,
                    "last_seen_ago_ms": self.elapsed(app),
                    "expected": false,
                    "missing": false,
                    "failed": null,
                })
            })
            .collect();
        let want = json!({
            "version": 1,
            "thresholds": {
                "warn_ratio": WARN as f64,
                "crit_ratio": CRIT as f64,
                "drop_ratio": DROP as f64,
                "tolerance_ms": TOLERANCE_MS,
            },
            "counters": {
                "inits": t.inits,
                "pings": t.pings,
                "dones": t.dones,
                "expiries": t.expiries,
                "refusals": t.refused,
                "fails": 0,
            },
            "counts": { "ok": counts[0], "warning": counts[1], "critical": counts[2], "missing": 0 },
            "apps": apps,
        });
        match got == want {
            true => Ok(()),
            false => Err(format!("/api/v1/apps: got {got}\nmodel {want}")),
        }
    }
}

/// One sample's identity: the metric name and, for per-app samples, the
/// `app` and `host` label values (unescaped).
type SampleKey = (String, Option<(String, String)>);

/// Reads a Prometheus text exposition of the shapes `name value` and
/// `name{app="..",host=".."} value` (comments skipped).
pub fn parse_exposition(text: &str) -> Result<BTreeMap<SampleKey, String>, String> {
    fn label<'a>(rest: &'a str, name: &str) -> Result<(String, &'a str), String> {
        let rest = rest
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix("=\""))
            .ok_or_else(|| format!("no {name}=\" in {rest:?}"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((value, &rest[i + 1..])),
                '\\' => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {rest:?}")),
                },
                c => value.push(c),
            }
        }
        Err(format!("unterminated label in {rest:?}"))
    }
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = match line.split_once('{') {
            Some((name, rest)) if name == "heartbeat_apps_by_state" => {
                let (state, rest) = label(rest, "state")?;
                let value = rest.strip_prefix("} ").ok_or_else(|| format!("{line:?}"))?;
                ((format!("{name}:{state}"), None), value)
            }
            Some((name, rest)) if name == "heartbeat_refused_total" => {
                let (reason, rest) = label(rest, "reason")?;
                let value = rest.strip_prefix("} ").ok_or_else(|| format!("{line:?}"))?;
                ((format!("{name}:{reason}"), None), value)
            }
            Some((name, rest)) => {
                let (app, rest) = label(rest, "app")?;
                let rest = rest.strip_prefix(',').ok_or_else(|| format!("{line:?}"))?;
                let (host, rest) = label(rest, "host")?;
                let value = rest.strip_prefix("} ").ok_or_else(|| format!("{line:?}"))?;
                ((name.to_owned(), Some((app, host))), value)
            }
            None => {
                let (name, value) = line.split_once(' ').ok_or_else(|| format!("{line:?}"))?;
                ((name.to_owned(), None), value)
            }
        };
        if samples.insert(key, value.to_owned()).is_some() {
            return Err(format!("sample twice: {line:?}"));
        }
    }
    Ok(samples)
}

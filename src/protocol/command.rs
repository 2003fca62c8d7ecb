//! Parsing of a request-target (`/path?query`) and optional form body into a
//! heartbeat [`Command`].
//!
//! Rules (see `PROTOCOL.md`):
//! - the command is the **last** path segment (`/x/hb_ping` is `hb_ping`);
//! - the query is `TIMEOUT&name=value&...`: its first element is the bare
//!   timeout in milliseconds (empty means 0). If that first element contains
//!   `=`, it is taken as a named parameter and the timeout counts as absent
//!   (0);
//! - the query is split on `&` and `=` **before** percent-decoding, so
//!   `appid=a%26b` is the id `a&b`;
//! - in the query a `+` is a literal `+` (`appid=a+b` is the id `a+b`), as
//!   the reference server reads it and as its shell, Python and browser
//!   clients, which put ids into URLs unencoded, expect; a space is `%20`;
//! - `appid` comes from the query, or, when absent there, from an
//!   `application/x-www-form-urlencoded` body, where HTML form rules apply
//!   and `+` is a space; the first `appid` wins;
//! - the id must pass [`check_app_id`](super::check_app_id): not empty, at most
//!   [`MAX_APP_ID_LEN`] bytes, and no character that would
//!   corrupt a line of `/list` or a Nagios plugin line (control characters,
//!   `|`, U+2028, U+2029, the bidirectional controls);
//! - unknown parameters (`cache_buster=...`) are ignored without validation;
//! - `list`, `status` and `metrics` ignore the timeout element;
//! - two paths are matched whole, query ignored: `/` is the dashboard and
//!   `/api/v1/apps` its JSON API (`/x/` and `/x/api/v1/apps` stay unknown).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use super::{printable, AppId, AppIdError, Beat, MAX_APP_ID_LEN, MAX_TIMEOUT_MS};

/// Longest echo of a rejected timeout value inside an error message, in chars.
const MAX_ECHO_CHARS: usize = 64;

/// A parsed heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `hb_init`, `hb_ping` or `hb_done` for `app`: with init and ping the
    /// client promises its next ping within `timeout`; with done, `timeout`
    /// is the announced shutdown delay (informational).
    Beat {
        /// Which of the three.
        beat: Beat,
        /// The application id, percent-decoded and checked.
        app: AppId,
        /// The timeout the client promises (whole milliseconds on the wire).
        timeout: Duration,
    },
    /// `list`: one line per tracked application.
    List,
    /// `status`: status of one application, or of the whole host.
    Status {
        /// The queried id (checked), or `None` for the host status.
        app: Option<AppId>,
    },
    /// `metrics`: Prometheus text exposition.
    Metrics,
    /// `GET /` (exactly that path): the dashboard, an HTML page that
    /// refreshes itself from [`Command::Apps`]. The reference answers `/`
    /// with its unknown-command `400`; none of its clients requests it.
    Dashboard,
    /// `GET /dashboard.js` (exactly that path): the dashboard's script, on
    /// its own path so that the page's `Content-Security-Policy` allows no
    /// inline script.
    DashboardScript,
    /// `GET /api/v1/apps` (exactly that path): the applications, the
    /// counters and the thresholds as JSON (`docs/api-v1.md`): every
    /// application without a query, one page with one
    /// ([`AppsQuery`](super::apps::AppsQuery)).
    Apps(Option<super::apps::AppsQuery>),
    /// `GET /api/v1/events?app=ID...` (exactly that path): the history of
    /// one application as JSON ([`history`](super::history)).
    Events(super::history::EventsQuery),
    /// `hb_fail?CODE&appid=ID`, an extension (`docs/api-v1.md`): the
    /// application's run failed with exit code `code` (0 to 255; 128 + N
    /// for a death by signal N). The reference answers it `400`.
    Fail {
        /// The application id, percent-decoded and checked.
        app: AppId,
        /// The exit code.
        code: u8,
    },
}

impl Command {
    /// The command's name as it appears in the path (`hb_init`, `list`,
    /// ..., `api/v1/apps`; `dashboard` for `/`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Beat { beat, .. } => beat_name(*beat),
            Command::List => "list",
            Command::Status { .. } => "status",
            Command::Metrics => "metrics",
            Command::Dashboard => "dashboard",
            Command::DashboardScript => "dashboard.js",
            Command::Apps(_) => "api/v1/apps",
            Command::Events(_) => "api/v1/events",
            Command::Fail { .. } => FAIL,
        }
    }

    /// Whether this is one of the operator's views (`/metrics`, the
    /// dashboard and its script, `/api/*`), which the reference does not
    /// have: the ones a `--web-config` with users protects and that carry
    /// no `Access-Control-Allow-Origin`. The beat commands, `hb_fail`,
    /// `list` and `status` are the reference's.
    ///
    /// ```
    /// use heartbeat_sdk::protocol::command::parse_command;
    ///
    /// assert!(parse_command("/metrics", None).unwrap().is_operator_view());
    /// assert!(!parse_command("/status", None).unwrap().is_operator_view());
    /// ```
    pub fn is_operator_view(&self) -> bool {
        matches!(
            self,
            Command::Metrics
                | Command::Dashboard
                | Command::DashboardScript
                | Command::Apps(_)
                | Command::Events(_)
        )
    }
}

/// The path of [`Command::DashboardScript`].
const DASHBOARD_SCRIPT_PATH: &str = "/dashboard.js";

/// The name of the failure extension's command.
const FAIL: &str = "hb_fail";

/// `hb_init`, `hb_ping` or `hb_done`: the path of `beat` without its `/`.
fn beat_name(beat: Beat) -> &'static str {
    let path = beat.path();
    path.strip_prefix('/').unwrap_or(path)
}

/// Limits applied while parsing; [`Default`] gives [`MAX_APP_ID_LEN`] and
/// [`MAX_TIMEOUT_MS`] (other values only in this module's tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ParseLimits {
    /// Longest accepted application id, in bytes after decoding.
    max_app_id_len: usize,
    /// Largest accepted timeout, in milliseconds.
    max_timeout_ms: u64,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_app_id_len: MAX_APP_ID_LEN,
            max_timeout_ms: MAX_TIMEOUT_MS,
        }
    }
}

/// Why a request could not be turned into a [`Command`].
///
/// `Display` gives a one-line reason; the HTTP layer answers
/// `ERROR: {reason}` with [`CommandError::http_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// The last path segment names no known command. `target` is the
    /// request-target, with control characters escaped.
    UnknownCommand {
        /// The offending request-target (sanitised).
        target: String,
    },
    /// The timeout element is not a decimal number.
    NonNumericTimeout {
        /// The decoded timeout element (sanitised, truncated).
        raw: String,
    },
    /// The timeout element is negative.
    NegativeTimeout {
        /// The decoded timeout element (sanitised, truncated).
        raw: String,
    },
    /// The timeout exceeds the configured maximum.
    TimeoutTooLarge {
        /// The decoded timeout element (sanitised, truncated).
        raw: String,
        /// The maximum accepted timeout (whole milliseconds).
        max: Duration,
    },
    /// `hb_init`/`hb_ping`/`hb_done` without any `appid`.
    MissingAppId {
        /// The command name.
        command: &'static str,
    },
    /// `appid=` with an empty value.
    EmptyAppId {
        /// The command name.
        command: &'static str,
    },
    /// The decoded application id is longer than allowed (HTTP 414).
    AppIdTooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum length in bytes.
        max: usize,
    },
    /// The decoded application id contains a control character (such as a
    /// newline), which would break the line-based replies.
    AppIdControlChar,
    /// The decoded application id contains another character that would
    /// corrupt a line-based reply: `|` (it starts a plugin line's perfdata),
    /// U+2028/U+2029 (Unicode line breaks) or a bidirectional control.
    /// (Empty, over-long and control-character ids keep their own variants.)
    InvalidAppId {
        /// Why the id was refused.
        reason: AppIdError,
    },
    /// A `%` not followed by two hex digits.
    InvalidPercentEncoding {
        /// Which part of the request (`timeout` or `appid`).
        component: &'static str,
    },
    /// The percent-decoded bytes are not UTF-8.
    InvalidUtf8 {
        /// Which part of the request (`timeout` or `appid`).
        component: &'static str,
    },
    /// `hb_fail`'s exit code is not a whole number from 0 to 255.
    InvalidExitCode {
        /// The decoded element (sanitised, truncated).
        raw: String,
    },
    /// A query parameter of the JSON API that does not parse.
    InvalidParameter {
        /// The parameter (`host`, `since`, `limit`).
        name: &'static str,
        /// Why (one line, the value escaped).
        reason: String,
    },
}

impl CommandError {
    /// The HTTP status this error deserves: 414 for an over-long id, else 400.
    pub fn http_status(&self) -> u16 {
        match self {
            CommandError::AppIdTooLong { .. } => 414,
            _ => 400,
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::UnknownCommand { target } => {
                write!(f, "cannot process your request: [{target}]")
            }
            CommandError::NonNumericTimeout { raw } => write!(
                f,
                "timeout must be a whole number of milliseconds, got [{raw}]"
            ),
            CommandError::NegativeTimeout { raw } => {
                write!(f, "timeout must not be negative, got [{raw}]")
            }
            CommandError::TimeoutTooLarge { raw, max } => {
                let max_ms = max.as_millis();
                write!(f, "timeout [{raw}] exceeds the maximum of {max_ms} ms")
            }
            CommandError::MissingAppId { command } => {
                write!(f, "missing appid parameter for {command}")
            }
            CommandError::EmptyAppId { command } => write!(f, "empty appid for {command}"),
            CommandError::AppIdTooLong { len, max } => {
                write!(f, "appid is {len} bytes long, the maximum is {max}")
            }
            CommandError::AppIdControlChar => {
                write!(f, "appid must not contain control characters")
            }
            CommandError::InvalidAppId { reason } => write!(f, "appid refused: {reason}"),
            CommandError::InvalidPercentEncoding { component } => {
                write!(f, "invalid percent-encoding in {component}")
            }
            CommandError::InvalidParameter { name, reason } => {
                write!(f, "invalid {name}: {reason}")
            }
            CommandError::InvalidExitCode { raw } => {
                write!(
                    f,
                    "exit code must be a whole number from 0 to 255, got [{raw}]"
                )
            }
            CommandError::InvalidUtf8 { component } => {
                write!(f, "{component} is not valid UTF-8 after percent-decoding")
            }
        }
    }
}

impl std::error::Error for CommandError {}

/// A `%` at byte `offset` is not followed by two hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PercentDecodeError {
    /// Byte offset of the offending `%` in the input.
    offset: usize,
}

/// Percent-decodes `input` (`%XX`, either hex case); with `plus_as_space`,
/// `+` becomes a space (form encoding). Borrows when nothing needs decoding.
///
/// # Errors
/// [`PercentDecodeError`] when a `%` is not followed by two hex digits.
fn percent_decode(input: &[u8], plus_as_space: bool) -> Result<Cow<'_, [u8]>, PercentDecodeError> {
    let needs_work = input
        .iter()
        .any(|&b| b == b'%' || (plus_as_space && b == b'+'));
    if !needs_work {
        return Ok(Cow::Borrowed(input));
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hi = input.get(i + 1).copied().and_then(hex_value);
                let lo = input.get(i + 2).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(PercentDecodeError { offset: i }),
                }
                i += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(Cow::Owned(out))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a request-target (`/path?query`) and optional form body into a
/// [`Command`] (see the module docs). Never panics.
///
/// # Errors
/// A [`CommandError`] for an unknown command, a bad timeout (init, ping and
/// done only), a missing, empty, over-long or malformed `appid`.
pub fn parse_command(target: &str, form_body: Option<&[u8]>) -> Result<Command, CommandError> {
    parse_command_with(target, form_body, &ParseLimits::default())
}

/// [`parse_command`] with `limits`.
fn parse_command_with(
    target: &str,
    form_body: Option<&[u8]>,
    limits: &ParseLimits,
) -> Result<Command, CommandError> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    // the dashboard and its API: exact paths, not a last segment
    match path {
        "/" => return Ok(Command::Dashboard),
        DASHBOARD_SCRIPT_PATH => return Ok(Command::DashboardScript),
        super::apps::APPS_PATH => {
            return super::apps::AppsQuery::from_query(query).map(Command::Apps)
        }
        super::history::EVENTS_PATH => {
            return super::history::EventsQuery::from_query(query).map(Command::Events)
        }
        _ => {}
    }
    let name = path.rsplit('/').next().unwrap_or("");
    // `None` is `status` or `hb_fail`, the other commands with an `appid`
    let beat = match name {
        FAIL => None,
        "hb_init" => Some(Beat::Init),
        "hb_ping" => Some(Beat::Ping),
        "hb_done" => Some(Beat::Done),
        "list" => return Ok(Command::List),
        "metrics" => return Ok(Command::Metrics),
        "status" => None,
        _ => {
            return Err(CommandError::UnknownCommand {
                target: printable(target).into_owned(),
            })
        }
    };

    let mut elements = query.as_bytes().split(|&b| b == b'&');
    let first = elements.next().unwrap_or(b"");
    let (timeout_element, first_param) = if first.contains(&b'=') {
        (&b""[..], Some(first))
    } else {
        (first, None)
    };
    let params = first_param.into_iter().chain(elements);

    if name == FAIL {
        let code = parse_exit_code(timeout_element)?;
        let app =
            appid_of(params, form_body)?.ok_or(CommandError::MissingAppId { command: FAIL })?;
        let app = validate_app(app, FAIL, limits)?;
        return Ok(Command::Fail { app, code });
    }
    let Some(beat) = beat else {
        let app = appid_of(params, form_body)?
            .map(|app| validate_app(app, "status", limits))
            .transpose()?;
        return Ok(Command::Status { app });
    };

    let command = beat_name(beat);
    let timeout = Duration::from_millis(parse_timeout(timeout_element, limits)?);
    let app = appid_of(params, form_body)?.ok_or(CommandError::MissingAppId { command })?;
    let app = validate_app(app, command, limits)?;
    Ok(Command::Beat { beat, app, timeout })
}

/// The `appid` of the query's `params`, else of the form body.
fn appid_of<'a>(
    params: impl Iterator<Item = &'a [u8]>,
    form_body: Option<&[u8]>,
) -> Result<Option<String>, CommandError> {
    match find_appid(params, QUERY)? {
        Some(app) => Ok(Some(app)),
        None => match form_body {
            Some(body) => find_appid(body.split(|&b| b == b'&'), FORM),
            None => Ok(None),
        },
    }
}

/// `plus_as_space` for the query: `+` is literal there, as in the reference.
const QUERY: bool = false;
/// `plus_as_space` for a form body: `+` is a space (HTML form encoding).
const FORM: bool = true;

/// Percent-decodes one query/form component into UTF-8 text (`+` a space
/// when `plus_as_space`). Borrows when nothing needs decoding (the timeout
/// of every ping).
pub(super) fn decode_text<'a>(
    raw: &'a [u8],
    component: &'static str,
    plus_as_space: bool,
) -> Result<Cow<'a, str>, CommandError> {
    let bytes = percent_decode(raw, plus_as_space)
        .map_err(|_| CommandError::InvalidPercentEncoding { component })?;
    let text = match bytes {
        Cow::Borrowed(bytes) => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
        Cow::Owned(bytes) => String::from_utf8(bytes).ok().map(Cow::Owned),
    };
    text.ok_or(CommandError::InvalidUtf8 { component })
}

/// `hb_fail`'s first element: 0 to 255 in decimal (leading zeros allowed).
fn parse_exit_code(raw: &[u8]) -> Result<u8, CommandError> {
    let text = decode_text(raw, "exit code", QUERY)?;
    let significant = text.trim_start_matches('0');
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let code = match significant {
        "" => Some(0),
        _ if significant.len() <= 3 => significant.parse::<u16>().ok(),
        _ => None,
    };
    match code.and_then(|code| u8::try_from(code).ok()) {
        Some(code) if digits => Ok(code),
        _ => Err(CommandError::InvalidExitCode {
            raw: echoed(&text, MAX_ECHO_CHARS),
        }),
    }
}

fn parse_timeout(raw: &[u8], limits: &ParseLimits) -> Result<u64, CommandError> {
    let text = decode_text(raw, "timeout", QUERY)?;
    if text.is_empty() {
        return Ok(0);
    }
    let echo = || echoed(&text, MAX_ECHO_CHARS);
    if let Some(rest) = text.strip_prefix('-') {
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CommandError::NegativeTimeout { raw: echo() });
        }
        return Err(CommandError::NonNumericTimeout { raw: echo() });
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::NonNumericTimeout { raw: echo() });
    }
    let too_large = || CommandError::TimeoutTooLarge {
        raw: echo(),
        max: Duration::from_millis(limits.max_timeout_ms),
    };
    // All ASCII digits: the only possible parse failure is overflow.
    let value: u64 = text.parse().map_err(|_| too_large())?;
    if value > limits.max_timeout_ms {
        return Err(too_large());
    }
    Ok(value)
}

/// Returns the decoded value of the first `appid` parameter, if any.
/// Parameters whose names do not decode are not `appid` and are ignored.
fn find_appid<'a>(
    params: impl Iterator<Item = &'a [u8]>,
    plus_as_space: bool,
) -> Result<Option<String>, CommandError> {
    for param in params {
        if param.is_empty() {
            continue;
        }
        let (name, value) = match param.iter().position(|&b| b == b'=') {
            Some(eq) => (&param[..eq], &param[eq + 1..]),
            None => (param, &b""[..]),
        };
        let is_appid = name == b"appid"
            || matches!(percent_decode(name, plus_as_space), Ok(decoded) if *decoded == *b"appid");
        if is_appid {
            return decode_text(value, "appid", plus_as_space).map(|app| Some(app.into_owned()));
        }
    }
    Ok(None)
}

/// The one id rule of [`check_app_id`], mapped onto this parser's errors
/// (empty, over-long and control-character ids keep their historical
/// variants; the rest is [`CommandError::InvalidAppId`]).
fn validate_app(
    app: String,
    command: &'static str,
    limits: &ParseLimits,
) -> Result<AppId, CommandError> {
    AppId::with_max_len(app, limits.max_app_id_len).map_err(|reason| match reason {
        AppIdError::Empty => CommandError::EmptyAppId { command },
        AppIdError::TooLong { len, max } => CommandError::AppIdTooLong { len, max },
        AppIdError::ControlChar { .. } => CommandError::AppIdControlChar,
        reason => CommandError::InvalidAppId { reason },
    })
}

/// The first `max_chars` characters of `text` made [`printable`], with
/// `...` when some were cut, so that an echoed value keeps an error message
/// on one short line.
fn echoed(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", printable(&text[..cut])),
        None => printable(text).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(target: &str) -> Command {
        parse_command(target, None).unwrap()
    }

    fn err(target: &str) -> CommandError {
        parse_command(target, None).unwrap_err()
    }

    fn beat(beat: Beat, app: &str, timeout_ms: u64) -> Command {
        Command::Beat {
            beat,
            app: AppId::new(app).unwrap(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn ping(app: &str, timeout_ms: u64) -> Command {
        beat(Beat::Ping, app, timeout_ms)
    }

    #[test]
    fn parses_the_failure_extension() {
        let fail = |app: &str, code| Command::Fail {
            app: AppId::new(app).unwrap(),
            code,
        };
        assert_eq!(
            ok("/hb_fail?3&appid=cron%20job&cache_buster=1"),
            fail("cron job", 3)
        );
        assert_eq!(ok("/hb_fail?0&appid=a"), fail("a", 0));
        assert_eq!(ok("/hb_fail?000255&appid=a"), fail("a", 255));
        assert_eq!(ok("/x/hb_fail?143&appid=a").name(), "hb_fail");
        assert_eq!(
            parse_command("/hb_fail?137", Some(b"appid=b")).unwrap(),
            fail("b", 137)
        );
        for bad in ["256", "-1", "", "3x", "1e2", "99999999999999999999"] {
            let e = err(&format!("/hb_fail?{bad}&appid=a"));
            assert!(
                matches!(&e, CommandError::InvalidExitCode { raw } if raw == bad),
                "{bad}: {e:?}"
            );
            assert_eq!(e.http_status(), 400);
        }
        assert_eq!(
            err("/hb_fail?3"),
            CommandError::MissingAppId { command: "hb_fail" }
        );
        assert_eq!(
            err("/hb_fail?3&appid=a%0Ab"),
            CommandError::AppIdControlChar
        );
        assert!(err("/hb_fail?%0A&appid=a")
            .to_string()
            .starts_with("exit code must be a whole number from 0 to 255, got [\\n"));
    }

    #[test]
    fn parses_the_three_heartbeat_commands() {
        assert_eq!(
            ok("/hb_init?2000&appid=Tetris&cache_buster=1.2"),
            beat(Beat::Init, "Tetris", 2000)
        );
        assert_eq!(ok("/hb_ping?2000&appid=Tetris"), ping("Tetris", 2000));
        assert_eq!(ok("/hb_done?0&appid=Tetris"), beat(Beat::Done, "Tetris", 0));
    }

    #[test]
    fn command_is_the_last_path_segment() {
        assert_eq!(ok("/x/y/hb_ping?5&appid=a"), ping("a", 5));
        assert_eq!(ok("http://h:8888/hb_ping?5&appid=a"), ping("a", 5));
        assert_eq!(ok("/anything/list"), Command::List);
        assert_eq!(ok("/metrics?junk"), Command::Metrics);
    }

    #[test]
    fn empty_or_absent_timeout_is_zero() {
        assert_eq!(ok("/hb_ping?&appid=X"), ping("X", 0));
        assert_eq!(ok("/hb_ping?appid=X"), ping("X", 0));
        assert_eq!(ok("/hb_ping?0003000&appid=X"), ping("X", 3000));
    }

    #[test]
    fn list_and_status_ignore_the_timeout() {
        assert_eq!(ok("/list?abc"), Command::List);
        assert_eq!(ok("/status"), Command::Status { app: None });
        assert_eq!(ok("/status?abc"), Command::Status { app: None });
        assert_eq!(
            ok("/status?-5&appid=T"),
            Command::Status {
                app: Some(AppId::new("T").unwrap())
            }
        );
    }

    #[test]
    fn bad_timeouts_are_rejected() {
        assert!(matches!(
            err("/hb_init?abc&appid=y"),
            CommandError::NonNumericTimeout { .. }
        ));
        assert!(matches!(
            err("/hb_ping?-5&appid=y"),
            CommandError::NegativeTimeout { .. }
        ));
        assert!(matches!(
            err("/hb_ping?-&appid=y"),
            CommandError::NonNumericTimeout { .. }
        ));
        assert!(matches!(
            err("/hb_ping?99999999999999999999&appid=y"),
            CommandError::TimeoutTooLarge { .. }
        ));
        assert!(matches!(
            err("/hb_ping?4294967296&appid=y"),
            CommandError::TimeoutTooLarge { .. }
        ));
        assert_eq!(ok("/hb_ping?4294967295&appid=y"), ping("y", MAX_TIMEOUT_MS));
        assert!(matches!(
            err("/hb_ping?1.5&appid=y"),
            CommandError::NonNumericTimeout { .. }
        ));
        assert!(matches!(
            err("/hb_ping?+5&appid=y"),
            CommandError::NonNumericTimeout { .. }
        ));
        assert!(matches!(
            err("/hb_ping?%zz&appid=y"),
            CommandError::InvalidPercentEncoding {
                component: "timeout"
            }
        ));
        assert_eq!(ok("/hb_ping?%32%30&appid=y"), ping("y", 20));
    }

    #[test]
    fn appid_must_be_present_and_non_empty() {
        assert_eq!(
            err("/hb_ping?2000"),
            CommandError::MissingAppId { command: "hb_ping" }
        );
        assert_eq!(
            err("/hb_init"),
            CommandError::MissingAppId { command: "hb_init" }
        );
        assert_eq!(
            err("/hb_done?0&appid="),
            CommandError::EmptyAppId { command: "hb_done" }
        );
        assert_eq!(
            err("/hb_done?0&appid"),
            CommandError::EmptyAppId { command: "hb_done" }
        );
        assert_eq!(
            err("/status?0&appid="),
            CommandError::EmptyAppId { command: "status" }
        );
    }

    #[test]
    fn percent_decoding_happens_after_splitting() {
        assert_eq!(ok("/hb_ping?1&appid=a%26b"), ping("a&b", 1));
        assert_eq!(ok("/hb_ping?1&appid=a%3Db%3fc"), ping("a=b?c", 1));
        assert_eq!(ok("/hb_ping?1&appid=a=b"), ping("a=b", 1));
        assert_eq!(ok("/hb_ping?1&appid=my%20app"), ping("my app", 1));
        assert_eq!(ok("/hb_ping?1&appid=caf%C3%A9"), ping("café", 1));
        assert_eq!(ok("/hb_ping?1&%61ppid=x"), ping("x", 1));
        assert_eq!(ok("/hb_ping?1&appid=first&appid=second"), ping("first", 1));
    }

    /// Issue 10: the reference keeps a literal `+` in the query, and its
    /// shell, Python and browser clients send ids unencoded; in a form body
    /// HTML form rules make it a space.
    #[test]
    fn plus_is_literal_in_the_query_and_a_space_in_a_form() {
        assert_eq!(ok("/hb_ping?1&appid=a+b"), ping("a+b", 1));
        assert_eq!(ok("/hb_ping?1&appid=C++"), ping("C++", 1));
        assert_eq!(ok("/hb_ping?1&appid=a%2Bb"), ping("a+b", 1));
        assert_eq!(ok("/hb_ping?1&appid=a+b%20c"), ping("a+b c", 1));
        assert_eq!(
            ok("/status?0&appid=a+b"),
            Command::Status {
                app: Some(AppId::new("a+b").unwrap())
            }
        );
        let init = |body: &[u8]| parse_command("/hb_init?5", Some(body)).unwrap();
        assert_eq!(init(b"appid=a+b"), beat(Beat::Init, "a b", 5));
        assert_eq!(init(b"appid=a%2Bb"), beat(Beat::Init, "a+b", 5));
        // the query wins over the form, with its own rule
        assert_eq!(
            parse_command("/hb_init?5&appid=a+b", Some(b"appid=c+d")).unwrap(),
            beat(Beat::Init, "a+b", 5)
        );
    }

    /// Issue 10: ids that would forge perfdata or fake lines get a 400
    /// with a reason, whether they come in the query or a form.
    #[test]
    fn ids_that_would_corrupt_a_reply_line_are_refused() {
        let cases = [
            (
                "kiosk%7C%20od%3D0.00%3B3%3B5%3B0%3B6%20delay%3D86400000ms%3B%3B%3B%20",
                AppIdError::PerfdataSeparator,
            ),
            ("a|b", AppIdError::PerfdataSeparator),
            (
                "x%E2%80%A8Tetris%20%40%2010.0.0.5",
                AppIdError::LineSeparator { ch: '\u{2028}' },
            ),
            ("x%E2%80%A9y", AppIdError::LineSeparator { ch: '\u{2029}' }),
            ("x%E2%80%AEy", AppIdError::BidiControl { ch: '\u{202E}' }),
            ("x%E2%80%AAy", AppIdError::BidiControl { ch: '\u{202A}' }),
            ("x%E2%81%A6y", AppIdError::BidiControl { ch: '\u{2066}' }),
            ("x%E2%81%A9y", AppIdError::BidiControl { ch: '\u{2069}' }),
        ];
        for (encoded, reason) in cases {
            for command in ["hb_init", "hb_ping", "hb_done", "status"] {
                let e = err(&format!("/{command}?1&appid={encoded}"));
                assert_eq!(
                    e,
                    CommandError::InvalidAppId { reason },
                    "{command} {encoded}"
                );
                assert_eq!(e.http_status(), 400);
                assert!(
                    e.to_string().starts_with("appid refused: it contains"),
                    "{e}"
                );
                let body = format!("appid={encoded}");
                assert_eq!(
                    parse_command(&format!("/{command}?1"), Some(body.as_bytes())),
                    Err(CommandError::InvalidAppId { reason }),
                    "{command} form {encoded}"
                );
            }
        }
        // a ']' or other Unicode is fine
        assert_eq!(ok("/hb_ping?1&appid=a%5Db%5B"), ping("a]b[", 1));
        assert_eq!(ok("/hb_ping?1&appid=%E2%80%8Bz"), ping("\u{200B}z", 1));
    }

    #[test]
    fn bad_encodings_are_rejected() {
        for target in [
            "/hb_ping?1&appid=a%",
            "/hb_ping?1&appid=a%2",
            "/hb_ping?1&appid=%g0",
        ] {
            assert_eq!(
                err(target),
                CommandError::InvalidPercentEncoding { component: "appid" },
                "{target}"
            );
        }
        assert_eq!(
            err("/hb_ping?1&appid=%FF%FE"),
            CommandError::InvalidUtf8 { component: "appid" }
        );
        assert_eq!(
            err("/hb_ping?1&appid=a%0Ab"),
            CommandError::AppIdControlChar
        );
    }

    #[test]
    fn unknown_parameters_are_ignored_even_if_malformed() {
        assert_eq!(
            ok("/hb_ping?1&cache_buster=%zz&&x&appid=a&y=%FF"),
            ping("a", 1)
        );
    }

    #[test]
    fn the_dashboard_and_its_api_are_two_exact_paths() {
        for target in ["/", "/?0&appid=x", "/?"] {
            assert_eq!(parse_command(target, None), Ok(Command::Dashboard));
        }
        for target in ["/api/v1/apps", "/api/v1/apps?cache_buster=1"] {
            assert_eq!(parse_command(target, None), Ok(Command::Apps(None)));
        }
        assert_eq!(Command::Dashboard.name(), "dashboard");
        assert_eq!(Command::Apps(None).name(), "api/v1/apps");
    }

    #[test]
    fn unknown_commands_echo_the_target() {
        let e = err("/hb_pong?1&appid=a");
        assert_eq!(e.http_status(), 400);
        assert_eq!(
            e.to_string(),
            "cannot process your request: [/hb_pong?1&appid=a]"
        );
        for target in [
            "",
            "//",
            "/x/",
            "*",
            "/hb_ping/",
            "/HB_PING?1&appid=a",
            "/x/api/v1/apps",
            "/api/v1/apps/",
            "/api/v2/apps",
        ] {
            assert!(matches!(err(target), CommandError::UnknownCommand { .. }));
        }
        assert_eq!(
            err("/x\ny").to_string(),
            "cannot process your request: [/x\\ny]"
        );
        // the one terminal escaper: Unicode line breaks too, not only controls
        assert_eq!(
            err("/x\u{2028}y\u{1b}").to_string(),
            "cannot process your request: [/x\\u{2028}y\\u{1b}]"
        );
        // echoed timeouts are cut after 64 characters, escapes kept whole
        let long = format!("/hb_ping?{}\u{2029}x&appid=a", "9".repeat(63));
        assert_eq!(
            err(&long).to_string(),
            format!(
                "timeout must be a whole number of milliseconds, got [{}\\u{{2029}}...]",
                "9".repeat(63)
            )
        );
    }

    #[test]
    fn appid_length_limit_gives_414() {
        let long = "a".repeat(MAX_APP_ID_LEN + 1);
        let e = err(&format!("/hb_ping?1&appid={long}"));
        assert_eq!(e.http_status(), 414);
        let max = "a".repeat(MAX_APP_ID_LEN);
        assert_eq!(ok(&format!("/hb_ping?1&appid={max}")), ping(&max, 1));
        let limits = ParseLimits {
            max_app_id_len: 3,
            ..ParseLimits::default()
        };
        assert_eq!(
            parse_command_with("/hb_ping?1&appid=abcd", None, &limits),
            Err(CommandError::AppIdTooLong { len: 4, max: 3 })
        );
    }

    #[test]
    fn appid_from_form_body_when_absent_from_query() {
        let body: &[u8] = b"appid=Te%26tris&other=1";
        assert_eq!(
            parse_command("/hb_init?2000&cache_buster=1", Some(body)).unwrap(),
            beat(Beat::Init, "Te&tris", 2000)
        );
        assert_eq!(
            parse_command("/hb_init?2000&appid=q", Some(body)).unwrap(),
            beat(Beat::Init, "q", 2000)
        );
        assert_eq!(
            parse_command("/status", Some(b"appid=S")).unwrap(),
            Command::Status {
                app: Some(AppId::new("S").unwrap())
            }
        );
        assert_eq!(
            parse_command("/hb_done", Some(b"{\"json\":1}")).unwrap_err(),
            CommandError::MissingAppId { command: "hb_done" }
        );
        assert_eq!(
            parse_command("/hb_done", Some(b"appid=%FF")).unwrap_err(),
            CommandError::InvalidUtf8 { component: "appid" }
        );
    }

    #[test]
    fn error_messages_are_single_lines() {
        let targets = [
            "/hb_ping?abc\n&appid=a",
            "/hb_ping?%0A&appid=a",
            "/hb_ping?-1&appid=a",
            "/hb_ping?99999999999999999999999999999999999999999999999999999999999999999999999&appid=a",
            "/hb_ping?1",
            "/nope\r\n",
        ];
        for target in targets {
            let e = err(target);
            assert!(!e.to_string().contains(['\n', '\r']), "{e}");
            assert!(e.to_string().len() < 200, "{e}");
        }
    }

    #[test]
    fn percent_decoder() {
        assert_eq!(&*percent_decode(b"a+b%41%6a", true).unwrap(), b"a bAj");
        assert_eq!(&*percent_decode(b"a+b", false).unwrap(), b"a+b");
        assert!(matches!(
            percent_decode(b"plain", true).unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            percent_decode(b"ab%4", true).unwrap_err(),
            PercentDecodeError { offset: 2 }
        );
        // Multi-byte UTF-8 right after '%' must not panic.
        assert!(percent_decode("%é".as_bytes(), true).is_err());
    }

    #[test]
    fn never_panics_on_odd_input() {
        let samples = [
            "",
            "?",
            "??",
            "&",
            "/?&&&",
            "/hb_ping?%",
            "/hb_ping?%%",
            "/hb_init?=&=",
            "/hb_done?é&appid=é",
            "/status?&appid=%C3",
            "/hb_ping?\u{0}&appid=\u{0}",
        ];
        for s in samples {
            let _ = parse_command(s, Some(s.as_bytes()));
        }
    }
}

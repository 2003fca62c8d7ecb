//! Nagios plugin status lines: `STATE - message| label=value[UOM];warn;crit;min;max ...`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::reply::{text, ParseError};

/// The service state a status line starts with, and its Nagios exit code.
///
/// JSON (feature `serde`): `"ok"`, `"warning"`, `"critical"`, `"unknown"`;
/// any other string reads as `"unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum State {
    /// `OK`, exit code 0.
    Ok,
    /// `WARNING`, exit code 1.
    Warning,
    /// `CRITICAL`, exit code 2.
    Critical,
    /// `UNKNOWN` or anything else, exit code 3.
    #[cfg_attr(feature = "serde", serde(other))]
    Unknown,
}

impl State {
    /// The Nagios plugin exit code: 0, 1, 2 or 3 (a `u8`, as
    /// [`std::process::ExitCode::from`] takes it).
    ///
    /// ```
    /// use heartbeat_sdk::State;
    /// let code: u8 = State::Critical.exit_code();
    /// assert_eq!(code, 2);
    /// let _ = std::process::ExitCode::from(code);
    /// ```
    pub fn exit_code(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }

    /// The state named by the first word of a status line; any word other
    /// than `OK`, `WARNING` or `CRITICAL` is [`State::Unknown`].
    pub fn from_word(word: &str) -> State {
        match word {
            "OK" => State::Ok,
            "WARNING" => State::Warning,
            "CRITICAL" => State::Critical,
            _ => State::Unknown,
        }
    }

    /// The state's word: `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Nagios threshold range (`10`, `10:`, `~:10`, `10:20`, `@10:20`).
///
/// An unbounded end is `None`. Nagios alerts when the value is outside
/// `start..=end`, or inside it when the range starts with `@`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Range {
    /// Lower bound, `None` for negative infinity (`~`).
    pub start: Option<f64>,
    /// Upper bound, `None` for infinity.
    pub end: Option<f64>,
    /// `@` prefix: alert when the value is inside the range.
    pub inside: bool,
}

impl Range {
    /// Whether `value` should raise an alert under this range.
    ///
    /// ```
    /// use heartbeat_sdk::protocol::Range;
    /// let warn: Range = "3".parse().unwrap();
    /// assert!(!warn.alerts(2.5));
    /// assert!(warn.alerts(3.5));
    /// ```
    pub fn alerts(&self, value: f64) -> bool {
        let within = self.start.is_none_or(|s| value >= s) && self.end.is_none_or(|e| value <= e);
        within == self.inside
    }
}

impl FromStr for Range {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new(format!("invalid threshold range {s:?}"));
        let (inside, body) = match s.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (start, end) = match body.split_once(':') {
            None => (Some(0.0), Some(parse_number(body).ok_or_else(bad)?)),
            Some((start, end)) => {
                let start = match start {
                    "~" => None,
                    "" => Some(0.0),
                    n => Some(parse_number(n).ok_or_else(bad)?),
                };
                let end = match end {
                    "" => None,
                    n => Some(parse_number(n).ok_or_else(bad)?),
                };
                (start, end)
            }
        };
        Ok(Range { start, end, inside })
    }
}

/// One performance datum: `label=value[UOM];[warn];[crit];[min];[max]`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PerfValue {
    /// The label, unquoted.
    pub label: String,
    /// The value, `None` when the plugin printed `U` (unknown).
    pub value: Option<f64>,
    /// The unit of measure as printed (`ms`, `s`, `%`, `B`, `c`...), or empty.
    pub unit: String,
    /// The warning range, if given.
    pub warn: Option<Range>,
    /// The critical range, if given.
    pub crit: Option<Range>,
    /// The minimum possible value, if given.
    pub min: Option<f64>,
    /// The maximum possible value, if given.
    pub max: Option<f64>,
}

impl PerfValue {
    /// The value as a duration, when its unit is `us`, `ms` or `s`.
    pub fn as_duration(&self) -> Option<Duration> {
        let value = self.value?;
        let secs = match self.unit.as_str() {
            "us" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            _ => return None,
        };
        Duration::try_from_secs_f64(secs).ok()
    }
}

/// A parsed Nagios plugin status line, as `/status` answers it.
///
/// [`Display`](fmt::Display) writes the original text back byte for byte.
///
/// Parsing is lenient where a monitoring check needs it to be: the first
/// word alone decides the [`State`] (and so the exit code), and perfdata
/// that does not parse is kept as text ([`raw_perfdata`](Self::raw_perfdata),
/// [`unparsed_perfdata`](Self::unparsed_perfdata)) instead of failing the
/// whole status: a server that answered is never reported as unreachable
/// because of what an application id or a plugin put into the line.
///
/// ```
/// use heartbeat_sdk::protocol::{State, Status};
///
/// let line = "WARNING - somewhat late application [Tetris @ 127.0.0.1]| od=3.10;3;5;0;6 delay=3000ms;;; ";
/// let status: Status = line.parse().unwrap();
/// assert_eq!(status.state(), State::Warning);
/// assert_eq!(status.state().exit_code(), 1);
/// assert_eq!(status.app(), Some("Tetris @ 127.0.0.1"));
/// assert_eq!(status.overdue_ratio(), Some(3.10));
/// assert_eq!(status.granted().unwrap().as_millis(), 3000);
/// assert_eq!(status.to_string(), line);
/// ```
///
/// JSON (feature `serde`): an object with the state, the derived fields and
/// `raw`, the line as sent; reading it back parses `raw` again, so the
/// other fields cannot contradict it (the shape is in the
/// [`protocol::apps`](crate::protocol::apps#json-shapes-feature-serde) docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    raw: String,
    state: State,
    message: String,
    raw_perfdata: String,
    perfdata: Vec<PerfValue>,
    unparsed: Vec<String>,
}

impl Status {
    /// Parse a whole plugin output: the first line's text and perfdata, and
    /// the perfdata of long-output lines after a `|`, if any.
    ///
    /// The state is the first word's ([`State::from_word`]); perfdata items
    /// that do not parse are kept in [`unparsed_perfdata`](Self::unparsed_perfdata),
    /// never an error.
    ///
    /// # Errors
    /// Only when there is no status text at all (an empty first line, or
    /// nothing before its `|`).
    ///
    /// ```
    /// use heartbeat_sdk::protocol::{State, Status};
    ///
    /// let status = Status::parse("CRITICAL - quite late application [x]| od=5.07;3;5;0;6 junk delay=3000ms;;; ").unwrap();
    /// assert_eq!(status.state(), State::Critical);
    /// assert_eq!(status.overdue_ratio(), Some(5.07));
    /// assert_eq!(status.granted().unwrap().as_millis(), 3000);
    /// assert_eq!(status.unparsed_perfdata(), ["junk"]);
    /// assert_eq!(status.raw_perfdata(), "od=5.07;3;5;0;6 junk delay=3000ms;;;");
    /// ```
    pub fn parse(raw: &str) -> Result<Status, ParseError> {
        let (first, rest) = raw.split_once('\n').unwrap_or((raw, ""));
        let first = first.trim_end_matches('\r');
        let (message, perf) = first.split_once('|').unwrap_or((first, ""));
        let message = message.trim();
        if message.is_empty() {
            return Err(ParseError::new("empty status line"));
        }
        let word = message
            .split(|c: char| c.is_whitespace() || c == ':')
            .next()
            .unwrap_or_default();
        let mut perfdata = Vec::new();
        let mut unparsed = Vec::new();
        parse_perfdata(perf, &mut perfdata, &mut unparsed);
        if let Some((_, long_perf)) = rest.split_once('|') {
            parse_perfdata(long_perf, &mut perfdata, &mut unparsed);
        }
        Ok(Status {
            raw: raw.to_owned(),
            state: State::from_word(word),
            message: message.to_owned(),
            raw_perfdata: perf.trim().to_owned(),
            perfdata,
            unparsed,
        })
    }

    /// Parse a reply body (which must be UTF-8).
    pub fn from_body(body: &[u8]) -> Result<Status, ParseError> {
        Status::parse(text(body)?)
    }

    /// The state named by the first word.
    pub fn state(&self) -> State {
        self.state
    }

    /// The text before the `|`, trimmed.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// All performance data that parsed, in order.
    pub fn perfdata(&self) -> &[PerfValue] {
        &self.perfdata
    }

    /// The first line's performance data exactly as sent (the text after
    /// its first `|`, trimmed), whether or not it parsed; empty when none.
    pub fn raw_perfdata(&self) -> &str {
        &self.raw_perfdata
    }

    /// The performance data items (first line, then long output) that did
    /// not parse, as sent, in order; empty when everything parsed.
    pub fn unparsed_perfdata(&self) -> &[String] {
        &self.unparsed
    }

    /// The performance datum with this label.
    pub fn perf(&self, label: &str) -> Option<&PerfValue> {
        self.perfdata.iter().find(|p| p.label == label)
    }

    /// The overdue ratio (`od`): time since the last beat over the granted timeout.
    pub fn overdue_ratio(&self) -> Option<f64> {
        self.perf("od")?.value
    }

    /// The timeout the server granted this application: the one it
    /// promised plus the server's tolerance (perfdata `delay`, the
    /// reference's name on the wire).
    ///
    /// ```
    /// use std::time::Duration;
    /// let status: heartbeat_sdk::Status = "OK - fine application [x]| od=0.10;3;5;0;6 delay=3000ms;;; ".parse().unwrap();
    /// assert_eq!(status.granted(), Some(Duration::from_secs(3)));
    /// ```
    pub fn granted(&self) -> Option<Duration> {
        self.perf("delay")?.as_duration()
    }

    /// The application named in brackets (`application [ID @ IP]`, or the
    /// queried id of a "no application record" line): everything from the
    /// first `[` to the last `]` before the `|`, so an id that itself
    /// contains brackets (`[a] b]`) comes back whole.
    ///
    /// ```
    /// use heartbeat_sdk::protocol::{app_line, State, Status};
    /// let line = app_line(State::Ok, "kiosk ]7[ @ 127.0.0.1", 0.5, 3.0, 5.0, 6.0, 3000);
    /// assert_eq!(Status::parse(&line).unwrap().app(), Some("kiosk ]7[ @ 127.0.0.1"));
    /// ```
    pub fn app(&self) -> Option<&str> {
        let start = self.message.find('[')? + 1;
        let end = self.message.rfind(']').filter(|&end| end >= start)?;
        Some(&self.message[start..end])
    }

    /// The text exactly as the server sent it.
    pub fn raw(&self) -> &str {
        &self.raw
    }
}

impl FromStr for Status {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        Status::parse(s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// `Status` as JSON: the derived fields for readers, `raw` as the truth.
#[cfg(feature = "serde")]
mod serde_glue {
    use serde::ser::SerializeStruct;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Status;

    impl Serialize for Status {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut out = s.serialize_struct("Status", 10)?;
            out.serialize_field("state", &self.state)?;
            out.serialize_field("exit_code", &self.state.exit_code())?;
            out.serialize_field("message", &self.message)?;
            out.serialize_field("app", &self.app())?;
            out.serialize_field("overdue_ratio", &self.overdue_ratio())?;
            let granted_ms = self.granted().map(crate::protocol::whole_ms);
            out.serialize_field("granted_ms", &granted_ms)?;
            out.serialize_field("perfdata", &self.perfdata)?;
            out.serialize_field("raw_perfdata", &self.raw_perfdata)?;
            out.serialize_field("unparsed_perfdata", &self.unparsed)?;
            out.serialize_field("raw", &self.raw)?;
            out.end()
        }
    }

    /// Only `raw` is read; the rest is derived from it.
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        raw: std::borrow::Cow<'a, str>,
    }

    impl<'de> Deserialize<'de> for Status {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Status, D::Error> {
            let Raw { raw } = Raw::deserialize(d)?;
            Status::parse(&raw).map_err(serde::de::Error::custom)
        }
    }
}

/// The host status when no application is tracked.
pub const NO_CLIENTS_LINE: &str = "UNKNOWN - no heartbeat clients at the moment...";

/// The status line of one tracked application, as the reference server
/// prints it: `OK - fine application [KEY]| od=0.52;3;5;0;6 delay=3000ms;;; `
/// (with the trailing space). `od` is printed with two decimals, the ratios
/// `warn`, `crit` and `drop` as the shortest decimals (`3`, `1.5`).
///
/// The state picks the wording: `OK - fine`, `WARNING - somewhat late`,
/// `CRITICAL - quite late` (and `UNKNOWN - unknown`, which the server never
/// sends).
///
/// ```
/// use heartbeat_sdk::protocol::{app_line, State};
/// assert_eq!(
///     app_line(State::Warning, "Tetris @ 127.0.0.1", 3.1, 3.0, 5.0, 6.0, 3000),
///     "WARNING - somewhat late application [Tetris @ 127.0.0.1]| od=3.10;3;5;0;6 delay=3000ms;;; "
/// );
/// ```
pub fn app_line(
    state: State,
    key: &str,
    od: f64,
    warn: f64,
    crit: f64,
    drop: f64,
    granted_ms: u64,
) -> String {
    let prefix = match state {
        State::Ok => "OK - fine",
        State::Warning => "WARNING - somewhat late",
        State::Critical => "CRITICAL - quite late",
        State::Unknown => "UNKNOWN - unknown",
    };
    format!(
        "{prefix} application [{key}]| {}",
        app_perfdata(od, warn, crit, drop, granted_ms)
    )
}

/// The status of an application whose run failed (the `hb_fail`
/// extension): CRITICAL until its next init or ping, with the exit code.
///
/// ```
/// use heartbeat_sdk::protocol::failed_line;
/// assert_eq!(
///     failed_line("backup @ 10.0.0.9", 3, 0.5, 3.0, 5.0, 6.0, 1000),
///     "CRITICAL - application [backup @ 10.0.0.9] failed with exit code 3| od=0.50;3;5;0;6 delay=1000ms;;; "
/// );
/// ```
pub fn failed_line(
    key: &str,
    code: u8,
    od: f64,
    warn: f64,
    crit: f64,
    drop: f64,
    granted_ms: u64,
) -> String {
    format!(
        "CRITICAL - application [{key}] failed with exit code {code}| {}",
        app_perfdata(od, warn, crit, drop, granted_ms)
    )
}

/// The perfdata of an application's status line.
fn app_perfdata(od: f64, warn: f64, crit: f64, drop: f64, granted_ms: u64) -> String {
    format!("od={od:.2};{warn};{crit};0;{drop} delay={granted_ms}ms;;; ")
}

/// The status of a queried id that has no record:
/// `CRITICAL - no application record for queried ID: [KEY]`.
pub fn no_record_line(key: &str) -> String {
    format!("CRITICAL - no application record for queried ID: [{key}]")
}

/// The host status with several applications:
/// `WARNING - multiple (N) applications: [A,B,C]`, keys in the order given.
///
/// ```
/// use heartbeat_sdk::protocol::multiple_line;
/// assert_eq!(multiple_line(["A", "B"]), "WARNING - multiple (2) applications: [A,B]");
/// ```
pub fn multiple_line<'a, I>(keys: I) -> String
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: ExactSizeIterator,
{
    let keys = keys.into_iter();
    let mut out = multiple_line_head(keys.len());
    for (i, key) in keys.enumerate() {
        if i > 0 {
            out.push_str(MULTIPLE_LINE_SEPARATOR);
        }
        out.push_str(key);
    }
    out.push_str(MULTIPLE_LINE_END);
    out
}

/// The start of [`multiple_line`] for `count` keys,
/// `WARNING - multiple (N) applications: [`; the keys follow, separated by
/// [`MULTIPLE_LINE_SEPARATOR`], then [`MULTIPLE_LINE_END`]. For a server
/// that sends the line piece by piece.
pub fn multiple_line_head(count: usize) -> String {
    format!("WARNING - multiple ({count}) applications: [")
}

/// Between two keys of [`multiple_line`].
pub const MULTIPLE_LINE_SEPARATOR: &str = ",";

/// The end of [`multiple_line`].
pub const MULTIPLE_LINE_END: &str = "]";

/// A number as Nagios prints it: decimal, optional sign, fraction and exponent.
/// (Rust's `f64` syntax is that plus `inf`, `infinity` and `nan`, which the
/// finiteness check refuses.)
fn parse_number(s: &str) -> Option<f64> {
    s.parse().ok().filter(|n: &f64| n.is_finite())
}

/// Split `label=value;...` items, honouring single-quoted labels with `''`
/// escapes: each item that parses goes to `items`, each one that does not
/// to `unparsed` as its raw text (an unterminated quote takes the rest).
fn parse_perfdata(perf: &str, items: &mut Vec<PerfValue>, unparsed: &mut Vec<String>) {
    let mut rest = perf.trim_start();
    while !rest.is_empty() {
        let (token, item) = next_item(rest);
        match item {
            Some(item) => items.push(item),
            None => unparsed.push(token.to_owned()),
        }
        rest = rest[token.len()..].trim_start();
    }
}

/// The perfdata item at the start of `rest` (non-empty, no leading
/// whitespace): its whole text (never empty) and the item, if it parses.
fn next_item(rest: &str) -> (&str, Option<PerfValue>) {
    let (label, after_label) = if let Some(quoted) = rest.strip_prefix('\'') {
        let mut label = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '\'')) if quoted[i + 1..].starts_with('\'') => {
                    label.push('\'');
                    chars.next();
                }
                Some((i, '\'')) => break i + 1,
                Some((_, c)) => label.push(c),
                // unterminated quoted label: nothing after it can be split
                None => return (rest, None),
            }
        };
        (label, &quoted[end..])
    } else {
        let end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        (rest[..end].to_owned(), &rest[end..])
    };
    let spec_end = after_label
        .find(char::is_whitespace)
        .unwrap_or(after_label.len());
    let token = &rest[..rest.len() - after_label.len() + spec_end];
    let item = after_label[..spec_end]
        .strip_prefix('=')
        .and_then(|spec| parse_item(label, spec).ok());
    (token, item)
}

/// Parse `value[UOM];warn;crit;min;max` for `label`.
fn parse_item(label: String, spec: &str) -> Result<PerfValue, ParseError> {
    if label.is_empty() {
        return Err(ParseError::new("perfdata item with an empty label"));
    }
    let bad =
        |what: &str| ParseError::new(format!("perfdata {label:?}: invalid {what} in {spec:?}"));
    let mut fields = spec.split(';');
    let head = fields.next().unwrap_or_default();
    let (value, unit) = if let Some(unit) = head.strip_prefix('U') {
        (None, unit)
    } else {
        let split = head
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
            .unwrap_or(head.len());
        let value = parse_number(&head[..split]).ok_or_else(|| bad("value"))?;
        (Some(value), &head[split..])
    };
    if !unit.is_empty() && !unit.chars().all(|c| c.is_alphabetic() || c == '%') {
        return Err(bad("unit"));
    }
    let range = |field: Option<&str>| -> Result<Option<Range>, ParseError> {
        match field.filter(|f| !f.is_empty()) {
            None => Ok(None),
            Some(f) => f.parse().map(Some),
        }
    };
    let number = |field: Option<&str>, what: &str| -> Result<Option<f64>, ParseError> {
        match field.filter(|f| !f.is_empty()) {
            None => Ok(None),
            Some(f) => parse_number(f).map(Some).ok_or_else(|| bad(what)),
        }
    };
    let warn = range(fields.next())?;
    let crit = range(fields.next())?;
    let min = number(fields.next(), "min")?;
    let max = number(fields.next(), "max")?;
    if fields.next().is_some() {
        return Err(bad("field count"));
    }
    Ok(PerfValue {
        label,
        value,
        unit: unit.to_owned(),
        warn,
        crit,
        min,
        max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "OK - fine application [ID]| od=0.52;3;5;0;6 delay=3000ms;;; ";
    const WARNING: &str =
        "WARNING - somewhat late application [ID]| od=3.10;3;5;0;6 delay=3000ms;;; ";
    const CRITICAL: &str =
        "CRITICAL - quite late application [ID]| od=5.07;3;5;0;6 delay=3000ms;;; ";
    const MISSING: &str = "CRITICAL - no application record for queried ID: [ID]";
    const NONE: &str = "UNKNOWN - no heartbeat clients at the moment...";
    const MANY: &str = "WARNING - multiple (3) applications: [A,B,C]";

    #[test]
    fn every_status_line_of_the_protocol_parses_and_round_trips() {
        for (line, state, od) in [
            (OK, State::Ok, Some(0.52)),
            (WARNING, State::Warning, Some(3.10)),
            (CRITICAL, State::Critical, Some(5.07)),
            (MISSING, State::Critical, None),
            (NONE, State::Unknown, None),
            (MANY, State::Warning, None),
        ] {
            let status = Status::parse(line).unwrap();
            assert_eq!(status.state(), state, "{line}");
            assert_eq!(status.overdue_ratio(), od, "{line}");
            assert_eq!(status.to_string(), line);
            assert_eq!(status.raw(), line);
        }
    }

    #[test]
    fn formatted_lines_parse_back_and_display_identically() {
        let cases = [
            (
                app_line(State::Ok, "T @ 1.2.3.4", 0.52, 3.0, 5.0, 6.0, 3000),
                State::Ok,
                Some(0.52),
                Some(3000),
            ),
            (
                app_line(State::Warning, "T", 3.1, 3.0, 5.0, 6.0, 3000),
                State::Warning,
                Some(3.10),
                Some(3000),
            ),
            (
                app_line(State::Critical, "a b", 5.07, 1.5, 2.0, 2.5, 1000),
                State::Critical,
                Some(5.07),
                Some(1000),
            ),
            (
                app_line(State::Unknown, "u", 0.0, 3.0, 5.0, 6.0, 0),
                State::Unknown,
                Some(0.0),
                Some(0),
            ),
            (no_record_line("ID"), State::Critical, None, None),
            (NO_CLIENTS_LINE.to_owned(), State::Unknown, None, None),
            (multiple_line(["A", "B", "C"]), State::Warning, None, None),
        ];
        for (line, state, od, delay_ms) in cases {
            let status = Status::parse(&line).unwrap();
            assert_eq!(status.state(), state, "{line}");
            assert_eq!(status.overdue_ratio(), od, "{line}");
            assert_eq!(
                status.granted(),
                delay_ms.map(Duration::from_millis),
                "{line}"
            );
            assert_eq!(status.to_string(), line);
        }
        // the protocol's own samples, byte for byte
        assert_eq!(app_line(State::Ok, "ID", 0.52, 3.0, 5.0, 6.0, 3000), OK);
        assert_eq!(
            app_line(State::Warning, "ID", 3.1, 3.0, 5.0, 6.0, 3000),
            WARNING
        );
        assert_eq!(
            app_line(State::Critical, "ID", 5.07, 3.0, 5.0, 6.0, 3000),
            CRITICAL
        );
        assert_eq!(no_record_line("ID"), MISSING);
        assert_eq!(NO_CLIENTS_LINE, NONE);
        assert_eq!(multiple_line(["A", "B", "C"]), MANY);
        let status = Status::parse(&no_record_line("x @ ::1")).unwrap();
        assert_eq!(status.app(), Some("x @ ::1"));
    }

    #[test]
    fn perfdata_is_fully_parsed() {
        let status = Status::parse(OK).unwrap();
        assert_eq!(status.message(), "OK - fine application [ID]");
        assert_eq!(status.app(), Some("ID"));
        let od = status.perf("od").unwrap();
        assert_eq!(od.unit, "");
        assert_eq!(
            od.warn,
            Some(Range {
                start: Some(0.0),
                end: Some(3.0),
                inside: false
            })
        );
        assert_eq!(od.crit.unwrap().end, Some(5.0));
        assert_eq!((od.min, od.max), (Some(0.0), Some(6.0)));
        let delay = status.perf("delay").unwrap();
        assert_eq!((delay.value, delay.unit.as_str()), (Some(3000.0), "ms"));
        assert_eq!(
            (delay.warn, delay.crit, delay.min, delay.max),
            (None, None, None, None)
        );
        assert_eq!(status.granted(), Some(Duration::from_secs(3)));
        let labels: Vec<&str> = status.perfdata().iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["od", "delay"]);
    }

    #[test]
    fn durations_read_in_their_unit() {
        let status = Status::parse("OK - x| a=250us b=1.5ms c=2s d=3 e=4min").unwrap();
        let dur = |label| status.perf(label).unwrap().as_duration();
        assert_eq!(dur("a"), Some(Duration::from_micros(250)));
        assert_eq!(dur("b"), Some(Duration::from_micros(1500)));
        assert_eq!(dur("c"), Some(Duration::from_secs(2)));
        assert_eq!((dur("d"), dur("e")), (None, None));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(State::Ok.exit_code(), 0);
        assert_eq!(State::Warning.exit_code(), 1);
        assert_eq!(State::Critical.exit_code(), 2);
        assert_eq!(State::Unknown.exit_code(), 3);
        assert_eq!(
            Status::parse("SOMETHING else").unwrap().state(),
            State::Unknown
        );
    }

    #[test]
    fn quoted_labels_units_ranges_and_long_output() {
        let raw = "OK: disk fine | 'free space'=20%;@10:20;~:5;; 'it''s'=U\nlong text\nmore | extra=1500s;;;0;\n";
        let status = Status::parse(raw).unwrap();
        assert_eq!(status.state(), State::Ok);
        let free = status.perf("free space").unwrap();
        assert_eq!(free.unit, "%");
        assert_eq!(
            free.warn,
            Some(Range {
                start: Some(10.0),
                end: Some(20.0),
                inside: true
            })
        );
        assert_eq!(
            free.crit,
            Some(Range {
                start: None,
                end: Some(5.0),
                inside: false
            })
        );
        assert_eq!(status.perf("it's").unwrap().value, None);
        assert_eq!(
            status.perf("extra").unwrap().as_duration(),
            Some(Duration::from_secs(1500))
        );
        assert_eq!(status.to_string(), raw);
    }

    #[test]
    fn ranges_alert_like_nagios() {
        let r: Range = "10:20".parse().unwrap();
        assert!(r.alerts(9.0) && !r.alerts(15.0) && r.alerts(21.0));
        let r: Range = "@10:20".parse().unwrap();
        assert!(!r.alerts(9.0) && r.alerts(15.0));
        let r: Range = "10:".parse().unwrap();
        assert!(r.alerts(9.0) && !r.alerts(1e9));
        assert!("x:1".parse::<Range>().is_err());
        assert!("1:x".parse::<Range>().is_err());
    }

    #[test]
    fn only_a_missing_status_text_is_an_error() {
        for bad in ["", "   ", "| od=1", "  | od=1", "\nOK - second line"] {
            assert!(Status::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Status::from_body(b"OK \xff").is_err());
    }

    /// Issue 10: perfdata that does not parse is kept, never an error; the
    /// state word alone decides the state.
    #[test]
    fn bad_perfdata_is_kept_raw_and_the_word_decides() {
        for (line, state, unparsed) in [
            ("OK | od", State::Ok, vec!["od"]),
            ("OK | od=abc", State::Ok, vec!["od=abc"]),
            (
                "WARNING | od=1;2;3;4;5;6",
                State::Warning,
                vec!["od=1;2;3;4;5;6"],
            ),
            ("OK | ='x'=1", State::Ok, vec!["='x'=1"]),
            (
                "CRITICAL | 'unterminated=1 b=2",
                State::Critical,
                vec!["'unterminated=1 b=2"],
            ),
            ("OK | od=1ms/s", State::Ok, vec!["od=1ms/s"]),
            ("OK | od=1;x", State::Ok, vec!["od=1;x"]),
            ("UNKNOWN | od=NaN", State::Unknown, vec!["od=NaN"]),
            (
                "OK | od=inf x=-Infinity",
                State::Ok,
                vec!["od=inf", "x=-Infinity"],
            ),
            (
                "OK | od=1e999 x=0x10",
                State::Ok,
                vec!["od=1e999", "x=0x10"],
            ),
            ("OK | 'a'b=1 ]| c", State::Ok, vec!["'a'b=1", "]|", "c"]),
        ] {
            let status = Status::parse(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(status.state(), state, "{line:?}");
            assert_eq!(status.unparsed_perfdata(), unparsed, "{line:?}");
            assert!(status.perfdata().is_empty(), "{line:?}");
            assert_eq!(
                status.raw_perfdata(),
                line.split_once('|').unwrap().1.trim()
            );
            assert_eq!(status.to_string(), line);
        }
        // good items around a bad one still parse
        let status = Status::parse("OK - x| a=1 junk b=2ms;;;").unwrap();
        assert_eq!(status.perf("a").unwrap().value, Some(1.0));
        assert_eq!(status.perf("b").unwrap().unit, "ms");
        assert_eq!(status.unparsed_perfdata(), ["junk"]);
        // the protocol's own lines leave nothing unparsed
        for line in [OK, WARNING, CRITICAL, MISSING, NONE, MANY] {
            assert!(Status::parse(line).unwrap().unparsed_perfdata().is_empty());
        }
        assert_eq!(Status::parse(MISSING).unwrap().raw_perfdata(), "");
    }

    /// Issue 10, as filed: an old server that accepted the id
    /// `kiosk| od=0.00;3;5;0;6 delay=86400000ms;;; ` prints it inside the
    /// status line; the check must still get the state from the first word.
    #[test]
    fn a_forged_perfdata_id_does_not_make_the_status_unparsable() {
        let id = "kiosk| od=0.00;3;5;0;6 delay=86400000ms;;; ";
        for (state, od) in [
            (State::Ok, 0.5),
            (State::Warning, 3.2),
            (State::Critical, 5.5),
        ] {
            let line = app_line(state, &format!("{id} @ 127.0.0.1"), od, 3.0, 5.0, 6.0, 3000);
            let status = Status::parse(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(status.state(), state, "{line}");
            assert_eq!(status.unparsed_perfdata(), ["@", "127.0.0.1]|"], "{line}");
            assert_eq!(status.to_string(), line);
        }
    }

    /// Issue 10: `app()` returns ids with brackets whole.
    #[test]
    fn app_takes_everything_up_to_the_last_bracket() {
        for id in ["a]b", "]", "[x]", "a] [b", "]]][[["] {
            let key = format!("{id} @ 127.0.0.1");
            for line in [
                app_line(State::Ok, &key, 0.1, 3.0, 5.0, 6.0, 1000),
                app_line(State::Critical, &key, 5.1, 3.0, 5.0, 6.0, 1000),
                no_record_line(&key),
            ] {
                assert_eq!(
                    Status::parse(&line).unwrap().app(),
                    Some(key.as_str()),
                    "{line}"
                );
            }
        }
        assert_eq!(Status::parse("OK - no brackets").unwrap().app(), None);
        assert_eq!(Status::parse("OK - ] only [").unwrap().app(), None);
        assert_eq!(Status::parse("OK - [open").unwrap().app(), None);
        assert_eq!(Status::parse("OK - []").unwrap().app(), Some(""));
    }
}

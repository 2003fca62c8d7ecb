//! Nagios plugin status lines: `STATE - message| label=value[UOM];warn;crit;min;max ...`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::reply::{text, ParseError};

/// The service state a status line starts with, and its Nagios exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// `OK`, exit code 0.
    Ok,
    /// `WARNING`, exit code 1.
    Warning,
    /// `CRITICAL`, exit code 2.
    Critical,
    /// `UNKNOWN` or anything else, exit code 3.
    Unknown,
}

impl State {
    /// The Nagios plugin exit code: 0, 1, 2 or 3.
    pub fn exit_code(self) -> i32 {
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
/// ```
/// use heartbeat_sdk::protocol::{State, Status};
///
/// let line = "WARNING - somewhat late application [Tetris @ 127.0.0.1]| od=3.10;3;5;0;6 delay=3000ms;;; ";
/// let status: Status = line.parse().unwrap();
/// assert_eq!(status.state(), State::Warning);
/// assert_eq!(status.state().exit_code(), 1);
/// assert_eq!(status.app(), Some("Tetris @ 127.0.0.1"));
/// assert_eq!(status.overdue_ratio(), Some(3.10));
/// assert_eq!(status.delay().unwrap().as_millis(), 3000);
/// assert_eq!(status.to_string(), line);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    raw: String,
    state: State,
    message: String,
    perfdata: Vec<PerfValue>,
}

impl Status {
    /// Parse a whole plugin output: the first line's text and perfdata, and
    /// the perfdata of long-output lines after a `|`, if any.
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
        let mut perfdata = parse_perfdata(perf)?;
        if let Some((_, long_perf)) = rest.split_once('|') {
            perfdata.extend(parse_perfdata(long_perf)?);
        }
        Ok(Status {
            raw: raw.to_owned(),
            state: State::from_word(word),
            message: message.to_owned(),
            perfdata,
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

    /// All performance data, in order.
    pub fn perfdata(&self) -> &[PerfValue] {
        &self.perfdata
    }

    /// The performance datum with this label.
    pub fn perf(&self, label: &str) -> Option<&PerfValue> {
        self.perfdata.iter().find(|p| p.label == label)
    }

    /// The overdue ratio (`od`): time since the last beat over the granted timeout.
    pub fn overdue_ratio(&self) -> Option<f64> {
        self.perf("od")?.value
    }

    /// The timeout the server granted (`delay`).
    pub fn delay(&self) -> Option<Duration> {
        self.perf("delay")?.as_duration()
    }

    /// The application named in brackets (`application [ID @ IP]`, or the
    /// queried id of a "no application record" line).
    pub fn app(&self) -> Option<&str> {
        let start = self.message.find('[')? + 1;
        let end = start + self.message[start..].find(']')?;
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
    delay_ms: u64,
) -> String {
    let prefix = match state {
        State::Ok => "OK - fine",
        State::Warning => "WARNING - somewhat late",
        State::Critical => "CRITICAL - quite late",
        State::Unknown => "UNKNOWN - unknown",
    };
    format!(
        "{prefix} application [{key}]| od={od:.2};{warn};{crit};0;{drop} delay={delay_ms}ms;;; "
    )
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
fn parse_number(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    ok.then(|| s.parse().ok())
        .flatten()
        .filter(|n: &f64| n.is_finite())
}

/// Split `label=value;...` items, honouring single-quoted labels with `''` escapes.
fn parse_perfdata(perf: &str) -> Result<Vec<PerfValue>, ParseError> {
    let mut items = Vec::new();
    let mut rest = perf.trim_start();
    while !rest.is_empty() {
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
                    None => return Err(ParseError::new("unterminated quoted perfdata label")),
                }
            };
            (label, &quoted[end..])
        } else {
            let end = rest
                .find(|c: char| c == '=' || c.is_whitespace())
                .unwrap_or(rest.len());
            (rest[..end].to_owned(), &rest[end..])
        };
        let after_eq = after_label
            .strip_prefix('=')
            .ok_or_else(|| ParseError::new(format!("perfdata item {label:?} has no '=value'")))?;
        let end = after_eq.find(char::is_whitespace).unwrap_or(after_eq.len());
        items.push(parse_item(label, &after_eq[..end])?);
        rest = after_eq[end..].trim_start();
    }
    Ok(items)
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
                status.delay(),
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
        assert_eq!(status.delay(), Some(Duration::from_secs(3)));
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
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "   ",
            "| od=1",
            "OK | od",
            "OK | od=abc",
            "OK | od=1;2;3;4;5;6",
            "OK | ='x'=1",
            "OK | 'unterminated=1",
            "OK | od=1ms/s",
            "OK | od=1;x",
            "OK | od=NaN",
        ] {
            assert!(Status::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Status::from_body(b"OK \xff").is_err());
    }
}

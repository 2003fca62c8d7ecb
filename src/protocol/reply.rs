//! Parsing the replies of PROTOCOL.md (the status line has its own file).

use std::borrow::Cow;

use super::app_id::is_bidi_control;
use std::fmt;
use std::time::Duration;

/// What a Nagios check prints when it cannot get a status from the server
/// at all (it then exits 2, CRITICAL), word for word as the reference's
/// `check_heartbeat.py`.
pub const UNREACHABLE_LINE: &str = "CRITICAL - cannot get heartbeat status from HB server!";

/// Why a reply body does not parse. The client wraps it into
/// [`Error::Parse`](crate::Error::Parse) together with the URL and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    reason: String,
}

impl ParseError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// What was wrong with the body.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ParseError {}

/// The most bytes of a reply body that an error keeps (see [`excerpt`]).
pub const MAX_EXCERPT: usize = 1024;

/// A reply body as an error keeps it: its first [`MAX_EXCERPT`] bytes,
/// lossily decoded as UTF-8, followed by `... (N bytes in all)` when there
/// was more. A hostile server can send up to a call's body cap (about
/// 100 MiB for `list`); keeping, formatting and printing all of it in an
/// error would cost several times that.
///
/// ```
/// use heartbeat_sdk::protocol::{excerpt, MAX_EXCERPT};
/// assert_eq!(excerpt(b"ERROR: no"), "ERROR: no");
/// let long = excerpt(&vec![b'x'; 5000]);
/// assert!(long.starts_with(&"x".repeat(MAX_EXCERPT)));
/// assert!(long.ends_with("... (5000 bytes in all)"));
/// ```
pub fn excerpt(body: &[u8]) -> String {
    if body.len() <= MAX_EXCERPT {
        return String::from_utf8_lossy(body).into_owned();
    }
    format!(
        "{}... ({} bytes in all)",
        String::from_utf8_lossy(&body[..MAX_EXCERPT]),
        body.len()
    )
}

/// The reference server's answer to `hb_done` (any text is a valid goodbye;
/// the embedded server sends this one).
pub const GOODBYE: &str = "So Long, and Thanks for All the Fish!";

/// The body as UTF-8 text, or a parse error.
pub(crate) fn text(body: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(body).map_err(|e| ParseError::new(format!("reply is not UTF-8 ({e})")))
}

/// The reply to `hb_init` / `hb_ping`: the granted timeout in decimal
/// milliseconds (surrounding whitespace allowed).
///
/// ```
/// use heartbeat_sdk::protocol::parse_granted;
/// assert_eq!(parse_granted(b"3000\n").unwrap().as_millis(), 3000);
/// assert!(parse_granted(b"-1").is_err());
/// assert!(parse_granted(b"").is_err());
/// ```
pub fn parse_granted(body: &[u8]) -> Result<Duration, ParseError> {
    let text = text(body)?.trim();
    if text.is_empty() {
        return Err(ParseError::new(
            "expected the granted timeout, got an empty reply",
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(
            "expected the granted timeout as a non-negative decimal number of milliseconds",
        ));
    }
    let ms: u64 = text
        .parse()
        .map_err(|_| ParseError::new("granted timeout does not fit in 64 bits"))?;
    Ok(Duration::from_millis(ms))
}

/// The reply to `/list`: one application per line, empty lines skipped.
///
/// ```
/// use heartbeat_sdk::protocol::parse_list;
/// assert_eq!(parse_list(b"A @ 127.0.0.1\nB @ 127.0.0.1\n").unwrap(), ["A @ 127.0.0.1", "B @ 127.0.0.1"]);
/// assert!(parse_list(b"").unwrap().is_empty());
/// ```
pub fn parse_list(body: &[u8]) -> Result<Vec<String>, ParseError> {
    Ok(text(body)?
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

/// A reply as text, returned as sent: the goodbye of `hb_done`, or the body
/// of any other request read as a whole (the client's `get` and `post`). It
/// fails only when the body is not UTF-8.
///
/// ```
/// use heartbeat_sdk::protocol::parse_text;
/// assert_eq!(parse_text(b"So Long!\n").unwrap(), "So Long!\n");
/// assert!(parse_text(b"\xff").is_err());
/// ```
pub fn parse_text(body: &[u8]) -> Result<String, ParseError> {
    text(body).map(str::to_owned)
}

/// `text` made safe to print on a terminal or in a log line: every control
/// character (escape sequences' `ESC`, `CR`, `LF`, tab, `DEL`, the C1
/// controls) and the Unicode line and paragraph separators (U+2028,
/// U+2029) are replaced by their Rust escapes (`\u{1b}`, `\r`, `\n`,
/// `\u{2028}`, ...), so text a peer sent can neither move the cursor,
/// recolour or retitle the terminal, nor break one line into several.
/// Borrowed when there is nothing to escape.
///
/// Print multi-line replies (such as `/list`) line by line, each through
/// `printable`.
///
/// ```
/// use heartbeat_sdk::protocol::printable;
/// assert_eq!(printable("OK - fine application [a]"), "OK - fine application [a]");
/// assert_eq!(printable("\u{1b}[2Jx\r\ny"), "\\u{1b}[2Jx\\r\\ny");
/// assert_eq!(printable("a\u{2028}b"), "a\\u{2028}b");
/// ```
pub fn printable(text: &str) -> Cow<'_, str> {
    let escaped =
        |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_bidi_control(c);
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_keeps_the_cap_whole_and_counts_the_rest() {
        let exact = vec![b'y'; MAX_EXCERPT];
        assert_eq!(excerpt(&exact), "y".repeat(MAX_EXCERPT));
        let over = vec![b'y'; MAX_EXCERPT + 1];
        assert_eq!(
            excerpt(&over),
            format!("{}... (1025 bytes in all)", "y".repeat(MAX_EXCERPT))
        );
        assert_eq!(excerpt(b"ab\xffc"), "ab\u{fffd}c");
        assert_eq!(excerpt(b""), "");
    }

    #[test]
    fn a_parse_error_displays_its_reason() {
        let e = ParseError::new("granted timeout is not a number");
        assert_eq!(e.to_string(), "granted timeout is not a number");
        assert_eq!(e.reason(), "granted timeout is not a number");
    }

    #[test]
    fn printable_escapes_line_breaks_and_bidi_controls_only() {
        for (raw, shown) in [
            ("a\u{202e}gnp.exe", "a\\u{202e}gnp.exe"),
            ("[evil\u{2066}]", "[evil\\u{2066}]"),
            ("x\u{2029}y", "x\\u{2029}y"),
            ("Zürich 東京 عربي", "Zürich 東京 عربي"),
        ] {
            assert_eq!(printable(raw), shown);
        }
    }

    #[test]
    fn granted_timeouts() {
        assert_eq!(parse_granted(b"3000").unwrap(), Duration::from_millis(3000));
        assert_eq!(
            parse_granted(b" 1500\r\n").unwrap(),
            Duration::from_millis(1500)
        );
        for bad in [
            &b""[..],
            b"  ",
            b"-5",
            b"+5",
            b"12.5",
            b"abc",
            b"3000ms",
            b"\xff\xfe",
        ] {
            assert!(parse_granted(bad).is_err(), "{bad:?}");
        }
        assert!(parse_granted(b"99999999999999999999999").is_err());
    }

    #[test]
    fn lists_with_zero_one_and_three_entries() {
        assert!(parse_list(b"").unwrap().is_empty());
        assert_eq!(parse_list(b"A @ 127.0.0.1\n").unwrap(), ["A @ 127.0.0.1"]);
        assert_eq!(
            parse_list(b"A @ 1.2.3.4\nB @ 1.2.3.4\r\nC @ 1.2.3.4\n").unwrap(),
            ["A @ 1.2.3.4", "B @ 1.2.3.4", "C @ 1.2.3.4"]
        );
        assert!(parse_list(b"\xc3\x28").is_err());
    }

    #[test]
    fn goodbye_is_kept_verbatim() {
        assert_eq!(parse_text(GOODBYE.as_bytes()).unwrap(), GOODBYE);
        assert_eq!(parse_text(b"a\r\nb\x1b").unwrap(), "a\r\nb\u{1b}");
        assert!(parse_text(b"\xc3\x28").is_err());
    }

    #[test]
    fn printable_escapes_every_control_character_and_nothing_else() {
        for plain in [
            "",
            "OK - fine application [Zürich]| od=0.52;3;5;0;6 ",
            "ä → ✓",
        ] {
            assert!(
                matches!(printable(plain), Cow::Borrowed(p) if p == plain),
                "{plain:?}"
            );
        }
        assert_eq!(
            printable("\u{1b}[31mred\u{1b}[0m"),
            "\\u{1b}[31mred\\u{1b}[0m"
        );
        assert_eq!(printable("\u{1b}]0;title\u{7}"), "\\u{1b}]0;title\\u{7}");
        assert_eq!(printable("a\r\nb\tc"), "a\\r\\nb\\tc");
        assert_eq!(printable("\u{7f}\u{9b}2J\0"), "\\u{7f}\\u{9b}2J\\u{0}");
        let escaped = printable("x\u{1b}\u{85}\u{9c}y");
        assert!(!escaped.chars().any(char::is_control), "{escaped:?}");
    }
}

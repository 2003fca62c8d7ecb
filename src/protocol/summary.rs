//! What each `/status` answer means for the listed key it was asked for
//! ([`AppAnswer`]), and [`nagios_text`], which makes text a server sent
//! safe inside a Nagios plugin line: control characters escaped
//! ([`printable`]) and `|` written `\u{7c}`, so that no id can end a
//! status text early, start perfdata, or add a line. (The host check of
//! `heartbeat check --all` that prints with it lives in the binary.)

use super::app_id::is_bidi_control;
use super::reply::printable;
use super::status::{no_record_line, Status};

/// What a `/status?appid=ID` answer says about the listed key it was asked
/// for (the query carries the bare id, see [`split_key`](super::split_key)).
///
/// The reference server (and ours, by default) looks a bare id up as
/// `ID @ ASKER_IP`, so it can only answer about the applications of the
/// host that asks; the key in brackets in its answer tells which record it
/// looked up, and that is how an answer about another record is told apart.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AppAnswer {
    /// The application's own status line.
    Status(Status),
    /// `CRITICAL - no application record for queried ID: [KEY]` for this
    /// very key: the record was dropped (done, or expired) after `/list`.
    Gone(Status),
    /// The server answered about another record than the listed key (it
    /// looked up `ID @ ASKER_IP`): the application runs on another host,
    /// which the server does not answer about by id.
    OtherHost(Status),
}

impl AppAnswer {
    /// Classify the answer `status` to the query for listed `key`.
    ///
    /// ```
    /// use heartbeat_sdk::protocol::{AppAnswer, Status};
    /// let key = "kiosk-3 @ 10.0.0.3";
    /// let line = |s: &str| Status::parse(s).unwrap();
    /// let fine = line("OK - fine application [kiosk-3 @ 10.0.0.3]| od=0.10;3;5;0;6 delay=3000ms;;; ");
    /// assert!(matches!(AppAnswer::classify(key, fine), AppAnswer::Status(_)));
    /// let gone = line("CRITICAL - no application record for queried ID: [kiosk-3 @ 10.0.0.3]");
    /// assert!(matches!(AppAnswer::classify(key, gone), AppAnswer::Gone(_)));
    /// let elsewhere = line("CRITICAL - no application record for queried ID: [kiosk-3 @ 127.0.0.1]");
    /// assert!(matches!(AppAnswer::classify(key, elsewhere), AppAnswer::OtherHost(_)));
    /// ```
    pub fn classify(key: &str, status: Status) -> AppAnswer {
        if status.message() == no_record_line(key) {
            return AppAnswer::Gone(status);
        }
        match status.app() {
            // a line naming no record at all (not the reference's wording):
            // nothing to tell it apart by, take it as the app's own
            None => AppAnswer::Status(status),
            Some(app) if app == key => AppAnswer::Status(status),
            Some(_) => AppAnswer::OtherHost(status),
        }
    }

    /// The status line as the server sent it.
    pub fn status(&self) -> &Status {
        match self {
            AppAnswer::Status(s) | AppAnswer::Gone(s) | AppAnswer::OtherHost(s) => s,
        }
    }
}

/// Text a server sent, made safe for a Nagios plugin line: [`printable`]
/// (no control character, no line break), `|`, which would start
/// perfdata, written `\u{7c}`, and the bidirectional controls (which
/// would reorder the line as displayed) escaped too.
///
/// ```
/// use heartbeat_sdk::protocol::nagios_text;
/// assert_eq!(nagios_text("a|b=1\nOK"), "a\\u{7c}b=1\\nOK");
/// assert_eq!(nagios_text("x\u{202e}y"), "x\\u{202e}y");
/// ```
pub fn nagios_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in printable(text).chars() {
        if c == '|' || is_bidi_control(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::split_key;
    use crate::protocol::State;

    #[test]
    fn a_key_splits_on_its_last_at() {
        assert_eq!(
            split_key("kiosk @ 3 @ 10.0.0.7"),
            ("kiosk @ 3", Some("10.0.0.7"))
        );
        assert_eq!(split_key("k @ ::1"), ("k", Some("::1")));
        assert_eq!(split_key("kiosk-3"), ("kiosk-3", None));
        assert_eq!(split_key("a@b"), ("a@b", None));
    }

    #[test]
    fn classify_by_the_bracketed_key() {
        let parse = |s: &str| Status::parse(s).unwrap();
        // a key with brackets and " @ " inside its id still matches whole
        let key = "a [b] @ c @ 10.0.0.1";
        let own = parse(&crate::protocol::app_line(
            State::Warning,
            key,
            3.2,
            3.0,
            5.0,
            6.0,
            2000,
        ));
        let answer = AppAnswer::classify(key, own);
        assert!(matches!(answer, AppAnswer::Status(s) if s.overdue_ratio() == Some(3.2)));
        // another record of the same id (on the asker's host) is not this app
        let other = parse(&crate::protocol::app_line(
            State::Ok,
            "a [b] @ c @ 127.0.0.1",
            0.1,
            3.0,
            5.0,
            6.0,
            2000,
        ));
        assert!(matches!(
            AppAnswer::classify(key, other),
            AppAnswer::OtherHost(_)
        ));
        let gone = parse(&no_record_line(key));
        assert!(matches!(AppAnswer::classify(key, gone), AppAnswer::Gone(_)));
    }
}

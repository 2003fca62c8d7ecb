//! Exit codes, and the one-line failure message every subcommand prints.

use heartbeat_sdk::protocol::printable;
use heartbeat_sdk::Error;

/// Success.
pub const OK: u8 = 0;
/// The server could not be reached, or did not answer in time
/// ([`Error::Transport`], [`Error::ShutdownTimeout`]).
pub const UNREACHABLE: u8 = 1;
/// Bad command line or settings (clap's usage errors use 2 as well):
/// [`Error::InvalidUrl`], [`Error::InvalidAppId`], [`Error::InvalidTimeout`],
/// [`Error::Config`].
pub const USAGE: u8 = 2;
/// The server answered, but with an error status or an unreadable reply
/// ([`Error::Status`], [`Error::Parse`]).
pub const SERVER_ERROR: u8 = 3;
/// `serve`: cannot listen on the address (in use, not allowed, not local);
/// `demo`: cannot start its own embedded server.
pub const CANNOT_LISTEN: u8 = 4;
/// `serve --state`: the state file cannot be used (not a heartbeat state
/// database, a newer schema, cannot be created or written, in use by
/// another server); nothing was written to it. sysexits' `EX_CANTCREAT`.
pub const BAD_STATE: u8 = 73;
/// `serve --web-config`: the file cannot be read or is not a valid web
/// config (YAML, a setting, a certificate, a key, a bcrypt hash).
/// sysexits' `EX_CONFIG`.
pub const BAD_CONFIG: u8 = 78;
/// Nothing was sent because this machine could not set things up: the HTTP
/// client (its TLS backend, say: [`Error::Build`]), the async runtime, the
/// signal handlers, or a background task that died ([`Error::Task`]).
/// sysexits' `EX_OSERR`; before 1.0 these were reported as 1 (unreachable).
pub const CANNOT_START: u8 = 71;
/// stdout could not be written (a full disk, an I/O error): sysexits'
/// `EX_IOERR`. A closed pipe is not a failure: the command ends quietly with
/// the code it had (see [`crate::output`]). `check` exits 3 (UNKNOWN) instead.
pub const CANNOT_WRITE: u8 = 74;
/// `wrap`: CMD was found but could not be started.
pub const CANNOT_RUN: u8 = 126;
/// `wrap`: CMD was not found.
pub const NOT_FOUND: u8 = 127;

/// The exit-code table shown at the end of `heartbeat --help`.
pub const HELP: &str = "\
Exit codes:
  0    success
  1    server unreachable or too slow (--timeout)
  2    bad command line or settings (URL, app id, timeout)
  3    server answered with an error status, an unreadable or an oversized reply
  4    serve: cannot listen on the address (in use, not allowed); demo: cannot start its own server
  71   cannot set up locally (HTTP client or TLS, async runtime, signal handlers)
  73   serve --state: the state file cannot be used (not a state database, newer schema, unwritable, in use)
  74   stdout could not be written (disk full, I/O error); a closed pipe is no error
  78   serve --web-config: the file cannot be read or is invalid (YAML, setting, certificate, key, hash)
  check: 0 OK, 1 WARNING, 2 CRITICAL (also: server unreachable), 3 UNKNOWN (also: stdout unwritable)
  wrap:  CMD's exit code, 128+N if CMD was killed by signal N, 126 cannot run, 127 not found";

/// The exit code for a failed request.
pub fn for_error(error: &Error) -> u8 {
    match error {
        // the server answered, with more than the protocol can produce
        Error::Transport { source, .. } if source.is_body_too_large() => SERVER_ERROR,
        Error::Transport { .. } | Error::ShutdownTimeout { .. } => UNREACHABLE,
        Error::Status { .. } | Error::Parse { .. } => SERVER_ERROR,
        Error::Build { .. } | Error::Task { .. } => CANNOT_START,
        // InvalidUrl, InvalidAppId, InvalidTimeout, Config, and any variant
        // a later version adds until it gets a code of its own
        _ => USAGE,
    }
}

/// Print `heartbeat WHAT: ERROR (ROOT CAUSE)` as one line on stderr and
/// return the exit code for `error`.
pub fn report(what: &str, error: &Error) -> u8 {
    crate::output::error_line(&format!("heartbeat {what}: {}", one_line(error)));
    for_error(error)
}

/// `error`, followed by its innermost cause when that adds something (for
/// a refused connection: `Connection refused (os error 111)`), on one line
/// and with any other control character (say, in a body the server sent)
/// escaped, so it cannot drive the terminal.
pub fn one_line(error: &Error) -> String {
    let message = error.to_string();
    let mut root: &dyn std::error::Error = error;
    while let Some(source) = root.source() {
        root = source;
    }
    let cause = root.to_string();
    let line = if message.contains(&cause) {
        message
    } else {
        format!("{message} ({cause})")
    };
    printable(&line.replace(['\r', '\n'], " ")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartbeat_sdk::TransportError;

    #[test]
    fn the_help_table_lists_every_code() {
        for (code, meaning) in [
            (OK, "success"),
            (UNREACHABLE, "server unreachable"),
            (USAGE, "bad command line"),
            (SERVER_ERROR, "server answered with an error"),
            (CANNOT_LISTEN, "serve: cannot listen"),
            (CANNOT_START, "cannot set up locally"),
            (CANNOT_WRITE, "stdout could not be written"),
        ] {
            assert!(
                HELP.lines()
                    .any(|line| line.starts_with(&format!("  {code:<4} {meaning}"))),
                "{code} {meaning}: {HELP}"
            );
        }
        assert!(HELP.contains("3 UNKNOWN (also: stdout unwritable)"));
        assert!(HELP.contains(&format!("{CANNOT_RUN} cannot run, {NOT_FOUND} not found")));
    }

    #[test]
    fn errors_map_to_their_codes() {
        let transport = Error::Transport {
            url: "u".into(),
            source: TransportError::timeout("slow"),
        };
        assert_eq!(for_error(&transport), UNREACHABLE);
        let too_large = Error::Transport {
            url: "u".into(),
            source: TransportError::body_too_large(10),
        };
        assert_eq!(for_error(&too_large), SERVER_ERROR, "the server did answer");
        let status = Error::Status {
            url: "u".into(),
            status: 400,
            body: "ERROR: x".into(),
        };
        assert_eq!(for_error(&status), SERVER_ERROR);
        let hostile = Error::Status {
            url: "u".into(),
            status: 500,
            body: "a\r\nb\u{1b}]0;pwned\u{7}\u{1b}[2J".into(),
        };
        let line = one_line(&hostile);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.contains("a  b\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"),
            "{line:?}"
        );
        assert_eq!(
            for_error(&Error::InvalidAppId {
                reason: "empty".into()
            }),
            USAGE
        );
    }

    /// Issue 13: failures that are not the server's are not "unreachable".
    #[test]
    fn local_failures_are_not_called_unreachable() {
        let tls = Error::Build {
            reason: "cannot set up the HTTP transport".into(),
            source: Some(Box::new(TransportError::other("no TLS backend"))),
        };
        assert_eq!(for_error(&tls), CANNOT_START);
        assert_eq!(
            one_line(&tls),
            "cannot build the client: cannot set up the HTTP transport (transport error: no TLS backend)"
        );
        let died = Error::Task {
            reason: "the keep-alive task stopped".into(),
        };
        assert_eq!(for_error(&died), CANNOT_START);
        let contradictory = Error::Config {
            reason: "connect_timeout with a transport".into(),
        };
        assert_eq!(for_error(&contradictory), USAGE);
        let slow = Error::ShutdownTimeout {
            timeout: std::time::Duration::from_secs(5),
        };
        assert_eq!(for_error(&slow), UNREACHABLE);
    }
}

//! Every write of the CLI to stdout and stderr goes through here, so that a
//! full disk or a reader that went away never panics the binary (as
//! `println!` and `eprintln!` do).
//!
//! - stdout ([`print()`], [`stdout`]): written and flushed at once. A closed
//!   pipe (`EPIPE`: `heartbeat list | head -0`) ends the command quietly,
//!   with the exit code it had anyway; any other failure (`ENOSPC` on
//!   `/dev/full`, `EIO`) prints `heartbeat CMD: cannot write output: ERROR`
//!   on stderr and exits [`crate::exit::CANNOT_WRITE`] (`check`: 3, UNKNOWN).
//! - stderr ([`error_line`]): best effort; when stderr itself cannot be
//!   written there is nowhere left to complain, so the failure is dropped.

use std::io::{self, Write};

/// Why stdout could not take the text.
#[derive(Debug)]
pub enum Unwritten {
    /// The reader went away (`EPIPE`): not an error, the command ends quietly.
    Closed,
    /// Anything else: a full disk, an I/O error.
    Failed(io::Error),
}

impl Unwritten {
    /// The exit code to leave with: `code` (the command's own) after a
    /// closed pipe, else `failed` after saying
    /// `heartbeat WHAT: cannot write output: ERROR` on stderr.
    pub fn exit_code(self, what: &str, code: u8, failed: u8) -> u8 {
        match self {
            Unwritten::Closed => code,
            Unwritten::Failed(error) => {
                error_line(&format!("heartbeat {what}: cannot write output: {error}"));
                failed
            }
        }
    }
}

/// Write `text` to stdout and flush it.
pub fn stdout(text: &str) -> Result<(), Unwritten> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|error| match error.kind() {
            io::ErrorKind::BrokenPipe => Unwritten::Closed,
            _ => Unwritten::Failed(error),
        })
}

/// Write `text` to stdout for subcommand `what` and return the exit code:
/// `code` when written or when the reader went away, `failed` (after a
/// one-line message on stderr) when stdout failed otherwise.
pub fn print(what: &str, text: &str, code: u8, failed: u8) -> u8 {
    match stdout(text) {
        Ok(()) => code,
        Err(unwritten) => unwritten.exit_code(what, code, failed),
    }
}

/// Write `line` and a newline to stderr, ignoring failure (a closed or full
/// stderr has nowhere to report to).
pub fn error_line(line: &str) {
    let mut err = io::stderr().lock();
    let _ = err
        .write_all(line.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit;

    #[test]
    fn a_closed_pipe_keeps_the_code_other_failures_give_theirs() {
        assert_eq!(
            Unwritten::Closed.exit_code("list", 0, exit::CANNOT_WRITE),
            0
        );
        assert_eq!(Unwritten::Closed.exit_code("check", 1, 3), 1);
        let full = Unwritten::Failed(io::Error::from_raw_os_error(28));
        assert_eq!(
            full.exit_code("list", 0, exit::CANNOT_WRITE),
            exit::CANNOT_WRITE
        );
    }
}

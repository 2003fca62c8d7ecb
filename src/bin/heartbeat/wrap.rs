//! `wrap` / `dummy`: run a program with heartbeats around it, like the
//! reference's `hb_wrapper.sh` and `hb_dummy.sh`.
//!
//! Order: signal handlers, `hb_init`, spawn CMD, pings every `--interval`
//! while it runs (the library's keep-alive task: each beat promises twice
//! the interval, failures are retried with backoff and logged), then
//! `hb_done` once it has exited. Heartbeat failures are reported on stderr
//! and never stop CMD.
//! SIGINT and SIGTERM received by the wrapper are sent on to CMD (which
//! stays in the wrapper's process group, so a terminal's Ctrl+C reaches it
//! directly too); the wrapper then waits for CMD and exits with its code,
//! or 128+N when CMD was killed by signal N.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use heartbeat_sdk::{ErrorPolicy, HeartbeatClient, KeepAlive, KeepAliveHandle};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};

use crate::args::{Global, WrapArgs};
use crate::{connect, exit};

/// Run `args.command` with the heartbeats `args` asks for (all of them when
/// `all`, as for `dummy`); returns the exit code to leave with.
pub async fn run(global: &Global, args: WrapArgs, all: bool) -> u8 {
    let all = all || args.all;
    let (init, ping, done) = (args.init || all, args.ping || all, args.done || all);
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("heartbeat wrap: cannot install signal handlers: {error}");
            return exit::CANNOT_RUN;
        }
    };
    let client = if init || ping || done {
        match connect::client(global) {
            Ok(client) => Some(client),
            Err(error) => return exit::report("wrap", &error),
        }
    } else {
        None
    };
    let beats = Beats {
        client,
        interval: Duration::from_millis(args.interval),
    };
    if init {
        beats
            .send_init(Duration::from_millis(args.init_timeout))
            .await;
    }

    let (program, program_args) = args.command.split_first().expect("clap requires CMD");
    let mut child = match Command::new(program).args(program_args).spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!(
                "heartbeat wrap: cannot run {}: {error}",
                program.to_string_lossy()
            );
            if done {
                beats
                    .send_done(Duration::from_millis(args.done_timeout))
                    .await;
            }
            return match error.kind() {
                io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_RUN,
            };
        }
    };
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);

    let pinger = ping.then(|| {
        beats.start_pinging(
            Duration::from_millis(args.done_timeout),
            Duration::from_millis(global.timeout),
        )
    });
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(signal) = signals.next() => {
                if let Some(pid) = pid {
                    // ESRCH: CMD has just exited; wait() reports it next.
                    let _ = kill(pid, signal);
                }
            }
        }
    };
    match pinger {
        Some(pinger) => stop_pinging(pinger, done).await,
        None if done => {
            beats
                .send_done(Duration::from_millis(args.done_timeout))
                .await
        }
        None => {}
    }
    match status {
        Ok(status) => exit_code(status),
        Err(error) => {
            eprintln!("heartbeat wrap: lost track of CMD: {error}");
            exit::CANNOT_RUN
        }
    }
}

/// CMD's exit code, or 128+N when signal N killed it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(u8::MAX),
        (None, Some(signal)) => u8::try_from(128 + (signal & 0x7f)).unwrap_or(u8::MAX),
        (None, None) => u8::MAX,
    }
}

/// SIGINT and SIGTERM, as a stream of the signal to send on.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal received; `None` if the handlers are gone.
    async fn next(&mut self) -> Option<Signal> {
        tokio::select! {
            got = self.interrupt.recv() => got.map(|()| Signal::SIGINT),
            got = self.terminate.recv() => got.map(|()| Signal::SIGTERM),
        }
    }
}

/// The heartbeats of one wrapped run.
struct Beats {
    client: Option<HeartbeatClient>,
    interval: Duration,
}

impl Beats {
    /// Send `hb_init`.
    async fn send_init(&self, timeout: Duration) {
        let Some(client) = &self.client else { return };
        if let Err(error) = client.init(timeout, ErrorPolicy::Raise).await {
            eprintln!(
                "heartbeat wrap: init failed (running CMD anyway): {}",
                exit::one_line(&error)
            );
        }
    }

    /// Send `hb_done`.
    async fn send_done(&self, timeout: Duration) {
        let Some(client) = &self.client else { return };
        if let Err(error) = client.done(timeout, ErrorPolicy::Raise).await {
            eprintln!("heartbeat wrap: done failed: {}", exit::one_line(&error));
        }
    }

    /// Ping every interval through the library's keep-alive task (its first
    /// beat is an init, which re-registers just the same; each beat promises
    /// twice the interval; failures are logged and retried with backoff).
    fn start_pinging(&self, done_timeout: Duration, request_timeout: Duration) -> KeepAliveHandle {
        let client = self.client.as_ref().expect("a client when pinging");
        client.keep_alive(
            KeepAlive::every(self.interval)
                .done_timeout(done_timeout)
                // a ping in flight, then the done: each bounded by --timeout
                .shutdown_timeout(
                    request_timeout
                        .saturating_mul(2)
                        .saturating_add(Duration::from_secs(1)),
                ),
        )
    }
}

/// Stop pinging: with `done`, let a ping in flight finish and send the done
/// (so no ping can reach the server after it); otherwise stop at once.
async fn stop_pinging(pinger: KeepAliveHandle, done: bool) {
    if done {
        if let Err(error) = pinger.shutdown().await {
            eprintln!("heartbeat wrap: done failed: {}", exit::one_line(&error));
        }
    } else {
        drop(pinger);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(
            exit_code(ExitStatus::from_raw(15)),
            143,
            "killed by SIGTERM"
        );
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137, "killed by SIGKILL");
    }
}

//! `wrap` / `dummy`: run a program with heartbeats around it, like the
//! reference's `hb_wrapper.sh` and `hb_dummy.sh`.
//!
//! Order: signal handlers, `hb_init`, spawn CMD, pings every `--interval`
//! while it runs (the library's keep-alive task: each beat promises twice
//! the interval, failures are retried with backoff and logged), then
//! `hb_done` once it has exited with code 0. Heartbeat failures are
//! reported on stderr and never stop CMD.
//!
//! # A failed run
//!
//! When CMD exits non-zero, dies of a signal or cannot be started, the
//! wrapper sends `hb_fail?CODE` (the failure extension, `docs/api-v1.md`)
//! instead of `hb_done`, where it would have sent the done: our server then
//! shows the app CRITICAL with the exit code and notifies. A server that
//! answers it `400` (the reference, which does not know the command) gets
//! nothing else: the app is left to go late, and the reference reports it
//! so, instead of a done that would make it vanish.
//!
//! # Signals
//!
//! SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1 and SIGUSR2 received by the
//! wrapper do not end it: each is sent on to CMD, the wrapper waits for CMD,
//! sends `hb_done` (when asked to) and exits with CMD's code, or 128+N when
//! CMD died of signal N.
//!
//! - When the wrapper's stdin is not a terminal (cron, systemd, scripts),
//!   CMD runs in a process group of its own and each signal goes to that
//!   whole group, so CMD's own children get it too.
//! - When stdin is a terminal, CMD stays in the wrapper's process group, so
//!   that it can read the terminal (a background group reading it would be
//!   stopped by SIGTTIN); the terminal's Ctrl+C, Ctrl+\ and hangup reach the
//!   whole group directly, and signals sent to the wrapper alone go on to
//!   CMD alone.
//!
//! On Linux CMD also dies with the wrapper: it is started with the parent
//! death signal SIGKILL (`prctl(PR_SET_PDEATHSIG)`, which survives the
//! `execve` of CMD), so a wrapper killed by SIGKILL (or crashing) takes CMD
//! along instead of leaving it running unwatched. CMD's own children are
//! not covered by this. Setting it needs a `pre_exec` hook, the one piece
//! of `unsafe` in the binary: see [`die_with_the_wrapper`]. Other Unixes
//! have no such call; there CMD outlives a wrapper killed by SIGKILL.

use std::io::{self, IsTerminal};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use heartbeat_sdk::{ErrorPolicy, HeartbeatClient, KeepAlive, KeepAliveHandle};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};

use crate::args::{Global, WrapArgs};
use crate::output::error_line;
use crate::{connect, exit};

/// Run `args.command` with the heartbeats `args` asks for (all of them when
/// `all`, as for `dummy`); returns the exit code to leave with.
pub async fn run(global: &Global, args: WrapArgs, all: bool) -> u8 {
    let all = all || args.all;
    let (init, ping, done) = (args.init || all, args.ping || all, args.done || all);
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(error) => {
            error_line(&format!(
                "heartbeat wrap: cannot install signal handlers: {error}"
            ));
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
    let mut command = Command::new(program);
    command.args(program_args);
    // see the module docs: a group of its own unless CMD may need the terminal
    let own_group = !io::stdin().is_terminal();
    if own_group {
        command.process_group(0);
    }
    #[cfg(target_os = "linux")]
    die_with_the_wrapper(&mut command);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            error_line(&format!(
                "heartbeat wrap: cannot run {}: {error}",
                program.to_string_lossy()
            ));
            let code = match error.kind() {
                io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_RUN,
            };
            if done {
                beats.send_fail(code).await;
            }
            return code;
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
            // wait() first: a signal is forwarded only while CMD is not yet
            // reaped, so its pid (and group id) cannot have been reused
            biased;
            status = child.wait() => break status,
            Some(signal) = signals.next() => {
                if let Some(pid) = pid {
                    // ESRCH: CMD (and its group) has just exited; wait()
                    // reports it next.
                    let _ = if own_group { killpg(pid, signal) } else { kill(pid, signal) };
                }
            }
        }
    };
    let code = match status {
        Ok(status) => exit_code(status),
        Err(error) => {
            error_line(&format!("heartbeat wrap: lost track of CMD: {error}"));
            exit::CANNOT_RUN
        }
    };
    let failed = (code != 0).then_some(code);
    match (pinger, failed) {
        (Some(pinger), Some(code)) if done => report_fail(pinger.fail(code).await),
        (Some(pinger), _) => stop_pinging(pinger, done).await,
        (None, Some(code)) if done => beats.send_fail(code).await,
        (None, None) if done => {
            beats
                .send_done(Duration::from_millis(args.done_timeout))
                .await
        }
        (None, _) => {}
    }
    code
}

/// Reports how an `hb_fail` went: a `400` (a server without the extension)
/// is said once, as what it means; nothing else is sent after it.
fn report_fail(result: heartbeat_sdk::Result<String>) {
    match result {
        Ok(_) => {}
        Err(heartbeat_sdk::Error::Status { status: 400, .. }) => error_line(
            "heartbeat wrap: the server does not know hb_fail (HTTP 400); \
             no done sent, so the failed run shows as late",
        ),
        Err(error) => error_line(&format!(
            "heartbeat wrap: fail failed: {}",
            exit::one_line(&error)
        )),
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

/// Make CMD die (SIGKILL) when the wrapper does, through
/// `prctl(PR_SET_PDEATHSIG)` in CMD's process between `fork` and `execve`
/// (the setting survives the `execve` of CMD, unless CMD is set-user-ID or
/// has file capabilities).
///
/// The "parent" whose death counts is the thread that forks: `wrap::run`
/// runs in the future the main thread `block_on`s, and tokio spawns CMD
/// synchronously on that thread, which lives as long as the process.
///
/// If the wrapper died before the hook ran, CMD has already been reparented
/// and the death signal would never come: the hook sees a parent pid other
/// than the wrapper's and makes the spawn fail instead.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_the_wrapper(command: &mut Command) {
    use nix::errno::Errno;
    use nix::sys::prctl::set_pdeathsig;
    use nix::unistd::{getpid, getppid};

    let wrapper = getpid();
    // SAFETY: the closure runs in the forked child, where only
    // async-signal-safe work is allowed. It makes two raw system calls
    // (prctl, getppid) through nix's thin wrappers, which neither allocate
    // nor take locks, and builds its errors from plain errno values
    // (`io::Error::from(Errno)` is `from_raw_os_error`, no allocation). It
    // captures one `Pid` (a plain integer) by copy.
    unsafe {
        command.pre_exec(move || {
            set_pdeathsig(Signal::SIGKILL)?;
            if getppid() != wrapper {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

/// The signals sent on to CMD: SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1,
/// SIGUSR2 (handlers installed, so none of them ends the wrapper).
struct Signals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// The signals forwarded, in the order of the module docs.
    const FORWARDED: [Signal; 6] = [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ];

    fn new() -> io::Result<Signals> {
        let streams = Signals::FORWARDED
            .into_iter()
            .map(|forwarded| Ok((forwarded, signal(SignalKind::from_raw(forwarded as i32))?)))
            .collect::<io::Result<_>>()?;
        Ok(Signals { streams })
    }

    /// The next signal received; `None` if the handlers are gone.
    async fn next(&mut self) -> Option<Signal> {
        std::future::poll_fn(|cx| {
            let mut open = false;
            for (forwarded, stream) in &mut self.streams {
                match stream.poll_recv(cx) {
                    std::task::Poll::Ready(Some(())) => {
                        return std::task::Poll::Ready(Some(*forwarded))
                    }
                    std::task::Poll::Ready(None) => {}
                    std::task::Poll::Pending => open = true,
                }
            }
            if open {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(None)
            }
        })
        .await
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
            error_line(&format!(
                "heartbeat wrap: init failed (running CMD anyway): {}",
                exit::one_line(&error)
            ));
        }
    }

    /// Send `hb_fail` with `code`.
    async fn send_fail(&self, code: u8) {
        let Some(client) = &self.client else { return };
        report_fail(client.fail(code, ErrorPolicy::Raise).await);
    }

    /// Send `hb_done`.
    async fn send_done(&self, timeout: Duration) {
        let Some(client) = &self.client else { return };
        if let Err(error) = client.done(timeout, ErrorPolicy::Raise).await {
            error_line(&format!(
                "heartbeat wrap: done failed: {}",
                exit::one_line(&error)
            ));
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
            error_line(&format!(
                "heartbeat wrap: done failed: {}",
                exit::one_line(&error)
            ));
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

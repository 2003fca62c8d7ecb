//! `wrap` / `dummy`: run a program with heartbeats around it, like the
//! reference's `hb_wrapper.sh` and `hb_dummy.sh`.
//!
//! Order: signal handlers, `hb_init`, spawn CMD, pings every `--interval`
//! while it runs (each promising `--interval`), then `hb_done` once it has
//! exited. Heartbeat failures are reported on stderr and never stop CMD.
//! SIGINT and SIGTERM received by the wrapper are sent on to CMD (which
//! stays in the wrapper's process group, so a terminal's Ctrl+C reaches it
//! directly too); the wrapper then waits for CMD and exits with its code,
//! or 128+N when CMD was killed by signal N.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio::time::{interval, MissedTickBehavior};

use crate::args::{Global, WrapArgs};
use crate::{connect, exit};

/// Run `args.command` with the heartbeats `args` asks for (all of them when
/// `all`); returns the exit code to leave with.
pub async fn run(global: &Global, args: WrapArgs, all: bool) -> u8 {
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
    let mut inited = false;
    if init {
        inited = beats.send_init(Duration::from_millis(args.init_timeout)).await;
    }

    let (program, program_args) = args.command.split_first().expect("clap requires CMD");
    let mut child = match Command::new(program).args(program_args).spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!("heartbeat wrap: cannot run {}: {error}", program.to_string_lossy());
            if done {
                beats.send_done(Duration::from_millis(args.done_timeout)).await;
            }
            return match error.kind() {
                io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_RUN,
            };
        }
    };
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);

    let pinger = ping.then(|| beats.start_pinging(inited));
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
    if let Some(pinger) = pinger {
        pinger.stop().await;
    }
    if done {
        beats.send_done(Duration::from_millis(args.done_timeout)).await;
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
    /// Send `hb_init`; true when the server accepted it.
    async fn send_init(&self, timeout: Duration) -> bool {
        let Some(client) = &self.client else { return false };
        match client.init(timeout, ErrorPolicy::Raise).await {
            Ok(_) => true,
            Err(error) => {
                eprintln!("heartbeat wrap: init failed (running CMD anyway): {error}");
                false
            }
        }
    }

    /// Send `hb_done`.
    async fn send_done(&self, timeout: Duration) {
        let Some(client) = &self.client else { return };
        if let Err(error) = client.done(timeout, ErrorPolicy::Raise).await {
            eprintln!("heartbeat wrap: done failed: {error}");
        }
    }

    /// Ping every interval in a task (the first one at once unless `inited`).
    fn start_pinging(&self, inited: bool) -> Pinger {
        let client = self.client.clone().expect("a client when pinging");
        let period = self.interval;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ticks = interval(period);
            // after a stall, ping once and go on at the same rate: no burst
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            if inited {
                ticks.tick().await; // the first tick is immediate: init just went out
            }
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {}
                }
                // a ping in flight is finished before stopping, so that it
                // cannot reach the server after the done that follows
                match client.ping(period, ErrorPolicy::Raise).await {
                    Ok(_) if failing => {
                        failing = false;
                        eprintln!("heartbeat wrap: pings succeed again");
                    }
                    Ok(_) => {}
                    Err(error) if !failing => {
                        failing = true;
                        eprintln!("heartbeat wrap: ping failed (will keep trying): {error}");
                    }
                    Err(_) => {}
                }
            }
        });
        Pinger { stop, task }
    }
}

/// The running ping task.
struct Pinger {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Pinger {
    /// Stop pinging, after the ping in flight if any.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143, "killed by SIGTERM");
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137, "killed by SIGKILL");
    }
}

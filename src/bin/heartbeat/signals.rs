//! Waiting for Ctrl+C (SIGINT) or SIGTERM: the one stop signal of
//! `heartbeat serve` and `heartbeat demo` (`heartbeat wrap` forwards
//! signals to its child instead, see [`crate::wrap`]).

use std::future::Future;
use std::io;

use tokio::signal::unix::{signal, SignalKind};

use crate::{exit, output};

/// Install handlers for SIGINT and SIGTERM **now** (from here on they no
/// longer kill the process) and return a future that completes when either
/// arrives. Call it inside the tokio runtime.
///
/// # Errors
/// When a handler cannot be installed.
fn interrupt_or_terminate() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// [`interrupt_or_terminate`] for `heartbeat COMMAND`; when the handlers
/// cannot be installed, the line `heartbeat COMMAND: cannot install signal
/// handlers: ...` on stderr and, as `Err`, the exit code to end with.
pub fn stop_signal(command: &str) -> Result<impl Future<Output = ()> + Send + 'static, u8> {
    interrupt_or_terminate().map_err(|error| {
        output::error_line(&format!(
            "heartbeat {command}: cannot install signal handlers: {error}"
        ));
        exit::CANNOT_START
    })
}

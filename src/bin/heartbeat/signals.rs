//! Waiting for Ctrl+C (SIGINT) or SIGTERM.

use std::future::Future;
use std::io;

use tokio::signal::unix::{signal, SignalKind};

/// Install handlers for SIGINT and SIGTERM now (so that from here on they no
/// longer kill the process) and return a future that completes on either.
pub fn interrupt_or_terminate() -> io::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

//! A `tracing_subscriber` writer that keeps everything written to it, for
//! tests that assert on log lines (`tests/client_logs.rs`,
//! `tests/server_logs.rs`). Included with `#[path]`, not through
//! `tests/common`, so the other test binaries do not carry it.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Everything written to any clone of it, in order.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Forget what was written so far.
    #[allow(dead_code)] // not every includer clears
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A subscriber that writes every event up to `level` here, without
    /// colours (set it as the default, or wrap it in a `Dispatch`).
    #[allow(dead_code)] // not every includer uses it
    pub fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish()
    }

    /// What was written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

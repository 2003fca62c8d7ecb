//! [`ServerHandle`]: a running server, and its graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::monitor::SharedRegistry;

/// A running server: its address, its state, and a graceful shutdown.
///
/// Dropping the handle without [`shutdown`](ServerHandle::shutdown) stops
/// accepting at once (the listening socket is closed) and waits for
/// nothing: requests already being served still complete, each connection
/// then closes, idle ones at once; with durable state, changes not yet
/// committed may be lost. `shutdown` also waits for them (up to 5 s), and
/// commits the state.
#[derive(Debug)]
pub struct ServerHandle {
    pub(super) local_addr: SocketAddr,
    /// The TLS front (`ServerBuilder::web_config` with `tls_server_config`).
    #[cfg(feature = "web-config")]
    pub(super) tls: Option<super::web_config::TlsAcceptorHandle>,
    pub(super) state: Arc<SharedRegistry>,
    pub(super) stop: Option<oneshot::Sender<()>>,
    pub(super) task: Option<JoinHandle<()>>,
    /// The task that turns deadlines into events.
    pub(super) sweeper: Option<JoinHandle<()>>,
    /// The state writer (`ServerBuilder::state`).
    #[cfg(feature = "state")]
    pub(super) writer: Option<super::state::StateWriter>,
    /// The notifications' delivery tasks (`ServerBuilder::webhook`, `alertmanager`).
    #[cfg(feature = "notify")]
    pub(super) notifier: Option<super::notify::Notifier>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR` (`https://` with TLS), for a client's `HB_URL`.
    pub fn url(&self) -> String {
        #[cfg(feature = "web-config")]
        if self.tls.is_some() {
            return format!("https://{}", self.local_addr);
        }
        format!("http://{}", self.local_addr)
    }

    /// Re-read the TLS certificate and key files now (what `heartbeat
    /// serve` does on `SIGHUP`; a change on disk is also picked up by
    /// itself). A file that does not load keeps the certificate in use,
    /// with a warning. Without TLS, does nothing.
    #[cfg(feature = "web-config")]
    #[cfg_attr(docsrs, doc(cfg(feature = "web-config")))]
    pub fn reload_tls(&self) {
        if let Some(tls) = &self.tls {
            if let Err(error) = tls.reload() {
                tracing::warn!("TLS certificate not reloaded, the one in use stays: {error}");
            }
        }
    }

    /// The registry the server answers from.
    pub fn registry(&self) -> &SharedRegistry {
        &self.state
    }

    /// Stop accepting, let requests in flight finish (up to 5 s), and return.
    /// With durable state, everything still pending is then committed (a
    /// failure is logged).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.abort();
        }
        #[cfg(feature = "notify")]
        if let Some(mut notifier) = self.notifier.take() {
            notifier.abort();
        }
        #[cfg(feature = "state")]
        if let Some(writer) = self.writer.take() {
            match writer.shutdown().await {
                Ok(stats) => tracing::info!(
                    commits = stats.commits,
                    rows_written = stats.rows_written,
                    write_errors = stats.write_errors,
                    "state saved"
                ),
                Err(error) => tracing::error!("state: {error}"),
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.abort();
        }
    }
}

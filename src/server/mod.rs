//! The heartbeat server: a pure [`Registry`] and, with feature `server`, an
//! HTTP front end that is a drop-in for the reference server.
//!
//! The same registry answers the [`MockTransport`](crate::transport::MockTransport)
//! (feature `mock`), so offline tests see real protocol semantics.
//!
//! - [`registry`]: the state machine, no I/O, clock injected.
//! - [`service`]: the one mapping from a request to a reply.
//! - [`metrics`]: Prometheus text exposition.
//! - `api` and `dashboard` (feature `server`): `GET /api/v1/apps` (JSON,
//!   `docs/api-v1.md`) and the dashboard page at `GET /`.
//! - [`SharedRegistry`]: the registry behind a lock, with its [`Clock`].
//! - `Server::builder` → `ServerBuilder` → `start` → `ServerHandle`
//!   (feature `server`): HTTP/1.0 and 1.1 over tokio and hyper.

mod clock;
pub mod metrics;
pub mod registry;
pub mod service;
mod shared;

#[cfg(feature = "server")]
mod api;
#[cfg(feature = "server")]
mod conns;
#[cfg(feature = "server")]
mod dashboard;
#[cfg(feature = "server")]
mod http;
#[cfg(feature = "state")]
mod state;

pub use clock::{Clock, ManualClock, SystemClock};
pub use registry::{
    AppInfo, AppStatus, Expected, ExpectedError, HostStatus, Registry, RegistryConfig,
};
pub use shared::SharedRegistry;

#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub use http::{Server, ServerBuilder, ServerHandle, DEFAULT_MAX_CONNECTIONS};

#[cfg(feature = "state")]
#[cfg_attr(docsrs, doc(cfg(feature = "state")))]
pub use state::{
    StateError, StateSink, StateStats, StateStore, StateWriter, StoredApp, DEFAULT_COMMIT_INTERVAL,
    MIN_COMMIT_INTERVAL, SCHEMA_VERSION,
};

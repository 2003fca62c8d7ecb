//! The embedded heartbeat server (feature `server`): a drop-in for the
//! reference server, HTTP/1.0 and 1.1 over tokio and hyper.
//!
//! `Server::builder` → [`ServerBuilder`] → `start` → [`ServerHandle`]. The
//! protocol's state machine lives in [`crate::monitor`]; this module is the
//! HTTP front end, the connection limits, the always-on sweeper that turns
//! deadlines into [`Event`](crate::monitor::Event)s, and (feature `state`)
//! the durable state.
//!
//! The monitor types the builder takes are re-exported here for
//! convenience.

mod accept;
mod access;
mod builder;
mod conns;
mod handle;
#[cfg(feature = "notify")]
mod notify;
mod respond;
mod socket;
#[cfg(feature = "state")]
mod state;
mod stream;
#[cfg(feature = "web-config")]
mod web_config;

pub use crate::monitor::metrics::PerAppMetrics;
pub use crate::monitor::{
    Clock, Expected, ExpectedError, ManualClock, RegistryConfig, SharedRegistry, SystemClock,
};
pub use access::Protect;
pub use builder::{Server, ServerBuilder, DEFAULT_MAX_CONNECTIONS};
pub use handle::ServerHandle;

#[cfg(feature = "notify")]
#[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
pub use notify::{
    WebhookFormat, ALERT_LIFETIME_RESENDS, DEFAULT_ALERT_RESEND, DELIVERY_TIMEOUT, MAX_PENDING,
    RESOLVED_RETENTION,
};
#[cfg(feature = "state")]
#[cfg_attr(docsrs, doc(cfg(feature = "state")))]
pub use state::{
    OutboxEntry, StateError, StateSink, StateStats, StateStore, StateWriter, StoredApp,
    DEFAULT_COMMIT_INTERVAL, DEFAULT_HISTORY_RETENTION, MIN_COMMIT_INTERVAL, SCHEMA_VERSION,
};
#[cfg(feature = "web-config")]
#[cfg_attr(docsrs, doc(cfg(feature = "web-config")))]
pub use web_config::{ClientAuth, TlsSettings, TlsVersion, WebConfig, WebConfigError};

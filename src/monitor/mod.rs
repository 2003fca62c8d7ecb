//! The monitor: the heartbeat protocol's state machine, with no I/O.
//!
//! Both the embedded server (feature `server`) and the
//! [`MockTransport`](crate::testing::MockTransport) (feature `mock`) answer
//! from this module, so offline tests see the server's real semantics.
//!
//! - [`Registry`]: the apps, their deadlines and the next threshold crossing
//!   of each; every state change is an [`Event`] at the instant it happens.
//! - [`EventSink`]: where events go, in order ([`LogSink`] logs them; the
//!   server's durable state is another sink).
//! - [`SharedRegistry`]: the registry behind a lock, with its [`Clock`] and
//!   sinks; the one entry point for requests and for the sweeper.
//! - [`Clock`], [`SystemClock`], [`ManualClock`]: injected time, so tests
//!   drive deadlines without sleeping.
//!
//! The request → reply mapping (`service`) and the renderers of `/metrics`,
//! `/api/v1/apps` and the dashboard (`render`) are internal.

mod clock;
mod events;
pub(crate) mod history;
pub mod log;
pub mod metrics;
pub(crate) mod registry;
pub(crate) mod render;
pub(crate) mod service;
mod shared;

pub use clock::{Clock, ManualClock, SystemClock};
pub use events::{Event, EventKind, EventSink};
pub use history::{HistoryEntry, HistorySink, HISTORY_CAP, HISTORY_PER_APP, STRIP_SLOTS};
pub use log::LogSink;
pub use registry::{
    AppInfo, AppStatus, Counters, Expected, ExpectedError, HostStatus, Registry, RegistryConfig,
    RegistryFull, DEFAULT_MAX_APPS, DEFAULT_MAX_EXPECTED_TIMEOUT, EVENT_BUFFER_CAP,
};
pub use service::Reply;
pub use shared::SharedRegistry;

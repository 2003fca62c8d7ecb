//! # heartbeat-sdk
//!
//! Take part in the heartbeat protocol from Rust: register with a heartbeat
//! server (`hb_init`), promise to ping again within a timeout (`hb_ping`),
//! sign off (`hb_done`), and ask the server who is alive (`/list`,
//! `/status` in Nagios plugin format).
//!
//! ```no_run
//! # #[cfg(feature = "reqwest")]
//! # async fn run() -> heartbeat_sdk::Result<()> {
//! use std::time::Duration;
//! use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
//!
//! let client = HeartbeatClient::builder().url("127.0.0.1:8888").app_id("kiosk-7").build()?;
//! client.init(Duration::from_millis(500), ErrorPolicy::Raise).await?;
//! client.ping(Duration::from_secs(1), ErrorPolicy::Raise).await?;
//! let status = client.status(Some("kiosk-7"), ErrorPolicy::Raise).await?;
//! println!("{} (exit code {})", status, status.state().exit_code());
//! client.done_now(ErrorPolicy::Raise).await?;
//! # Ok(()) }
//! ```
//!
//! ## Layers
//!
//! - [`protocol`]: pure request building and reply parsing, including the
//!   typed Nagios [`Status`].
//! - [`Transport`]: one HTTP request in, status and body out. Backends are
//!   chosen by cargo feature.
//! - [`HeartbeatClient`]: the typed client; every call takes an
//!   [`ErrorPolicy`] (raise, or return your fallback value).
//! - `monitor` (features `server` or `mock`): the server's state machine,
//!   no I/O; every state change is an `Event` handed to `EventSink`s.
//! - `testing` (feature `mock`): `MockTransport` over the monitor.
//! - `server` (feature `server`): the HTTP front end, a drop-in for the
//!   reference server.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `reqwest` | yes | `transport::ReqwestTransport`, the default transport |
//! | `rustls` | yes | `https://` through rustls |
//! | `native-tls` | no | `https://` through the platform's TLS |
//! | `surf` | no | `transport::SurfTransport` (surf over curl); the default transport when `reqwest` is off |
//! | `mock` | no | `testing::MockTransport`, an in-memory transport answering from the `monitor` |
//! | `server` | no | the embedded server (`server`) over hyper, the `monitor`, and the `demo` session |
//! | `keepalive` | yes | `HeartbeatClient::keep_alive`: a background task that inits, pings and signs off |
//! | `serde` | no | `Serialize`/`Deserialize` for `State`, `Status`, `monitor::Counters` and the JSON API's records (`protocol::apps`), and `HeartbeatClient::apps` |
//! | `blocking` | no | `blocking::HeartbeatClient`, a synchronous client usable in and out of tokio |
//! | `state` | no | durable server state (`server::ServerBuilder::state`): SQLite through rusqlite, bundled |
//! | `web-config` | no | `server::WebConfig`: TLS (rustls) and basic auth (bcrypt) from an exporter-toolkit web config file |
//! | `cli` | no | the `heartbeat` binary (Unix only: it uses Unix signals and `nix`); includes `state` (`serve --state`), `notify` and `web-config` |
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "blocking")]
#[cfg_attr(docsrs, doc(cfg(feature = "blocking")))]
pub mod blocking;
mod client;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod demo;
mod error;
pub mod host_check;
#[cfg(feature = "keepalive")]
mod keepalive;
#[cfg(monitor)]
#[cfg_attr(docsrs, doc(cfg(any(feature = "server", feature = "mock"))))]
pub mod monitor;
mod policy;
pub mod protocol;
mod retry;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod settings;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod testing;
pub mod transport;

pub use client::{AppCheck, ClientBuilder, HeartbeatClient, STATUS_ALL_CONCURRENCY};
pub use error::{Error, Result, TransportError, TransportErrorKind};
#[cfg(feature = "keepalive")]
#[cfg_attr(docsrs, doc(cfg(feature = "keepalive")))]
pub use keepalive::{KeepAlive, KeepAliveHandle, KeepAliveState};
pub use policy::ErrorPolicy;
pub use protocol::{State, Status};
pub use retry::RetryPolicy;
pub use settings::Settings;
pub use transport::Transport;

/// Every Rust snippet of README.md, compiled (and, unless marked `no_run`,
/// run) as a doc-test, so the front page cannot rot. The snippets use every
/// transport, the mock, the server and the blocking client, so they run
/// with `cargo test --all-features` (the README's own test command).
#[cfg(all(
    doctest,
    feature = "reqwest",
    feature = "surf",
    feature = "mock",
    feature = "server",
    feature = "blocking"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Every Rust snippet of docs/client-guide.md, compiled as a doc-test like README.md's.
#[cfg(all(
    doctest,
    feature = "reqwest",
    feature = "surf",
    feature = "mock",
    feature = "server",
    feature = "blocking"
))]
#[doc = include_str!("../docs/client-guide.md")]
pub struct ClientGuideDoctests;

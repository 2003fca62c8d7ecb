//! Waiting for Ctrl+C (SIGINT) or SIGTERM: the library's
//! [`heartbeat_sdk::demo::stop_signal`].

/// Install handlers for SIGINT and SIGTERM now (so that from here on they no
/// longer kill the process) and return a future that completes on either.
pub use heartbeat_sdk::demo::stop_signal as interrupt_or_terminate;

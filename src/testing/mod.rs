//! Test doubles for code that uses the SDK (feature `mock`).
//!
//! [`MockTransport`] answers in memory from the monitor's real state machine
//! ([`crate::monitor`]), on a [`ManualClock`](crate::monitor::ManualClock)
//! you can advance, and can be told to fail ([`MockFailure`]).

mod mock;

pub use mock::{MockFailure, MockTransport};

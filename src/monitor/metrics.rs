//! Prometheus text exposition (format 0.0.4) of a [`Registry`], named as
//! Prometheus' naming guide asks: base units, `_total` counters,
//! `_timestamp_seconds` times, one metric per meaning with labels `app`
//! (the id) and `host` (the peer's IP, empty for bare keys and for a
//! missing application expected from any host).
//!
//! ```text
//! heartbeat_apps                               tracked applications
//! heartbeat_{inits,pings,dones,expiries,refused}_total
//! heartbeat_app_up{app,host}                   1 reporting, 0 late past the critical ratio or expected and missing
//! heartbeat_app_state{app,host}                Nagios state: 0 OK, 1 WARNING, 2 CRITICAL (missing: 2)
//! heartbeat_app_overdue_ratio{app,host}        time since the last init/ping / granted timeout
//! heartbeat_app_last_seen_timestamp_seconds{app,host}
//! heartbeat_app_granted_timeout_seconds{app,host}
//! ```
//!
//! Expected applications without a record ([`Registry::expect`]) appear in
//! `heartbeat_app_up` (0) and `heartbeat_app_state` (2) only. An alert
//! rule keys on `heartbeat_app_up == 0`.
//!
//! `heartbeat_apps_by_state{state="ok|warning|critical|missing"}` counts
//! the applications per state. A server can leave out the OK
//! applications' series, or every per-application series
//! ([`PerAppMetrics`]); these functions render them all.

use std::time::{Instant, SystemTime};

use super::registry::Registry;
use super::service::{Streamed, View};

pub use super::render::metrics::{escape_label_value, PerAppMetrics, CONTENT_TYPE};

/// Expires overdue records, then renders counters and the per-application
/// gauges (tracked applications in key order, then missing expected ones
/// in spec order). `heartbeat_app_last_seen_timestamp_seconds` counts
/// from the wall-clock time the registry read when it first saw a `now`,
/// plus the monotonic time since.
pub fn render(registry: &mut Registry, now: Instant) -> String {
    Streamed::new(View::Metrics, registry.snapshot(now)).into_string()
}

/// [`render`], with `wall` as the wall-clock time that corresponds to
/// `now` (for reproducible output).
pub fn render_at(registry: &mut Registry, now: Instant, wall: SystemTime) -> String {
    Streamed::new(View::Metrics, registry.snapshot(now))
        .at_wall(wall)
        .into_string()
}

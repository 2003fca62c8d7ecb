//! [`SharedRegistry`]: the registry behind a lock, with its clock; what the
//! HTTP server and the mock transport both answer from.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::clock::{Clock, SystemClock};
use super::registry::{Event, Registry, RegistryConfig};
use super::service::{parse, prepare, Answer, Reply};
use crate::protocol::printable;

/// A [`Registry`] shared between connections, with the clock it runs on.
///
/// Every request goes through [`SharedRegistry::handle`]: decode (outside
/// the lock), update and reply (under it), then log what happened through
/// `tracing`: constructions, destructions, expiries and refusals (a bad
/// request, a full registry) at info, updates (a ping or init of a known
/// app) at debug, so that a busy server's log stays small. Ids and request
/// text are logged through [`printable`], so a peer cannot forge or break
/// log lines.
#[derive(Debug)]
pub struct SharedRegistry {
    registry: Mutex<Registry>,
    clock: Arc<dyn Clock>,
    /// Durable state: where the registry's changes go (`--state`).
    #[cfg(feature = "state")]
    state: Option<super::state::StateSink>,
    /// The registry's `events_dropped` as of the last hand-over to the
    /// state writer (only read and written under the registry's lock).
    #[cfg(feature = "state")]
    events_dropped: std::sync::atomic::AtomicU64,
}

impl SharedRegistry {
    /// A registry with `config` running on `clock`.
    pub fn new(config: RegistryConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            registry: Mutex::new(Registry::new(config)),
            clock,
            #[cfg(feature = "state")]
            state: None,
            #[cfg(feature = "state")]
            events_dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Answer one request (`target` is `/path?query`). Whole-registry
    /// replies are rendered after the lock is released (see
    /// [`service`](super::service)).
    pub fn handle(&self, target: &str, form_body: Option<&[u8]>, peer: IpAddr) -> Reply {
        self.answer(target, form_body, peer).into_reply()
    }

    /// [`handle`](Self::handle), leaving a whole-registry reply unrendered:
    /// the lock is held only to apply the command and take the snapshot.
    pub(crate) fn answer(&self, target: &str, form_body: Option<&[u8]>, peer: IpAddr) -> Answer {
        let command = match parse(target, form_body) {
            Ok(command) => command,
            Err(reply) => {
                tracing::info!(%peer, status = reply.status, "request refused: {}", printable(&reply.body));
                return Answer::Ready(reply);
            }
        };
        let (answer, events) = self.with_registry(|registry, now| {
            let answer = prepare(registry, command, peer, now);
            let events = registry.take_events();
            #[cfg(feature = "state")]
            self.persist(registry, now, &events, Some(peer));
            (answer, events)
        });
        log_events(events);
        #[cfg(feature = "state")]
        let answer = self.with_state_metrics(answer);
        answer
    }

    /// Run `f` on the registry at the clock's current time (for inspection
    /// in tests and tools).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry, Instant) -> R) -> R {
        let now = self.clock.now();
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut registry, now)
    }
}

/// Durable state (feature `state`).
#[cfg(feature = "state")]
impl SharedRegistry {
    /// Sends the registry's changes to `sink` from now on.
    pub(crate) fn set_state(&mut self, sink: super::state::StateSink) {
        self.state = Some(sink);
    }

    /// The state writer's totals, when there is one.
    pub(crate) fn state_stats(&self) -> Option<super::state::StateStats> {
        self.state.as_ref().map(super::state::StateSink::stats)
    }

    /// Expires overdue records now, so that their rows are deleted without
    /// waiting for the next request; logs and persists what happened.
    pub(crate) fn sweep(&self) {
        let events = self.with_registry(|registry, now| {
            registry.expire(now);
            let events = registry.take_events();
            self.persist(registry, now, &events, None);
            events
        });
        log_events(events);
    }

    /// Hands `events` to the state writer. Runs under the registry's lock,
    /// so the writer sees the changes in the registry's order (a ping and
    /// a `done` of one app from two connections cannot swap), and costs a
    /// map lookup and a channel send per event: no allocation, no I/O.
    fn persist(&self, registry: &Registry, now: Instant, events: &[Event], peer: Option<IpAddr>) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(sink) = &self.state else {
            return;
        };
        let dropped = registry.counters().events_dropped;
        if dropped != self.events_dropped.swap(dropped, Relaxed) {
            // The registry's event buffer overflowed (thousands of expiries
            // at once): individual deletes were lost, so send the whole
            // state instead (O(n), rare).
            tracing::info!("state: registry events were dropped; rewriting the whole state");
            let wall = std::time::SystemTime::now();
            let apps = registry
                .apps(now)
                .map(|app| {
                    // saturating: a huge granted timeout must not panic
                    let elapsed = std::time::Duration::try_from_secs_f64(
                        app.granted.as_secs_f64() * app.overdue_ratio,
                    )
                    .unwrap_or_default();
                    let last_seen = wall.checked_sub(elapsed).unwrap_or(wall);
                    super::state::stored_app(app.key, None, app.granted, last_seen)
                })
                .collect();
            sink.replace_all(apps);
            return;
        }
        let mut seen = None;
        for event in events {
            match event {
                Event::Constructed(key) | Event::Updated(key) => {
                    if let Some(granted) = registry.granted_of(key) {
                        let now = *seen.get_or_insert_with(std::time::SystemTime::now);
                        sink.upsert_key(Arc::clone(key), peer, granted, now);
                    }
                }
                Event::Destroyed(key) | Event::Expired(key) => sink.delete_key(Arc::clone(key)),
                _ => {}
            }
        }
    }

    /// `/metrics` with the state writer's totals appended.
    fn with_state_metrics(&self, answer: Answer) -> Answer {
        use std::fmt::Write as _;
        let Answer::Streamed(streamed) = &answer else {
            return answer;
        };
        if !streamed.is_metrics() {
            return answer;
        }
        let Some(stats) = self.state_stats() else {
            return answer;
        };
        let mut text = String::new();
        for (name, kind, help, value) in [
            ("heartbeat_state_commits_total", "counter", "Successful commits to the state file.", stats.commits),
            ("heartbeat_state_rows_written_total", "counter", "Changes written to the state file (upserts and deletes, coalesced per application).", stats.rows_written),
            ("heartbeat_state_write_errors_total", "counter", "Failed commits to the state file (each is retried).", stats.write_errors),
            ("heartbeat_state_pending", "gauge", "Changes waiting for the next commit to the state file.", stats.pending),
        ] {
            // Writing to a String cannot fail.
            let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        }
        match answer {
            Answer::Streamed(streamed) => Answer::Streamed(streamed.with_trailer(text)),
            ready => ready,
        }
    }
}

/// Logs what happened to records: updates at debug, the rest at info.
fn log_events(events: Vec<Event>) {
    for event in events {
        if let Event::Updated(_) = event {
            tracing::debug!("{}", printable(&event.to_string()));
        } else {
            tracing::info!("{}", printable(&event.to_string()));
        }
    }
}

impl Default for SharedRegistry {
    fn default() -> Self {
        Self::new(RegistryConfig::default(), Arc::new(SystemClock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::clock::ManualClock;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Whole-registry replies leave the locked section as a snapshot, not
    /// as text: the registry is free while they are rendered and sent, and
    /// what changes meanwhile does not show in them.
    #[test]
    fn big_replies_are_rendered_after_the_lock_is_released() {
        let shared = SharedRegistry::new(RegistryConfig::default(), Arc::new(ManualClock::new()));
        let ok = |target: &str| assert_eq!(shared.handle(target, None, LOCAL).status, 200);
        for i in 0..200 {
            ok(&format!("/hb_init?1000&appid=app{i:03}"));
        }
        for target in ["/list", "/status", "/metrics"] {
            let whole = shared.handle(target, None, LOCAL).body;
            let Answer::Streamed(streamed) = shared.answer(target, None, LOCAL) else {
                panic!("{target} was rendered under the lock");
            };
            assert!(shared.registry.try_lock().is_ok());
            let mut chunks = streamed.chunks(100);
            let mut body = chunks.next().unwrap_or_default();
            // half sent: the registry is free and changes under the reply
            assert!(shared.registry.try_lock().is_ok());
            ok("/hb_init?1000&appid=new");
            ok("/hb_done?0&appid=app000");
            body.extend(chunks.flatten());
            assert!(body == whole.as_bytes(), "{target}: the reply changed");
            assert_ne!(shared.handle(target, None, LOCAL).body, whole);
            ok("/hb_done?0&appid=new");
            ok("/hb_init?1000&appid=app000");
        }
    }
}

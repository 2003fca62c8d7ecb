//! [`SharedRegistry`]: the registry behind a lock, with its clock; what the
//! HTTP server and the mock transport both answer from.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::clock::{Clock, SystemClock};
use super::registry::{Event, Registry, RegistryConfig};
use super::service::{apply, parse, Reply};
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
}

impl SharedRegistry {
    /// A registry with `config` running on `clock`.
    pub fn new(config: RegistryConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            registry: Mutex::new(Registry::new(config)),
            clock,
        }
    }

    /// Answer one request (`target` is `/path?query`).
    pub fn handle(&self, target: &str, form_body: Option<&[u8]>, peer: IpAddr) -> Reply {
        let command = match parse(target, form_body) {
            Ok(command) => command,
            Err(reply) => {
                tracing::info!(%peer, status = reply.status, "request refused: {}", printable(&reply.body));
                return reply;
            }
        };
        let (reply, events) = self.with_registry(|registry, now| {
            let reply = apply(registry, command, peer, now);
            (reply, registry.take_events())
        });
        for event in events {
            if let Event::Updated(_) = event {
                tracing::debug!("{}", printable(&event.to_string()));
            } else {
                tracing::info!("{}", printable(&event.to_string()));
            }
        }
        reply
    }

    /// Run `f` on the registry at the clock's current time (for inspection
    /// in tests and tools).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry, Instant) -> R) -> R {
        let now = self.clock.now();
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut registry, now)
    }
}

impl Default for SharedRegistry {
    fn default() -> Self {
        Self::new(RegistryConfig::default(), Arc::new(SystemClock))
    }
}

//! The event history: every state change, in memory, the last
//! [`HISTORY_PER_APP`] per application id and at most [`HISTORY_CAP`] in
//! all (the oldest go first), answered by `GET /api/v1/events`.
//!
//! [`HistorySink`] is an [`EventSink`] every
//! [`SharedRegistry`](super::SharedRegistry) has (after the log); it dates
//! each event on the registry's [`Clock`]'s wall time. A query takes only
//! the history's own lock, never the registry's.
//!
//! Memory: an entry is about 64 bytes plus its share of the id, so the
//! cap bounds the history at roughly 64 MiB, whatever the fleet does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use super::clock::Clock;
use super::events::{Event, EventKind, EventSink};
use super::registry::Registry;
use crate::protocol::history::{Events, EventsQuery, HistoryEvent};
use crate::protocol::notification::Change;
use crate::protocol::{format_time, RecordKey, State};

/// Events kept per application id.
pub const HISTORY_PER_APP: usize = 100;
/// Events kept in all.
pub const HISTORY_CAP: usize = 1_000_000;

/// The state change an event kind reports, with the threshold it crossed
/// (`None` for an update or a refusal, which are not history).
pub(crate) fn change_of(kind: EventKind, registry: &Registry) -> Option<(Change, Option<f64>)> {
    let config = registry.config();
    Some(match kind {
        EventKind::Created => (Change::Created, None),
        EventKind::Warning => (Change::Warning, Some(config.warn_ratio)),
        EventKind::Critical => (Change::Critical, Some(config.crit_ratio)),
        EventKind::Recovered => (Change::Recovered, None),
        EventKind::Done => (Change::Done, None),
        EventKind::Expired => (Change::Expired, Some(config.drop_ratio)),
        EventKind::ExpectedMissing => (Change::ExpectedMissing, None),
        EventKind::Updated | EventKind::Refused => return None,
    })
}

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    host: Option<Arc<str>>,
    change: Change,
    previous: Option<State>,
    state: Option<State>,
    overdue: Option<f64>,
    at: SystemTime,
}

/// The history itself (no lock, no clock): see the module docs.
#[derive(Debug, Default)]
pub(crate) struct History {
    by_app: HashMap<Arc<str>, VecDeque<Entry>>,
    /// Every entry's (seq, app) in the order recorded, to drop the oldest
    /// when over the cap; entries already dropped by the per-app bound are
    /// skipped there, and compacted away now and then.
    order: VecDeque<(u64, Arc<str>)>,
    seq: u64,
    len: usize,
    per_app: usize,
    cap: usize,
}

impl History {
    pub(crate) fn new(per_app: usize, cap: usize) -> History {
        History {
            per_app: per_app.max(1),
            cap: cap.max(1),
            ..History::default()
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Records one change of the record `key` at `at`.
    fn record(
        &mut self,
        key: &str,
        change: (Change, Option<f64>),
        previous: Option<State>,
        state: Option<State>,
        at: SystemTime,
    ) {
        let key = RecordKey::parse(key);
        self.seq += 1;
        let app: Arc<str> = match self.by_app.get_key_value(key.id()) {
            Some((app, _)) => Arc::clone(app),
            None => Arc::from(key.id()),
        };
        let entries = self.by_app.entry(Arc::clone(&app)).or_default();
        entries.push_back(Entry {
            seq: self.seq,
            host: key.host().map(Arc::from),
            change: change.0,
            previous,
            state,
            overdue: change.1,
            at,
        });
        self.len += 1;
        if entries.len() > self.per_app {
            entries.pop_front();
            self.len -= 1;
        }
        self.order.push_back((self.seq, app));
        while self.len > self.cap {
            self.drop_oldest();
        }
        if self.order.len() > 2 * self.cap.max(self.len) {
            self.compact();
        }
    }

    /// Drops the oldest entry still held.
    fn drop_oldest(&mut self) {
        while let Some((seq, app)) = self.order.pop_front() {
            let Some(entries) = self.by_app.get_mut(&app) else {
                continue;
            };
            if entries.front().is_some_and(|e| e.seq == seq) {
                entries.pop_front();
                self.len -= 1;
                if entries.is_empty() {
                    self.by_app.remove(&app);
                }
                return;
            }
        }
    }

    /// Forgets the order of entries no longer held.
    fn compact(&mut self) {
        let by_app = &self.by_app;
        self.order.retain(|(seq, app)| {
            by_app
                .get(app)
                .and_then(|entries| entries.front())
                .is_some_and(|front| front.seq <= *seq)
        });
    }

    /// The answer to `query`: newest first.
    pub(crate) fn query(&self, query: &EventsQuery) -> Events {
        let host = query.host.map(|ip| ip.to_string());
        let Some(entries) = self.by_app.get(query.app.as_str()) else {
            return Events::new(query.app.clone(), Vec::new(), 0);
        };
        let matching = entries
            .iter()
            .rev()
            .filter(|e| host.is_none() || e.host.as_deref() == host.as_deref());
        let total = matching.clone().count() as u64;
        let events = matching
            .filter(|e| query.since.is_none_or(|since| e.at >= since))
            .take(query.effective_limit())
            .map(|e| HistoryEvent {
                event: e.change,
                host: e.host.as_deref().map(str::to_owned),
                previous: e.previous,
                state: e.state,
                overdue: e.overdue,
                at: format_time(e.at).unwrap_or_else(|| "9999-12-31T23:59:59.999Z".to_owned()),
            })
            .collect();
        Events::new(query.app.clone(), events, total)
    }
}

/// The history as a sink: see the module docs.
#[derive(Debug)]
pub struct HistorySink {
    history: Mutex<History>,
    clock: Arc<dyn Clock>,
}

impl HistorySink {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> HistorySink {
        HistorySink {
            history: Mutex::new(History::new(HISTORY_PER_APP, HISTORY_CAP)),
            clock,
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The events of `query`, newest first.
    pub fn query(&self, query: &EventsQuery) -> Events {
        self.history().query(query)
    }

    /// Entries held in all.
    pub fn len(&self) -> usize {
        self.history().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EventSink for HistorySink {
    fn deliver(&self, events: &[Event], registry: &Registry, _: Instant) {
        let mut history = self.history();
        for event in events {
            if let Some(change) = change_of(event.kind, registry) {
                let at = self.clock.wall(event.at);
                history.record(event.key(), change, event.previous, event.state(), at);
            }
        }
    }

    fn missed(&self, count: u64, _: &Registry, _: Instant) {
        tracing::warn!("{count} state changes are missing from the history (too many at once)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn ok(h: &mut History, key: &str, at: u64) {
        h.record(key, (Change::Created, None), None, Some(State::Ok), t(at));
    }

    #[test]
    fn newest_first_filtered_by_host_since_and_limit() {
        let mut h = History::new(100, 1000);
        ok(&mut h, "kiosk @ 10.0.0.5", 0);
        h.record(
            "kiosk @ 10.0.0.5",
            (Change::Critical, Some(5.0)),
            Some(State::Ok),
            Some(State::Critical),
            t(10),
        );
        ok(&mut h, "kiosk @ 10.0.0.6", 20);
        ok(&mut h, "other @ 10.0.0.5", 30);
        let all = h.query(&EventsQuery::new("kiosk"));
        let at: Vec<_> = all.events.iter().map(|e| e.at.clone()).collect();
        assert_eq!(at, [t(20), t(10), t(0)].map(|t| format_time(t).unwrap()));
        assert_eq!(all.total, 3);
        assert_eq!(all.events[1].event, Change::Critical);
        assert_eq!(all.events[1].overdue, Some(5.0));
        let one_host = h.query(&EventsQuery::new("kiosk").host("10.0.0.5".parse().unwrap()));
        assert_eq!(one_host.total, 2);
        assert!(one_host
            .events
            .iter()
            .all(|e| e.host.as_deref() == Some("10.0.0.5")));
        let recent = h.query(&EventsQuery::new("kiosk").since(t(10)));
        assert_eq!(recent.events.len(), 2);
        assert_eq!(h.query(&EventsQuery::new("kiosk").limit(1)).events.len(), 1);
        assert!(h.query(&EventsQuery::new("nobody")).events.is_empty());
    }

    #[test]
    fn bounded_per_app_and_in_all() {
        let mut h = History::new(3, 5);
        for i in 0..10 {
            ok(&mut h, "a", i);
        }
        assert_eq!(h.len(), 3);
        let a = h.query(&EventsQuery::new("a"));
        assert_eq!(a.events[0].at, format_time(t(9)).unwrap());
        assert_eq!(a.events[2].at, format_time(t(7)).unwrap());
        for i in 0..3 {
            ok(&mut h, "b", 100 + i);
        }
        // over the cap of 5: a's oldest go first
        assert_eq!(h.len(), 5);
        assert_eq!(h.query(&EventsQuery::new("a")).events.len(), 2);
        for i in 0..3 {
            ok(&mut h, "c", 200 + i);
        }
        assert!(h.query(&EventsQuery::new("a")).events.is_empty());
        assert!(!h.by_app.contains_key("a"), "an emptied app is forgotten");
        assert_eq!(h.len(), 5);
        // the order list stays bounded however long it runs
        for i in 0..10_000 {
            ok(&mut h, "d", 300 + i);
        }
        assert!(h.order.len() <= 2 * 5 + 1, "{}", h.order.len());
    }
}

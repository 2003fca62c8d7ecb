//! The event history: every state change, in memory, the last
//! [`HISTORY_PER_APP`] per application id and at most [`HISTORY_CAP`] in
//! all (the oldest go first), answered by `GET /api/v1/events`, and the
//! uptime and 24-hour strip of `GET /api/v1/apps` and the dashboard.
//!
//! [`HistorySink`] is an [`EventSink`] every
//! [`SharedRegistry`](super::SharedRegistry) has (after the log); it dates
//! each event on the registry's [`Clock`]'s wall time. A query takes only
//! the history's own lock, never the registry's. With `--state`, every
//! entry also goes to the state file's `events` table (a [`Journal`]), and
//! the newest [`HISTORY_PER_APP`] per id are read back at start
//! ([`HistorySink::restore`]), so a restart keeps the history.
//!
//! Memory: an entry is about 110 bytes (its id shared with the app's other
//! entries; measured in `benches/notify.rs`), so the cap bounds the
//! history at roughly 110 MiB, whatever the fleet does.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

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
/// Slots of the 24-hour strip (half an hour each).
pub const STRIP_SLOTS: usize = 48;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const WEEK: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The state change an event kind reports, with the threshold it crossed
/// (`None` for an update or a refusal, which are not history).
pub(crate) fn change_of(kind: EventKind, registry: &Registry) -> Option<(Change, Option<f64>)> {
    let config = registry.config();
    let change = kind.change()?;
    let overdue = match kind {
        EventKind::Warning => Some(config.warn_ratio),
        EventKind::Critical => Some(config.crit_ratio),
        EventKind::Expired => Some(config.drop_ratio),
        _ => None,
    };
    Some((change, overdue))
}

/// One state change as the history keeps it (and the state file's
/// `events` table stores it).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The application id.
    pub app: Arc<str>,
    /// The record's address; `None` for an expected app of any host.
    pub host: Option<Arc<str>>,
    /// What happened.
    pub change: Change,
    /// The state before (`None`: no record).
    pub previous: Option<State>,
    /// The state after (`None`: no record any more).
    pub state: Option<State>,
    /// The threshold crossed (warning, critical, expired).
    pub overdue: Option<f64>,
    /// The exit code of a failed run.
    pub exit_code: Option<u8>,
    /// When, on the wall clock.
    pub at: SystemTime,
}

impl HistoryEntry {
    /// An entry of `change` to the record `key` (`"ID @ IP"` or an id).
    pub fn new(key: &str, change: Change, at: SystemTime) -> HistoryEntry {
        let key = RecordKey::parse(key);
        HistoryEntry {
            app: Arc::from(key.id()),
            host: key.host().map(Arc::from),
            change,
            previous: None,
            state: None,
            overdue: None,
            exit_code: None,
            at,
        }
    }

    /// With the states before and after.
    pub fn states(mut self, previous: Option<State>, state: Option<State>) -> HistoryEntry {
        self.previous = previous;
        self.state = state;
        self
    }

    /// With the threshold crossed.
    pub fn overdue(mut self, overdue: Option<f64>) -> HistoryEntry {
        self.overdue = overdue;
        self
    }

    /// With a failed run's exit code.
    pub fn exit_code(mut self, code: Option<u8>) -> HistoryEntry {
        self.exit_code = code;
        self
    }

    fn event(&self) -> HistoryEvent {
        HistoryEvent {
            event: self.change,
            host: self.host.as_deref().map(str::to_owned),
            previous: self.previous,
            state: self.state,
            overdue: self.overdue,
            exit_code: self.exit_code,
            at: format_time(self.at).unwrap_or_else(|| "9999-12-31T23:59:59.999Z".to_owned()),
        }
    }
}

/// Where history entries are also written (the state file): called under
/// the history's lock, so it must only hand the entry on.
pub(crate) trait Journal: Send + Sync + fmt::Debug {
    /// Stores `entry`.
    fn record(&self, entry: &HistoryEntry);
}

/// An application's record over the last day and week, from its history:
/// see [`History::uptime`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Uptime {
    /// Share of the last 24 h not CRITICAL, of the time it was tracked or
    /// expected and the history knows its state; `None` when that is none.
    pub(crate) day: Option<f64>,
    /// The same over 7 days.
    pub(crate) week: Option<f64>,
    /// The last 24 h in [`STRIP_SLOTS`] slots, oldest first: the worst
    /// state in each, `o` OK, `w` WARNING, `c` CRITICAL, `-` unknown or
    /// untracked.
    pub(crate) strip: String,
}

impl Uptime {
    /// Nothing known: no history.
    pub(crate) fn unknown() -> Uptime {
        Uptime {
            day: None,
            week: None,
            strip: "-".repeat(STRIP_SLOTS),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    entry: HistoryEntry,
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

    /// Records one entry (after the ones recorded before it).
    fn record(&mut self, mut entry: HistoryEntry) {
        self.seq += 1;
        let app = match self.by_app.get_key_value(&entry.app) {
            Some((app, _)) => Arc::clone(app),
            None => Arc::clone(&entry.app),
        };
        entry.app = Arc::clone(&app);
        let entries = self.by_app.entry(Arc::clone(&app)).or_default();
        entries.push_back(Entry {
            seq: self.seq,
            entry,
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
            .map(|e| &e.entry)
            .filter(|e| host.is_none() || e.host.as_deref() == host.as_deref());
        let total = matching.clone().count() as u64;
        let events = matching
            .filter(|e| query.since.is_none_or(|since| e.at >= since))
            .take(query.effective_limit())
            .map(HistoryEntry::event)
            .collect();
        Events::new(query.app.clone(), events, total)
    }

    /// The uptime and strip of the record of `app` at `host` (`None`: the
    /// entries without a host, an expected app of any host) as of `now`.
    ///
    /// Between two entries the record is in the state the first one left
    /// it in; after the last, in that state until `now`. Time before the
    /// oldest entry held is unknown and counts for neither side, nor does
    /// time without a record (after a done or an expiry, unless an
    /// expected app then went missing, which is CRITICAL). For `None`, a
    /// record of any host that fills the missing app (its `created` from
    /// CRITICAL) ends the missing time: the spec is up from then on.
    pub(crate) fn uptime(&self, app: &str, host: Option<&str>, now: SystemTime) -> Uptime {
        let mut slots = [0_u8; STRIP_SLOTS];
        let (mut day, mut week) = (Span::default(), Span::default());
        let day_start = now.checked_sub(DAY).unwrap_or(SystemTime::UNIX_EPOCH);
        let week_start = now.checked_sub(WEEK).unwrap_or(SystemTime::UNIX_EPOCH);
        let slot = DAY / STRIP_SLOTS as u32;
        let entries = self.by_app.get(app).into_iter().flatten().map(|e| &e.entry);
        // (when, the state from then on) of this record's series
        let series = entries.filter_map(|e| {
            if e.host.as_deref() == host {
                Some((e.at, e.state))
            } else if host.is_none() && e.change == Change::Created && e.previous.is_some() {
                // the expected app is there: up, as far as the spec goes
                Some((e.at, Some(State::Ok)))
            } else {
                None
            }
        });
        let mut add = |from: SystemTime, end: SystemTime, state: Option<State>| {
            let Some(state) = state else { return };
            let end = end.min(now);
            week.add(from, end, week_start, state);
            day.add(from, end, day_start, state);
            let from = from.max(day_start);
            if end <= from {
                return;
            }
            let rank = match state {
                State::Ok => 1,
                State::Warning => 2,
                _ => 3,
            };
            let offset = |t: SystemTime| t.duration_since(day_start).unwrap_or_default();
            let first = (offset(from).as_nanos() / slot.as_nanos()) as usize;
            let last = (offset(end).as_nanos().saturating_sub(1) / slot.as_nanos()) as usize;
            for s in slots
                .iter_mut()
                .take(last.min(STRIP_SLOTS - 1) + 1)
                .skip(first)
            {
                *s = (*s).max(rank);
            }
        };
        let mut open: Option<(SystemTime, Option<State>)> = None;
        for (at, state) in series {
            if let Some((from, was)) = open {
                add(from, at, was);
            }
            open = Some((at, state));
        }
        if let Some((from, was)) = open {
            add(from, now, was);
        }
        Uptime {
            day: day.ratio(),
            week: week.ratio(),
            strip: slots
                .iter()
                .map(|s| ['-', 'o', 'w', 'c'][usize::from(*s)])
                .collect(),
        }
    }

    /// The state the history last gave the record of `app` at `host`.
    #[cfg(feature = "state")]
    fn last_state(&self, app: &str, host: Option<&str>) -> Option<Option<State>> {
        let entries = self.by_app.get(app)?;
        entries
            .iter()
            .rev()
            .find(|e| e.entry.host.as_deref() == host)
            .map(|e| e.entry.state)
    }
}

/// Time tracked and time CRITICAL within a window.
#[derive(Debug, Default, Clone, Copy)]
struct Span {
    tracked: Duration,
    down: Duration,
}

impl Span {
    /// Adds `[from, end)` in `state`, the part after `start`.
    fn add(&mut self, from: SystemTime, end: SystemTime, start: SystemTime, state: State) {
        let Ok(len) = end.duration_since(from.max(start)) else {
            return;
        };
        self.tracked += len;
        if state == State::Critical {
            self.down += len;
        }
    }

    fn ratio(self) -> Option<f64> {
        (!self.tracked.is_zero())
            .then(|| 1.0 - self.down.as_secs_f64() / self.tracked.as_secs_f64())
    }
}

/// The history as a sink: see the module docs.
#[derive(Debug)]
pub struct HistorySink {
    history: Mutex<History>,
    clock: Arc<dyn Clock>,
    journal: OnceLock<Arc<dyn Journal>>,
}

impl HistorySink {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> HistorySink {
        HistorySink {
            history: Mutex::new(History::new(HISTORY_PER_APP, HISTORY_CAP)),
            clock,
            journal: OnceLock::new(),
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

    /// Puts back entries kept elsewhere (the state file at start), oldest
    /// first, before any new one; they are not journaled again.
    pub fn restore(&self, entries: impl IntoIterator<Item = HistoryEntry>) {
        let mut history = self.history();
        for entry in entries {
            history.record(entry);
        }
    }

    /// Every entry from now on also goes to `journal` (set once).
    #[cfg(feature = "state")]
    pub(crate) fn set_journal(&self, journal: Arc<dyn Journal>) {
        let _ = self.journal.set(journal);
    }

    /// The wall-clock now the history dates entries by.
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.wall(self.clock.now())
    }

    /// The uptime of one record as of `now` ([`HistorySink::now`]).
    pub(crate) fn uptime(&self, app: &str, host: Option<&str>, now: SystemTime) -> Uptime {
        self.history().uptime(app, host, now)
    }

    /// After the registry was restored from the state file: a `restored`
    /// entry, dated now and journaled, for every record whose state the
    /// history last gave otherwise (a record CRITICAL at shutdown is OK
    /// again with a fresh grace; without the entry its strip would stay
    /// red). Records the history agrees on get nothing.
    #[cfg(feature = "state")]
    pub(crate) fn note_restored(&self, registry: &Registry, now: Instant) {
        let at = self.clock.wall(now);
        let journal = self.journal.get();
        let mut history = self.history();
        for app in registry.apps(now) {
            let key = RecordKey::parse(app.key);
            let last = history.last_state(key.id(), key.host());
            if last == Some(Some(app.state)) {
                continue;
            }
            let entry = HistoryEntry::new(app.key, Change::Restored, at)
                .states(last.flatten(), Some(app.state))
                .exit_code(app.failed);
            if let Some(journal) = journal {
                journal.record(&entry);
            }
            history.record(entry);
        }
    }
}

impl EventSink for HistorySink {
    fn deliver(&self, events: &[Event], registry: &Registry, _: Instant) {
        let mut history = self.history();
        let journal = self.journal.get();
        for event in events {
            if let Some((change, overdue)) = change_of(event.kind, registry) {
                let entry = HistoryEntry::new(event.key(), change, self.clock.wall(event.at))
                    .states(event.previous, event.state())
                    .overdue(overdue)
                    .exit_code(event.kind.exit_code());
                if let Some(journal) = journal {
                    journal.record(&entry);
                }
                history.record(entry);
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
        h.record(HistoryEntry::new(key, Change::Created, t(at)).states(None, Some(State::Ok)));
    }

    #[test]
    fn newest_first_filtered_by_host_since_and_limit() {
        let mut h = History::new(100, 1000);
        ok(&mut h, "kiosk @ 10.0.0.5", 0);
        h.record(
            HistoryEntry::new("kiosk @ 10.0.0.5", Change::Critical, t(10))
                .states(Some(State::Ok), Some(State::Critical))
                .overdue(Some(5.0)),
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

    fn change(h: &mut History, key: &str, change: Change, from: State, to: Option<State>, at: u64) {
        h.record(HistoryEntry::new(key, change, t(at)).states(Some(from), to));
    }

    const HOUR: u64 = 3600;

    #[test]
    fn uptime_counts_critical_time_of_the_time_known() {
        let mut h = History::new(100, 1000);
        let k = "kiosk @ 10.0.0.5";
        ok(&mut h, k, 0);
        change(
            &mut h,
            k,
            Change::Warning,
            State::Ok,
            Some(State::Warning),
            10 * HOUR,
        );
        change(
            &mut h,
            k,
            Change::Critical,
            State::Warning,
            Some(State::Critical),
            11 * HOUR,
        );
        change(
            &mut h,
            k,
            Change::Recovered,
            State::Critical,
            Some(State::Ok),
            13 * HOUR,
        );
        let up = h.uptime("kiosk", Some("10.0.0.5"), t(24 * HOUR));
        // 2 h CRITICAL of 24 h known; the week knows only the same 24 h
        assert!((up.day.unwrap() - 22.0 / 24.0).abs() < 1e-9, "{up:?}");
        assert!((up.week.unwrap() - 22.0 / 24.0).abs() < 1e-9, "{up:?}");
        // half-hour slots: OK 0-10 h, WARNING 10-11 h, CRITICAL 11-13 h, OK after
        let expected = format!("{}{}{}{}", "o".repeat(20), "ww", "cccc", "o".repeat(22));
        assert_eq!(up.strip, expected);
        // another host, or no host, knows nothing of it
        assert_eq!(
            h.uptime("kiosk", Some("10.0.0.6"), t(24 * HOUR)),
            Uptime::unknown()
        );
        assert_eq!(h.uptime("kiosk", None, t(24 * HOUR)), Uptime::unknown());
        // a day later the first day is out of the 24 h window, not of the week
        let later = h.uptime("kiosk", Some("10.0.0.5"), t(48 * HOUR));
        assert_eq!(later.day, Some(1.0));
        assert!(
            (later.week.unwrap() - 46.0 / 48.0).abs() < 1e-9,
            "{later:?}"
        );
        assert_eq!(later.strip, "o".repeat(STRIP_SLOTS));
    }

    #[test]
    fn time_without_a_record_counts_for_neither_side() {
        let mut h = History::new(100, 1000);
        let k = "job @ 10.0.0.5";
        ok(&mut h, k, 0);
        change(
            &mut h,
            k,
            Change::Critical,
            State::Warning,
            Some(State::Critical),
            HOUR,
        );
        change(&mut h, k, Change::Done, State::Critical, None, 2 * HOUR);
        let up = h.uptime("job", Some("10.0.0.5"), t(24 * HOUR));
        assert_eq!(up.day, Some(0.5), "1 h OK, 1 h CRITICAL, then untracked");
        assert_eq!(&up.strip[..4], "oocc");
        assert_eq!(&up.strip[4..], "-".repeat(44));
        // an expected app that went missing is CRITICAL while missing
        let mut h = History::new(100, 1000);
        h.record(
            HistoryEntry::new("backup", Change::ExpectedMissing, t(0))
                .states(None, Some(State::Critical)),
        );
        let up = h.uptime("backup", None, t(HOUR));
        assert_eq!(up.day, Some(0.0));
        assert_eq!(up.strip.matches('c').count(), 2);
    }

    #[test]
    fn restored_entries_come_first_and_keep_their_fields() {
        let sink = HistorySink::new(Arc::new(crate::monitor::ManualClock::new()));
        let entry = HistoryEntry::new("a @ 10.0.0.1", Change::Failed, t(5))
            .states(Some(State::Ok), Some(State::Critical))
            .exit_code(Some(3));
        sink.restore([entry]);
        let events = sink.query(&EventsQuery::new("a"));
        assert_eq!(events.total, 1);
        assert_eq!(events.events[0].event, Change::Failed);
        assert_eq!(events.events[0].exit_code, Some(3));
        assert_eq!(events.events[0].host.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn a_record_that_fills_a_missing_app_ends_its_missing_time() {
        let mut h = History::new(100, 1000);
        let missing = |h: &mut History, at| {
            h.record(
                HistoryEntry::new("backup", Change::ExpectedMissing, t(at))
                    .states(None, Some(State::Critical)),
            )
        };
        missing(&mut h, 0);
        h.record(
            HistoryEntry::new("backup @ 10.0.0.9", Change::Created, t(HOUR))
                .states(Some(State::Critical), Some(State::Ok)),
        );
        change(
            &mut h,
            "backup @ 10.0.0.9",
            Change::Done,
            State::Ok,
            None,
            23 * HOUR,
        );
        missing(&mut h, 23 * HOUR);
        let spec = h.uptime("backup", None, t(24 * HOUR));
        assert!((spec.day.unwrap() - 22.0 / 24.0).abs() < 1e-9, "{spec:?}");
        assert_eq!(&spec.strip[..2], "cc");
        assert_eq!(&spec.strip[2..46], "o".repeat(44));
        assert_eq!(&spec.strip[46..], "cc");
        let record = h.uptime("backup", Some("10.0.0.9"), t(24 * HOUR));
        assert_eq!(record.day, Some(1.0), "{record:?}");
    }

    #[cfg(feature = "state")]
    #[test]
    fn restored_records_get_an_entry_only_where_the_history_disagrees() {
        let clock = crate::monitor::ManualClock::new();
        let sink = HistorySink::new(Arc::new(clock.clone()));
        sink.restore([
            HistoryEntry::new("late @ 10.0.0.1", Change::Critical, t(0))
                .states(Some(State::Warning), Some(State::Critical)),
            HistoryEntry::new("fine @ 10.0.0.1", Change::Created, t(0))
                .states(None, Some(State::Ok)),
        ]);
        let mut registry = Registry::default();
        let now = clock.now();
        for key in ["late @ 10.0.0.1", "fine @ 10.0.0.1", "new @ 10.0.0.1"] {
            registry
                .restore(key, std::time::Duration::from_secs(60), now)
                .unwrap();
        }
        sink.note_restored(&registry, now);
        let late = sink.query(&EventsQuery::new("late"));
        assert_eq!(late.events[0].event, Change::Restored);
        assert_eq!(late.events[0].previous, Some(State::Critical));
        assert_eq!(late.events[0].state, Some(State::Ok));
        assert_eq!(
            sink.query(&EventsQuery::new("fine")).total,
            1,
            "agrees: nothing"
        );
        let new = sink.query(&EventsQuery::new("new"));
        assert_eq!(
            (new.events[0].event, new.events[0].previous),
            (Change::Restored, None)
        );
    }

    #[test]
    fn the_sink_records_state_changes_with_their_thresholds() {
        use std::net::{IpAddr, Ipv4Addr};
        let clock = crate::monitor::ManualClock::new();
        let sink = HistorySink::new(Arc::new(clock.clone()));
        assert!(sink.is_empty());
        let mut registry = Registry::default();
        let (start, peer) = (clock.now(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        registry
            .init("a", peer, Duration::from_secs(1), start)
            .unwrap();
        registry
            .ping("a", peer, Duration::from_secs(1), start)
            .unwrap(); // updated: not history
        registry.advance(start + Duration::from_secs(13), usize::MAX);
        sink.deliver(&registry.take_events(), &registry, start);
        assert_eq!(sink.len(), 4);
        assert!(!sink.is_empty());
        let events = sink.query(&EventsQuery::new("a"));
        let seen: Vec<_> = events.events.iter().map(|e| (e.event, e.overdue)).collect();
        assert_eq!(
            seen,
            [
                (Change::Expired, Some(6.0)),
                (Change::Critical, Some(5.0)),
                (Change::Warning, Some(3.0)),
                (Change::Created, None),
            ]
        );
    }
}

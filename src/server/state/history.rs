//! The state file's history: the `events` table (every state change, kept
//! [`DEFAULT_HISTORY_RETENTION`] or `--history-days`, pruned by the writer)
//! and the `failures` table (which records are failed runs, restored
//! CRITICAL).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Transaction};

use super::{one_line, since_epoch_ms, StateError, StateStore};
use crate::monitor::HistoryEntry;
use crate::protocol::notification::Change;
use crate::protocol::State;

/// How long the `events` table keeps an entry unless told otherwise: 30 days.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How often the writer prunes the `events` table.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

pub(super) const SET_FAILURE: &str = "INSERT OR REPLACE INTO failures (key, code) VALUES (?1, ?2)";
pub(super) const CLEAR_FAILURE: &str = "DELETE FROM failures WHERE key = ?1";

const INSERT_EVENT: &str = "INSERT INTO events
    (at_ms, app, host, event, previous, state, overdue, exit_code)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Every entry, newest first (the time index's order: no sort).
const SELECT_RECENT: &str = "SELECT at_ms, app, host, event, previous, state, overdue, exit_code
FROM events ORDER BY at_ms DESC, rowid DESC";

/// Appends `events` to the `events` table.
pub(super) fn insert_events(tx: &Transaction<'_>, events: &[HistoryEntry]) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(INSERT_EVENT)?;
    for e in events {
        insert.execute(params![
            since_epoch_ms(e.at),
            &*e.app,
            e.host.as_deref(),
            e.change.name(),
            e.previous.map(State::as_str),
            e.state.map(State::as_str),
            e.overdue.filter(|x| x.is_finite()),
            e.exit_code,
        ])?;
    }
    Ok(())
}

/// Deletes the entries older than `cutoff`, but the newest of each record
/// that still had a state after it (an app OK for longer than the
/// retention keeps its last word, so its uptime is known after a restart;
/// one that signed off or expired is forgotten).
const PRUNE: &str = "DELETE FROM events WHERE at_ms < ?1 AND rowid NOT IN (
    SELECT max(rowid) FROM events WHERE at_ms < ?1 GROUP BY app, host HAVING state IS NOT NULL)";

/// Deletes the entries older than `cutoff` ([`PRUNE`]).
pub(super) fn prune(tx: &Transaction<'_>, cutoff: SystemTime) -> rusqlite::Result<usize> {
    tx.execute(PRUNE, [since_epoch_ms(cutoff)])
}

impl StateStore {
    /// Keeps history entries for `retention` (at least one hour; the
    /// writer prunes older ones once an hour).
    pub fn keep_history(&mut self, retention: Duration) {
        self.history_retention = retention.max(PRUNE_EVERY);
    }

    /// The cutoff to prune at now, when a prune is due.
    pub(super) fn prune_due(&self, now: SystemTime) -> Option<SystemTime> {
        let due = self
            .pruned_at
            .is_none_or(|at| now.duration_since(at).is_ok_and(|d| d >= PRUNE_EVERY));
        due.then(|| {
            now.checked_sub(self.history_retention)
                .unwrap_or(UNIX_EPOCH)
        })
    }

    /// The newest `per_app` history entries of each application id (what
    /// the pruning left), at most `max` in all (the newest), oldest first: what
    /// the server's in-memory history starts from. Reads the time index
    /// backwards and stops at `max`, so a month of a big fleet's history
    /// costs no sort and no more memory than `max` entries.
    ///
    /// # Errors
    /// [`StateError::Read`] when SQLite fails. Rows that do not convert
    /// (edited by hand) are skipped.
    pub fn load_history(
        &self,
        per_app: usize,
        max: usize,
    ) -> Result<Vec<HistoryEntry>, StateError> {
        let read = |e: rusqlite::Error| StateError::Read {
            path: self.path.clone(),
            reason: one_line(&e.to_string()),
        };
        let mut stmt = self.conn.prepare(SELECT_RECENT).map_err(read)?;
        let mut rows = stmt.query([]).map_err(read)?;
        // per id: its shared `Arc` and how many of its entries are taken
        let mut ids: HashMap<Box<str>, (Arc<str>, usize)> = HashMap::new();
        let mut entries = Vec::new();
        while entries.len() < max {
            let Some(row) = rows.next().map_err(read)? else {
                break;
            };
            let app = match row.get_ref(1).map_err(read)?.as_str() {
                Ok(app) => app,
                Err(_) => continue,
            };
            let (shared, taken) = match ids.get_mut(app) {
                Some(seen) => seen,
                None => {
                    if crate::protocol::check_app_id(app, crate::protocol::MAX_APP_ID_LEN).is_err()
                    {
                        continue;
                    }
                    ids.entry(app.into()).or_insert_with(|| (Arc::from(app), 0))
                }
            };
            if *taken >= per_app {
                continue;
            }
            let app = Arc::clone(shared);
            let Some(entry) = entry_of(row, app).map_err(read)? else {
                continue;
            };
            *taken += 1;
            entries.push(entry);
        }
        entries.reverse();
        Ok(entries)
    }
}

/// The entry a row of [`SELECT_RECENT`] holds for `app`; `None` when a
/// column holds what the server never writes.
fn entry_of(row: &rusqlite::Row<'_>, app: Arc<str>) -> rusqlite::Result<Option<HistoryEntry>> {
    let at_ms: i64 = row.get(0)?;
    let host: Option<String> = row.get(2)?;
    let event: String = row.get(3)?;
    let previous: Option<String> = row.get(4)?;
    let state: Option<String> = row.get(5)?;
    let overdue: Option<f64> = row.get(6)?;
    let exit_code: Option<i64> = row.get(7)?;
    let Some(at) = u64::try_from(at_ms)
        .ok()
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
    else {
        return Ok(None);
    };
    let change = Change::from_name(&event);
    if change == Change::Unknown
        || host
            .as_deref()
            .is_some_and(|h| h.parse::<std::net::IpAddr>().is_err())
    {
        return Ok(None);
    }
    let state_of = |s: Option<String>| s.map(|s| State::from_word(&s));
    let mut entry = HistoryEntry::new("", change, at)
        .states(state_of(previous), state_of(state))
        .overdue(overdue)
        .exit_code(exit_code.and_then(|c| u8::try_from(c).ok()));
    entry.app = app;
    entry.host = host.map(Arc::from);
    Ok(Some(entry))
}

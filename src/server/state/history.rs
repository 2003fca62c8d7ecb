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

/// The newest `?2` entries of each id not older than `?1`, oldest first.
const SELECT_RECENT: &str = "SELECT at_ms, app, host, event, previous, state, overdue, exit_code
FROM (SELECT rowid AS id, *,
             row_number() OVER (PARTITION BY app ORDER BY at_ms DESC, rowid DESC) AS n
      FROM events WHERE at_ms >= ?1)
WHERE n <= ?2 ORDER BY at_ms, id";

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

/// Deletes the entries older than `cutoff`.
pub(super) fn prune(tx: &Transaction<'_>, cutoff: SystemTime) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM events WHERE at_ms < ?1",
        [since_epoch_ms(cutoff)],
    )
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

    /// The newest `per_app` history entries of each application id within
    /// the retention, oldest first: what the server's in-memory history
    /// starts from.
    ///
    /// # Errors
    /// [`StateError::Read`] when SQLite fails. Rows that do not convert
    /// (edited by hand) are skipped.
    pub fn load_history(&self, per_app: usize) -> Result<Vec<HistoryEntry>, StateError> {
        let read = |e: rusqlite::Error| StateError::Read {
            path: self.path.clone(),
            reason: one_line(&e.to_string()),
        };
        let since = SystemTime::now()
            .checked_sub(self.history_retention)
            .unwrap_or(UNIX_EPOCH);
        let per_app = i64::try_from(per_app).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(SELECT_RECENT).map_err(read)?;
        let mut rows = stmt
            .query(params![since_epoch_ms(since), per_app])
            .map_err(read)?;
        // one `Arc` per id, shared by its entries
        let mut ids: HashMap<String, Arc<str>> = HashMap::new();
        let mut entries = Vec::new();
        while let Some(row) = rows.next().map_err(read)? {
            let entry = (|| -> rusqlite::Result<Option<HistoryEntry>> {
                let at_ms: i64 = row.get(0)?;
                let app: String = row.get(1)?;
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
                    || crate::protocol::check_app_id(&app, crate::protocol::MAX_APP_ID_LEN).is_err()
                    || host
                        .as_deref()
                        .is_some_and(|h| h.parse::<std::net::IpAddr>().is_err())
                {
                    return Ok(None);
                }
                let app = Arc::clone(ids.entry(app).or_insert_with_key(|k| Arc::from(k.as_str())));
                let state_of = |s: Option<String>| s.map(|s| State::from_word(&s));
                let mut entry = HistoryEntry::new("", change, at)
                    .states(state_of(previous), state_of(state))
                    .overdue(overdue)
                    .exit_code(exit_code.and_then(|c| u8::try_from(c).ok()));
                entry.app = app;
                entry.host = host.map(Arc::from);
                Ok(Some(entry))
            })()
            .map_err(read)?;
            entries.extend(entry);
        }
        Ok(entries)
    }
}

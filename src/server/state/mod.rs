//! Durable server state (feature `state`): the tracked applications in a
//! SQLite file, so a restarted server knows who to expect.
//!
//! Two parts, wired into the server by its owner (the public docs live on
//! [`StateStore`] and [`StateWriter`], since this module is private):
//!
//! - [`StateStore`]: the database. [`StateStore::open`] creates or opens it
//!   and refuses bad state at start, each with its own [`StateError`]
//!   variant and a one-line message; [`StateStore::load`] returns every
//!   stored record as a [`StoredApp`].
//! - [`StateWriter`]: a tokio task that owns the store and commits the
//!   registry's changes. The request path only talks to a [`StateSink`]:
//!   [`StateSink::upsert`] and [`StateSink::delete`] put a message on an
//!   unbounded channel and return at once; they never block, await, or
//!   touch the disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior};
use tokio::sync::watch;

mod history;
mod writer;

use crate::monitor::HistoryEntry;
pub use history::DEFAULT_HISTORY_RETENTION;

use writer::Change;
pub use writer::{StateSink, StateWriter};

/// The schema version this release writes and reads (`PRAGMA user_version`).
/// A file with a higher version is refused ([`StateError::NewerSchema`]).
pub const SCHEMA_VERSION: i64 = 1;

/// How often the writer commits by default.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Shortest commit interval; shorter ones (including zero) are raised to it.
pub const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(1);

const CREATE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS apps (
    key          TEXT    NOT NULL PRIMARY KEY,
    app          TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    granted_ms   INTEGER NOT NULL CHECK (granted_ms >= 0),
    last_seen_ms INTEGER NOT NULL CHECK (last_seen_ms >= 0)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    k TEXT NOT NULL PRIMARY KEY,
    v TEXT NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq  INTEGER NOT NULL PRIMARY KEY CHECK (seq > 0),
    sink TEXT    NOT NULL,
    body BLOB    NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS failures (
    key  TEXT    NOT NULL PRIMARY KEY,
    code INTEGER NOT NULL CHECK (code BETWEEN 0 AND 255)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    at_ms     INTEGER NOT NULL,
    app       TEXT    NOT NULL,
    host      TEXT,
    event     TEXT    NOT NULL,
    previous  TEXT,
    state     TEXT,
    overdue   REAL,
    exit_code INTEGER CHECK (exit_code BETWEEN 0 AND 255)
) STRICT;
CREATE INDEX IF NOT EXISTS events_by_time ON events (at_ms);
CREATE INDEX IF NOT EXISTS events_by_app ON events (app, at_ms);
";

const SELECT_OUTBOX: &str = "SELECT seq, sink, body FROM outbox ORDER BY seq";
const INSERT_OUTBOX: &str = "INSERT OR REPLACE INTO outbox (seq, sink, body) VALUES (?1, ?2, ?3)";
const DELETE_OUTBOX: &str = "DELETE FROM outbox WHERE seq = ?1";

/// The columns of `apps` every version-1 file has (the check at open; the
/// tables added since are created by the open's write probe).
const CHECK_APPS: &str = "SELECT key, app, host, granted_ms, last_seen_ms FROM apps";

const SELECT_APPS: &str = "SELECT a.key, a.app, a.host, a.granted_ms, a.last_seen_ms, f.code
FROM apps a LEFT JOIN failures f ON f.key = a.key ORDER BY a.key";

const UPSERT_APP: &str = "INSERT INTO apps (key, app, host, granted_ms, last_seen_ms)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (key) DO UPDATE SET
    app = excluded.app, host = excluded.host,
    granted_ms = excluded.granted_ms, last_seen_ms = excluded.last_seen_ms";

const DELETE_APP: &str = "DELETE FROM apps WHERE key = ?1";

/// Why the state file cannot be used, or a write failed. `Display` is one
/// line (newlines in underlying messages are replaced by spaces).
///
/// At start ([`StateStore::open`], [`StateStore::load`]) every variant means
/// "do not serve without persistence". At run time only
/// [`StateError::Write`] (the commit failed, the changes are kept and
/// retried) and [`StateError::WriterGone`] occur.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file exists but is not a heartbeat state database: not SQLite at
    /// all, damaged, or another program's SQLite database. It is left as it
    /// was.
    #[error(
        "state file {path:?} is not a heartbeat state database ({reason}); it was left untouched"
    )]
    NotADatabase {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file was written by a newer release (higher schema version). It
    /// is left as it was.
    #[error("state file {path:?} has schema version {found}, newer than version {supported} of this release; it was left untouched")]
    NewerSchema {
        /// The state file.
        path: PathBuf,
        /// The file's `user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: i64,
    },
    /// The file cannot be created, opened or written (a directory, a
    /// missing or non-directory parent, a read-only file system, a full
    /// disk at start, ...).
    #[error("state file {path:?} cannot be opened for writing: {reason}")]
    Unwritable {
        /// The state file.
        path: PathBuf,
        /// The operating system's or SQLite's reason.
        reason: String,
    },
    /// Another connection (most likely another server) holds the file.
    #[error("state file {path:?} is in use by another process ({reason})")]
    Locked {
        /// The state file.
        path: PathBuf,
        /// SQLite's reason.
        reason: String,
    },
    /// Reading the stored records failed.
    #[error("could not read state file {path:?}: {reason}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A commit failed; the `pending` changes are kept and retried at the
    /// next commit tick (at shutdown: they are lost, and this says how many).
    #[error("could not write {pending} pending change(s) to state file {path:?}: {reason}")]
    Write {
        /// The state file.
        path: PathBuf,
        /// Changes (upserts and deletes, coalesced by key) not yet written.
        pending: usize,
        /// SQLite's reason (`database or disk is full`, ...).
        reason: String,
    },
    /// The writer task has stopped (after [`StateWriter::shutdown`], or its
    /// runtime is gone).
    #[error("the state writer has stopped")]
    WriterGone,
}

/// One stored application record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredApp {
    /// The registry's key: `"APP @ HOST"`, or the bare id when the registry
    /// does not key by peer. Unique in the store.
    pub key: String,
    /// The application id.
    pub app: String,
    /// The peer's IP address as text (as the registry prints it).
    pub host: String,
    /// The granted timeout.
    pub granted: Duration,
    /// When the application last reported (init or ping). Informational:
    /// a restored record counts as seen at start-up.
    pub last_seen: SystemTime,
    /// The exit code of its failed run (`hb_fail`): restored CRITICAL.
    pub failed: Option<u8>,
}

/// A notification waiting in the outbox: written when it was queued,
/// deleted when its receiver took it ([`StateSink::outbox_add`],
/// [`StateSink::outbox_done`], [`StateStore::load_outbox`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its number, increasing in the order notifications were queued.
    pub seq: u64,
    /// The receiver it is for (the webhook's URL).
    pub sink: String,
    /// The notification (a JSON document).
    pub body: Vec<u8>,
}

/// History entries waiting for the file at most; past it (the disk has
/// refused writes for a long time) newer ones are kept in memory only.
const MAX_PENDING_EVENTS: usize = 1_000_000;

/// What the next commit appends, never coalesced: outbox changes, applied
/// in this order (so an entry added and delivered between two commits
/// never lands), and history entries.
#[derive(Debug, Default)]
struct Appends {
    add: Vec<OutboxEntry>,
    done: Vec<u64>,
    events: Vec<HistoryEntry>,
}

impl Appends {
    fn len(&self) -> usize {
        self.add.len() + self.done.len() + self.events.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The outbox changes alone (what `rows_written` counts besides apps).
    fn outbox_len(&self) -> usize {
        self.add.len() + self.done.len()
    }

    /// Puts a failed batch back in front of what arrived meanwhile.
    fn requeue(&mut self, mut failed: Appends) {
        failed.add.append(&mut self.add);
        failed.done.append(&mut self.done);
        failed.events.append(&mut self.events);
        // still bounded: the newest beyond the bound are the ones let go
        failed.events.truncate(MAX_PENDING_EVENTS);
        *self = failed;
    }
}

/// Writer totals, for `/metrics`. Read with [`StateSink::stats`] or
/// [`StateWriter::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Successful commits (transactions).
    pub commits: u64,
    /// Changes written by successful commits: upserts plus deletes, after
    /// coalescing by key.
    pub rows_written: u64,
    /// Failed commit attempts (each is retried).
    pub write_errors: u64,
    /// Changes waiting for the next commit (app rows coalesced by key, plus
    /// outbox changes and history entries), as of the writer's last step.
    pub pending: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    rows_written: AtomicU64,
    write_errors: AtomicU64,
    pending: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> StateStats {
        StateStats {
            commits: self.commits.load(Ordering::Relaxed),
            rows_written: self.rows_written.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
        }
    }
}

/// State shared by the writer task and every [`StateSink`].
#[derive(Debug)]
struct Shared {
    counters: Counters,
    /// Bumped after every commit attempt (success or failure), so tests can
    /// wait for one without sleeping.
    attempts: watch::Sender<u64>,
}

/// The SQLite state file, opened and validated; [`StateWriter`] commits to it.
///
/// # The file
///
/// Schema version [`SCHEMA_VERSION`] in `PRAGMA user_version`; table
/// `apps(key TEXT PRIMARY KEY, app TEXT, host TEXT, granted_ms INTEGER,
/// last_seen_ms INTEGER)`, `STRICT` and `WITHOUT ROWID`, durations in
/// milliseconds and times in milliseconds since the Unix epoch; table
/// `meta(k, v)` (who created the file, when it was last opened); table
/// `outbox(seq, sink, body)` (webhook notifications not yet taken);
/// table `failures(key, code)` (records that are failed runs); table
/// `events(at_ms, app, host, event, previous, state, overdue, exit_code)`
/// (the history, see [`StateStore::load_history`]). Tables added since
/// the first release are created in older files at open. The
/// connection holds an exclusive lock (`locking_mode = EXCLUSIVE`) for as
/// long as the store lives: a second server on the same file is refused at
/// start ([`StateError::Locked`]) instead of the two overwriting each
/// other; the flip side is that not even `sqlite3 PATH` can read the file
/// while a server has it open.
#[derive(Debug)]
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
    /// How long the `events` table keeps an entry.
    history_retention: Duration,
    /// When the `events` table was last pruned (wall clock).
    pruned_at: Option<SystemTime>,
}

impl StateStore {
    /// Creates or opens the state file at `path`: exclusive lock, WAL mode,
    /// `synchronous = FULL`, schema [`SCHEMA_VERSION`]. A write transaction
    /// at open proves the file (and its directory, for the WAL file) can be
    /// written. Nothing is written to a file that fails the checks.
    ///
    /// # Errors
    /// - [`StateError::NotADatabase`]: not SQLite, damaged, or another
    ///   program's database (tables but no schema version, or a version-1
    ///   file without the expected columns).
    /// - [`StateError::NewerSchema`]: `user_version` above
    ///   [`SCHEMA_VERSION`].
    /// - [`StateError::Unwritable`]: a directory or another non-regular
    ///   file (such as `/dev/null`), a parent that is missing or not a
    ///   directory, no permission, a read-only or full file system.
    /// - [`StateError::Locked`]: another connection holds the file.
    pub fn open(path: impl AsRef<Path>) -> Result<StateStore, StateError> {
        let path = path.as_ref().to_path_buf();
        precheck(&path)?;
        // No SQLITE_OPEN_URI: a path is a path, even if it reads "file:...".
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|e| unwritable(&path, &e))?;
        let at_open = |e: rusqlite::Error| classify(&path, &e);
        // Another holder is refused at once rather than waited for.
        conn.busy_timeout(Duration::ZERO).map_err(at_open)?;
        // Set before the first read, so the wal-index lives in memory and
        // the lock is held from the first read to the connection's end.
        let _: String = conn
            .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get(0))
            .map_err(at_open)?;
        // The first read of the file: a non-database fails here, unmodified.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(at_open)?;
        if version > SCHEMA_VERSION {
            return Err(StateError::NewerSchema {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 0 {
            return Err(StateError::NotADatabase {
                reason: format!("negative schema version {version}"),
                path,
            });
        }
        if version == 0 {
            let tables = table_names(&conn).map_err(at_open)?;
            if !tables.is_empty() {
                return Err(StateError::NotADatabase {
                    reason: format!(
                        "a SQLite database without a heartbeat schema version, with table(s) {}",
                        tables.join(", ")
                    ),
                    path,
                });
            }
        } else if let Err(e) = conn.prepare(CHECK_APPS) {
            return Err(match e.sqlite_error_code() {
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => classify(&path, &e),
                _ => StateError::NotADatabase {
                    reason: one_line(&format!("schema version {version} but {e}")),
                    path,
                },
            });
        }
        // From here on the file is empty, new, or ours: writing is allowed.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(at_open)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Unwritable {
                reason: format!("cannot switch to WAL mode (journal mode stays {mode:?})"),
                path,
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(at_open)?;
        probe(&conn).map_err(at_open)?;
        Ok(StateStore {
            conn,
            path,
            history_retention: DEFAULT_HISTORY_RETENTION,
            pruned_at: None,
        })
    }

    /// The path given to [`StateStore::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored record, in key order.
    ///
    /// # Errors
    /// [`StateError::Read`] when SQLite fails or a row does not convert
    /// (the table is `STRICT` with range checks, so only a file edited by
    /// hand gets there).
    pub fn load(&self) -> Result<Vec<StoredApp>, StateError> {
        let read = |reason: String| StateError::Read {
            path: self.path.clone(),
            reason: one_line(&reason),
        };
        let mut stmt = self
            .conn
            .prepare(SELECT_APPS)
            .map_err(|e| read(e.to_string()))?;
        let mut rows = stmt.query([]).map_err(|e| read(e.to_string()))?;
        let mut apps = Vec::new();
        while let Some(row) = rows.next().map_err(|e| read(e.to_string()))? {
            let key: String = row.get(0).map_err(|e| read(e.to_string()))?;
            let app: String = row.get(1).map_err(|e| read(e.to_string()))?;
            let host: String = row.get(2).map_err(|e| read(e.to_string()))?;
            let granted_ms: i64 = row.get(3).map_err(|e| read(e.to_string()))?;
            let last_seen_ms: i64 = row.get(4).map_err(|e| read(e.to_string()))?;
            // the column is CHECKed to 0..=255
            let failed: Option<i64> = row.get(5).map_err(|e| read(e.to_string()))?;
            let failed = failed.and_then(|code| u8::try_from(code).ok());
            let granted = u64::try_from(granted_ms)
                .map(Duration::from_millis)
                .map_err(|_| read(format!("{key:?}: negative granted_ms {granted_ms}")))?;
            let last_seen = u64::try_from(last_seen_ms)
                .ok()
                .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    read(format!("{key:?}: last_seen_ms {last_seen_ms} out of range"))
                })?;
            // a row must be one the server could have written: a valid id,
            // a host that is an address, and the key made of them (so a
            // hand-edited file cannot forge a line of `/list` or a status)
            if let Err(e) = crate::protocol::check_app_id(&app, crate::protocol::MAX_APP_ID_LEN) {
                return Err(read(format!("{key:?}: invalid application id: {e}")));
            }
            // (a bare-id key, of a server that does not key by peer, may
            // carry no host: the server writes it so when it has none)
            let bare = key == app;
            if !(bare && host.is_empty()) && host.parse::<std::net::IpAddr>().is_err() {
                return Err(read(format!("{key:?}: host {host:?} is not an address")));
            }
            if !bare && key != crate::protocol::RecordKey::new(&app, Some(&host)).to_string() {
                return Err(read(format!(
                    "{key:?}: the key is neither the id {app:?} nor \"ID @ HOST\""
                )));
            }
            apps.push(StoredApp {
                key,
                app,
                host,
                granted,
                last_seen,
                failed,
            });
        }
        Ok(apps)
    }

    /// Every notification in the outbox, oldest first: what was queued
    /// and not yet taken by its receiver when the server stopped.
    ///
    /// # Errors
    /// [`StateError::Read`] when SQLite fails or a row does not convert.
    pub fn load_outbox(&self) -> Result<Vec<OutboxEntry>, StateError> {
        let read = |e: rusqlite::Error| StateError::Read {
            path: self.path.clone(),
            reason: one_line(&e.to_string()),
        };
        let mut stmt = self.conn.prepare(SELECT_OUTBOX).map_err(read)?;
        let rows = stmt
            .query_map([], |row| {
                let seq: i64 = row.get(0)?;
                Ok(OutboxEntry {
                    // the column is CHECKed positive
                    seq: u64::try_from(seq).unwrap_or(0),
                    sink: row.get(1)?,
                    body: row.get(2)?,
                })
            })
            .map_err(read)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(read)
    }

    /// Writes `batch` in one transaction.
    /// With `clear_first`, every stored row is deleted first (the batch is
    /// then the whole state).
    fn commit(
        &mut self,
        batch: &[(String, Change)],
        clear_first: bool,
        outbox: &Appends,
    ) -> rusqlite::Result<()> {
        let prune = self.prune_due(SystemTime::now());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if clear_first {
            tx.execute("DELETE FROM apps", [])?;
            tx.execute("DELETE FROM failures", [])?;
        }
        {
            let mut upsert = tx.prepare_cached(UPSERT_APP)?;
            let mut delete = tx.prepare_cached(DELETE_APP)?;
            let mut set_failure = tx.prepare_cached(history::SET_FAILURE)?;
            let mut clear_failure = tx.prepare_cached(history::CLEAR_FAILURE)?;
            for (key, change) in batch {
                match change {
                    Change::Upsert(app) => {
                        upsert.execute(params![
                            key,
                            app.app,
                            app.host,
                            millis(app.granted),
                            since_epoch_ms(app.last_seen),
                        ])?;
                        match app.failed {
                            Some(code) => set_failure.execute(params![key, code])?,
                            None => clear_failure.execute([key])?,
                        };
                    }
                    Change::Delete => {
                        delete.execute([key])?;
                        clear_failure.execute([key])?;
                    }
                }
            }
            history::insert_events(&tx, &outbox.events)?;
            if let Some(cutoff) = prune {
                history::prune(&tx, cutoff)?;
            }
            let mut add = tx.prepare_cached(INSERT_OUTBOX)?;
            for entry in &outbox.add {
                let seq = i64::try_from(entry.seq).unwrap_or(i64::MAX);
                add.execute(params![seq, entry.sink, entry.body])?;
            }
            let mut done = tx.prepare_cached(DELETE_OUTBOX)?;
            for seq in &outbox.done {
                done.execute([i64::try_from(*seq).unwrap_or(i64::MAX)])?;
            }
        }
        tx.commit()?;
        if prune.is_some() {
            self.pruned_at = Some(SystemTime::now());
        }
        Ok(())
    }

    /// Closes the connection (checkpointing the WAL into the main file).
    fn close(self) {
        let path = self.path;
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!("state: closing {path:?}: {e}");
        }
    }
}

/// Refuses what the file system already says is unusable, with its words.
fn precheck(path: &Path) -> Result<(), StateError> {
    let unwritable = |reason: String| StateError::Unwritable {
        path: path.to_path_buf(),
        reason: one_line(&reason),
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(unwritable("it is a directory".into())),
        // `/dev/null` would swallow every write and "succeed": persistence
        // that silently is not.
        Ok(meta) if !meta.is_file() => Err(unwritable("not a regular file".into())),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            match std::fs::metadata(parent) {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(unwritable(format!("{parent:?} is not a directory"))),
                Err(e) => Err(unwritable(format!("directory {parent:?}: {e}"))),
            }
        }
        Err(e) => Err(unwritable(e.to_string())),
    }
}

/// Every schema object of the file (tables, views, indexes, triggers): a
/// file with no heartbeat schema version but any of these is another
/// program's database, even one holding only a view.
fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT type || ' ' || name FROM sqlite_schema ORDER BY name")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

/// The write transaction at open: creates the schema on a new file and
/// records the open time, so a file or directory that cannot be written
/// fails here, at start, not at the first commit.
fn probe(conn: &Connection) -> rusqlite::Result<()> {
    let now = since_epoch_ms(SystemTime::now()).to_string();
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let body = (|| {
        conn.execute_batch(CREATE_SCHEMA)?;
        conn.execute(
            "INSERT INTO meta (k, v) VALUES ('created_by', ?1), ('created_ms', ?2)
             ON CONFLICT (k) DO NOTHING",
            params![concat!("heartbeat-sdk ", env!("CARGO_PKG_VERSION")), now],
        )?;
        conn.execute(
            "INSERT INTO meta (k, v) VALUES ('opened_ms', ?1)
             ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            [&now],
        )?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        conn.execute_batch("COMMIT")
    })();
    if body.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = conn.execute_batch("ROLLBACK");
    }
    body
}

fn classify(path: &Path, e: &rusqlite::Error) -> StateError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StateError::NotADatabase {
            path: path.to_path_buf(),
            reason: one_line(&e.to_string()),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StateError::Locked {
            path: path.to_path_buf(),
            reason: one_line(&e.to_string()),
        },
        _ => unwritable(path, e),
    }
}

fn unwritable(path: &Path, e: &rusqlite::Error) -> StateError {
    StateError::Unwritable {
        path: path.to_path_buf(),
        reason: one_line(&e.to_string()),
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Milliseconds, saturating at `i64::MAX` (SQLite integers are `i64`).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch; a time before it is stored as 0.
fn since_epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

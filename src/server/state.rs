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

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::monitor::{Event, EventKind, EventSink, Registry};
use crate::protocol::RecordKey;

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
";

const SELECT_OUTBOX: &str = "SELECT seq, sink, body FROM outbox ORDER BY seq";
const INSERT_OUTBOX: &str = "INSERT OR REPLACE INTO outbox (seq, sink, body) VALUES (?1, ?2, ?3)";
const DELETE_OUTBOX: &str = "DELETE FROM outbox WHERE seq = ?1";

const SELECT_APPS: &str = "SELECT key, app, host, granted_ms, last_seen_ms FROM apps ORDER BY key";

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

/// Outbox changes waiting for the next commit, applied in this order
/// (so an entry added and delivered between two commits never lands).
#[derive(Debug, Default)]
struct OutboxBatch {
    add: Vec<OutboxEntry>,
    done: Vec<u64>,
}

impl OutboxBatch {
    fn len(&self) -> usize {
        self.add.len() + self.done.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts a failed batch back in front of what arrived meanwhile.
    fn requeue(&mut self, mut failed: OutboxBatch) {
        failed.add.append(&mut self.add);
        failed.done.append(&mut self.done);
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
    /// Changes waiting for the next commit (coalesced by key), as of the
    /// writer's last step.
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
/// `meta(k, v)` (who created the file, when it was last opened). The
/// connection holds an exclusive lock (`locking_mode = EXCLUSIVE`) for as
/// long as the store lives: a second server on the same file is refused at
/// start ([`StateError::Locked`]) instead of the two overwriting each
/// other; the flip side is that not even `sqlite3 PATH` can read the file
/// while a server has it open.
#[derive(Debug)]
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
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
        } else if let Err(e) = conn.prepare(SELECT_APPS) {
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
        Ok(StateStore { conn, path })
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
            if !bare && key != format!("{app} @ {host}") {
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
        outbox: &OutboxBatch,
    ) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if clear_first {
            tx.execute("DELETE FROM apps", [])?;
        }
        {
            let mut upsert = tx.prepare_cached(UPSERT_APP)?;
            let mut delete = tx.prepare_cached(DELETE_APP)?;
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
                    }
                    Change::Delete => {
                        delete.execute([key])?;
                    }
                }
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
        tx.commit()
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

/// A pending change to one key; the key is the map's.
#[derive(Debug, Clone)]
enum Change {
    Upsert(StoredApp),
    Delete,
}

enum Op {
    Upsert(StoredApp),
    Delete(String),
    /// From the server's request path: the registry's shared key, turned
    /// into a [`StoredApp`] by the writer task, off the request path.
    UpsertKey {
        key: Arc<str>,
        peer: Option<IpAddr>,
        granted: Duration,
        last_seen: SystemTime,
    },
    DeleteKey(Arc<str>),
    /// The whole state: every stored row not in it is deleted (the server
    /// sends it when the registry dropped events, so no delete is missed).
    ReplaceAll(Vec<StoredApp>),
    OutboxAdd(OutboxEntry),
    OutboxDone(u64),
    Flush(oneshot::Sender<Result<(), StateError>>),
    Shutdown,
    /// Test-only fault injection: runs on the store between commits.
    #[cfg(test)]
    WithStore(StoreFn),
}

#[cfg(test)]
type StoreFn = Box<dyn FnOnce(&mut StateStore) + Send>;

/// The request path's handle on the writer: cheap to clone (one channel
/// sender and an `Arc`), and [`upsert`](StateSink::upsert) /
/// [`delete`](StateSink::delete) never block or await.
#[derive(Clone)]
pub struct StateSink {
    tx: mpsc::UnboundedSender<Op>,
    shared: Arc<Shared>,
}

impl fmt::Debug for StateSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSink")
            .field("closed", &self.tx.is_closed())
            .field("stats", &self.stats())
            .finish()
    }
}

impl StateSink {
    /// Records `app` (keyed by `app.key`) for the next commit, replacing
    /// any pending change to that key. After the writer stopped, the change
    /// is dropped.
    pub fn upsert(&self, app: StoredApp) {
        let _ = self.tx.send(Op::Upsert(app));
    }

    /// Deletes `key` at the next commit, replacing any pending change to
    /// it. After the writer stopped, the change is dropped.
    pub fn delete(&self, key: impl Into<String>) {
        let _ = self.tx.send(Op::Delete(key.into()));
    }

    /// [`upsert`](StateSink::upsert) for the server's request path: no
    /// allocation here (the key is the registry's own `Arc`); the writer
    /// makes the record (`app` and `host` from a `"ID @ IP"` key, else the
    /// bare key and `peer`).
    pub(crate) fn upsert_key(
        &self,
        key: Arc<str>,
        peer: Option<IpAddr>,
        granted: Duration,
        last_seen: SystemTime,
    ) {
        let _ = self.tx.send(Op::UpsertKey {
            key,
            peer,
            granted,
            last_seen,
        });
    }

    /// Replaces the whole stored state with `apps` at the next commit
    /// (pending changes are discarded): for when individual changes were
    /// lost.
    pub(crate) fn replace_all(&self, apps: Vec<StoredApp>) {
        let _ = self.tx.send(Op::ReplaceAll(apps));
    }

    /// Writes a notification to the outbox at the next commit; it stays
    /// there until [`outbox_done`](StateSink::outbox_done), so a notification
    /// queued before a crash is sent after the restart
    /// ([`StateStore::load_outbox`]).
    pub fn outbox_add(&self, entry: OutboxEntry) {
        let _ = self.tx.send(Op::OutboxAdd(entry));
    }

    /// Deletes notification `seq` from the outbox at the next commit (its
    /// receiver took it, or refused it for good).
    pub fn outbox_done(&self, seq: u64) {
        let _ = self.tx.send(Op::OutboxDone(seq));
    }

    /// [`delete`](StateSink::delete) with the registry's own key.
    pub(crate) fn delete_key(&self, key: Arc<str>) {
        let _ = self.tx.send(Op::DeleteKey(key));
    }

    /// Commits now every change sent before this call (from this task) and
    /// waits for it. Not for the request path.
    ///
    /// # Errors
    /// [`StateError::Write`] when the commit failed (the changes stay
    /// pending and are retried at the next tick); [`StateError::WriterGone`]
    /// after shutdown.
    pub fn flush(
        &self,
    ) -> impl std::future::Future<Output = Result<(), StateError>> + Send + 'static {
        // Sent now, not at the first poll: "before this call" is exact.
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Op::Flush(tx)).is_ok();
        async move {
            if !sent {
                return Err(StateError::WriterGone);
            }
            rx.await.unwrap_or(Err(StateError::WriterGone))
        }
    }

    /// The writer's totals (atomic reads, no locking).
    pub fn stats(&self) -> StateStats {
        self.shared.counters.snapshot()
    }

    #[cfg(test)]
    fn with_store(&self, f: impl FnOnce(&mut StateStore) + Send + 'static) {
        let _ = self.tx.send(Op::WithStore(Box::new(f)));
    }
}

/// The server's durable state as an [`EventSink`]: a record that is
/// created, updated or recovers is upserted (with the time the event was
/// delivered as its last sighting), one that signs off or expires is
/// deleted; threshold crossings change nothing stored. When events were
/// lost the whole state is rewritten from the registry.
impl EventSink for StateSink {
    fn deliver(&self, events: &[Event], registry: &Registry, _: Instant) {
        let mut seen = None;
        for event in events {
            match event.kind {
                EventKind::Created | EventKind::Updated | EventKind::Recovered => {
                    if let Some(granted) = registry.granted_of(&event.key) {
                        let now = *seen.get_or_insert_with(SystemTime::now);
                        self.upsert_key(Arc::clone(&event.key), event.peer, granted, now);
                    }
                }
                EventKind::Done | EventKind::Expired => self.delete_key(Arc::clone(&event.key)),
                _ => {}
            }
        }
    }

    fn missed(&self, _: u64, registry: &Registry, now: Instant) {
        // Individual deletes were lost (thousands of changes at once): send
        // the whole state instead (O(n), rare).
        tracing::info!("state: registry events were dropped; rewriting the whole state");
        let wall = SystemTime::now();
        let apps = registry
            .apps(now)
            .map(|app| {
                // saturating: a huge granted timeout must not panic
                let elapsed =
                    Duration::try_from_secs_f64(app.granted.as_secs_f64() * app.overdue_ratio)
                        .unwrap_or_default();
                let last_seen = wall.checked_sub(elapsed).unwrap_or(wall);
                stored_app(app.key, None, app.granted, last_seen)
            })
            .collect();
        self.replace_all(apps);
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let stats = self.stats();
        for (name, kind, help, value) in [
            ("heartbeat_state_commits_total", "counter", "Successful commits to the state file.", stats.commits),
            ("heartbeat_state_rows_written_total", "counter", "Changes written to the state file (upserts and deletes, coalesced per application).", stats.rows_written),
            ("heartbeat_state_write_errors_total", "counter", "Failed commits to the state file (each is retried).", stats.write_errors),
            ("heartbeat_state_pending", "gauge", "Changes waiting for the next commit to the state file.", stats.pending),
        ] {
            // Writing to a String cannot fail.
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        }
    }
}

/// The writer task's handle: [`shutdown`](StateWriter::shutdown) it to
/// commit what is pending. Dropping it detaches the task, which then
/// commits and ends once every [`StateSink`] is dropped.
///
/// # Wiring (for the server)
///
/// ```no_run
/// # async fn run() -> Result<(), heartbeat_sdk::server::StateError> {
/// use std::time::{Duration, SystemTime};
/// use heartbeat_sdk::server::{StateStore, StateWriter, StoredApp, DEFAULT_COMMIT_INTERVAL};
///
/// let store = StateStore::open("/var/lib/heartbeat/state.db")?; // bad state: stop, one line
/// let restored = store.load()?; // seed the registry: each counts as seen now, keeps `granted`
/// println!("restored {} applications from {}", restored.len(), store.path().display());
/// let (sink, writer) = StateWriter::spawn(store, DEFAULT_COMMIT_INTERVAL);
///
/// // request path, after the registry's init/ping (Constructed/Updated events):
/// sink.upsert(StoredApp {
///     key: "kiosk-7 @ 10.0.0.7".into(),
///     app: "kiosk-7".into(),
///     host: "10.0.0.7".into(),
///     granted: Duration::from_millis(6000),
///     last_seen: SystemTime::now(),
/// });
/// // after done (Destroyed) or expiry (Expired):
/// sink.delete("kiosk-7 @ 10.0.0.7");
/// // /metrics: sink.stats() (commits, rows written, write errors, pending)
///
/// // graceful shutdown: commits everything still pending
/// let stats = writer.shutdown().await?;
/// # let _ = stats; Ok(()) }
/// ```
///
/// # Guarantee
///
/// A change handed to the sink is committed at the next commit tick (every
/// `commit_interval`, 1 s by default, measured on tokio's clock) and at
/// [`StateWriter::shutdown`]. A commit is one SQLite transaction in WAL
/// mode with `synchronous = FULL`, so once committed it survives the
/// process being killed (`kill -9`) and a power loss. Hence: **after a
/// crash, every application acknowledged more than one commit interval
/// before it is back**; changes of the last interval (plus the duration of
/// one commit) may be missing. A commit that fails (disk full, I/O error)
/// loses nothing either: its changes stay pending and are retried at the
/// next tick, newer changes to the same key taking precedence.
///
/// Coalescing: pending changes are kept per key, and the last one wins (an
/// upsert replaces an upsert, a delete after an upsert wins, an upsert
/// after a delete wins). A key pinged 1 000 times within an interval is
/// one row write. The pending set is therefore bounded by the number of
/// distinct keys, not by the request rate, even while the disk refuses
/// writes.
///
/// # Threading
///
/// rusqlite is blocking. The writer is an ordinary tokio task (it owns the
/// channel, the pending map and the interval); each commit runs in
/// [`tokio::task::spawn_blocking`], with the [`StateStore`] moved into the
/// closure and handed back with the result (a `rusqlite::Connection` is
/// `Send`). Chosen over a dedicated thread because commits are short and
/// at most one per interval: no thread sits parked for the server's
/// lifetime, the runtime owns the lifecycle, and the interval is tokio's,
/// so tests drive it with a paused clock (which, by tokio's design, does
/// not auto-advance while a blocking commit is running). While a commit
/// runs, the task keeps draining the channel into the next batch, so the
/// channel holds at most what arrives during one commit.
#[derive(Debug)]
pub struct StateWriter {
    tx: mpsc::UnboundedSender<Op>,
    shared: Arc<Shared>,
    task: JoinHandle<Result<StateStats, StateError>>,
}

impl StateWriter {
    /// Starts the writer task on the current tokio runtime; it commits
    /// every `commit_interval` (at least [`MIN_COMMIT_INTERVAL`]) while
    /// changes are pending, and on shutdown.
    ///
    /// # Panics
    /// Outside a tokio runtime (like [`tokio::spawn`]).
    pub fn spawn(store: StateStore, commit_interval: Duration) -> (StateSink, StateWriter) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            attempts: watch::channel(0).0,
        });
        let task = Task {
            store: Some(store),
            rx,
            pending: HashMap::new(),
            outbox: OutboxBatch::default(),
            shared: Arc::clone(&shared),
            failing_since: None,
            clear_first: false,
        };
        let interval = commit_interval.max(MIN_COMMIT_INTERVAL);
        let task = tokio::spawn(task.run(interval));
        let sink = StateSink {
            tx: tx.clone(),
            shared: Arc::clone(&shared),
        };
        (sink, StateWriter { tx, shared, task })
    }

    /// The writer's totals.
    pub fn stats(&self) -> StateStats {
        self.shared.counters.snapshot()
    }

    /// Stops the writer: every change sent before this call is committed,
    /// the file is closed, and the final totals returned. Changes sent
    /// afterwards are dropped.
    ///
    /// # Errors
    /// [`StateError::Write`] when the final commit failed (`pending` says
    /// how many changes are lost); [`StateError::WriterGone`] when the task
    /// had already ended abnormally.
    pub async fn shutdown(self) -> Result<StateStats, StateError> {
        let _ = self.tx.send(Op::Shutdown);
        self.task.await.unwrap_or(Err(StateError::WriterGone))
    }
}

type Batch = Vec<(String, Change)>;
type CommitResult = (StateStore, Batch, bool, OutboxBatch, rusqlite::Result<()>);

struct Task {
    /// `None` while a commit has it.
    store: Option<StateStore>,
    rx: mpsc::UnboundedReceiver<Op>,
    pending: HashMap<String, Change>,
    /// Outbox writes waiting for the next commit (never coalesced).
    outbox: OutboxBatch,
    shared: Arc<Shared>,
    /// Failed attempts in the current burst of failures.
    failing_since: Option<u64>,
    /// The next commit deletes every row first (`Op::ReplaceAll`).
    clear_first: bool,
}

impl Task {
    async fn run(mut self, interval: Duration) -> Result<StateStats, StateError> {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut inflight: Option<JoinHandle<CommitResult>> = None;
        // Flushes waiting for the commit in flight / for the next commit.
        let mut inflight_waiters: Vec<oneshot::Sender<Result<(), StateError>>> = Vec::new();
        let mut next_waiters: Vec<oneshot::Sender<Result<(), StateError>>> = Vec::new();
        #[cfg(test)]
        let mut deferred: Vec<StoreFn> = Vec::new();
        loop {
            self.publish_pending();
            tokio::select! {
                // A finished commit first (rare: at most one per tick), then
                // the queue (so a tick sees everything already sent), then
                // the tick.
                biased;
                done = async {
                    match inflight.as_mut() {
                        Some(handle) => handle.await,
                        None => std::future::pending().await,
                    }
                } => {
                    inflight = None;
                    let result = self.finish(done)?;
                    for waiter in inflight_waiters.drain(..) {
                        let _ = waiter.send(result.clone());
                    }
                    #[cfg(test)]
                    if let Some(store) = self.store.as_mut() {
                        for f in deferred.drain(..) {
                            f(store);
                        }
                    }
                    if !next_waiters.is_empty() {
                        inflight_waiters.append(&mut next_waiters);
                        inflight = self.start();
                        if inflight.is_none() {
                            for waiter in inflight_waiters.drain(..) {
                                let _ = waiter.send(Ok(()));
                            }
                        }
                    }
                }
                op = self.rx.recv() => match op {
                    Some(Op::Flush(waiter)) => {
                        if inflight.is_some() {
                            if !self.has_pending() {
                                inflight_waiters.push(waiter);
                            } else {
                                next_waiters.push(waiter);
                            }
                        } else {
                            inflight = self.start();
                            if inflight.is_some() {
                                inflight_waiters.push(waiter);
                            } else {
                                let _ = waiter.send(Ok(()));
                            }
                        }
                    }
                    #[cfg(test)]
                    Some(Op::WithStore(f)) => match self.store.as_mut() {
                        Some(store) => f(store),
                        None => deferred.push(f),
                    },
                    Some(Op::Shutdown) | None => break,
                    Some(change) => self.take(change),
                },
                _ = tick.tick() => {
                    if inflight.is_none() {
                        inflight = self.start();
                    }
                }
            }
        }
        // Shutdown: finish the commit in flight, take what is still queued,
        // commit it once, close the file.
        self.rx.close();
        if let Some(handle) = inflight.take() {
            let result = self.finish(handle.await)?;
            for waiter in inflight_waiters.drain(..) {
                let _ = waiter.send(result.clone());
            }
        }
        while let Ok(op) = self.rx.try_recv() {
            match op {
                Op::Flush(waiter) => next_waiters.push(waiter),
                Op::Shutdown => {}
                #[cfg(test)]
                Op::WithStore(_) => {}
                change => self.take(change),
            }
        }
        let result = match self.start() {
            Some(handle) => self.finish(handle.await)?,
            None => Ok(()),
        };
        for waiter in next_waiters {
            let _ = waiter.send(result.clone());
        }
        self.publish_pending();
        if let Some(store) = self.store.take() {
            // Closing checkpoints the WAL: file I/O, off the async thread.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        result.map(|()| self.shared.counters.snapshot())
    }

    /// A change for the next commit (`Flush`, `Shutdown` and the test
    /// hook are the loop's).
    fn take(&mut self, op: Op) {
        match op {
            Op::Upsert(app) => {
                let key = app.key.clone();
                self.pending.insert(key, Change::Upsert(app));
            }
            Op::Delete(key) => {
                self.pending.insert(key, Change::Delete);
            }
            Op::UpsertKey {
                key,
                peer,
                granted,
                last_seen,
            } => {
                let app = stored_app(&key, peer, granted, last_seen);
                self.pending.insert(app.key.clone(), Change::Upsert(app));
            }
            Op::DeleteKey(key) => {
                self.pending.insert(key.to_string(), Change::Delete);
            }
            Op::ReplaceAll(apps) => self.replace_all(apps),
            Op::OutboxAdd(entry) => self.outbox.add.push(entry),
            Op::OutboxDone(seq) => self.outbox.done.push(seq),
            Op::Flush(_) | Op::Shutdown => {}
            #[cfg(test)]
            Op::WithStore(_) => {}
        }
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.outbox.is_empty()
    }

    fn publish_pending(&self) {
        let pending = self.pending.len() + self.outbox.len();
        self.shared
            .counters
            .pending
            .store(pending as u64, Ordering::Relaxed);
    }

    /// Starts a commit of everything pending, if anything is and the store
    /// is idle.
    fn start(&mut self) -> Option<JoinHandle<CommitResult>> {
        if !self.has_pending() && !self.clear_first {
            return None;
        }
        let mut store = self.store.take()?;
        let mut batch: Batch = self.pending.drain().collect();
        let outbox = std::mem::take(&mut self.outbox);
        // Key order walks the table's B-tree (keyed by `key`) front to back
        // instead of jumping around: 100 000 upserts commit faster sorted
        // (benches/state.rs).
        batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let clear = std::mem::take(&mut self.clear_first);
        self.publish_pending();
        Some(tokio::task::spawn_blocking(move || {
            let result = store.commit(&batch, clear, &outbox);
            (store, batch, clear, outbox, result)
        }))
    }

    fn replace_all(&mut self, apps: Vec<StoredApp>) {
        self.pending.clear();
        self.clear_first = true;
        for app in apps {
            self.pending.insert(app.key.clone(), Change::Upsert(app));
        }
    }

    /// Takes a finished commit back: counts it, and on failure puts its
    /// changes back under any newer ones. `Err` only when the commit
    /// panicked, which loses the store and ends the writer.
    fn finish(
        &mut self,
        done: Result<CommitResult, tokio::task::JoinError>,
    ) -> Result<Result<(), StateError>, StateError> {
        let (store, batch, clear, outbox, result) = match done {
            Ok(done) => done,
            Err(e) => {
                tracing::error!("state: the commit task failed ({e}); no further state is written");
                return Err(StateError::WriterGone);
            }
        };
        let counters = &self.shared.counters;
        let outcome = match result {
            Ok(()) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .rows_written
                    .fetch_add((batch.len() + outbox.len()) as u64, Ordering::Relaxed);
                if let Some(failures) = self.failing_since.take() {
                    tracing::info!(
                        "state: writing to {:?} works again after {failures} failed attempt(s)",
                        store.path
                    );
                }
                Ok(())
            }
            Err(e) => {
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
                self.outbox.requeue(outbox);
                // a newer ReplaceAll supersedes the failed batch
                if !self.clear_first {
                    requeue(&mut self.pending, batch);
                    self.clear_first = clear;
                }
                let error = StateError::Write {
                    path: store.path.clone(),
                    pending: self.pending.len() + self.outbox.len(),
                    reason: one_line(&e.to_string()),
                };
                match self.failing_since.as_mut() {
                    Some(failures) => {
                        *failures += 1;
                        tracing::debug!("state: {error} (still failing, retrying)");
                    }
                    None => {
                        self.failing_since = Some(1);
                        tracing::warn!(
                            "state: {error}; keeping them and retrying at every commit tick"
                        );
                    }
                }
                Err(error)
            }
        };
        self.store = Some(store);
        self.publish_pending();
        self.shared.attempts.send_modify(|n| *n += 1);
        Ok(outcome)
    }
}

/// The record for a registry key: `"ID @ IP"` splits into its id and
/// address; a bare key (a registry not keyed by peer) is the id, and the
/// host is `peer` (empty when unknown).
pub(crate) fn stored_app(
    key: &str,
    peer: Option<IpAddr>,
    granted: Duration,
    last_seen: SystemTime,
) -> StoredApp {
    let parsed = RecordKey::parse(key);
    let (app, host) = match (parsed.host(), parsed.host_ip()) {
        (Some(host), Some(_)) => (parsed.id().to_owned(), host.to_owned()),
        _ => (
            key.to_string(),
            peer.map(|p| p.to_canonical().to_string())
                .unwrap_or_default(),
        ),
    };
    StoredApp {
        key: key.to_string(),
        app,
        host,
        granted,
        last_seen,
    }
}

/// Puts a failed batch back into `pending`; a change to the same key that
/// arrived while the batch was being committed is newer and wins.
fn requeue(pending: &mut HashMap<String, Change>, batch: Batch) {
    for (key, change) in batch {
        pending.entry(key).or_insert(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            use std::sync::atomic::AtomicUsize;
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "hb-state-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn app(id: &str, host: &str, granted_ms: u64, seen_ms: u64) -> StoredApp {
        StoredApp {
            key: format!("{id} @ {host}"),
            app: id.into(),
            host: host.into(),
            granted: Duration::from_millis(granted_ms),
            last_seen: UNIX_EPOCH + Duration::from_millis(seen_ms),
        }
    }

    fn keys(apps: &[StoredApp]) -> Vec<&str> {
        apps.iter().map(|a| a.key.as_str()).collect()
    }

    /// Waits (on tokio's clock) for the writer's next commit attempt. Gives
    /// up after an hour of that clock, which is virtual under
    /// `start_paused`: a writer that never commits fails the test at once
    /// instead of hanging it.
    async fn next_attempt(sink: &StateSink) {
        let mut rx = sink.shared.attempts.subscribe();
        rx.borrow_and_update();
        tokio::time::timeout(Duration::from_secs(3600), rx.changed())
            .await
            .expect("no commit attempt within an hour of tokio time")
            .unwrap();
    }

    #[tokio::test]
    async fn round_trip_open_write_shutdown_reopen_load() {
        let dir = TempDir::new("roundtrip");
        let path = dir.join("state.db");
        let store = StateStore::open(&path).unwrap();
        assert!(store.load().unwrap().is_empty());
        let (sink, writer) = StateWriter::spawn(store, DEFAULT_COMMIT_INTERVAL);
        let a = app("kiosk-7", "10.0.0.7", 6000, 1_700_000_000_123);
        let b = StoredApp {
            key: "bare-id".into(),
            host: "2001:db8::1".into(),
            ..app("bare-id", "x", u64::from(u32::MAX) + 1000, 0)
        };
        let c = app("gone", "127.0.0.1", 1000, 5);
        sink.upsert(a.clone());
        sink.upsert(b.clone());
        sink.upsert(c.clone());
        sink.delete(&*c.key);
        let stats = writer.shutdown().await.unwrap();
        assert_eq!(stats.commits, 1, "{stats:?}");
        assert_eq!(stats.rows_written, 3, "a, b and the delete of c");
        assert_eq!(stats.pending, 0);

        let reopened = StateStore::open(&path).unwrap();
        assert_eq!(reopened.load().unwrap(), vec![b, a]); // key order
                                                          // Restored as written, again and again.
        drop(reopened);
        assert_eq!(StateStore::open(&path).unwrap().load().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn coalescing_makes_one_row_write_per_key() {
        let dir = TempDir::new("coalesce");
        let path = dir.join("state.db");
        let (sink, writer) =
            StateWriter::spawn(StateStore::open(&path).unwrap(), DEFAULT_COMMIT_INTERVAL);
        for i in 0..1000 {
            sink.upsert(app("busy", "10.0.0.1", 1000 + i, i));
        }
        sink.upsert(app("other", "10.0.0.1", 1, 1));
        sink.flush().await.unwrap();
        assert_eq!(
            sink.stats(),
            StateStats {
                commits: 1,
                rows_written: 2,
                write_errors: 0,
                pending: 0
            }
        );
        writer.shutdown().await.unwrap();
        let apps = StateStore::open(&path).unwrap().load().unwrap();
        assert_eq!(keys(&apps), ["busy @ 10.0.0.1", "other @ 10.0.0.1"]);
        assert_eq!(
            apps[0],
            app("busy", "10.0.0.1", 1999, 999),
            "last write wins"
        );
    }

    #[tokio::test]
    async fn delete_after_upsert_wins_and_upsert_after_delete_wins() {
        let dir = TempDir::new("delete");
        let path = dir.join("state.db");
        let (sink, writer) =
            StateWriter::spawn(StateStore::open(&path).unwrap(), DEFAULT_COMMIT_INTERVAL);
        sink.upsert(app("stored", "10.0.0.1", 1, 1));
        sink.upsert(app("back", "10.0.0.1", 1, 1));
        sink.flush().await.unwrap();
        // Within one interval: the stored one is pinged then done; a new one
        // is pinged then done; "back" is done, then pings again.
        sink.upsert(app("stored", "10.0.0.1", 2, 2));
        sink.delete("stored @ 10.0.0.1");
        sink.upsert(app("fresh", "10.0.0.1", 2, 2));
        sink.delete("fresh @ 10.0.0.1");
        sink.delete("back @ 10.0.0.1");
        sink.upsert(app("back", "10.0.0.1", 3, 3));
        let stats = writer.shutdown().await.unwrap();
        assert_eq!((stats.commits, stats.rows_written), (2, 5));
        let apps = StateStore::open(&path).unwrap().load().unwrap();
        assert_eq!(apps, [app("back", "10.0.0.1", 3, 3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn commits_once_per_interval_not_before() {
        let dir = TempDir::new("interval");
        let path = dir.join("state.db");
        let interval = Duration::from_secs(1);
        let start = tokio::time::Instant::now();
        let (sink, writer) = StateWriter::spawn(StateStore::open(&path).unwrap(), interval);
        sink.upsert(app("a", "10.0.0.1", 1, 1));
        // Just before the tick nothing is written (virtual time: the clock
        // only moves when every task waits).
        tokio::time::sleep(interval - Duration::from_millis(1)).await;
        assert_eq!(sink.stats().commits, 0);
        assert_eq!(sink.stats().pending, 1);
        next_attempt(&sink).await;
        assert_eq!(start.elapsed(), interval);
        assert_eq!((sink.stats().commits, sink.stats().rows_written), (1, 1));
        // An idle tick commits nothing; the next change goes out one tick later.
        tokio::time::sleep(interval + Duration::from_millis(1)).await;
        assert_eq!(sink.stats().commits, 1);
        sink.upsert(app("b", "10.0.0.1", 1, 1));
        next_attempt(&sink).await;
        assert_eq!(start.elapsed(), 3 * interval);
        assert_eq!((sink.stats().commits, sink.stats().rows_written), (2, 2));
        writer.shutdown().await.unwrap();
        assert_eq!(StateStore::open(&path).unwrap().load().unwrap().len(), 2);
    }

    /// SQLite's own "database or disk is full" (SQLITE_FULL), through the
    /// real commit path: the writer's connection may not grow the file past
    /// its current page count. The fault is injected on the writer's
    /// connection (the file is exclusively locked, so no other connection
    /// could) and lifted the same way.
    #[tokio::test(start_paused = true)]
    async fn write_error_is_counted_kept_and_retried_at_the_next_tick() {
        let dir = TempDir::new("full");
        let path = dir.join("state.db");
        let interval = Duration::from_secs(1);
        let start = tokio::time::Instant::now();
        let (sink, writer) = StateWriter::spawn(StateStore::open(&path).unwrap(), interval);
        sink.upsert(app("early", "10.0.0.1", 1, 1));
        sink.flush().await.unwrap();
        sink.with_store(|store| {
            let pages: i64 = store
                .conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap();
            let _: i64 = store
                .conn
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                    r.get(0)
                })
                .unwrap();
        });
        let big = StoredApp {
            app: "x".repeat(64 * 1024),
            ..app("big", "10.0.0.1", 1, 1)
        };
        sink.upsert(big.clone());
        let err = sink.flush().await.unwrap_err();
        assert!(
            matches!(&err, StateError::Write { pending: 1, reason, .. } if reason.contains("full")),
            "{err}"
        );
        assert_eq!(
            sink.stats(),
            StateStats {
                commits: 1,
                rows_written: 1,
                write_errors: 1,
                pending: 1
            }
        );
        // Still failing at the next tick: counted again, still kept.
        next_attempt(&sink).await;
        assert_eq!(start.elapsed(), interval);
        assert_eq!((sink.stats().write_errors, sink.stats().pending), (2, 1));
        // A newer change to another key joins the retry; the fault is lifted.
        sink.delete("early @ 10.0.0.1");
        sink.with_store(|store| {
            let _: i64 = store
                .conn
                .query_row("PRAGMA max_page_count = 1073741823", [], |r| r.get(0))
                .unwrap();
        });
        next_attempt(&sink).await;
        assert_eq!(start.elapsed(), 2 * interval);
        assert_eq!(
            sink.stats(),
            StateStats {
                commits: 2,
                rows_written: 3,
                write_errors: 2,
                pending: 0
            }
        );
        writer.shutdown().await.unwrap();
        // (its 64 KiB id, there only to fill the file, is no id `load`
        // accepts: read the row back by hand)
        let conn = Connection::open(&path).unwrap();
        let (rows, key, len): (i64, String, i64) = conn
            .query_row("SELECT count(*), key, length(app) FROM apps", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((rows, key.as_str(), len), (1, big.key.as_str(), 64 * 1024));
    }

    #[test]
    fn requeue_keeps_changes_that_arrived_during_the_failed_commit() {
        let mut pending = HashMap::new();
        pending.insert("a @ 10.0.0.1".to_owned(), Change::Delete);
        pending.insert(
            "b @ 10.0.0.1".to_owned(),
            Change::Upsert(app("b", "10.0.0.1", 9, 9)),
        );
        let failed: Batch = vec![
            (
                "a @ 10.0.0.1".into(),
                Change::Upsert(app("a", "10.0.0.1", 1, 1)),
            ),
            ("b @ 10.0.0.1".into(), Change::Delete),
            (
                "c @ 10.0.0.1".into(),
                Change::Upsert(app("c", "10.0.0.1", 1, 1)),
            ),
        ];
        requeue(&mut pending, failed);
        assert_eq!(pending.len(), 3);
        assert!(matches!(pending["a @ 10.0.0.1"], Change::Delete));
        assert!(
            matches!(&pending["b @ 10.0.0.1"], Change::Upsert(b) if b.granted.as_millis() == 9)
        );
        assert!(matches!(&pending["c @ 10.0.0.1"], Change::Upsert(_)));
    }

    #[tokio::test]
    async fn a_change_after_a_failure_replaces_the_kept_one() {
        let dir = TempDir::new("newer");
        let path = dir.join("state.db");
        let (sink, writer) =
            StateWriter::spawn(StateStore::open(&path).unwrap(), DEFAULT_COMMIT_INTERVAL);
        sink.with_store(|store| {
            store.conn.execute_batch("PRAGMA query_only = ON").unwrap();
        });
        sink.upsert(app("k", "10.0.0.1", 1, 1));
        assert!(matches!(
            sink.flush().await,
            Err(StateError::Write { pending: 1, .. })
        ));
        sink.upsert(app("k", "10.0.0.1", 2, 2));
        sink.with_store(|store| {
            store.conn.execute_batch("PRAGMA query_only = OFF").unwrap();
        });
        sink.flush().await.unwrap();
        writer.shutdown().await.unwrap();
        assert_eq!(
            StateStore::open(&path).unwrap().load().unwrap(),
            [app("k", "10.0.0.1", 2, 2)]
        );
    }

    #[tokio::test]
    async fn failed_final_commit_is_reported_with_the_lost_count() {
        let dir = TempDir::new("final");
        let (sink, writer) = StateWriter::spawn(
            StateStore::open(dir.join("s.db")).unwrap(),
            DEFAULT_COMMIT_INTERVAL,
        );
        sink.with_store(|store| {
            store.conn.execute_batch("PRAGMA query_only = ON").unwrap();
        });
        sink.upsert(app("a", "10.0.0.1", 1, 1));
        sink.upsert(app("b", "10.0.0.1", 1, 1));
        let err = writer.shutdown().await.unwrap_err();
        assert!(matches!(err, StateError::Write { pending: 2, .. }), "{err}");
        // The sink outlives the writer harmlessly.
        sink.upsert(app("c", "10.0.0.1", 1, 1));
        assert_eq!(sink.flush().await, Err(StateError::WriterGone));
    }

    #[tokio::test]
    async fn dropping_every_sink_and_the_handle_still_commits() {
        let dir = TempDir::new("drop");
        let path = dir.join("state.db");
        let (sink, writer) =
            StateWriter::spawn(StateStore::open(&path).unwrap(), DEFAULT_COMMIT_INTERVAL);
        let shared = Arc::clone(&writer.shared);
        let task = writer.task;
        drop(writer.tx);
        sink.upsert(app("a", "10.0.0.1", 1, 1));
        drop(sink);
        let stats = task.await.unwrap().unwrap();
        assert_eq!(stats.rows_written, 1);
        assert_eq!(shared.counters.snapshot().commits, 1);
        assert_eq!(StateStore::open(&path).unwrap().load().unwrap().len(), 1);
    }

    #[test]
    fn open_sets_wal_and_schema_version() {
        let dir = TempDir::new("wal");
        let path = dir.join("state.db");
        let store = StateStore::open(&path).unwrap();
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(store.path(), path);
    }

    #[test]
    fn an_empty_file_becomes_a_new_state_file() {
        let dir = TempDir::new("empty");
        let path = dir.join("state.db");
        std::fs::write(&path, b"").unwrap();
        let store = StateStore::open(&path).unwrap();
        assert!(store.load().unwrap().is_empty());
        drop(store);
        assert!(std::fs::read(&path)
            .unwrap()
            .starts_with(b"SQLite format 3\0"));
    }

    /// What `kill -9` leaves behind is the files as they are on disk; with
    /// an exclusive lock there is no shared-memory index, so a copy of the
    /// database and its WAL taken while the writer holds them is such a
    /// crash. Everything committed is back; what was only sent is not.
    #[tokio::test]
    async fn the_files_left_by_a_crash_restore_every_committed_app() {
        let dir = TempDir::new("crash");
        let path = dir.join("state.db");
        let (sink, writer) = StateWriter::spawn(
            StateStore::open(&path).unwrap(),
            Duration::from_secs(24 * 3600),
        );
        sink.upsert(app("a", "10.0.0.1", 1, 1));
        sink.upsert(app("b", "10.0.0.1", 2, 2));
        sink.flush().await.unwrap();
        sink.upsert(app("c", "10.0.0.1", 3, 3)); // not committed
        let crashed = TempDir::new("crashed");
        std::fs::copy(&path, crashed.join("state.db")).unwrap();
        let wal = std::fs::copy(dir.join("state.db-wal"), crashed.join("state.db-wal")).unwrap();
        assert!(
            wal > 0,
            "the commit is in the WAL, not yet in the main file"
        );
        let restored = StateStore::open(crashed.join("state.db")).unwrap();
        assert_eq!(
            restored.load().unwrap(),
            [app("a", "10.0.0.1", 1, 1), app("b", "10.0.0.1", 2, 2)]
        );
        writer.shutdown().await.unwrap();
    }

    fn assert_one_line(err: &StateError) {
        let text = err.to_string();
        assert!(!text.contains('\n') && !text.contains('\r'), "{text:?}");
    }

    #[test]
    fn not_a_database_is_refused_and_left_byte_identical() {
        let dir = TempDir::new("notadb");
        let text = b"kiosk-7 @ 10.0.0.7\nthis is someone's notes, not SQLite, and long enough to have a header's worth of bytes in it................\n".to_vec();
        let short = b"hello\n".to_vec();
        let mut fake_header = b"SQLite format 3\0".to_vec();
        fake_header.extend(std::iter::repeat_n(0xA5u8, 4096));
        for (name, bytes) in [
            ("notes.txt", text),
            ("short", short),
            ("damaged.db", fake_header),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, &bytes).unwrap();
            let err = StateStore::open(&path).unwrap_err();
            assert!(
                matches!(err, StateError::NotADatabase { .. }),
                "{name}: {err}"
            );
            assert_one_line(&err);
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was modified");
            assert!(!dir.join(&format!("{name}-wal")).exists());
        }
    }

    #[test]
    fn another_programs_database_is_refused_and_left_untouched() {
        let dir = TempDir::new("foreign");
        let path = dir.join("other.db");
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch("CREATE TABLE invoices (n INTEGER); INSERT INTO invoices VALUES (1);")
            .unwrap();
        drop(other);
        let before = std::fs::read(&path).unwrap();
        let err = StateStore::open(&path).unwrap_err();
        assert!(
            matches!(&err, StateError::NotADatabase { reason, .. } if reason.contains("invoices")),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);

        // Another program's database holding only a view is foreign too.
        let path = dir.join("view.db");
        let view = Connection::open(&path).unwrap();
        view.execute_batch("CREATE VIEW v AS SELECT 1;").unwrap();
        drop(view);
        let before = std::fs::read(&path).unwrap();
        let err = StateStore::open(&path).unwrap_err();
        assert!(
            matches!(&err, StateError::NotADatabase { reason, .. } if reason.contains("view v")),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);

        // Claims our version but has no apps table of ours.
        let path = dir.join("liar.db");
        let liar = Connection::open(&path).unwrap();
        liar.execute_batch("CREATE TABLE apps (key TEXT); PRAGMA user_version = 1;")
            .unwrap();
        drop(liar);
        let before = std::fs::read(&path).unwrap();
        let err = StateStore::open(&path).unwrap_err();
        assert!(matches!(err, StateError::NotADatabase { .. }), "{err}");
        assert_one_line(&err);
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn newer_schema_is_refused_and_left_untouched() {
        let dir = TempDir::new("newer-schema");
        let path = dir.join("state.db");
        drop(StateStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        conn.close().unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = StateStore::open(&path).unwrap_err();
        assert_eq!(
            err,
            StateError::NewerSchema {
                path: path.clone(),
                found: SCHEMA_VERSION + 1,
                supported: SCHEMA_VERSION
            }
        );
        assert_one_line(&err);
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn unwritable_paths_are_refused() {
        let dir = TempDir::new("unwritable");
        let file = dir.join("file.txt");
        std::fs::write(&file, b"x").unwrap();
        // (path, words of the reason)
        let mut cases = vec![
            (dir.0.clone(), "directory"),
            (file.join("state.db"), "Not a directory"),
            (dir.join("missing").join("state.db"), "No such file"),
        ];
        #[cfg(unix)]
        cases.push((PathBuf::from("/dev/null"), "not a regular file"));
        for (path, words) in cases {
            let err = StateStore::open(&path).unwrap_err();
            assert!(
                matches!(&err, StateError::Unwritable { reason, .. } if reason.contains(words)),
                "{path:?}: {err}"
            );
            assert_one_line(&err);
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }

    /// Past the file-system precheck, SQLite itself cannot write: the WAL
    /// file's name is taken by a directory.
    #[test]
    fn a_wal_file_that_cannot_be_created_is_unwritable() {
        let dir = TempDir::new("waldir");
        let path = dir.join("state.db");
        std::fs::create_dir(dir.join("state.db-wal")).unwrap();
        let err = StateStore::open(&path).unwrap_err();
        assert!(matches!(err, StateError::Unwritable { .. }), "{err}");
        assert_one_line(&err);
    }

    /// Everything up to the write probe succeeds, the probe fails: the
    /// file's header says "written by a newer SQLite format" (write version
    /// 3), which SQLite honours by opening it read-only, exactly as for a
    /// file it may not write. (Tests run as root, so file modes and
    /// read-only directories would not stop them.)
    #[test]
    fn a_file_that_cannot_be_written_fails_the_write_probe() {
        let dir = TempDir::new("probe");
        let path = dir.join("state.db");
        drop(StateStore::open(&path).unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..16], b"SQLite format 3\0");
        assert_eq!(bytes[18..20], [2, 2], "WAL mode");
        bytes[18] = 3;
        std::fs::write(&path, &bytes).unwrap();
        let err = StateStore::open(&path).unwrap_err();
        assert!(
            matches!(&err, StateError::Unwritable { reason, .. } if reason.contains("readonly")),
            "{err}"
        );
        assert_one_line(&err);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_the_file() {
        let dir = TempDir::new("locked");
        let path = dir.join("state.db");
        let first = StateStore::open(&path).unwrap();
        let err = StateStore::open(&path).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        assert_one_line(&err);
        drop(first);
        StateStore::open(&path).unwrap();
    }

    #[test]
    fn hand_edited_rows_are_refused_by_the_schema_or_by_load() {
        let dir = TempDir::new("rows");
        let path = dir.join("state.db");
        drop(StateStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        // STRICT and CHECK keep bad values out of the table...
        assert!(conn
            .execute("INSERT INTO apps VALUES ('k', 'a', 'h', -1, 0)", [])
            .is_err());
        assert!(conn
            .execute("INSERT INTO apps VALUES ('k', 'a', 'h', 'soon', 0)", [])
            .is_err());
        // ...but not the extremes: a far-future time still loads without a
        // panic, or is refused with a typed error.
        conn.execute(
            "INSERT INTO apps VALUES ('a @ 127.0.0.1', 'a', '127.0.0.1', ?1, ?1)",
            [i64::MAX],
        )
        .unwrap();
        drop(conn);
        let store = StateStore::open(&path).unwrap();
        match store.load() {
            Ok(apps) => assert_eq!(apps[0].granted, Duration::from_millis(i64::MAX as u64)),
            Err(err) => assert!(matches!(err, StateError::Read { .. }), "{err}"),
        }
    }

    /// Rows the server could not have written (a forged line in an id, a
    /// host that is no address, a key that is not `ID @ HOST`, an empty id)
    /// are refused at load: a hand-edited file cannot forge `/list` or a
    /// status, nor satisfy an expected app from another host.
    #[test]
    fn rows_the_server_could_not_have_written_are_refused_at_load() {
        for (key, app, host) in [
            (
                "line1\nOK - forged|x=1 @ 127.0.0.1",
                "line1\nOK - forged|x=1",
                "127.0.0.1",
            ),
            ("kiosk-2 @ 10.0.0.12", "whatever", "10.0.0.12"),
            ("kiosk-2 @ not-an-ip", "kiosk-2", "not-an-ip"),
            ("", "", ""),
        ] {
            let dir = TempDir::new("forged");
            let path = dir.join("state.db");
            drop(StateStore::open(&path).unwrap());
            let conn = Connection::open(&path).unwrap();
            conn.execute(
                "INSERT INTO apps VALUES (?1, ?2, ?3, 1000, 0)",
                params![key, app, host],
            )
            .unwrap();
            drop(conn);
            let err = StateStore::open(&path).unwrap().load().unwrap_err();
            assert!(matches!(err, StateError::Read { .. }), "{key:?}: {err}");
            assert_one_line(&err);
        }
        // what the server writes loads, keyed by peer or by the bare id
        let dir = TempDir::new("good");
        let path = dir.join("state.db");
        drop(StateStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO apps VALUES ('a @ b @ ::1', 'a @ b', '::1', 1000, 0);
             INSERT INTO apps VALUES ('bare', 'bare', '10.0.0.1', 1000, 0);
             INSERT INTO apps VALUES ('no-peer', 'no-peer', '', 1000, 0);",
        )
        .unwrap();
        drop(conn);
        assert_eq!(StateStore::open(&path).unwrap().load().unwrap().len(), 3);
    }

    #[test]
    fn times_and_durations_saturate_instead_of_panicking() {
        assert_eq!(millis(Duration::MAX), i64::MAX);
        assert_eq!(since_epoch_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(since_epoch_ms(UNIX_EPOCH + Duration::from_millis(42)), 42);
    }

    #[test]
    fn every_error_displays_on_one_line() {
        let path = PathBuf::from("/tmp/odd\nname.db");
        let errors = [
            StateError::NotADatabase {
                path: path.clone(),
                reason: "r".into(),
            },
            StateError::NewerSchema {
                path: path.clone(),
                found: 2,
                supported: 1,
            },
            StateError::Unwritable {
                path: path.clone(),
                reason: "r".into(),
            },
            StateError::Locked {
                path: path.clone(),
                reason: "r".into(),
            },
            StateError::Read {
                path: path.clone(),
                reason: "r".into(),
            },
            StateError::Write {
                path,
                pending: 3,
                reason: "r".into(),
            },
            StateError::WriterGone,
        ];
        for err in &errors {
            assert_one_line(err);
        }
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }
}

//! The state file and its writer, tested together.

use super::super::*;
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
        failed: None,
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
    assert!(matches!(&pending["b @ 10.0.0.1"], Change::Upsert(b) if b.granted.as_millis() == 9));
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

fn entry(key: &str, change: crate::protocol::notification::Change, at: SystemTime) -> HistoryEntry {
    HistoryEntry::new(key, change, at)
}

#[tokio::test]
async fn failures_and_history_survive_a_reopen() {
    use crate::protocol::notification::Change as C;
    use crate::protocol::State;
    let dir = TempDir::new("history");
    let path = dir.join("state.db");
    let store = StateStore::open(&path).unwrap();
    let (sink, writer) = StateWriter::spawn(store, DEFAULT_COMMIT_INTERVAL);
    let failed = StoredApp {
        failed: Some(3),
        ..app("job", "10.0.0.7", 6000, 5)
    };
    let ok = app("kiosk", "10.0.0.8", 6000, 5);
    sink.upsert(failed.clone());
    sink.upsert(ok.clone());
    let now = SystemTime::now();
    let secs = Duration::from_secs;
    for i in 0..5 {
        sink.history_add(
            entry("job @ 10.0.0.7", C::Warning, now - secs(50 - i))
                .states(Some(State::Ok), Some(State::Warning))
                .overdue(Some(3.0)),
        );
    }
    sink.history_add(
        entry("job @ 10.0.0.7", C::Failed, now - secs(1))
            .states(Some(State::Warning), Some(State::Critical))
            .exit_code(Some(3)),
    );
    sink.history_add(entry("backup", C::ExpectedMissing, now).states(None, Some(State::Critical)));
    writer.shutdown().await.unwrap();

    let store = StateStore::open(&path).unwrap();
    let apps = store.load().unwrap();
    assert_eq!(apps, vec![failed.clone(), ok]);
    // the newest 3 per id, oldest first, every field back
    let history = store.load_history(3, 1000).unwrap();
    let job: Vec<_> = history.iter().filter(|e| &*e.app == "job").collect();
    assert_eq!(job.len(), 3);
    assert_eq!(job[2].change, C::Failed);
    assert_eq!(job[2].exit_code, Some(3));
    assert_eq!(job[2].previous, Some(State::Warning));
    assert_eq!(job[1].overdue, Some(3.0));
    assert_eq!(job[0].host.as_deref(), Some("10.0.0.7"));
    assert!(job[0].at < job[1].at);
    // at most `max` in all: the newest
    let newest = store.load_history(100, 2).unwrap();
    let changes: Vec<_> = newest.iter().map(|e| e.change).collect();
    assert_eq!(changes, [C::Failed, C::ExpectedMissing]);
    let backup: Vec<_> = history.iter().filter(|e| &*e.app == "backup").collect();
    assert_eq!(backup.len(), 1);
    assert_eq!(backup[0].host, None);
    // a ping after the failure clears it
    let (sink, writer) = StateWriter::spawn(store, DEFAULT_COMMIT_INTERVAL);
    sink.upsert(StoredApp {
        failed: None,
        ..failed
    });
    writer.shutdown().await.unwrap();
    let store = StateStore::open(&path).unwrap();
    assert!(store.load().unwrap().iter().all(|a| a.failed.is_none()));
}

#[tokio::test]
async fn history_older_than_the_retention_is_pruned() {
    use crate::protocol::notification::Change as C;
    let dir = TempDir::new("prune");
    let path = dir.join("state.db");
    let mut store = StateStore::open(&path).unwrap();
    store.keep_history(Duration::from_secs(2 * 24 * 3600));
    let (sink, writer) = StateWriter::spawn(store, DEFAULT_COMMIT_INTERVAL);
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let ok = Some(crate::protocol::State::Ok);
    let warning = Some(crate::protocol::State::Warning);
    // `a`: two old entries and a recent one; `b`: quiet for a month, OK;
    // `c`: signed off long ago
    let changes = [
        ("a @ 10.0.0.1", C::Created, 4, None, ok),
        ("a @ 10.0.0.1", C::Recovered, 3, warning, ok),
        ("a @ 10.0.0.1", C::Warning, 1, ok, warning),
        ("b @ 10.0.0.2", C::Created, 30, None, ok),
        ("c @ 10.0.0.3", C::Created, 30, None, ok),
        ("c @ 10.0.0.3", C::Done, 29, ok, None),
    ];
    for (key, change, days_ago, from, to) in changes {
        sink.history_add(entry(key, change, now - days_ago * day).states(from, to));
    }
    sink.flush().await.unwrap();
    // the first commit prunes: what is past the retention was written and
    // deleted in one transaction
    let count = |store: &StateStore| -> i64 {
        store
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap()
    };
    writer.shutdown().await.unwrap();
    let store = StateStore::open(&path).unwrap();
    // kept: a's newest old entry and its recent one, b's last word
    assert_eq!(count(&store), 3);
    let kept: Vec<_> = store
        .load_history(100, 1000)
        .unwrap()
        .iter()
        .map(|e| (e.app.to_string(), e.change))
        .collect();
    let own = |app: &str, change| (app.to_owned(), change);
    assert_eq!(
        kept,
        [
            own("b", C::Created),
            own("a", C::Recovered),
            own("a", C::Warning)
        ]
    );
    assert_eq!(
        store.prune_due(now),
        Some(now - DEFAULT_HISTORY_RETENTION),
        "a fresh store prunes at its first commit"
    );
}

#[test]
fn hand_edited_history_rows_are_skipped() {
    let dir = TempDir::new("history-rows");
    let path = dir.join("state.db");
    let store = StateStore::open(&path).unwrap();
    let now = since_epoch_ms(SystemTime::now());
    store
        .conn
        .execute_batch(&format!(
            "INSERT INTO events (at_ms, app, host, event) VALUES
             ({now}, 'ok', '10.0.0.1', 'created'),
             ({now}, 'bad
id', '10.0.0.1', 'created'),
             ({now}, 'x', 'not an address', 'created'),
             ({now}, 'y', NULL, 'exploded'),
             (-5, 'z', NULL, 'created')"
        ))
        .unwrap();
    let history = store.load_history(100, 1000).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(&*history[0].app, "ok");
}

/// A file of the previous release (tables `apps`, `meta`, `outbox`, no
/// `failures` nor `events`) opens, loads, and gains the new tables.
#[test]
fn a_file_without_the_history_tables_opens_and_gains_them() {
    let dir = TempDir::new("old-layout");
    let path = dir.join("state.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE apps (
                key TEXT NOT NULL PRIMARY KEY, app TEXT NOT NULL, host TEXT NOT NULL,
                granted_ms INTEGER NOT NULL CHECK (granted_ms >= 0),
                last_seen_ms INTEGER NOT NULL CHECK (last_seen_ms >= 0)
             ) STRICT, WITHOUT ROWID;
             CREATE TABLE meta (k TEXT NOT NULL PRIMARY KEY, v TEXT NOT NULL) STRICT, WITHOUT ROWID;
             CREATE TABLE outbox (seq INTEGER NOT NULL PRIMARY KEY CHECK (seq > 0),
                sink TEXT NOT NULL, body BLOB NOT NULL) STRICT;
             INSERT INTO apps VALUES ('kiosk @ 10.0.0.7', 'kiosk', '10.0.0.7', 3000, 5);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = StateStore::open(&path).unwrap();
    let apps = store.load().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].failed, None);
    assert!(store.load_history(100, 1000).unwrap().is_empty());
    let tables = table_names(&store.conn).unwrap();
    assert!(tables.contains(&"table failures".to_owned()), "{tables:?}");
    assert!(tables.contains(&"table events".to_owned()), "{tables:?}");
}

#[test]
fn prunes_come_once_an_hour_and_keep_thirty_days_by_default() {
    let dir = TempDir::new("prune-due");
    let mut store = StateStore::open(dir.join("state.db")).unwrap();
    assert_eq!(DEFAULT_HISTORY_RETENTION, Duration::from_secs(30 * 86_400));
    let now = SystemTime::now();
    store.pruned_at = Some(now);
    let minute = Duration::from_secs(60);
    assert_eq!(store.prune_due(now + 59 * minute), None);
    assert_eq!(
        store.prune_due(now + 60 * minute),
        Some(now + 60 * minute - DEFAULT_HISTORY_RETENTION)
    );
    // a retention under an hour is raised to one
    store.keep_history(Duration::from_secs(1));
    assert_eq!(
        store.prune_due(now + 60 * minute),
        Some(now),
        "keeps at least an hour"
    );
}

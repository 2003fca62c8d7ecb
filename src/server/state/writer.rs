//! The writer task ([`StateWriter`]) and the request path's handle on it
//! ([`StateSink`]): changes are coalesced per key and committed to the
//! [`StateStore`] once per interval, off the async threads.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{
    one_line, Appends, Counters, OutboxEntry, Shared, StateError, StateStats, StateStore,
    StoredApp, MAX_PENDING_EVENTS, MIN_COMMIT_INTERVAL,
};
use crate::monitor::history::Journal;
use crate::monitor::{Event, EventKind, EventSink, HistoryEntry, Registry};
use crate::protocol::RecordKey;

/// A pending change to one key; the key is the map's.
#[derive(Debug, Clone)]
pub(super) enum Change {
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
        failed: Option<u8>,
    },
    /// A history entry for the `events` table.
    Event(HistoryEntry),
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
        failed: Option<u8>,
    ) {
        let _ = self.tx.send(Op::UpsertKey {
            key,
            peer,
            granted,
            last_seen,
            failed,
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

    /// Appends `entry` to the `events` table at the next commit (the
    /// server does it for every state change; at most 1 000 000 wait while
    /// the file refuses writes, newer ones are then dropped and logged).
    pub fn history_add(&self, entry: HistoryEntry) {
        let _ = self.tx.send(Op::Event(entry));
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
/// created, updated, recovers or fails is upserted (with the time the
/// event was delivered as its last sighting, and its failure or none), one
/// that signs off or expires is deleted; threshold crossings change
/// nothing stored. When events were
/// lost the whole state is rewritten from the registry.
impl EventSink for StateSink {
    fn deliver(&self, events: &[Event], registry: &Registry, _: Instant) {
        let mut seen = None;
        for event in events {
            match event.kind {
                EventKind::Created
                | EventKind::Updated
                | EventKind::Recovered
                | EventKind::Failed(_) => {
                    if let Some(granted) = registry.granted_of(&event.key) {
                        let now = *seen.get_or_insert_with(SystemTime::now);
                        let failed = registry.failed_of(&event.key);
                        self.upsert_key(Arc::clone(&event.key), event.peer, granted, now, failed);
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
                stored_app(app.key, None, app.granted, last_seen, app.failed)
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

/// The history's entries go to the `events` table at the next commit.
impl Journal for StateSink {
    fn record(&self, entry: &HistoryEntry) {
        self.history_add(entry.clone());
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
///     failed: None,
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
            outbox: Appends::default(),
            events_dropped: 0,
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
type CommitResult = (StateStore, Batch, bool, Appends, rusqlite::Result<()>);

struct Task {
    /// `None` while a commit has it.
    store: Option<StateStore>,
    rx: mpsc::UnboundedReceiver<Op>,
    pending: HashMap<String, Change>,
    /// Outbox writes and history entries waiting for the next commit.
    outbox: Appends,
    shared: Arc<Shared>,
    /// Failed attempts in the current burst of failures.
    failing_since: Option<u64>,
    /// The next commit deletes every row first (`Op::ReplaceAll`).
    clear_first: bool,
    /// History entries not kept for the file because too many waited.
    events_dropped: u64,
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
                failed,
            } => {
                let app = stored_app(&key, peer, granted, last_seen, failed);
                self.pending.insert(app.key.clone(), Change::Upsert(app));
            }
            Op::DeleteKey(key) => {
                self.pending.insert(key.to_string(), Change::Delete);
            }
            Op::ReplaceAll(apps) => self.replace_all(apps),
            Op::OutboxAdd(entry) => self.outbox.add.push(entry),
            Op::OutboxDone(seq) => self.outbox.done.push(seq),
            Op::Event(entry) => {
                if self.outbox.events.len() < MAX_PENDING_EVENTS {
                    self.outbox.events.push(entry);
                } else {
                    self.events_dropped += 1;
                    if self.events_dropped == 1 {
                        tracing::warn!(
                            "state: {MAX_PENDING_EVENTS} history entries wait for the state file; \
                             newer ones are kept in memory only until it is written again"
                        );
                    }
                }
            }
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
        let prune =
            (self.store.as_ref()).is_some_and(|store| store.prune_due(SystemTime::now()).is_some());
        if !self.has_pending() && !self.clear_first && !prune {
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
                counters.rows_written.fetch_add(
                    (batch.len() + outbox.outbox_len()) as u64,
                    Ordering::Relaxed,
                );
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
    failed: Option<u8>,
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
        failed,
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
#[path = "tests.rs"]
mod tests;

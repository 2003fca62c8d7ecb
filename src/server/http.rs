//! The HTTP front end: hyper's HTTP/1 server over tokio around a [`SharedRegistry`].

mod stream;

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HOST,
    RETRY_AFTER,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::conns::{AcceptBackoff, Connections, EvictionLog, TrackedBody, TrackedIo};
use crate::error::Error;
use crate::monitor::service::{Answer, Reply};
use crate::monitor::{Clock, EventSink, Expected, RegistryConfig, SharedRegistry, SystemClock};
use crate::settings::Settings;
use stream::{ReplyBody, WriteTimeout, CHUNK};
use url::Url;

/// Largest request body read (form bodies are `appid=ID`).
const MAX_REQUEST_BODY: usize = 16 * 1024;
/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head, and then its body.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reply may make no progress (the client reads nothing) before
/// the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on whole-registry replies in progress at once
/// ([`ServerBuilder::max_streamed_replies`]).
const DEFAULT_MAX_STREAMED_REPLIES: usize = 16;
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The embedded heartbeat server (feature `server`): configure one with
/// [`Server::builder`] (or [`ServerBuilder::from_env`] /
/// [`ServerBuilder::from_url`]), and [`ServerBuilder::start`] binds and
/// serves, returning a [`ServerHandle`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use heartbeat_sdk::server::Server;
///
/// let server = Server::builder("127.0.0.1:0".parse().unwrap()).start().await?;
/// println!("listening on {}", server.url());
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum Server {}

impl Server {
    /// A builder for a server that will listen on `addr` (port 0 picks a
    /// free port). Nothing is bound until [`ServerBuilder::start`].
    pub fn builder(addr: SocketAddr) -> ServerBuilder {
        ServerBuilder::new(addr)
    }
}

/// The settings of a server still to start: made by [`Server::builder`],
/// [`ServerBuilder::from_env`] or [`ServerBuilder::from_url`]; nothing is
/// bound until [`start`](ServerBuilder::start).
#[derive(Debug)]
#[must_use]
pub struct ServerBuilder {
    addr: SocketAddr,
    config: RegistryConfig,
    clock: Arc<dyn Clock>,
    head_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
    max_streamed_replies: usize,
    expected: Vec<Expected>,
    sinks: Vec<Arc<dyn EventSink>>,
    #[cfg(feature = "state")]
    state: Option<std::path::PathBuf>,
    #[cfg(feature = "state")]
    commit_interval: Duration,
    #[cfg(feature = "state")]
    history_retention: Duration,
    #[cfg(feature = "notify")]
    notify: super::notify::NotifyConfig,
}

impl ServerBuilder {
    fn new(addr: SocketAddr) -> ServerBuilder {
        ServerBuilder {
            addr,
            config: RegistryConfig::default(),
            clock: Arc::new(SystemClock),
            head_timeout: HEAD_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streamed_replies: DEFAULT_MAX_STREAMED_REPLIES,
            expected: Vec::new(),
            sinks: Vec::new(),
            #[cfg(feature = "state")]
            state: None,
            #[cfg(feature = "state")]
            commit_interval: super::state::DEFAULT_COMMIT_INTERVAL,
            #[cfg(feature = "state")]
            history_retention: super::state::DEFAULT_HISTORY_RETENTION,
            #[cfg(feature = "notify")]
            notify: super::notify::NotifyConfig::default(),
        }
    }

    /// A server on the address of `HB_URL`, or `HB_HOST`:`HB_PORT`
    /// (default `127.0.0.1:8888`), like the reference server. `APP_ID` is
    /// not read.
    pub fn from_env() -> Result<ServerBuilder, Error> {
        ServerBuilder::from_url(&Settings::url_from_env()?)
    }

    /// A server on the address `url` names: its port (or the scheme's
    /// default) on an IP address, or on 127.0.0.1 for `localhost`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when the host is another name (a server binds
    /// to an address, it does not resolve one) or there is no port.
    pub fn from_url(url: &Url) -> Result<ServerBuilder, Error> {
        Ok(ServerBuilder::new(bind_address(url)?))
    }

    /// Registry settings (tolerance, thresholds, keys, app limit).
    pub fn config(mut self, config: RegistryConfig) -> ServerBuilder {
        self.config = config;
        self
    }

    /// The largest number of applications tracked; past it new ones get `503`.
    pub fn max_apps(mut self, max_apps: usize) -> ServerBuilder {
        self.config.max_apps = max_apps;
        self
    }

    /// Expect `app` (repeat for several): it is never dropped, and while
    /// it has no record it is CRITICAL in its own `/status?appid=ID`, in
    /// the host `/status` and in `/metrics`; see [`Expected`].
    ///
    /// ```
    /// use heartbeat_sdk::server::{Expected, Server};
    ///
    /// let builder = Server::builder("127.0.0.1:0".parse().unwrap())
    ///     .expect("backup".parse::<Expected>()?)
    ///     .expect("kiosk @ 10.0.0.5".parse::<Expected>()?);
    /// # drop(builder);
    /// # Ok::<(), heartbeat_sdk::server::ExpectedError>(())
    /// ```
    pub fn expect(mut self, app: Expected) -> ServerBuilder {
        self.expected.push(app);
        self
    }

    /// Run the registry on `clock` instead of the system clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> ServerBuilder {
        self.clock = Arc::new(clock);
        self
    }

    /// How long a client may take to send its request head before the
    /// connection is closed, and then again its request body before it is
    /// answered `408` (default 10 s each).
    pub fn head_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.head_timeout = timeout;
        self
    }

    /// How long a reply may make no progress, because the client reads
    /// nothing, before the connection is dropped (default 30 s). Only
    /// stuck writes are timed: a slow reader that keeps reading is served
    /// to the end, and an idle kept-alive connection is left to
    /// [`head_timeout`](ServerBuilder::head_timeout). "Progress" is the socket
    /// taking more bytes, which the kernel allows once about a third of its
    /// send buffer (up to a few MiB) has been read.
    pub fn write_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.write_timeout = timeout;
        self
    }

    /// The most connections served at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`], at least 1). When that many are open and
    /// another client connects, the server closes the connection that has
    /// waited longest for a request, having sent nothing since it connected
    /// or since its last reply (kept alive), to serve the new one; a
    /// connection reading or answering a request is never closed for that.
    /// The first such eviction of a burst is logged at info, the others at
    /// debug, and the end of the burst at info with their count. When every
    /// connection is mid-request, the new client waits (and further ones in
    /// the kernel's listen backlog) until one turns idle or closes, rather
    /// than being refused; a request that stalls is cut off by
    /// [`head_timeout`](ServerBuilder::head_timeout), so a full server frees up.
    ///
    /// Each connection holds a file descriptor: keep the cap below the
    /// process's open-file limit (`RLIMIT_NOFILE`, often 1024 by default),
    /// with room for the listener and files, or accepts fail with "Too many
    /// open files". `heartbeat serve` raises that limit and derives its cap
    /// from it; a library user sizes it as fits the process.
    pub fn max_connections(mut self, max: usize) -> ServerBuilder {
        self.max_connections = max.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// The most whole-registry replies (`/list`, `/metrics`, and `/status`
    /// without an id when two or more applications are tracked) in progress
    /// at once (default 16, at least 1). Each
    /// holds a snapshot of the registry (about 32 bytes per application,
    /// and the keys of applications gone since) until its last byte is
    /// written, which a slow reader can make take long. Past the cap such a
    /// request is answered `503` with `Retry-After: 1` and a one-line
    /// `ERROR:` reason (logged at debug only); other requests are not
    /// affected.
    ///
    /// ```
    /// use heartbeat_sdk::server::Server;
    ///
    /// let builder = Server::builder("127.0.0.1:0".parse().unwrap()).max_streamed_replies(4);
    /// # drop(builder);
    /// ```
    pub fn max_streamed_replies(mut self, max: usize) -> ServerBuilder {
        self.max_streamed_replies = max.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Durable state (feature `state`): keep the tracked applications in
    /// the SQLite file at `path` (created if missing), so that a restarted
    /// server knows who to expect.
    ///
    /// At [`start`](ServerBuilder::start), before binding, every stored
    /// application is restored with a fresh grace: it counts as seen at
    /// start-up, keeps its granted timeout, and goes WARNING, CRITICAL and
    /// is dropped on the usual schedule unless it reports (logged:
    /// `restored N applications from PATH`). A file that is not a heartbeat
    /// state database, has a newer schema, cannot be written or is in use
    /// by another server makes `start` fail (an [`io::Error`] whose
    /// [`get_ref`](io::Error::get_ref) is the
    /// [`StateError`](crate::server::StateError)), and nothing is written
    /// to it.
    ///
    /// While serving, writes never sit on the request path: every init and
    /// ping (an upsert), `done` and expiry (a delete) goes to a writer task
    /// that keeps the last change per application and commits every
    /// [`state_commit_interval`](ServerBuilder::state_commit_interval)
    /// (1 s by default) and at [`ServerHandle::shutdown`]. **After a crash
    /// (`kill -9`, power loss), every application acknowledged more than
    /// one commit interval before it is back.** A failed commit (a full
    /// disk) is logged, counted (`heartbeat_state_write_errors_total` in
    /// `/metrics`, which also shows `heartbeat_state_commits_total`,
    /// `heartbeat_state_rows_written_total` and `heartbeat_state_pending`
    /// with this option only) and retried, and the server keeps answering.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use heartbeat_sdk::server::Server;
    ///
    /// let server = Server::builder("127.0.0.1:8888".parse().unwrap())
    ///     .state("/var/lib/heartbeat/state.db")
    ///     .start()
    ///     .await?; // a bad state file stops here
    /// server.shutdown().await; // commits what is pending
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "state")]
    #[cfg_attr(docsrs, doc(cfg(feature = "state")))]
    pub fn state(mut self, path: impl Into<std::path::PathBuf>) -> ServerBuilder {
        self.state = Some(path.into());
        self
    }

    /// How often the [`state`](ServerBuilder::state) file is committed to
    /// (default [`DEFAULT_COMMIT_INTERVAL`](crate::server::DEFAULT_COMMIT_INTERVAL),
    /// 1 s; at least [`MIN_COMMIT_INTERVAL`](crate::server::MIN_COMMIT_INTERVAL)).
    /// Shorter loses less in a crash and writes more often. Without
    /// [`state`](ServerBuilder::state) it has no effect.
    #[cfg(feature = "state")]
    #[cfg_attr(docsrs, doc(cfg(feature = "state")))]
    pub fn state_commit_interval(mut self, interval: Duration) -> ServerBuilder {
        self.commit_interval = interval.max(super::state::MIN_COMMIT_INTERVAL);
        self
    }

    /// How long the [`state`](ServerBuilder::state) file keeps the history
    /// of state changes (its `events` table; default
    /// [`DEFAULT_HISTORY_RETENTION`](crate::server::DEFAULT_HISTORY_RETENTION),
    /// 30 days; at least an hour). Older entries are pruned in the
    /// background, once an hour. At start the newest
    /// [`HISTORY_PER_APP`](crate::monitor::HISTORY_PER_APP) per id are read
    /// back, so `GET /api/v1/events`, the uptime and the page's strips
    /// survive a restart. Without [`state`](ServerBuilder::state) the
    /// history lives in memory only.
    #[cfg(feature = "state")]
    #[cfg_attr(docsrs, doc(cfg(feature = "state")))]
    pub fn history_retention(mut self, retention: Duration) -> ServerBuilder {
        self.history_retention = retention;
        self
    }

    /// Hands every [`Event`](crate::monitor::Event) of the server's registry
    /// to `sink` too, in order, after the log (and the durable state, with
    /// [`state`](ServerBuilder::state)). Repeatable; sinks hear events in
    /// the order they were added. Threshold crossings (WARNING, CRITICAL,
    /// expiry) come from the server's sweeper at the instant they happen,
    /// whether anybody reads or not.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use std::sync::Arc;
    /// use std::time::Instant;
    /// use heartbeat_sdk::monitor::{Event, EventKind, EventSink, Registry};
    /// use heartbeat_sdk::server::Server;
    ///
    /// #[derive(Debug)]
    /// struct Pager;
    /// impl EventSink for Pager {
    ///     fn deliver(&self, events: &[Event], _: &Registry, _: Instant) {
    ///         for event in events.iter().filter(|e| e.kind == EventKind::Critical) {
    ///             eprintln!("page someone: {event}"); // better: a channel to a task
    ///         }
    ///     }
    /// }
    ///
    /// let server = Server::builder("127.0.0.1:8888".parse().unwrap())
    ///     .event_sink(Arc::new(Pager))
    ///     .start()
    ///     .await?;
    /// # server.shutdown().await; Ok(()) }
    /// ```
    pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> ServerBuilder {
        self.sinks.push(sink);
        self
    }

    /// Notify (feature `notify`): POST every state change of every
    /// application (created, warning, critical, recovered, done, expired,
    /// expected-missing) to `url`, as one JSON
    /// [`StateChange`](crate::protocol::notification::StateChange) each or
    /// as a Slack message ([`WebhookFormat`](crate::server::WebhookFormat)).
    /// Repeatable.
    ///
    /// Delivery is off the request path, at least once per change while
    /// the server runs: an application's changes arrive in order; a
    /// receiver that fails (no reply, a timeout, 5xx, 408, 429) is retried
    /// with jittered backoff ([`notify_retry`](ServerBuilder::notify_retry))
    /// until it accepts; a 4xx refusal drops that one notification. The
    /// queue is in memory and bounded
    /// ([`MAX_PENDING`](crate::server::MAX_PENDING) per webhook): what is
    /// still queued when the server stops is not sent.
    ///
    /// ```
    /// use heartbeat_sdk::server::{Server, WebhookFormat};
    ///
    /// let builder = Server::builder("127.0.0.1:0".parse().unwrap())
    ///     .webhook("https://hooks.example/heartbeat".parse().unwrap(), WebhookFormat::Json)
    ///     .alertmanager("http://127.0.0.1:9093".parse().unwrap());
    /// # drop(builder);
    /// ```
    #[cfg(feature = "notify")]
    #[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
    pub fn webhook(mut self, url: Url, format: super::notify::WebhookFormat) -> ServerBuilder {
        self.notify.webhooks.push((url, format));
        self
    }

    /// Alert (feature `notify`): post each CRITICAL application and each
    /// missing expected one as an alert to the Alertmanager at `url`
    /// (`url/api/v2/alerts`), resolve it when the application recovers,
    /// registers or signs off, and re-send every active alert every
    /// [`alert_resend`](ServerBuilder::alert_resend). Repeatable: give every
    /// peer of an Alertmanager cluster (each gets every alert, as
    /// Prometheus does), never a load balancer in front of them.
    ///
    /// Labels: `alertname="HeartbeatAppDown"`, `app`, `host` (none for an
    /// expected app of any host), `severity`; annotations `summary`,
    /// `description` and `instance` (this server: an annotation, so two
    /// servers of an HA pair make one alert); `startsAt` the crossing;
    /// `generatorURL` the dashboard.
    #[cfg(feature = "notify")]
    #[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
    pub fn alertmanager(mut self, url: Url) -> ServerBuilder {
        self.notify.alertmanagers.push(url);
        self
    }

    /// How often active (and for 15 minutes resolved) alerts are sent
    /// again (default 60 s): an active alert's `endsAt` is
    /// [`ALERT_LIFETIME_RESENDS`](crate::server::ALERT_LIFETIME_RESENDS)
    /// intervals ahead, so the alerts of a server that died resolve by
    /// themselves.
    #[cfg(feature = "notify")]
    #[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
    pub fn alert_resend(mut self, interval: Duration) -> ServerBuilder {
        self.notify.alert_resend = interval.max(Duration::from_millis(1));
        self
    }

    /// Also alert on WARNING (`severity="warning"`; off by default).
    #[cfg(feature = "notify")]
    #[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
    pub fn alert_on_warning(mut self, on: bool) -> ServerBuilder {
        self.notify.alert_on_warning = on;
        self
    }

    /// The shortest time between two webhook notifications of one
    /// application (default 0: every change goes). A change that comes
    /// sooner waits until the interval is over and folds in the changes
    /// that follow it meanwhile: the receiver then gets the latest state,
    /// `previous` as the last notification left it, and `coalesced`
    /// saying how many changes were folded in. Alerts are not affected.
    #[cfg(feature = "notify")]
    #[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
    pub fn notify_min_interval(mut self, interval: Duration) -> ServerBuilder {
        self.notify.min_interval = interval;
        self
    }

    /// The backoff between delivery attempts (default 500 ms doubling up
    /// to 60 s, jittered). Only its backoff is used: a notification is
    /// retried until the receiver takes it, whatever the attempts.
    #[cfg(feature = "notify")]
    #[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
    pub fn notify_retry(mut self, retry: crate::RetryPolicy) -> ServerBuilder {
        self.notify.retry = retry;
        self
    }

    /// The URL the server is reached at, for the links in notifications
    /// (`server`, `dashboard`, `generatorURL`, the `instance` annotation);
    /// default `http://` and the address it listens on.
    #[cfg(feature = "notify")]
    #[cfg_attr(docsrs, doc(cfg(feature = "notify")))]
    pub fn external_url(mut self, url: Url) -> ServerBuilder {
        self.notify.external_url = Some(url);
        self
    }

    /// Bind and start serving in a tokio task; returns once listening.
    ///
    /// # Errors
    /// The address cannot be bound; with [`state`](ServerBuilder::state),
    /// the state file cannot be used (see there).
    pub async fn start(self) -> io::Result<ServerHandle> {
        let mut shared = SharedRegistry::new(self.config, self.clock);
        let wake = Arc::new(Notify::new());
        let notify = Arc::clone(&wake);
        shared.set_wake(Box::new(move || notify.notify_one()));
        #[cfg(feature = "state")]
        let (writer, _outbox) = match self.state {
            Some(path) => {
                let (writer, outbox) = open_state(
                    &mut shared,
                    path,
                    self.commit_interval,
                    self.history_retention,
                )
                .await?;
                (Some(writer), Some(outbox))
            }
            None => (None, None),
        };
        let listener = TcpListener::bind(self.addr).await?;
        let local_addr = listener.local_addr()?;
        if !local_addr.ip().is_loopback() {
            tracing::warn!(%local_addr, "heartbeat server bound to a non-loopback address: anyone who can reach it can register and query applications");
        }
        #[cfg(feature = "notify")]
        let notifier = if self.notify.is_empty() {
            None
        } else {
            #[cfg(feature = "state")]
            let durable = _outbox.map(|(sink, stored)| super::notify::Durable {
                outbox: Arc::new(sink),
                stored: stored
                    .into_iter()
                    .map(|e| (e.seq, e.sink, e.body))
                    .collect(),
            });
            #[cfg(not(feature = "state"))]
            let durable = None;
            let clock = Arc::clone(shared.clock());
            let notifier = super::notify::Notifier::spawn(self.notify, local_addr, clock, durable)
                .map_err(io::Error::other)?;
            shared.add_sink(notifier.sink.clone());
            shared.with_registry(|registry, now| {
                notifier.sink.alert_restored_failures(registry, now);
            });
            Some(notifier)
        };
        for sink in self.sinks {
            shared.add_sink(sink);
        }
        let state = Arc::new(shared);
        state.with_registry(|registry, _| {
            for app in self.expected {
                registry.expect(app);
            }
        });
        let (stop, stopped) = oneshot::channel();
        let limits = Limits {
            head_timeout: self.head_timeout,
            write_timeout: self.write_timeout,
            max_connections: self.max_connections,
            max_streamed_replies: self.max_streamed_replies,
        };
        let task = tokio::spawn(serve(listener, state.clone(), limits, stopped));
        tracing::info!(
            %local_addr,
            max_connections = self.max_connections,
            "heartbeat server listening"
        );
        let sweeper = tokio::spawn(sweep(Arc::clone(&state), wake));
        Ok(ServerHandle {
            local_addr,
            state,
            stop: Some(stop),
            task: Some(task),
            sweeper: Some(sweeper),
            #[cfg(feature = "state")]
            writer,
            #[cfg(feature = "notify")]
            notifier,
        })
    }
}

/// The longest the sweeper sleeps: a bound on how late a crossing is seen
/// when the registry's clock is not the system's (a `ManualClock` that was
/// advanced) or drifted from tokio's timer.
const MAX_SWEEP_WAIT: Duration = Duration::from_secs(1);

/// The always-on sweeper: emits each threshold crossing (WARNING,
/// CRITICAL, expiry, an expected app going missing) at its instant, then
/// sleeps until the next one, or until `wake` says an earlier one appeared.
async fn sweep(state: Arc<SharedRegistry>, wake: Arc<Notify>) {
    loop {
        let next = state.sweep();
        let now = state.clock().now();
        let wait = next.map_or(MAX_SWEEP_WAIT, |due| {
            due.saturating_duration_since(now)
                .clamp(Duration::from_millis(1), MAX_SWEEP_WAIT)
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
    }
}

/// Opens the state file, restores its records into `shared` and starts the
/// writer; off the async threads (SQLite blocks).
#[cfg(feature = "state")]
async fn open_state(
    shared: &mut SharedRegistry,
    path: std::path::PathBuf,
    commit_interval: Duration,
    history_retention: Duration,
) -> io::Result<(super::state::StateWriter, StoredOutbox)> {
    use super::state::{StateStore, StateWriter};
    let (store, stored, outbox, history) = tokio::task::spawn_blocking(move || {
        let mut store = StateStore::open(path)?;
        store.keep_history(history_retention);
        let stored = store.load()?;
        let outbox = store.load_outbox()?;
        let history =
            store.load_history(crate::monitor::HISTORY_PER_APP, crate::monitor::HISTORY_CAP)?;
        Ok::<_, super::state::StateError>((store, stored, outbox, history))
    })
    .await
    .map_err(io::Error::other)?
    .map_err(io::Error::other)?;
    let (restored, full) = shared.with_registry(|registry, now| {
        let mut restored = 0_usize;
        let mut full = 0_usize;
        for app in &stored {
            match registry.restore(&app.key, app.granted, now) {
                Ok(()) => restored += 1,
                Err(_) => full += 1,
            }
            if let Some(code) = app.failed {
                registry.restore_failure(&app.key, code);
            }
        }
        (restored, full)
    });
    let shown = crate::protocol::printable(&store.path().display().to_string()).into_owned();
    tracing::info!("restored {restored} applications from {shown}");
    if full > 0 {
        tracing::warn!(
            "{full} stored applications not restored: registry full (max_apps); they stay in {shown}"
        );
    }
    let entries = history.len();
    shared.history().restore(history);
    tracing::info!("restored {entries} history entries from {shown}");
    let (sink, writer) = StateWriter::spawn(store, commit_interval);
    shared.history().set_journal(Arc::new(sink.clone()));
    shared.with_registry(|registry, now| shared.history().note_restored(registry, now));
    shared.add_sink(Arc::new(sink.clone()));
    Ok((writer, (sink, outbox)))
}

/// The state writer's handle and the notifications its outbox held at start.
#[cfg(feature = "state")]
type StoredOutbox = (super::state::StateSink, Vec<super::state::OutboxEntry>);

/// The address `url` names, for binding.
fn bind_address(url: &Url) -> Result<SocketAddr, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_owned(),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| invalid("no port"))?;
    let ip: IpAddr = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.into(),
        Some(url::Host::Ipv6(ip)) => ip.into(),
        Some(url::Host::Domain("localhost")) => IpAddr::from([127, 0, 0, 1]),
        _ => return Err(invalid("a server binds to an IP address or localhost")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// A running server: its address, its state, and a graceful shutdown.
///
/// Dropping the handle without [`shutdown`](ServerHandle::shutdown) stops
/// accepting at once (the listening socket is closed) and waits for
/// nothing: requests already being served still complete, each connection
/// then closes, idle ones at once; with durable state, changes not yet
/// committed may be lost. `shutdown` also waits for them (up to 5 s), and
/// commits the state.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    state: Arc<SharedRegistry>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The task that turns deadlines into events.
    sweeper: Option<JoinHandle<()>>,
    /// The state writer (`ServerBuilder::state`).
    #[cfg(feature = "state")]
    writer: Option<super::state::StateWriter>,
    /// The notifications' delivery tasks (`ServerBuilder::webhook`, `alertmanager`).
    #[cfg(feature = "notify")]
    notifier: Option<super::notify::Notifier>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR`, for a client's `HB_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The registry the server answers from.
    pub fn registry(&self) -> &SharedRegistry {
        &self.state
    }

    /// Stop accepting, let requests in flight finish (up to 5 s), and return.
    /// With durable state, everything still pending is then committed (a
    /// failure is logged).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.abort();
        }
        #[cfg(feature = "notify")]
        if let Some(mut notifier) = self.notifier.take() {
            notifier.abort();
        }
        #[cfg(feature = "state")]
        if let Some(writer) = self.writer.take() {
            match writer.shutdown().await {
                Ok(stats) => tracing::info!(
                    commits = stats.commits,
                    rows_written = stats.rows_written,
                    write_errors = stats.write_errors,
                    "state saved"
                ),
                Err(error) => tracing::error!("state: {error}"),
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.abort();
        }
    }
}

/// What [`serve`] enforces per connection and overall.
#[derive(Debug, Clone, Copy)]
struct Limits {
    head_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
    max_streamed_replies: usize,
}

async fn serve(
    listener: TcpListener,
    state: Arc<SharedRegistry>,
    limits: Limits,
    mut stopped: oneshot::Receiver<()>,
) {
    let Limits {
        head_timeout,
        write_timeout,
        max_connections,
        max_streamed_replies,
    } = limits;
    // one permit per whole-registry reply in progress: see `respond`
    let streams = Arc::new(Semaphore::new(max_streamed_replies));
    // One permit per open connection: when none is left, a new client's
    // connection takes the slot of the one waiting longest for a request
    // (silent or idle), or waits (and later clients queue in the listen
    // backlog) until one frees up.
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD)
        // a client that shuts its write side after the request (`nc -N`,
        // some shell scripts) still gets its reply
        .half_close(true)
        .keep_alive(true);
    let connections = Connections::new();
    let mut backoff = AcceptBackoff::default();
    let mut evictions = EvictionLog::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // e.g. out of file descriptors: back off instead of
                    // spinning, and log the first failure of a burst only
                    let (pause, first) = backoff.failed();
                    if first {
                        tracing::warn!(%error, "accept failed: pausing; further failures until an accept succeeds are not logged");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        _ = &mut stopped => break,
                    }
                }
            },
            _ = &mut stopped => break,
        };
        if let Some(failures) = backoff.succeeded() {
            tracing::warn!(failures, "accepting again after failed accepts");
        }
        let peer = peer.ip().to_canonical();
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                if let Some(evicted) = evictions.room_found() {
                    tracing::info!(evicted, "connection cap no longer reached: connections closed to make room meanwhile");
                }
                permit
            }
            Err(_) => tokio::select! {
                permit = make_room(&permits, &connections, &mut evictions) => permit,
                _ = &mut stopped => break,
            },
        };
        let _ = stream.set_nodelay(true);
        let registration = connections.register(peer);
        let conn = Arc::clone(registration.conn());
        let io = WriteTimeout::new(
            TokioIo::new(TrackedIo::new(stream, Arc::clone(&conn))),
            write_timeout,
        );
        let state = state.clone();
        let streams = Arc::clone(&streams);
        let service = {
            let conn = Arc::clone(&conn);
            service_fn(move |request| {
                conn.request_started();
                let conn = Arc::clone(&conn);
                let streams = Arc::clone(&streams);
                let response = respond(state.clone(), streams, peer, head_timeout, request);
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, conn)))
                }
            })
        };
        let connection = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            tokio::select! {
                result = connection => if let Err(error) = result {
                    if error.is_parse() || error.is_parse_too_large() {
                        // hyper answered 400 or 431
                        tracing::info!(%peer, %error, "request refused");
                    } else {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                },
                // dropping the idle connection closes it
                () = conn.evicted() => {}
            }
            drop(registration);
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// A slot for a new connection when all are taken: close the connection
/// that has waited longest for a request (silent or idle) and take its
/// slot; when all are busy, wait for one to turn idle or for any to close.
/// The first eviction of a burst is logged at info, the others at debug.
async fn make_room(
    permits: &Arc<Semaphore>,
    connections: &Connections,
    evictions: &mut EvictionLog,
) -> OwnedSemaphorePermit {
    loop {
        if let Some(evicted) = connections.evict_longest_waiting() {
            let (peer, idle_ms) = (evicted.peer, evicted.idle_for.as_millis());
            if evictions.evicted() {
                tracing::info!(%peer, idle_ms, "connection cap reached: closed the connection waiting longest for a request; further ones until the cap is no longer reached are logged at debug");
            } else {
                tracing::debug!(%peer, idle_ms, "connection cap reached: closed the connection waiting longest for a request");
            }
            // its task ends at once and releases its permit
            if let Ok(permit) = permits.clone().acquire_owned().await {
                return permit;
            }
        }
        tokio::select! {
            permit = permits.clone().acquire_owned() => if let Ok(permit) = permit {
                return permit;
            },
            () = connections.some_became_idle() => {}
        }
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or any request with
/// more than one, is a `400`. (HTTP/1.0 clients, such as the reference's,
/// may leave it out.)
fn check_host(request: &Request<Incoming>) -> Result<(), Reply> {
    let hosts = request.headers().get_all(HOST).iter().count();
    if hosts > 1 {
        return Err(Reply::error(400, "more than one Host header"));
    }
    if hosts == 0 && request.version() >= Version::HTTP_11 {
        return Err(Reply::error(400, "an HTTP/1.1 request needs a Host header"));
    }
    Ok(())
}

async fn respond(
    state: Arc<SharedRegistry>,
    streams: Arc<Semaphore>,
    peer: IpAddr,
    body_timeout: Duration,
    request: Request<Incoming>,
) -> Result<Response<ReplyBody>, Infallible> {
    // PROTOCOL.md: GET and POST only. `HEAD` would run the command (register
    // an app) while hiding the reply, so it is refused like the others.
    if !matches!(*request.method(), Method::GET | Method::POST) {
        let mut response = reply(Reply::error(
            405,
            format!("method {} not allowed: use GET or POST", request.method()),
        ));
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, POST"));
        tracing::info!(%peer, method = %request.method(), "request refused: method not allowed");
        return Ok(response);
    }
    if let Err(refusal) = check_host(&request) {
        tracing::info!(%peer, "request refused: {}", refusal.body);
        return Ok(reply(refusal));
    }
    let version = request.version();
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    let collect = Limited::new(request.into_body(), MAX_REQUEST_BODY).collect();
    let body = match tokio::time::timeout(body_timeout, collect).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            tracing::info!(%peer, "request refused: body too large or cut short");
            return Ok(reply(Reply::error(
                413,
                format!("request body over {MAX_REQUEST_BODY} bytes or cut short"),
            )));
        }
        Err(_elapsed) => {
            tracing::info!(%peer, "request refused: body not received in time");
            // the rest of the body is never read: close the connection
            let mut response = reply(Reply::error(
                408,
                format!(
                    "request body not received within {} ms",
                    body_timeout.as_millis()
                ),
            ));
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return Ok(response);
        }
    };
    let form = (!body.is_empty()).then_some(&body[..]);
    Ok(match state.answer(&target, form, peer) {
        Answer::Ready(ready) => {
            let json = ready.content_type == crate::monitor::render::api::JSON;
            let mut response = reply(ready);
            if json {
                operator_view_headers(&mut response);
            }
            response
        }
        // rendered a chunk at a time as hyper writes it: see `stream`
        Answer::Streamed(streamed) => {
            // each holds its snapshot until written: a bounded number at once
            let Ok(permit) = streams.try_acquire_owned() else {
                tracing::debug!(%peer, "request refused: too many whole-registry replies in progress");
                let mut response = reply(Reply::error(
                    503,
                    "too many whole-registry replies in progress: retry in a second",
                ));
                let headers = response.headers_mut();
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(response);
            };
            let content_type = streamed.content_type();
            let no_store = streamed.no_store();
            // sorting the snapshot (100 000 keys: tens of ms) and rendering
            // the first chunk block: not on an async worker, where they
            // would stall every connection it serves
            let body = tokio::task::spawn_blocking(move || {
                ReplyBody::stream(streamed.chunks(CHUNK), permit)
            })
            .await;
            let Ok(body) = body else {
                return Ok(reply(Reply::error(500, "the reply could not be rendered")));
            };
            let close_delimited = version < Version::HTTP_11 && body.is_streamed();
            let mut response = response(200, content_type, body);
            if no_store {
                operator_view_headers(&mut response);
            }
            if close_delimited {
                // its end is the connection's: it cannot be kept alive (an
                // HTTP/1.0 response keeps hyper from adding `keep-alive`)
                *response.version_mut() = Version::HTTP_10;
                let headers = response.headers_mut();
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    })
}

/// The dashboard and its API (history included): never cached, never
/// sniffed as anything else.
fn operator_view_headers(response: &mut Response<ReplyBody>) {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn reply(reply: Reply) -> Response<ReplyBody> {
    response(reply.status, reply.content_type, reply.body.into())
}

fn response(status: u16, content_type: &'static str, body: ReplyBody) -> Response<ReplyBody> {
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(url: &str) -> Url {
        crate::settings::parse_url(url).unwrap()
    }

    #[test]
    fn bind_addresses_come_from_the_url() {
        assert_eq!(
            bind_address(&url("127.0.0.1:8888")).unwrap(),
            "127.0.0.1:8888".parse().unwrap()
        );
        assert_eq!(
            bind_address(&url("http://localhost:9")).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            bind_address(&url("http://[::1]:7")).unwrap(),
            "[::1]:7".parse().unwrap()
        );
        assert_eq!(
            bind_address(&url("http://0.0.0.0")).unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert!(bind_address(&url("http://example.org:7")).is_err());
        assert!(ServerBuilder::from_url(&url("http://example.org:7")).is_err());
        assert_eq!(
            ServerBuilder::from_url(&url("[::1]:7")).unwrap().addr,
            "[::1]:7".parse().unwrap()
        );
    }

    /// A client that stops reading a 40 MB `/metrics` is dropped once the
    /// reply has made no progress for the write timeout: its snapshot is
    /// freed (no key of the registry is shared any more), its reply ends
    /// short, and the server, which holds no lock for it, keeps answering
    /// meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_stalls_is_dropped_and_frees_its_reply() {
        use crate::monitor::ManualClock;
        use std::io::{Read, Write};
        use std::net::TcpStream;
        use std::time::Instant;

        const APPS: usize = 20_000;
        const HANG_GUARD: Duration = Duration::from_secs(60);
        let local = IpAddr::from([127, 0, 0, 1]);
        let server = Server::builder(SocketAddr::new(local, 0))
            .clock(ManualClock::new())
            .max_apps(APPS + 1)
            .write_timeout(Duration::from_millis(300))
            .start()
            .await
            .unwrap();
        let whole = server.registry().with_registry(|registry, now| {
            for i in 0..APPS {
                let id = format!("app-{i:06}-{}", "x".repeat(990));
                registry
                    .init(&id, local, Duration::from_secs(600), now)
                    .unwrap();
            }
            registry.take_events();
            crate::monitor::metrics::render(registry, now).len()
        });
        let held = || {
            server
                .registry()
                .with_registry(|registry, _| registry.keys_held_by_replies())
        };
        assert_eq!(held(), 0);
        let addr = server.local_addr();
        let connect = move |request: &str| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream
        };
        // reads the head of the reply, then nothing
        let mut stalled = tokio::task::spawn_blocking(move || {
            let mut stream = connect("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut head = [0u8; 16];
            stream.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200 OK\r");
            stream
        })
        .await
        .unwrap();
        assert_eq!(held(), APPS, "the reply holds its snapshot");
        let mut other = connect("GET /hb_ping?0&appid=other HTTP/1.0\r\n\r\n");
        let reply = tokio::task::spawn_blocking(move || {
            let mut reply = Vec::new();
            other.read_to_end(&mut reply).unwrap();
            reply
        })
        .await
        .unwrap();
        assert!(reply.ends_with(b"\r\n\r\n1000"), "answered meanwhile");

        let since = Instant::now();
        while held() > 0 {
            assert!(
                since.elapsed() < HANG_GUARD,
                "the stalled reply is never dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rest = tokio::task::spawn_blocking(move || {
            let mut rest = Vec::new();
            stalled
                .read_to_end(&mut rest)
                .expect("the server closed the connection");
            rest
        })
        .await
        .unwrap();
        assert!(
            rest.len() < whole / 2,
            "the client got {} of {whole} bytes: the reply was not dropped",
            rest.len()
        );
        server.shutdown().await;
    }
}

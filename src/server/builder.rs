//! [`Server`] and [`ServerBuilder`]: what a server is configured with, and
//! [`start`](ServerBuilder::start), which opens the state, binds, and spawns
//! the accept loop and the sweeper.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify, Semaphore};

use super::accept::{serve, sweep, Limits};
use super::access::{Access, Protect};
use super::handle::ServerHandle;
use crate::error::Error;
use crate::monitor::metrics::PerAppMetrics;
use crate::monitor::{Clock, EventSink, Expected, RegistryConfig, SharedRegistry, SystemClock};
use crate::settings::Settings;
use url::Url;

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
    per_app_metrics: PerAppMetrics,
    allowed_hosts: Vec<String>,
    protect: Protect,
    #[cfg(feature = "web-config")]
    web_config: Option<super::web_config::WebConfig>,
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
            per_app_metrics: PerAppMetrics::All,
            allowed_hosts: Vec::new(),
            protect: Protect::default(),
            #[cfg(feature = "web-config")]
            web_config: None,
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

    /// The most applications one host may have tracked at once
    /// ([`RegistryConfig::max_apps_per_host`]): past it, that host's new
    /// ones get `503` while other hosts still register. Off by default:
    /// kiosks behind one NAT or proxy all come from one address.
    ///
    /// ```
    /// use heartbeat_sdk::server::Server;
    ///
    /// let builder = Server::builder("127.0.0.1:0".parse().unwrap())
    ///     .max_apps(100_000)
    ///     .max_apps_per_host(1_000);
    /// # drop(builder);
    /// ```
    pub fn max_apps_per_host(mut self, share: usize) -> ServerBuilder {
        self.config.max_apps_per_host = Some(share);
        self
    }

    /// Answer the operator's views (`/`, `/dashboard.js`, `/api/*`,
    /// `/metrics`) only for requests whose `Host` is `name` (any port;
    /// repeat for several) or the address the server was reached at;
    /// others get `421`. This stops a DNS-rebinding page from reading them
    /// through an operator's browser. The reference's paths answer any
    /// `Host`. Without it, any `Host` is served.
    ///
    /// ```
    /// use heartbeat_sdk::server::Server;
    ///
    /// let builder = Server::builder("0.0.0.0:8888".parse().unwrap())
    ///     .allowed_host("monitor.example.org");
    /// # drop(builder);
    /// ```
    pub fn allowed_host(mut self, name: impl Into<String>) -> ServerBuilder {
        self.allowed_hosts.push(name.into());
        self
    }

    /// What the users of a [`web_config`](ServerBuilder::web_config)
    /// protect (default [`Protect::OperatorViews`]).
    pub fn protect(mut self, protect: Protect) -> ServerBuilder {
        self.protect = protect;
        self
    }

    /// TLS and basic auth from a web config file in the Prometheus
    /// exporter-toolkit format ([`WebConfig`](super::WebConfig)): with
    /// `tls_server_config` the server speaks https only; with
    /// `basic_auth_users` the operator's views (and, under
    /// [`Protect::All`], every path) need credentials.
    #[cfg(feature = "web-config")]
    #[cfg_attr(docsrs, doc(cfg(feature = "web-config")))]
    pub fn web_config(mut self, config: super::web_config::WebConfig) -> ServerBuilder {
        self.web_config = Some(config);
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

    /// Which applications get per-application series in `/metrics`
    /// (default [`PerAppMetrics::All`], five series per app). With
    /// [`Problems`](PerAppMetrics::Problems) only the apps that are not OK
    /// have them, so a fleet of a million is a few thousand series and
    /// `heartbeat_app_up == 0` still alerts; `heartbeat_apps_by_state` is
    /// always there.
    ///
    /// ```
    /// use heartbeat_sdk::server::{PerAppMetrics, Server};
    ///
    /// let builder = Server::builder("127.0.0.1:0".parse().unwrap())
    ///     .per_app_metrics(PerAppMetrics::Problems);
    /// # drop(builder);
    /// ```
    pub fn per_app_metrics(mut self, mode: PerAppMetrics) -> ServerBuilder {
        self.per_app_metrics = mode;
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
        if self.config.max_apps_per_host.is_some() && !self.config.key_by_peer {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a share per host needs records keyed by host (`ID @ IP`)",
            ));
        }
        let mut shared = SharedRegistry::new(self.config, self.clock);
        shared.set_per_app_metrics(self.per_app_metrics);
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
        let access = Access::new(&self.allowed_hosts, self.protect);
        #[cfg(feature = "web-config")]
        let (access, tls) = match &self.web_config {
            Some(config) => (
                access.with_web_config(config),
                config.tls_acceptor().map_err(io::Error::other)?,
            ),
            None => (access, None),
        };
        if !self.allowed_hosts.is_empty() || access.has_users() {
            shared.add_sink(access.stats.clone());
        }
        let state = Arc::new(shared);
        let from_anywhere = self
            .expected
            .iter()
            .filter(|app| app.host().is_none())
            .count();
        if from_anywhere > 0 {
            tracing::warn!(
                expected = from_anywhere,
                "expected applications without a host can be satisfied by a beat from any address; \
                 name them `ID @ IP` where the host is known"
            );
        }
        state.with_registry(|registry, _| registry.expect_all(self.expected));
        let (stop, stopped) = oneshot::channel();
        let limits = Limits {
            head_timeout: self.head_timeout,
            write_timeout: self.write_timeout,
            max_connections: self.max_connections,
            max_streamed_replies: self.max_streamed_replies,
        };
        let task = tokio::spawn(serve(
            listener,
            state.clone(),
            Arc::new(access),
            #[cfg(feature = "web-config")]
            tls.clone(),
            limits,
            stopped,
        ));
        tracing::info!(
            %local_addr,
            max_connections = self.max_connections,
            "heartbeat server listening"
        );
        let sweeper = tokio::spawn(sweep(Arc::clone(&state), wake));
        Ok(ServerHandle {
            local_addr,
            #[cfg(feature = "web-config")]
            tls,
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
}

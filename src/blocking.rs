//! A synchronous client for programs without an async runtime (feature
//! `blocking`).
//!
//! [`HeartbeatClient`] has the async client's methods, minus `async`. It is
//! configured by the async client's [`ClientBuilder`]
//! and built with [`build_blocking`](crate::ClientBuilder::build_blocking)
//! (or wrapped around an async client with
//! [`from_async`](HeartbeatClient::from_async)). Each
//! client owns a worker thread that runs a small current-thread tokio runtime;
//! a call hands its request to the worker and blocks the calling thread until
//! the reply comes back over a standard channel.
//!
//! Unlike `reqwest::blocking`, it is safe to create, use and drop from
//! anywhere, tokio runtimes included: the calling thread only waits on a
//! channel, never enters or drops a runtime. (Blocking a runtime thread is
//! still a bad idea in async code: prefer the async client there, or
//! `spawn_blocking`.)
//!
//! ```no_run
//! # #[cfg(any(feature = "reqwest", feature = "surf"))]
//! # fn main() -> heartbeat_sdk::Result<()> {
//! use std::time::Duration;
//! use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
//!
//! let client = HeartbeatClient::builder().url("127.0.0.1:8888").app_id("kiosk-7").build_blocking()?;
//! client.init(Duration::from_millis(500), ErrorPolicy::Raise)?;
//! client.ping(Duration::from_secs(1), ErrorPolicy::Raise)?;
//! println!("{}", client.status(Some("kiosk-7"), ErrorPolicy::Raise)?);
//! client.done_now(ErrorPolicy::Raise)?;
//! # Ok(()) }
//! # #[cfg(not(any(feature = "reqwest", feature = "surf")))] fn main() {}
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::client::{AppCheck, ClientBuilder};
use crate::error::{Error, Result};
use crate::keepalive::{KeepAlive, KeepAliveState};
use crate::policy::ErrorPolicy;
use crate::protocol::Status;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The worker: a thread running a current-thread runtime that spawns every
/// job it is sent. It ends when the last sender (client or keep-alive
/// handle) is dropped; nobody ever joins it.
#[derive(Clone)]
struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    runtime: tokio::runtime::Handle,
}

/// The worker thread stopped (it never should); the call did not run.
struct WorkerGone;

impl Worker {
    fn start() -> Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::build("cannot build the blocking client's worker runtime", e))?;
        let handle = runtime.handle().clone();
        let (jobs, mut receiver) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("heartbeat-blocking".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(job) = receiver.recv().await {
                        tokio::spawn(job);
                    }
                });
                // all senders gone: drop the runtime here, on its own thread
                runtime.shutdown_background();
            })
            .map_err(|e| Error::build("cannot start the blocking client's worker thread", e))?;
        Ok(Worker {
            jobs,
            runtime: handle,
        })
    }

    /// Run `future` on the worker and block until it is done.
    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, WorkerGone> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::pin(async move {
            let _ = reply.send(future.await);
        });
        self.jobs.send(job).map_err(|_| WorkerGone)?;
        answer.recv().map_err(|_| WorkerGone)
    }
}

/// The error of a call the stopped worker could not run.
fn worker_gone() -> Error {
    Error::task("the blocking client's worker thread has stopped")
}

/// A synchronous client of one heartbeat server for one application id.
///
/// Same methods as the async [`crate::HeartbeatClient`], blocking. Cheap to
/// clone: clones share the worker thread. Dropping the last clone (and the
/// last [`KeepAliveHandle`]) lets the worker thread end by itself; `Drop`
/// never joins or blocks.
///
/// ```no_run
/// # #[cfg(any(feature = "reqwest", feature = "surf"))]
/// # fn main() -> heartbeat_sdk::Result<()> {
/// use std::time::Duration;
/// use heartbeat_sdk::blocking::HeartbeatClient;
/// use heartbeat_sdk::ErrorPolicy;
///
/// let client = HeartbeatClient::from_env()?; // HB_URL / HB_HOST / HB_PORT / APP_ID
/// let granted = client.init(Duration::from_millis(500), ErrorPolicy::Raise)?;
/// println!("server expects us within {granted:?}");
/// # Ok(()) }
/// # #[cfg(not(any(feature = "reqwest", feature = "surf")))] fn main() {}
/// ```
#[derive(Clone)]
pub struct HeartbeatClient {
    client: crate::HeartbeatClient,
    worker: Worker,
}

impl fmt::Debug for HeartbeatClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::HeartbeatClient")
            .field(&self.client)
            .finish()
    }
}

#[cfg(default_transport)]
#[cfg_attr(docsrs, doc(cfg(any(feature = "reqwest", feature = "surf"))))]
impl HeartbeatClient {
    /// A client configured from `HB_URL`, `HB_HOST`, `HB_PORT` and `APP_ID`
    /// over the default transport, like [`crate::HeartbeatClient::from_env`].
    ///
    /// ```no_run
    /// let client = heartbeat_sdk::blocking::HeartbeatClient::from_env().unwrap();
    /// # let _ = client;
    /// ```
    pub fn from_env() -> Result<HeartbeatClient> {
        crate::HeartbeatClient::builder()
            .settings(crate::Settings::from_env()?)
            .build_blocking()
    }
}

impl HeartbeatClient {
    /// Wrap an async client (it keeps its transport, settings and retry
    /// policy) and start a worker thread for it. To configure a new one, use
    /// [`ClientBuilder::build_blocking`](crate::ClientBuilder::build_blocking).
    ///
    /// # Errors
    ///
    /// [`Error::Build`] when the worker thread or its runtime cannot be
    /// started.
    ///
    /// ```
    /// # #[cfg(feature = "mock")] {
    /// use heartbeat_sdk::testing::MockTransport;
    /// let client = heartbeat_sdk::HeartbeatClient::builder_with_transport(MockTransport::new()).build().unwrap();
    /// let blocking = heartbeat_sdk::blocking::HeartbeatClient::from_async(client).unwrap();
    /// # let _ = blocking;
    /// # }
    /// ```
    pub fn from_async(client: crate::HeartbeatClient) -> Result<HeartbeatClient> {
        Ok(HeartbeatClient {
            client,
            worker: Worker::start()?,
        })
    }

    /// The async client behind this one.
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) {
    /// let async_client: &heartbeat_sdk::HeartbeatClient = client.as_async();
    /// # let _ = async_client; }
    /// ```
    pub fn as_async(&self) -> &crate::HeartbeatClient {
        &self.client
    }

    /// The server's base URL, without a trailing `/`.
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) {
    /// println!("{}", client.url());
    /// # }
    /// ```
    pub fn url(&self) -> &str {
        self.client.url()
    }

    /// This client's application id.
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) {
    /// println!("{}", client.app_id());
    /// # }
    /// ```
    pub fn app_id(&self) -> &str {
        self.client.app_id()
    }

    /// `hb_init`: register, promising a ping within `timeout`; returns the
    /// timeout the server granted. See [`crate::HeartbeatClient::init`].
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use std::time::Duration;
    /// let granted = client.init(Duration::from_secs(2), heartbeat_sdk::ErrorPolicy::Raise)?;
    /// # let _ = granted; Ok(()) }
    /// ```
    pub fn init(&self, timeout: Duration, policy: ErrorPolicy<Duration>) -> Result<Duration> {
        self.call(policy, move |c, p| async move { c.init(timeout, p).await })
    }

    /// `hb_ping`: alive, promising the next ping within `timeout`; returns
    /// the timeout the server granted. See [`crate::HeartbeatClient::ping`].
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use std::time::Duration;
    /// use heartbeat_sdk::ErrorPolicy;
    /// client.ping(Duration::from_secs(2), ErrorPolicy::Fallback(Duration::ZERO))?;
    /// # Ok(()) }
    /// ```
    pub fn ping(&self, timeout: Duration, policy: ErrorPolicy<Duration>) -> Result<Duration> {
        self.call(policy, move |c, p| async move { c.ping(timeout, p).await })
    }

    /// `hb_done`: deregister, promising to be gone within `timeout`; returns
    /// the goodbye.
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use std::time::Duration;
    /// client.done(Duration::from_secs(1), heartbeat_sdk::ErrorPolicy::Raise)?;
    /// # Ok(()) }
    /// ```
    pub fn done(&self, timeout: Duration, policy: ErrorPolicy<String>) -> Result<String> {
        self.call(policy, move |c, p| async move { c.done(timeout, p).await })
    }

    /// `hb_done` with the default timeout of 0.
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// client.done_now(heartbeat_sdk::ErrorPolicy::Raise)?;
    /// # Ok(()) }
    /// ```
    pub fn done_now(&self, policy: ErrorPolicy<String>) -> Result<String> {
        self.call(policy, |c, p| async move { c.done_now(p).await })
    }

    /// `/list`: the applications the server tracks.
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// for app in client.list(heartbeat_sdk::ErrorPolicy::Raise)? {
    ///     println!("{app}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn list(&self, policy: ErrorPolicy<Vec<String>>) -> Result<Vec<String>> {
        self.call(policy, |c, p| async move { c.list(p).await })
    }

    /// `/list`, then `/status` of every listed application, a few at a
    /// time ([`crate::HeartbeatClient::status_all`]).
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// for app in client.status_all(heartbeat_sdk::ErrorPolicy::Raise)? {
    ///     println!("{}: {:?}", app.key, app.answer);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn status_all(&self, policy: ErrorPolicy<Vec<AppCheck>>) -> Result<Vec<AppCheck>> {
        // Not through `call`: an `AppCheck` holds an `Error`, which is not
        // `Clone`. Only a failed `/list` (or a dead worker) fails the call.
        let client = self.client.clone();
        match self
            .worker
            .run(async move { client.status_all(ErrorPolicy::Raise).await })
        {
            Ok(Ok(checks)) => Ok(checks),
            Ok(Err(error)) => policy.recover(self.client.url(), error),
            Err(WorkerGone) => policy.recover(self.client.url(), worker_gone()),
        }
    }

    /// `GET /api/v1/apps`: every tracked and missing application in one
    /// document ([`crate::HeartbeatClient::apps`]).
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// let apps = client.apps(heartbeat_sdk::ErrorPolicy::Raise)?;
    /// println!("{} applications", apps.apps.len());
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub fn apps(
        &self,
        policy: ErrorPolicy<crate::protocol::apps::Apps>,
    ) -> Result<crate::protocol::apps::Apps> {
        self.call(policy, |c, p| async move { c.apps(p).await })
    }

    /// One page of `GET /api/v1/apps`: the async
    /// [`apps_page`](crate::HeartbeatClient::apps_page) (feature `serde`).
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use heartbeat_sdk::protocol::apps::{AppState, AppsQuery};
    /// let query = AppsQuery::new().state(AppState::Critical);
    /// let page = client.apps_page(&query, heartbeat_sdk::ErrorPolicy::Raise)?;
    /// println!("{} critical", page.counts.critical);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub fn apps_page(
        &self,
        query: &crate::protocol::apps::AppsQuery,
        policy: ErrorPolicy<crate::protocol::apps::Apps>,
    ) -> Result<crate::protocol::apps::Apps> {
        let query = query.clone();
        self.call(policy, |c, p| async move { c.apps_page(&query, p).await })
    }

    /// `/status`: the host's status (`None`) or one application's.
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// let status = client.status(Some("kiosk-7"), heartbeat_sdk::ErrorPolicy::Raise)?;
    /// std::process::exit(status.state().exit_code().into());
    /// # }
    /// ```
    pub fn status(&self, app: Option<&str>, policy: ErrorPolicy<Status>) -> Result<Status> {
        let app = app.map(str::to_owned);
        self.call(policy, move |c, p| async move {
            c.status(app.as_deref(), p).await
        })
    }

    /// `GET path`: the reply body as text.
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// let metrics = client.get("/metrics", heartbeat_sdk::ErrorPolicy::Raise)?;
    /// # let _ = metrics; Ok(()) }
    /// ```
    pub fn get(&self, path: &str, policy: ErrorPolicy<String>) -> Result<String> {
        let path = path.to_owned();
        self.call(policy, move |c, p| async move { c.get(&path, p).await })
    }

    /// `POST path` with an encoded form body: the reply body as text.
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// client.post("/hb_done?0&appid=x", "appid=x", heartbeat_sdk::ErrorPolicy::Raise)?;
    /// # Ok(()) }
    /// ```
    pub fn post(&self, path: &str, form: &str, policy: ErrorPolicy<String>) -> Result<String> {
        let (path, form) = (path.to_owned(), form.to_owned());
        self.call(
            policy,
            move |c, p| async move { c.post(&path, &form, p).await },
        )
    }

    /// Start a keep-alive task on the worker thread (see
    /// [`crate::HeartbeatClient::keep_alive`] and [`KeepAlive`]); it runs
    /// until the handle is shut down or dropped, whatever the calling thread
    /// does meanwhile.
    ///
    /// ```no_run
    /// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use std::time::Duration;
    /// use heartbeat_sdk::KeepAlive;
    ///
    /// let keep_alive = client.keep_alive(KeepAlive::every(Duration::from_secs(5)));
    /// // ... the program's own synchronous work ...
    /// keep_alive.shutdown()?;
    /// # Ok(()) }
    /// ```
    pub fn keep_alive(&self, config: KeepAlive) -> KeepAliveHandle {
        KeepAliveHandle {
            inner: self.client.keep_alive_on(&self.worker.runtime, config),
            worker: self.worker.clone(),
        }
    }

    /// Run one async call on the worker; apply `policy` to a dead worker too.
    fn call<T, F, Fut>(&self, policy: ErrorPolicy<T>, f: F) -> Result<T>
    where
        T: Clone + Send + 'static,
        F: FnOnce(crate::HeartbeatClient, ErrorPolicy<T>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let on_failure = policy.clone();
        match self.worker.run(f(self.client.clone(), policy)) {
            Ok(result) => result,
            Err(WorkerGone) => on_failure.recover(self.client.url(), worker_gone()),
        }
    }
}

/// The blocking client is configured like the async one; only the last
/// step differs.
impl ClientBuilder {
    /// Build a [`blocking::HeartbeatClient`](HeartbeatClient)
    /// with these settings: [`build`](ClientBuilder::build), then start its worker
    /// thread. The one way to configure a blocking client.
    ///
    /// # Errors
    ///
    /// Those of [`build`](ClientBuilder::build), and [`Error::Build`] when the worker
    /// thread or its runtime cannot be started.
    ///
    /// ```
    /// # #[cfg(feature = "mock")] {
    /// use heartbeat_sdk::testing::MockTransport;
    /// use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
    ///
    /// let client = HeartbeatClient::builder_with_transport(MockTransport::new())
    ///     .app_id("kiosk-7")
    ///     .build_blocking()
    ///     .unwrap();
    /// let granted = client.init(std::time::Duration::from_secs(2), ErrorPolicy::Raise).unwrap();
    /// assert_eq!(granted, std::time::Duration::from_secs(3));
    /// # }
    /// ```
    pub fn build_blocking(self) -> Result<crate::blocking::HeartbeatClient> {
        HeartbeatClient::from_async(self.build()?)
    }
}

/// A keep-alive task running on a blocking client's worker thread (see
/// [`HeartbeatClient::keep_alive`]).
///
/// Dropping it without [`shutdown`](Self::shutdown) aborts the task and sends
/// **no** `hb_done`, exactly like the async
/// [`KeepAliveHandle`](crate::KeepAliveHandle); `Drop` never blocks.
///
/// ```no_run
/// # fn run(client: heartbeat_sdk::blocking::HeartbeatClient) -> heartbeat_sdk::Result<()> {
/// use std::time::Duration;
/// let keep_alive = client.keep_alive(heartbeat_sdk::KeepAlive::every(Duration::from_secs(1)));
/// keep_alive.set_interval(Duration::from_secs(10));
/// println!("{} beats so far", keep_alive.state().beats_ok);
/// keep_alive.shutdown()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "dropping a KeepAliveHandle stops the keep-alive at once, without hb_done"]
pub struct KeepAliveHandle {
    inner: crate::KeepAliveHandle,
    worker: Worker,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Worker")
    }
}

impl KeepAliveHandle {
    /// Change the interval; see [`crate::KeepAliveHandle::set_interval`]
    /// (a beat now, then the new rate; zero pauses).
    ///
    /// ```no_run
    /// # fn run(keep_alive: heartbeat_sdk::blocking::KeepAliveHandle) {
    /// keep_alive.set_interval(std::time::Duration::ZERO); // pause
    /// # }
    /// ```
    pub fn set_interval(&self, interval: Duration) {
        self.inner.set_interval(interval);
    }

    /// The interval last set.
    ///
    /// ```no_run
    /// # fn run(keep_alive: heartbeat_sdk::blocking::KeepAliveHandle) {
    /// println!("{:?}", keep_alive.interval());
    /// # }
    /// ```
    pub fn interval(&self) -> Duration {
        self.inner.interval()
    }

    /// A snapshot of what the task has done so far.
    ///
    /// ```no_run
    /// # fn run(keep_alive: heartbeat_sdk::blocking::KeepAliveHandle) {
    /// assert_eq!(keep_alive.state().consecutive_failures, 0);
    /// # }
    /// ```
    pub fn state(&self) -> KeepAliveState {
        self.inner.state()
    }

    /// A receiver told of every state change (its `borrow` and
    /// `has_changed` work without a runtime).
    ///
    /// ```no_run
    /// # fn run(keep_alive: heartbeat_sdk::blocking::KeepAliveHandle) {
    /// let states = keep_alive.subscribe();
    /// println!("{}", states.borrow().beats_ok);
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<KeepAliveState> {
        self.inner.subscribe()
    }

    /// Stop the task, send `hb_done` and return the goodbye, bounded by
    /// [`KeepAlive::shutdown_timeout`]; see
    /// [`crate::KeepAliveHandle::shutdown`].
    ///
    /// ```no_run
    /// # fn run(keep_alive: heartbeat_sdk::blocking::KeepAliveHandle) -> heartbeat_sdk::Result<()> {
    /// let goodbye = keep_alive.shutdown()?;
    /// # let _ = goodbye; Ok(()) }
    /// ```
    pub fn shutdown(self) -> Result<String> {
        let KeepAliveHandle { inner, worker } = self;
        worker
            .run(inner.shutdown())
            .unwrap_or_else(|WorkerGone| Err(worker_gone()))
    }
}

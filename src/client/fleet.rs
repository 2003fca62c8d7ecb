//! The calls over every application: [`HeartbeatClient::status_all`]
//! (`/list`, then each `/status`, a few at a time), `apps` and `events`
//! (the JSON API).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

#[cfg(feature = "serde")]
use crate::error::Error;
use crate::error::Result;
use crate::policy::ErrorPolicy;
use crate::protocol::{self, AppAnswer};

use super::HeartbeatClient;

/// Most `/status` requests [`HeartbeatClient::status_all`] has in flight
/// at once: enough to hide the latency of a remote server, few enough that
/// 100 000 applications never mean 100 000 connections.
pub const STATUS_ALL_CONCURRENCY: usize = 8;

/// One listed application and what its status query answered
/// ([`HeartbeatClient::status_all`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct AppCheck {
    /// The key as `/list` printed it (`ID @ IP`, or the bare id).
    pub key: String,
    /// The answer to `/status?appid=ID`, classified for this key, or why
    /// there was none.
    pub answer: Result<AppAnswer>,
}

impl AppCheck {
    /// An application checked elsewhere (a test, another source).
    pub fn new(key: impl Into<String>, answer: Result<AppAnswer>) -> AppCheck {
        AppCheck {
            key: key.into(),
            answer,
        }
    }
}

impl HeartbeatClient {
    /// Every listed application's status: `/list`, then
    /// `/status?appid=ID` for each key, at most [`STATUS_ALL_CONCURRENCY`]
    /// at once; the results in `/list`'s order.
    ///
    /// Each key is queried by its id, the part before its **last** `" @ "`
    /// ([`protocol::split_key`]): a query by the whole key `ID @ IP` is
    /// looked up as `ID @ IP @ ASKER_IP` by the reference and by our server
    /// (when it keys by peer, the default) and never matches. A bare id is
    /// looked up as `ID @ ASKER_IP`, so only the applications of the host
    /// the server sees this client coming from can be answered about; the
    /// key in brackets in the answer tells which record was looked up, and
    /// [`AppAnswer::classify`] sorts each answer into the app's own status,
    /// [`Gone`](AppAnswer::Gone) (done or expired since `/list`: the call
    /// goes on) or [`OtherHost`](AppAnswer::OtherHost) (the server answered
    /// about another record, or had none, for an application of another
    /// host). A server that keys by the bare id lists bare ids, and every
    /// app is answered about.
    ///
    /// Only a failed `/list` fails the call (and goes through `policy`);
    /// a failed status request is that application's
    /// [`AppCheck::answer`] error.
    ///
    /// ```no_run
    /// # #[cfg(feature = "reqwest")]
    /// # async fn run() -> heartbeat_sdk::Result<()> {
    /// use heartbeat_sdk::protocol::AppAnswer;
    /// use heartbeat_sdk::{ErrorPolicy, HeartbeatClient};
    ///
    /// let client = HeartbeatClient::from_env()?;
    /// for app in client.status_all(ErrorPolicy::Raise).await? {
    ///     match &app.answer {
    ///         Ok(AppAnswer::Status(status)) => println!("{}: {}", app.key, status.state()),
    ///         Ok(other) => println!("{}: {other:?}", app.key),
    ///         Err(error) => println!("{}: {error}", app.key),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn status_all(&self, policy: ErrorPolicy<Vec<AppCheck>>) -> Result<Vec<AppCheck>> {
        let keys = match self.list(ErrorPolicy::Raise).await {
            Ok(keys) => keys,
            Err(error) => return policy.recover(&self.inner.base, error),
        };
        Ok(self.check_keys(keys).await)
    }

    /// The status of each of `keys`, at most [`STATUS_ALL_CONCURRENCY`]
    /// requests in flight, in the order of `keys`. Runtime-agnostic: the
    /// in-flight requests are polled by hand, no task is spawned.
    async fn check_keys(&self, keys: Vec<String>) -> Vec<AppCheck> {
        type Running<'a> = Pin<Box<dyn Future<Output = (usize, AppCheck)> + Send + 'a>>;
        let mut done: Vec<Option<AppCheck>> = Vec::with_capacity(keys.len());
        done.resize_with(keys.len(), || None);
        let mut pending = keys.into_iter().enumerate();
        let mut running: Vec<Running<'_>> = Vec::with_capacity(STATUS_ALL_CONCURRENCY);
        loop {
            while running.len() < STATUS_ALL_CONCURRENCY {
                let Some((index, key)) = pending.next() else {
                    break;
                };
                running.push(Box::pin(async move { (index, self.check_key(key).await) }));
            }
            if running.is_empty() {
                break;
            }
            let (slot, (index, check)) = std::future::poll_fn(|cx| {
                for (slot, future) in running.iter_mut().enumerate() {
                    if let Poll::Ready(out) = future.as_mut().poll(cx) {
                        return Poll::Ready((slot, out));
                    }
                }
                Poll::Pending
            })
            .await;
            drop(running.swap_remove(slot));
            done[index] = Some(check);
        }
        done.into_iter().flatten().collect()
    }

    async fn check_key(&self, key: String) -> AppCheck {
        let (id, _) = protocol::split_key(&key);
        let answer = self
            .status(Some(id), ErrorPolicy::Raise)
            .await
            .map(|status| AppAnswer::classify(&key, status));
        AppCheck { key, answer }
    }

    /// `GET /api/v1/apps` (feature `serde`): every tracked and expected
    /// application with its state, the server's thresholds, counters and
    /// per-state counts, as typed records (the document of the project's
    /// `docs/api-v1.md`).
    ///
    /// It reads the listing a page of [`MAX_PAGE_LIMIT`](protocol::apps::MAX_PAGE_LIMIT)
    /// at a time, in key order, following each page's cursor, and returns
    /// them as one document (`page` is `None`; the thresholds, counters and
    /// counts are the last page's). The pages are snapshots of a moving
    /// fleet: an application that appears or goes between two pages may be
    /// missed or listed twice. A server without pages (an earlier version)
    /// answers the whole listing at once: the first reply is read up to
    /// [`protocol::max_apps_body`] for the client's `max_apps`, the next
    /// pages up to [`max_page_body`](protocol::apps::max_page_body); and
    /// more than `max_apps` applications in all is an [`Error::Parse`] (see
    /// [Body caps](HeartbeatClient#body-caps)).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] from a server without the JSON API (the
    /// reference answers `400`), or one that answers text or HTML;
    /// [`Error::Parse`], with the body, for JSON that is not the
    /// document, and for pages that do not end; and the errors of every
    /// call.
    ///
    /// ```no_run
    /// # async fn run(client: heartbeat_sdk::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use heartbeat_sdk::protocol::apps::{AppState, Apps};
    /// use heartbeat_sdk::{Error, ErrorPolicy};
    ///
    /// match client.apps(ErrorPolicy::Raise).await {
    ///     Ok(apps) => {
    ///         for app in apps.apps.iter().filter(|app| app.state != AppState::Ok) {
    ///             println!("{} is {}", app.key, app.state);
    ///         }
    ///     }
    ///     Err(Error::Unsupported { .. }) => println!("an older server: use list() and status()"),
    ///     Err(error) => return Err(error),
    /// }
    /// // or: an empty document when anything fails
    /// let apps = client.apps(ErrorPolicy::Fallback(Apps::default())).await?;
    /// # let _ = apps; Ok(()) }
    /// ```
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub async fn apps(
        &self,
        policy: ErrorPolicy<protocol::apps::Apps>,
    ) -> Result<protocol::apps::Apps> {
        let all = async {
            let mut query = protocol::apps::AppsQuery::new().limit(protocol::apps::MAX_PAGE_LIMIT);
            let whole = protocol::max_apps_body(self.inner.max_apps);
            let mut all = self.fetch_page(&query, whole).await?;
            let page_cap = protocol::apps::max_page_body(protocol::apps::MAX_PAGE_LIMIT);
            let mut last_page = all.apps.len();
            // every cursor handed out so far: a server going round in a
            // circle (A, B, A, ...) is caught at its first repeat
            let mut seen = std::collections::HashSet::new();
            while let Some(cursor) = all.page.take().and_then(|page| page.next_cursor) {
                // a page that names a next one must hold a row and move on
                let stuck = last_page == 0 || !seen.insert(cursor.clone());
                if stuck || all.apps.len() > self.inner.max_apps {
                    return Err(Error::Parse {
                        url: format!("{}{}", self.inner.base, protocol::apps::APPS_PATH),
                        reason: if stuck {
                            "an empty page, or a cursor handed out before: the pages do not end"
                                .to_owned()
                        } else {
                            format!(
                                "more than max_apps ({}) applications in the pages",
                                self.inner.max_apps
                            )
                        },
                        body: String::new(),
                    });
                }
                query = query.after(cursor);
                let next = self.fetch_page(&query, page_cap).await?;
                last_page = next.apps.len();
                all.apps.extend(next.apps);
                all = protocol::apps::Apps {
                    apps: all.apps,
                    ..next
                };
            }
            Ok(all)
        };
        all.await
            .or_else(|error| policy.recover(&self.inner.base, error))
    }

    /// One page of `GET /api/v1/apps` (feature `serde`): the applications
    /// `query` selects (states, a search, an order, a limit, a cursor), the
    /// whole server's counts, and in `page` how many match and the cursor
    /// of the next page. Read up to
    /// [`max_page_body`](protocol::apps::max_page_body) for the query's
    /// limit.
    ///
    /// # Errors
    /// As [`apps`](Self::apps); a server without pages (an earlier
    /// version) answers its whole listing, which is a transport
    /// error past the page's cap ([`TransportError::is_body_too_large`](crate::TransportError::is_body_too_large)).
    ///
    /// ```no_run
    /// # async fn run(client: heartbeat_sdk::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use heartbeat_sdk::protocol::apps::{AppState, AppsQuery, AppsSort};
    /// use heartbeat_sdk::ErrorPolicy;
    ///
    /// // the worst 20, of the problems only
    /// let query = AppsQuery::new()
    ///     .state(AppState::Critical)
    ///     .state(AppState::Missing)
    ///     .state(AppState::Warning)
    ///     .sort(AppsSort::Overdue)
    ///     .limit(20);
    /// let page = client.apps_page(&query, ErrorPolicy::Raise).await?;
    /// println!("{} need attention", page.page.map_or(0, |p| p.matched));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub async fn apps_page(
        &self,
        query: &protocol::apps::AppsQuery,
        policy: ErrorPolicy<protocol::apps::Apps>,
    ) -> Result<protocol::apps::Apps> {
        let cap = protocol::apps::max_page_body(query.effective_limit());
        self.fetch_page(query, cap)
            .await
            .or_else(|error| policy.recover(&self.inner.base, error))
    }

    /// One page, read up to `cap`, failures raised.
    #[cfg(feature = "serde")]
    async fn fetch_page(
        &self,
        query: &protocol::apps::AppsQuery,
        cap: usize,
    ) -> Result<protocol::apps::Apps> {
        self.json_call(
            || query.request(),
            cap,
            protocol::apps::parse_apps,
            ErrorPolicy::Raise,
        )
        .await
    }

    /// The history of one application (`GET /api/v1/events`, our server's
    /// JSON API; feature `serde`): its state changes, newest first, as
    /// [`Events`](protocol::history::Events). The server keeps the last
    /// 100 per application id in memory.
    ///
    /// # Errors
    /// As [`apps`](Self::apps): [`Error::Unsupported`] from a server
    /// without it (the reference answers `400`), [`Error::Parse`] for
    /// another document.
    ///
    /// ```no_run
    /// # async fn run(client: heartbeat_sdk::HeartbeatClient) -> heartbeat_sdk::Result<()> {
    /// use heartbeat_sdk::protocol::history::EventsQuery;
    /// use heartbeat_sdk::ErrorPolicy;
    ///
    /// let history = client.events(&EventsQuery::new("kiosk-3").limit(20), ErrorPolicy::Raise).await?;
    /// for event in &history.events {
    ///     println!("{} {}", event.at, event.event.name());
    /// }
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub async fn events(
        &self,
        query: &protocol::history::EventsQuery,
        policy: ErrorPolicy<protocol::history::Events>,
    ) -> Result<protocol::history::Events> {
        use protocol::history;
        let build = || query.request();
        self.json_call(
            build,
            history::MAX_EVENTS_BODY,
            history::parse_events,
            policy,
        )
        .await
    }

    /// GETs one of the server's JSON documents: `Unsupported` from a server
    /// without it (400, 404, 405, or text / HTML), `Parse` for a document
    /// `parse` refuses.
    #[cfg(feature = "serde")]
    async fn json_call<T>(
        &self,
        build: impl Fn() -> protocol::Request + Send + Sync,
        cap: usize,
        parse: fn(&[u8]) -> std::result::Result<T, protocol::ParseError>,
        policy: ErrorPolicy<T>,
    ) -> Result<T> {
        let build = |_: &str| build();
        let result = async {
            let sent = (self.inner.retry)
                .run(self.inner.request_timeout, |timeout| {
                    self.send_once(&build, timeout, cap)
                })
                .await;
            let (url, body) = match sent {
                Err(Error::Status { url, status, .. }) if matches!(status, 400 | 404 | 405) => {
                    return Err(Error::Unsupported { url, status })
                }
                other => other?,
            };
            if !protocol::apps::is_json_document(&body) {
                return Err(Error::Unsupported { url, status: 200 });
            }
            parse(&body).map_err(|e| Error::Parse {
                url,
                reason: e.reason().to_owned(),
                // an excerpt, as everywhere: a whole listing is megabytes
                body: protocol::excerpt(&body),
            })
        };
        result
            .await
            .or_else(|error| policy.recover(&self.inner.base, error))
    }
}

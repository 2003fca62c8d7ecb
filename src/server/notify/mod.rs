//! Notifications (feature `notify`): every state change to webhooks, and
//! CRITICAL applications as alerts to Alertmanager, off the request path.
//!
//! [`NotifySink`] is an [`EventSink`]: under the registry's lock it only
//! turns events into [`StateChange`]s and alert updates and queues them
//! (no I/O, no await). Tasks deliver them:
//! - a webhook ([`webhook`]) has [`LANES`](webhook::LANES) lanes, each a queue delivered
//!   in order, one request at a time, retried until the receiver accepts
//!   it; an application always maps to the same lane, so its changes
//!   arrive in order while other applications' go out beside them;
//! - an Alertmanager ([`alertmanager`]) gets the changed alerts at once and
//!   every active (and recently resolved) alert again every resend
//!   interval, each URL on its own.
//!
//! [`deliver`] holds what both share: the HTTP client, the retry loop with
//! jittered backoff, the per-sink counters and the once-per-burst log.

mod alertmanager;
mod deliver;
mod webhook;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;
use url::Url;

use crate::monitor::{Clock, Event, EventSink, Registry};
use crate::protocol::notification::StateChange;
use crate::protocol::{format_time, RecordKey};
use crate::RetryPolicy;

use alertmanager::{AlertBook, AlertmanagerTarget};
use deliver::{Delivery, SinkStats};
use webhook::WebhookTarget;

/// How long an active alert's `endsAt` reaches ahead, in resend intervals:
/// an alert of a server that died resolves by itself after that.
pub const ALERT_LIFETIME_RESENDS: u32 = 4;
/// The default resend interval of active alerts (`--alert-resend`).
pub const DEFAULT_ALERT_RESEND: Duration = Duration::from_secs(60);
/// How long a resolved alert is re-sent (Alertmanager keeps no state
/// across its own restart): 15 minutes, as Prometheus does.
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);
/// The timeout of one delivery request.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most notifications waiting per webhook; past it new ones are
/// dropped, counted in `heartbeat_notifications_dropped_total`, and logged
/// once per burst.
pub const MAX_PENDING: usize = 100_000;

/// The body a webhook receives (`serve --webhook-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WebhookFormat {
    /// One [`StateChange`] JSON document per change (`docs/notifications.md`).
    #[default]
    Json,
    /// A Slack / Mattermost incoming-webhook message: `{"text": "..."}`,
    /// one line, ids in code spans with the characters that would format,
    /// link or mention escaped.
    Slack,
}

impl FromStr for WebhookFormat {
    type Err = String;

    /// `json` or `slack`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "json" => Ok(WebhookFormat::Json),
            "slack" => Ok(WebhookFormat::Slack),
            other => Err(format!(
                "unknown webhook format {:?}: json or slack",
                crate::protocol::printable(other)
            )),
        }
    }
}

/// What the server notifies, where, and how (set through the
/// `ServerBuilder`'s `webhook`, `alertmanager`, `alert_resend`,
/// `alert_on_warning`, `notify_min_interval`, `notify_retry`,
/// `external_url`).
#[derive(Debug, Clone)]
pub(crate) struct NotifyConfig {
    pub(crate) webhooks: Vec<(Url, WebhookFormat)>,
    pub(crate) alertmanagers: Vec<Url>,
    pub(crate) alert_resend: Duration,
    pub(crate) alert_on_warning: bool,
    pub(crate) min_interval: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) external_url: Option<Url>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhooks: Vec::new(),
            alertmanagers: Vec::new(),
            alert_resend: DEFAULT_ALERT_RESEND,
            alert_on_warning: false,
            min_interval: Duration::ZERO,
            retry: RetryPolicy::new(u32::MAX)
                .initial_backoff(Duration::from_millis(500))
                .max_backoff(Duration::from_secs(60)),
            external_url: None,
        }
    }
}

impl NotifyConfig {
    pub(crate) fn is_empty(&self) -> bool {
        self.webhooks.is_empty() && self.alertmanagers.is_empty()
    }
}

/// Where webhook notifications wait durably (the `--state` file's outbox):
/// written when queued, deleted when the receiver took it.
pub(crate) trait Outbox: Send + Sync {
    /// Notification `seq` for the webhook `sink`, as JSON.
    fn add(&self, seq: u64, sink: &str, body: Vec<u8>);
    /// Notification `seq` is delivered (or refused for good).
    fn done(&self, seq: u64);
}

#[cfg(feature = "state")]
impl Outbox for super::state::StateSink {
    fn add(&self, seq: u64, sink: &str, body: Vec<u8>) {
        self.outbox_add(super::state::OutboxEntry {
            seq,
            sink: sink.to_owned(),
            body,
        });
    }

    fn done(&self, seq: u64) {
        self.outbox_done(seq);
    }
}

/// The outbox and what it held at start (oldest first): `(seq, sink, body)`.
pub(crate) struct Durable {
    pub(crate) outbox: Arc<dyn Outbox>,
    pub(crate) stored: Vec<(u64, String, Vec<u8>)>,
}

/// The links a notification carries: the server's URL (`external_url`, or
/// `http://` and the address it listens on) and its dashboard.
#[derive(Debug, Clone)]
struct Links {
    server: String,
    dashboard: String,
}

/// The notifier of a running server: its sink (added to the registry) and
/// its delivery tasks (aborted at shutdown; webhooks' queues are in memory).
pub(crate) struct Notifier {
    pub(crate) sink: Arc<NotifySink>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the delivery tasks of `config` for a server at `local_addr`.
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS backend for an `https` URL
    /// is not an error here: that delivery fails and is retried, logged).
    pub(crate) fn spawn(
        config: NotifyConfig,
        local_addr: std::net::SocketAddr,
        clock: Arc<dyn Clock>,
        durable: Option<Durable>,
    ) -> Result<Notifier, reqwest::Error> {
        let (outbox, stored) = match durable {
            Some(Durable { outbox, stored }) => (Some(outbox), stored),
            None => (None, Vec::new()),
        };
        let server = match &config.external_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{local_addr}"),
        };
        let links = Links {
            dashboard: format!("{server}/"),
            server,
        };
        let delivery = Delivery::new(config.retry.clone())?;
        let mut tasks = Vec::new();
        let mut webhooks = Vec::new();
        for (n, (url, format)) in config.webhooks.into_iter().enumerate() {
            let stats = SinkStats::new(format!("webhook-{}", n + 1), &url);
            let (target, lane_tasks) = WebhookTarget::spawn(
                url,
                format,
                config.min_interval,
                stats,
                &delivery,
                outbox.clone(),
            );
            tasks.extend(lane_tasks);
            webhooks.push(target);
        }
        let alerts = if config.alertmanagers.is_empty() {
            None
        } else {
            let book = Arc::new(AlertBook::new(
                config.alert_resend,
                config.alert_on_warning,
                links.clone(),
            ));
            for (n, url) in config.alertmanagers.into_iter().enumerate() {
                let stats = SinkStats::new(format!("alertmanager-{}", n + 1), &url);
                let target = AlertmanagerTarget::new(url, stats, Arc::clone(&book));
                tasks.push(tokio::spawn(target.run(delivery.clone())));
            }
            Some(book)
        };
        let next_seq = restore(&webhooks, stored, outbox.as_deref());
        let sink = Arc::new(NotifySink {
            webhooks,
            alerts,
            links,
            clock,
            seq: std::sync::atomic::AtomicU64::new(next_seq),
        });
        Ok(Notifier { sink, tasks })
    }

    /// Stops every delivery task (what is still queued is dropped).
    pub(crate) fn abort(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The notifier's [`EventSink`]: queues state changes for the webhooks and
/// updates the Alertmanager book; quick, under the registry's lock.
pub(crate) struct NotifySink {
    webhooks: Vec<WebhookTarget>,
    alerts: Option<Arc<AlertBook>>,
    links: Links,
    /// The registry's clock, for the wall-clock time of each event.
    clock: Arc<dyn Clock>,
    /// The next notification's number (outbox entries).
    seq: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for NotifySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifySink")
            .field("webhooks", &self.webhooks.len())
            .field("alertmanager", &self.alerts.is_some())
            .finish_non_exhaustive()
    }
}

impl NotifySink {
    /// Raises the alerts of the failed runs the registry holds without an
    /// event (restored from the state file at start: they failed before
    /// the restart, and Alertmanager lets an alert that is not re-sent
    /// resolve). Webhooks are not told again: they were, before.
    pub(crate) fn alert_restored_failures(&self, registry: &Registry, now: Instant) {
        let Some(book) = &self.alerts else { return };
        let at = self.clock.wall(now);
        for app in registry.apps(now) {
            let Some(code) = app.failed else { continue };
            let event = Event {
                kind: crate::monitor::EventKind::Failed(code),
                key: Arc::from(app.key),
                previous: None,
                at: now,
                granted: None,
                peer: None,
            };
            if let Some(change) = state_change(&event, registry, at, &self.links) {
                book.apply(&change, at);
            }
        }
    }
}

impl EventSink for NotifySink {
    fn deliver(&self, events: &[Event], registry: &Registry, _: Instant) {
        for event in events {
            let at = self.clock.wall(event.at);
            let Some(change) = state_change(event, registry, at, &self.links) else {
                continue;
            };
            for webhook in &self.webhooks {
                let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                webhook.push(&change, seq);
            }
            if let Some(book) = &self.alerts {
                book.apply(&change, at);
            }
        }
    }

    fn missed(&self, count: u64, _: &Registry, _: Instant) {
        // only a direct use of the registry can overflow; the server's
        // requests and sweeps never do (SharedRegistry batches them)
        tracing::warn!("{count} state changes were not notified (too many at once)");
    }

    fn metrics(&self, out: &mut String) {
        let alertmanagers = self
            .alerts
            .as_ref()
            .map(|b| b.targets())
            .unwrap_or_default();
        let mut all: Vec<(&SinkStats, usize)> = self
            .webhooks
            .iter()
            .map(|w| (w.stats(), w.pending()))
            .collect();
        all.extend(alertmanagers.iter().map(|(s, pending)| (&**s, *pending)));
        deliver::render_metrics(&all, out);
    }
}

/// Queues what the outbox held at start on the webhooks they were for
/// (matched by URL), oldest first; entries for a webhook no longer
/// configured, or that do not parse, are deleted (logged). The number
/// for the next notification.
fn restore(
    webhooks: &[WebhookTarget],
    stored: Vec<(u64, String, Vec<u8>)>,
    outbox: Option<&dyn Outbox>,
) -> u64 {
    let next = stored.iter().map(|(seq, _, _)| seq + 1).max().unwrap_or(1);
    let (mut restored, mut dropped) = (0_usize, 0_usize);
    for (seq, sink, body) in stored {
        let change = serde_json::from_slice::<StateChange>(&body).ok();
        match (webhooks.iter().find(|w| w.is(&sink)), change) {
            (Some(webhook), Some(change)) => {
                webhook.requeue(webhook::Item {
                    seqs: vec![seq],
                    change,
                });
                restored += 1;
            }
            _ => {
                if let Some(outbox) = outbox {
                    outbox.done(seq);
                }
                dropped += 1;
            }
        }
    }
    if restored > 0 {
        tracing::info!("{restored} notifications from the outbox queued again");
    }
    if dropped > 0 {
        tracing::warn!(
            "{dropped} notifications in the outbox are for webhooks no longer configured: dropped"
        );
    }
    next
}

/// The notification of `event`, which happened at `at`, or `None` when it
/// is not a state change (an update, a refusal).
fn state_change(
    event: &Event,
    registry: &Registry,
    at: SystemTime,
    links: &Links,
) -> Option<StateChange> {
    let (change, overdue) = crate::monitor::history::change_of(event.kind, registry)?;
    let key = RecordKey::parse(event.key());
    let at = format_time(at).unwrap_or_else(|| "9999-12-31T23:59:59.999Z".to_owned());
    Some(StateChange {
        event: change,
        app: key.id().to_owned(),
        host: key.host().map(str::to_owned),
        previous: event.previous,
        state: event.state(),
        overdue,
        exit_code: event.kind.exit_code(),
        at,
        coalesced: 0,
        dashboard: links.dashboard.clone(),
        server: links.server.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_only() {
        assert_eq!("json".parse(), Ok(WebhookFormat::Json));
        assert_eq!("slack".parse(), Ok(WebhookFormat::Slack));
        let err = "Slack\n".parse::<WebhookFormat>().unwrap_err();
        assert!(err.contains("\\n") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn the_system_clock_dates_instants_back_from_now() {
        let clock = crate::monitor::SystemClock;
        let now = clock.now();
        let three_ago = now.checked_sub(Duration::from_secs(3)).unwrap();
        let gap = clock
            .wall(now)
            .duration_since(clock.wall(three_ago))
            .unwrap();
        // two readings of the system's time: a few ms apart at most
        assert!(
            gap >= Duration::from_millis(2900) && gap < Duration::from_secs(4),
            "{gap:?}"
        );
        let ahead = clock.wall(now + Duration::from_secs(5));
        assert!(ahead > SystemTime::now() + Duration::from_secs(4));
    }
}

//! Alertmanager (API v2): CRITICAL applications (and missing expected
//! ones) as alerts, the way Prometheus sends them.
//!
//! The [`AlertBook`] holds every alert the server has raised: firing ones,
//! and resolved ones for [`RESOLVED_RETENTION`]. Each change bumps a
//! version; each Alertmanager URL has a task ([`AlertmanagerTarget::run`])
//! that posts the alerts changed since what it last delivered, at once,
//! and every resend interval all of them, with `endsAt`
//! [`ALERT_LIFETIME_RESENDS`] intervals ahead (so the alerts of a server
//! that died resolve by themselves). Every URL gets every alert (the
//! peers of an Alertmanager cluster each need them; never a load
//! balancer).
//!
//! Identity: `alertname="HeartbeatAppDown"`, `app`, `host` (absent for an
//! expected app of any host) and `severity`. The server's own address is
//! the `instance` *annotation*, not a label, so two servers of an HA pair
//! raise one alert in Alertmanager, not two.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use url::Url;

use super::deliver::{Delivery, Outcome, SinkStats};
use super::{Links, ALERT_LIFETIME_RESENDS, RESOLVED_RETENTION};
use crate::protocol::notification::{Change, StateChange};
use crate::protocol::{format_time, printable};

/// The alert name of every alert.
pub(super) const ALERT_NAME: &str = "HeartbeatAppDown";
/// The most alerts in one POST.
const MAX_ALERTS_PER_POST: usize = 1000;
/// The most alerts the book holds; past it, a new one replaces an alert
/// of an expired application (the oldest of those kept firing).
const MAX_ALERTS: usize = 2 * crate::protocol::MAX_APPS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Severity {
    Critical,
    Warning,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// What identifies an alert in Alertmanager (its label set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AlertKey {
    app: String,
    host: Option<String>,
    severity: Severity,
}

#[derive(Debug, Clone)]
struct Alert {
    starts_at: SystemTime,
    resolved_at: Option<SystemTime>,
    summary: String,
    description: String,
    /// The application was dropped while CRITICAL: the alert fires on
    /// until it reports again.
    expired: bool,
    version: u64,
}

#[derive(Debug, Default)]
struct Book {
    alerts: HashMap<AlertKey, Alert>,
    version: u64,
    full_logged: bool,
}

/// Every alert the server has raised, shared by the Alertmanager tasks.
#[derive(Debug)]
pub(super) struct AlertBook {
    book: Mutex<Book>,
    changed: watch::Sender<u64>,
    resend: Duration,
    on_warning: bool,
    links: Links,
    targets: Mutex<Vec<(Arc<SinkStats>, Arc<AtomicU64>)>>,
}

/// An alert as `POST /api/v2/alerts` takes it (`postableAlert`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(super) struct PostableAlert {
    labels: HashMap<&'static str, String>,
    annotations: HashMap<&'static str, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
}

fn rfc3339(t: SystemTime) -> String {
    format_time(t).unwrap_or_else(|| "9999-12-31T23:59:59.999Z".to_owned())
}

impl AlertBook {
    pub(super) fn new(resend: Duration, on_warning: bool, links: Links) -> AlertBook {
        AlertBook {
            book: Mutex::new(Book::default()),
            changed: watch::channel(0).0,
            resend: resend.max(Duration::from_millis(1)),
            on_warning,
            links,
            targets: Mutex::new(Vec::new()),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Updates the alerts for `change`, which happened at `at` (quick:
    /// under the registry's lock).
    pub(super) fn apply(&self, change: &StateChange, at: SystemTime) {
        let key = |severity| AlertKey {
            app: change.app.clone(),
            host: change.host.clone(),
            severity,
        };
        let who = match &change.host {
            Some(host) => format!("{} on {}", printable(&change.app), printable(host)),
            None => format!("{} (any host)", printable(&change.app)),
        };
        let overdue = change
            .overdue
            .map_or(String::new(), |r| format!(" (overdue {r:.2})"));
        let mut book = self.book();
        let before = book.version;
        match change.event {
            Change::Critical => {
                let text = (
                    format!("{who} is CRITICAL"),
                    format!("{who} has sent no heartbeat past the critical ratio{overdue}."),
                );
                book.fire(key(Severity::Critical), at, text, false);
                book.resolve(&key(Severity::Warning), at);
            }
            Change::Failed => {
                let code = change
                    .exit_code
                    .map_or_else(|| "?".to_owned(), |c| c.to_string());
                let text = (
                    format!("{who} is CRITICAL"),
                    format!("{who} failed with exit code {code}; firing until it reports again."),
                );
                book.fire(key(Severity::Critical), at, text, false);
                book.resolve(&key(Severity::Warning), at);
            }
            Change::ExpectedMissing => {
                let text = (
                    format!("{who} is CRITICAL"),
                    format!("{who} is expected but has no record."),
                );
                book.fire(key(Severity::Critical), at, text, false);
            }
            Change::Warning if self.on_warning => {
                let text = (
                    format!("{who} is late (WARNING)"),
                    format!("{who} has sent no heartbeat past the warning ratio{overdue}."),
                );
                book.fire(key(Severity::Warning), at, text, false);
            }
            Change::Expired => {
                let text = (
                    format!("{who} is CRITICAL"),
                    format!("{who} was dropped after no heartbeat{overdue}; firing until it reports again."),
                );
                book.fire(key(Severity::Critical), at, text, true);
                book.resolve(&key(Severity::Warning), at);
            }
            Change::Created | Change::Recovered | Change::Done => {
                for severity in [Severity::Critical, Severity::Warning] {
                    book.resolve(&key(severity), at);
                    // the record an expected app of any host was missing
                    if change.previous.is_some() && change.host.is_some() {
                        let spec = AlertKey {
                            host: None,
                            ..key(severity)
                        };
                        book.resolve(&spec, at);
                    }
                }
            }
            _ => {}
        }
        if book.version != before {
            self.changed.send_replace(book.version);
        }
    }

    /// The targets' counters and how many changed alerts each has not
    /// delivered yet.
    pub(super) fn targets(&self) -> Vec<(Arc<SinkStats>, usize)> {
        let targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        let book = self.book();
        targets
            .iter()
            .map(|(stats, posted)| {
                let posted = posted.load(Ordering::Relaxed);
                let pending = book.alerts.values().filter(|a| a.version > posted).count();
                (Arc::clone(stats), pending)
            })
            .collect()
    }

    /// The alerts changed after version `since` (every one when `all`), as
    /// Alertmanager takes them at `now`, and the book's version; resolved
    /// alerts past their retention are forgotten first.
    fn collect(&self, since: u64, all: bool, now: SystemTime) -> (Vec<PostableAlert>, u64) {
        let mut book = self.book();
        book.alerts.retain(|_, alert| {
            alert.resolved_at.is_none_or(|resolved| {
                now.duration_since(resolved).unwrap_or_default() < RESOLVED_RETENTION
            })
        });
        let lifetime = self.resend.saturating_mul(ALERT_LIFETIME_RESENDS);
        let alerts = book
            .alerts
            .iter()
            .filter(|(_, alert)| all || alert.version > since)
            .map(|(key, alert)| self.postable(key, alert, now, now + lifetime))
            .collect();
        (alerts, book.version)
    }

    /// `alert` as posted at `now`: never dated after `now` (Alertmanager
    /// does not let a resolution in the future shorten an active alert),
    /// active ones until `active_until`.
    fn postable(
        &self,
        key: &AlertKey,
        alert: &Alert,
        now: SystemTime,
        active_until: SystemTime,
    ) -> PostableAlert {
        let mut labels = HashMap::from([
            ("alertname", ALERT_NAME.to_owned()),
            ("app", key.app.clone()),
            ("severity", key.severity.name().to_owned()),
        ]);
        if let Some(host) = &key.host {
            labels.insert("host", host.clone());
        }
        let annotations = HashMap::from([
            ("summary", alert.summary.clone()),
            ("description", alert.description.clone()),
            ("instance", self.links.server.clone()),
        ]);
        PostableAlert {
            labels,
            annotations,
            starts_at: rfc3339(alert.starts_at.min(now)),
            ends_at: rfc3339(alert.resolved_at.map_or(active_until, |t| t.min(now))),
            generator_url: self.links.dashboard.clone(),
        }
    }
}

impl Book {
    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Fires `key` from `at` (an alert already firing keeps its start).
    fn fire(&mut self, key: AlertKey, at: SystemTime, text: (String, String), expired: bool) {
        let version = self.bump();
        if let Some(alert) = self.alerts.get_mut(&key) {
            if alert.resolved_at.is_some() {
                alert.starts_at = at;
            }
            alert.resolved_at = None;
            (alert.summary, alert.description) = text;
            alert.expired = expired;
            alert.version = version;
            return;
        }
        if self.alerts.len() >= MAX_ALERTS && !self.make_room() {
            if !self.full_logged {
                tracing::warn!(
                    "{MAX_ALERTS} alerts held: new alerts are not raised until some resolve"
                );
                self.full_logged = true;
            }
            return;
        }
        let (summary, description) = text;
        self.alerts.insert(
            key,
            Alert {
                starts_at: at,
                resolved_at: None,
                summary,
                description,
                expired,
                version,
            },
        );
    }

    /// Forgets a resolved alert, else the oldest alert of an expired app.
    fn make_room(&mut self) -> bool {
        let victim = self
            .alerts
            .iter()
            .filter(|(_, a)| a.resolved_at.is_some() || a.expired)
            .min_by_key(|(_, a)| (a.resolved_at.is_none(), a.starts_at))
            .map(|(key, _)| key.clone());
        victim.is_some_and(|key| self.alerts.remove(&key).is_some())
    }

    /// Resolves `key` at `at`, if it fires.
    fn resolve(&mut self, key: &AlertKey, at: SystemTime) {
        if self.alerts.get(key).is_none_or(|a| a.resolved_at.is_some()) {
            return;
        }
        let version = self.bump();
        if let Some(alert) = self.alerts.get_mut(key) {
            alert.resolved_at = Some(at.max(alert.starts_at));
            alert.version = version;
        }
        self.full_logged = false;
    }
}

/// One Alertmanager URL and its delivery state.
pub(super) struct AlertmanagerTarget {
    url: Url,
    stats: Arc<SinkStats>,
    book: Arc<AlertBook>,
    posted: Arc<AtomicU64>,
}

impl AlertmanagerTarget {
    /// The target for the Alertmanager at `base` (its alerts go to
    /// `base/api/v2/alerts`), registered with `book` for `/metrics`.
    pub(super) fn new(base: Url, stats: SinkStats, book: Arc<AlertBook>) -> AlertmanagerTarget {
        let url = alerts_url(&base);
        let stats = Arc::new(stats);
        let posted = Arc::new(AtomicU64::new(0));
        book.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((Arc::clone(&stats), Arc::clone(&posted)));
        AlertmanagerTarget {
            url,
            stats,
            book,
            posted,
        }
    }

    /// Posts the changed alerts whenever the book changes, and all of them
    /// every resend interval; each POST retried until accepted.
    pub(super) async fn run(self, delivery: Delivery) {
        let mut changed = self.book.changed.subscribe();
        let resend = self.book.resend;
        let mut next_full = tokio::time::Instant::now() + resend;
        loop {
            let all = tokio::time::Instant::now() >= next_full;
            let since = self.posted.load(Ordering::Relaxed);
            changed.mark_unchanged();
            let (alerts, version) = self.book.collect(since, all, SystemTime::now());
            for chunk in alerts.chunks(MAX_ALERTS_PER_POST) {
                let body = serde_json::to_vec(chunk).unwrap_or_else(|_| b"[]".to_vec());
                if delivery.post(&self.url, body, &self.stats).await == Outcome::Accepted {
                    self.stats.delivered(chunk.len() as u64);
                }
            }
            self.posted.store(version, Ordering::Relaxed);
            if all {
                next_full = tokio::time::Instant::now() + resend;
            }
            tokio::select! {
                changed = changed.changed() => {
                    if changed.is_err() {
                        return; // the book is gone: the server stopped
                    }
                }
                () = tokio::time::sleep_until(next_full) => {}
            }
        }
    }
}

/// `base` + `api/v2/alerts` (a base with a path prefix keeps it).
fn alerts_url(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/api/v2/alerts", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::State;

    fn links() -> Links {
        Links {
            server: "http://hb-1:8888".to_owned(),
            dashboard: "http://hb-1:8888/".to_owned(),
        }
    }

    fn change(event: Change, previous: Option<State>, host: Option<&str>) -> StateChange {
        StateChange {
            event,
            app: "kiosk".to_owned(),
            host: host.map(str::to_owned),
            previous,
            state: None,
            overdue: Some(3.0),
            exit_code: None,
            at: String::new(),
            coalesced: 0,
            dashboard: "http://hb-1:8888/".to_owned(),
            server: "http://hb-1:8888".to_owned(),
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    const HOST: Option<&str> = Some("10.0.0.5");

    #[test]
    fn critical_fires_with_its_labels_and_recovery_resolves_it() {
        let book = AlertBook::new(Duration::from_secs(60), false, links());
        book.apply(&change(Change::Warning, Some(State::Ok), HOST), t(0));
        assert!(
            book.collect(0, true, t(0)).0.is_empty(),
            "no warning alerts unless asked"
        );
        book.apply(&change(Change::Critical, Some(State::Warning), HOST), t(3));
        let (alerts, v1) = book.collect(0, false, t(5));
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        assert_eq!(alert.labels["alertname"], "HeartbeatAppDown");
        assert_eq!(alert.labels["app"], "kiosk");
        assert_eq!(alert.labels["host"], "10.0.0.5");
        assert_eq!(alert.labels["severity"], "critical");
        assert!(
            !alert.labels.contains_key("instance"),
            "instance is no part of the identity"
        );
        assert_eq!(alert.annotations["instance"], "http://hb-1:8888");
        assert_eq!(
            alert.starts_at,
            rfc3339(t(3)),
            "the crossing, not when it was sent"
        );
        assert_eq!(
            alert.ends_at,
            rfc3339(t(5 + 240)),
            "four resend intervals ahead"
        );
        assert_eq!(alert.generator_url, "http://hb-1:8888/");
        assert!(
            book.collect(v1, false, t(6)).0.is_empty(),
            "nothing changed since"
        );
        book.apply(
            &change(Change::Recovered, Some(State::Critical), HOST),
            t(10),
        );
        let (alerts, v2) = book.collect(v1, false, t(11));
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            alerts[0].ends_at,
            rfc3339(t(10)),
            "resolved at the recovery"
        );
        assert_eq!(alerts[0].starts_at, rfc3339(t(3)));
        // resolved alerts are re-sent for a while, then forgotten
        let retention = RESOLVED_RETENTION.as_secs();
        assert_eq!(book.collect(v2, true, t(10 + retention - 1)).0.len(), 1);
        assert!(book.collect(v2, true, t(10 + retention)).0.is_empty());
    }

    #[test]
    fn nothing_is_dated_after_the_post() {
        let book = AlertBook::new(Duration::from_secs(60), false, links());
        book.apply(&change(Change::Critical, Some(State::Warning), HOST), t(30));
        let (alerts, v) = book.collect(0, false, t(20));
        assert_eq!(alerts[0].starts_at, rfc3339(t(20)));
        book.apply(&change(Change::Done, Some(State::Critical), HOST), t(40));
        let (alerts, _) = book.collect(v, false, t(25));
        assert_eq!(
            alerts[0].ends_at,
            rfc3339(t(25)),
            "a resolution is never in the future"
        );
    }

    #[test]
    fn warnings_alert_when_asked_and_give_way_to_critical() {
        let book = AlertBook::new(Duration::from_secs(60), true, links());
        book.apply(&change(Change::Warning, Some(State::Ok), HOST), t(0));
        let (alerts, v) = book.collect(0, false, t(1));
        assert_eq!(alerts[0].labels["severity"], "warning");
        book.apply(&change(Change::Critical, Some(State::Warning), HOST), t(2));
        let (alerts, _) = book.collect(v, false, t(3));
        let mut seen: Vec<_> = alerts
            .iter()
            .map(|a| (a.labels["severity"].clone(), a.ends_at == rfc3339(t(2))))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [("critical".to_owned(), false), ("warning".to_owned(), true)]
        );
    }

    #[test]
    fn a_missing_expected_app_resolves_when_it_registers_from_any_host() {
        let book = AlertBook::new(Duration::from_secs(60), false, links());
        book.apply(&change(Change::ExpectedMissing, None, None), t(0));
        let (alerts, v) = book.collect(0, false, t(0));
        assert!(!alerts[0].labels.contains_key("host"));
        book.apply(&change(Change::Created, Some(State::Critical), HOST), t(4));
        let (alerts, _) = book.collect(v, false, t(5));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].ends_at, rfc3339(t(4)));
    }

    #[test]
    fn an_expired_app_keeps_firing_until_it_reports_again() {
        let book = AlertBook::new(Duration::from_secs(60), false, links());
        book.apply(&change(Change::Critical, Some(State::Warning), HOST), t(0));
        book.apply(&change(Change::Expired, Some(State::Critical), HOST), t(9));
        let (alerts, v) = book.collect(0, true, t(3600));
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            alerts[0].starts_at,
            rfc3339(t(0)),
            "one alert since the crossing"
        );
        assert!(alerts[0].annotations["description"].contains("dropped"));
        assert_eq!(alerts[0].ends_at, rfc3339(t(3600 + 240)));
        book.apply(&change(Change::Created, None, HOST), t(4000));
        let (alerts, _) = book.collect(v, false, t(4001));
        assert_eq!(alerts[0].ends_at, rfc3339(t(4000)));
    }

    #[test]
    fn hostile_ids_are_one_line_in_annotations_and_exact_in_labels() {
        let book = AlertBook::new(Duration::from_secs(60), false, links());
        let mut c = change(Change::Critical, Some(State::Warning), HOST);
        c.app = "evil\nsummary: forged".to_owned();
        book.apply(&c, t(0));
        let (alerts, _) = book.collect(0, true, t(0));
        assert_eq!(alerts[0].labels["app"], "evil\nsummary: forged");
        assert!(!alerts[0].annotations["summary"].contains('\n'));
        assert!(!alerts[0].annotations["description"].contains('\n'));
    }

    #[test]
    fn the_alerts_url_keeps_a_path_prefix() {
        let url = |s: &str| alerts_url(&Url::parse(s).unwrap()).to_string();
        assert_eq!(url("http://am:9093"), "http://am:9093/api/v2/alerts");
        assert_eq!(url("http://am:9093/"), "http://am:9093/api/v2/alerts");
        assert_eq!(url("http://proxy/am/?x=1"), "http://proxy/am/api/v2/alerts");
    }
}

//! What every notification sink shares: the HTTP client, the POST retried
//! with jittered backoff until the receiver accepts it, the per-sink
//! counters of `/metrics`, and the log that speaks once per burst.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use url::Url;

use super::DELIVERY_TIMEOUT;
use crate::protocol::printable;
use crate::RetryPolicy;

/// The HTTP client and the backoff of every delivery.
#[derive(Debug, Clone)]
pub(super) struct Delivery {
    http: reqwest::Client,
    retry: RetryPolicy,
}

/// How a POST ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The receiver answered 2xx.
    Accepted,
    /// The receiver answered a 4xx other than 408 and 429: it will not take
    /// this body however often it is sent (counted as dropped).
    Refused(u16),
}

impl Delivery {
    /// A client with [`DELIVERY_TIMEOUT`] per request, no redirects (a
    /// receiver is configured by its exact URL), and `retry`'s backoff.
    pub(super) fn new(retry: RetryPolicy) -> Result<Delivery, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .connect_timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Delivery { http, retry })
    }

    /// POSTs the JSON `body` to `url` until the receiver accepts or refuses
    /// it: no reply, a timeout, a 5xx, 408 or 429 are retried after the
    /// policy's jittered backoff, for as long as it takes (a receiver down
    /// for an hour delays the notification, it is not given up).
    pub(super) async fn post(&self, url: &Url, body: Vec<u8>, stats: &SinkStats) -> Outcome {
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let sent = self
                .http
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(
                    USER_AGENT,
                    concat!("heartbeat-sdk/", env!("CARGO_PKG_VERSION")),
                )
                .body(body.clone())
                .send()
                .await;
            let reason = match sent {
                Ok(reply) if reply.status().is_success() => return Outcome::Accepted,
                Ok(reply) => {
                    let status = reply.status().as_u16();
                    if reply.status().is_client_error() && !matches!(status, 408 | 429) {
                        stats.refused(status);
                        return Outcome::Refused(status);
                    }
                    format!("HTTP {status}")
                }
                // without the URL: a webhook's path is often its secret
                Err(error) => error.without_url().to_string(),
            };
            stats.failed(&reason);
            tokio::time::sleep(self.retry.backoff(attempt)).await;
        }
    }
}

/// The counters and the burst log of one sink (`webhook-N`,
/// `alertmanager-N`).
#[derive(Debug)]
pub(super) struct SinkStats {
    name: String,
    /// The receiver as logs show it: scheme, host and port only.
    shown: String,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Failed attempts since the last delivery (0: not failing).
    failing: Mutex<u64>,
}

impl SinkStats {
    pub(super) fn new(name: String, url: &Url) -> SinkStats {
        let shown = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
            _ => url.scheme().to_owned(),
        };
        tracing::info!(sink = %name, target = %printable(&shown), "notifications configured");
        SinkStats {
            name,
            shown,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failing: Mutex::new(0),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// `count` notifications (or alerts) were accepted.
    pub(super) fn delivered(&self, count: u64) {
        self.sent.fetch_add(count, Ordering::Relaxed);
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if *failing > 0 {
            tracing::info!(
                sink = %self.name,
                "delivering again after {} failed attempts",
                *failing
            );
            *failing = 0;
        }
    }

    /// One attempt failed; the first of a burst is logged.
    fn failed(&self, reason: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if *failing == 0 {
            tracing::warn!(
                sink = %self.name,
                target = %printable(&self.shown),
                "cannot deliver: {}; retrying (logged again once it delivers)",
                printable(reason)
            );
        }
        *failing += 1;
    }

    /// The receiver refused one for good.
    fn refused(&self, status: u16) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(sink = %self.name, "notification refused with HTTP {status}: dropped");
    }

    /// `count` were dropped before delivery (the queue was full); the log
    /// line is the caller's, once per burst.
    pub(super) fn overflowed(&self, count: u64) {
        self.dropped.fetch_add(count, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(super) fn counts(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The `/metrics` lines of every sink, with how many notifications each
/// has waiting.
pub(super) fn render_metrics(sinks: &[(&SinkStats, usize)], out: &mut String) {
    if sinks.is_empty() {
        return;
    }
    type Get = fn(&SinkStats, usize) -> u64;
    let families: [(&str, &str, &str, Get); 4] = [
        (
            "heartbeat_notifications_sent_total",
            "counter",
            "Notifications (webhooks) or alerts (Alertmanager) the receiver accepted.",
            |s, _| s.sent.load(Ordering::Relaxed),
        ),
        (
            "heartbeat_notifications_failed_total",
            "counter",
            "Delivery attempts that failed and were retried.",
            |s, _| s.failed.load(Ordering::Relaxed),
        ),
        (
            "heartbeat_notifications_dropped_total",
            "counter",
            "Notifications given up: refused by the receiver (4xx) or over the queue's bound.",
            |s, _| s.dropped.load(Ordering::Relaxed),
        ),
        (
            "heartbeat_notifications_pending",
            "gauge",
            "Notifications (or changed alerts) waiting for delivery.",
            |_, pending| pending as u64,
        ),
    ];
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (stats, pending) in sinks {
            let _ = writeln!(
                out,
                "{name}{{sink=\"{}\"}} {}",
                stats.name,
                get(stats, *pending)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_and_labels_show_no_path_or_secret() {
        let url = Url::parse("https://user:pw@hooks.example/services/T0/B0/secret?x=1").unwrap();
        let stats = SinkStats::new("webhook-1".into(), &url);
        assert_eq!(stats.shown, "https://hooks.example:443");
        stats.delivered(2);
        stats.failed("HTTP 500");
        stats.overflowed(3);
        let mut out = String::new();
        render_metrics(&[(&stats, 7)], &mut out);
        assert!(!out.contains("secret") && !out.contains("pw"), "{out}");
        for line in [
            "heartbeat_notifications_sent_total{sink=\"webhook-1\"} 2\n",
            "heartbeat_notifications_failed_total{sink=\"webhook-1\"} 1\n",
            "heartbeat_notifications_dropped_total{sink=\"webhook-1\"} 3\n",
            "heartbeat_notifications_pending{sink=\"webhook-1\"} 7\n",
            "# TYPE heartbeat_notifications_pending gauge\n",
        ] {
            assert!(out.contains(line), "{line} missing from {out}");
        }
        assert_eq!(stats.counts(), (2, 1, 3));
        let mut none = String::new();
        render_metrics(&[], &mut none);
        assert!(none.is_empty());
    }
}

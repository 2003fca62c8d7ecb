//! Webhooks: every state change POSTed as a [`StateChange`] (or a Slack
//! message), in order per application, retried until accepted.
//!
//! A webhook has [`LANES`] lanes; an application always maps to the same
//! one ([`lane_of`]), so its changes arrive in order while up to
//! [`LANES`] requests are in flight. Each lane is a [`LaneQueue`]: FIFO,
//! bounded by [`MAX_PENDING`] / [`LANES`], and with a minimum interval
//! (`--notify-min-interval`) a change that comes too soon after the
//! application's last notification waits, folding in every later change
//! of that application until it goes (the latest state, the earliest
//! `previous`, and `coalesced` counting the folded ones).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use url::Url;

use super::deliver::{Delivery, Outcome, SinkStats};
use super::{Outbox, WebhookFormat, MAX_PENDING};
use crate::protocol::notification::{Change, StateChange};
use crate::protocol::printable;
use crate::State;

/// Requests in flight per webhook (one per lane).
pub(super) const LANES: usize = 4;

/// A queued notification and the outbox entries it stands for (several
/// when changes were folded into it; none without an outbox).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Item {
    pub(super) seqs: Vec<u64>,
    pub(super) change: StateChange,
}

/// An application's identity in a queue.
type Key = (String, Option<String>);

fn key_of(change: &StateChange) -> Key {
    (change.app.clone(), change.host.clone())
}

/// The lane of an application: the same one for all its changes.
fn lane_of(change: &StateChange) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&change.app, &change.host).hash(&mut hasher);
    (hasher.finish() % LANES as u64) as usize
}

/// One webhook: its lanes and counters.
pub(super) struct WebhookTarget {
    lanes: Vec<Arc<Lane>>,
    stats: Arc<SinkStats>,
    /// The URL as the outbox names this webhook.
    url: Arc<str>,
    outbox: Option<Arc<dyn Outbox>>,
}

/// One lane: its queue, and the wake-up of its task.
struct Lane {
    queue: Mutex<LaneQueue>,
    ready: Notify,
}

impl Lane {
    fn queue(&self) -> std::sync::MutexGuard<'_, LaneQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl WebhookTarget {
    /// The webhook at `url` and the tasks of its lanes.
    pub(super) fn spawn(
        url: Url,
        format: WebhookFormat,
        min_interval: Duration,
        stats: SinkStats,
        delivery: &Delivery,
        outbox: Option<Arc<dyn Outbox>>,
    ) -> (WebhookTarget, Vec<JoinHandle<()>>) {
        let stats = Arc::new(stats);
        let lanes: Vec<Arc<Lane>> = (0..LANES)
            .map(|_| {
                Arc::new(Lane {
                    queue: Mutex::new(LaneQueue::new(min_interval, MAX_PENDING / LANES)),
                    ready: Notify::new(),
                })
            })
            .collect();
        let tasks = lanes
            .iter()
            .map(|lane| {
                tokio::spawn(run_lane(
                    Arc::clone(lane),
                    url.clone(),
                    format,
                    Arc::clone(&stats),
                    delivery.clone(),
                    outbox.clone(),
                ))
            })
            .collect();
        let url = Arc::from(url.as_str());
        (
            WebhookTarget {
                lanes,
                stats,
                url,
                outbox,
            },
            tasks,
        )
    }

    /// Whether `sink` (an outbox entry's) names this webhook.
    pub(super) fn is(&self, sink: &str) -> bool {
        *self.url == *sink
    }

    /// Queues `change` on its lane (quick: under the registry's lock),
    /// first in the outbox as entry `seq` when there is one.
    pub(super) fn push(&self, change: &StateChange, seq: u64) {
        if let Some(outbox) = &self.outbox {
            outbox.add(seq, &self.url, encode(change, WebhookFormat::Json));
        }
        self.requeue(Item {
            seqs: vec![seq],
            change: change.clone(),
        });
    }

    /// Queues an item already in the outbox (one restored at start).
    pub(super) fn requeue(&self, item: Item) {
        let lane = &self.lanes[lane_of(&item.change)];
        let seqs = item.seqs.clone();
        let pushed = lane.queue().push(item, now());
        match pushed {
            Pushed::Queued => lane.ready.notify_one(),
            Pushed::Dropped { first_of_burst } => {
                if let Some(outbox) = &self.outbox {
                    seqs.iter().for_each(|seq| outbox.done(*seq));
                }
                self.stats.overflowed(1);
                if first_of_burst {
                    tracing::warn!(
                        sink = %self.stats.name(),
                        "{} notifications waiting: dropping new ones until the receiver catches up",
                        MAX_PENDING
                    );
                }
            }
        }
    }

    pub(super) fn stats(&self) -> &SinkStats {
        &self.stats
    }

    /// Notifications waiting or in flight.
    pub(super) fn pending(&self) -> usize {
        self.lanes.iter().map(|lane| lane.queue().len()).sum()
    }
}

/// The current instant on tokio's clock (a paused test clock applies).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A lane's task: send what is ready, one at a time, in order.
async fn run_lane(
    lane: Arc<Lane>,
    url: Url,
    format: WebhookFormat,
    stats: Arc<SinkStats>,
    delivery: Delivery,
    outbox: Option<Arc<dyn Outbox>>,
) {
    loop {
        let next = lane.queue().next(now());
        match next {
            Next::Send(item) => {
                let body = encode(&item.change, format);
                if delivery.post(&url, body, &stats).await == Outcome::Accepted {
                    stats.delivered(1);
                }
                if let Some(outbox) = &outbox {
                    item.seqs.iter().for_each(|seq| outbox.done(*seq));
                }
                lane.queue().sent(&item.change, now());
            }
            Next::WaitUntil(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = lane.ready.notified() => {}
                }
            }
            Next::Idle => lane.ready.notified().await,
        }
    }
}

/// The body a webhook receives.
pub(super) fn encode(change: &StateChange, format: WebhookFormat) -> Vec<u8> {
    let value = match format {
        WebhookFormat::Json => serde_json::to_value(change),
        WebhookFormat::Slack => Ok(serde_json::json!({ "text": slack_text(change) })),
    };
    // a StateChange always serializes (strings, numbers, options)
    value.map_or_else(|_| b"{}".to_vec(), |v| v.to_string().into_bytes())
}

/// The one-line Slack / Mattermost text of `change`: the id and host in
/// code spans ([`code`]), so they cannot format, link or mention.
pub(super) fn slack_text(change: &StateChange) -> String {
    let who = match &change.host {
        Some(host) => format!("{} on {}", code(&change.app), code(host)),
        None => code(&change.app),
    };
    let name = |state: Option<State>| state.map_or("none", |s| s.as_str());
    let what = match change.event {
        Change::Created => "is new: OK".to_owned(),
        Change::Warning => "is late: WARNING".to_owned(),
        Change::Critical => "is late: CRITICAL".to_owned(),
        Change::Recovered => format!("recovered: OK (was {})", name(change.previous)),
        Change::Done => "signed off".to_owned(),
        Change::Expired => "was dropped: no heartbeat".to_owned(),
        Change::ExpectedMissing => "is expected but has not reported: CRITICAL".to_owned(),
        Change::Failed => match change.exit_code {
            Some(code) => format!("failed with exit code {code}: CRITICAL"),
            None => "failed: CRITICAL".to_owned(),
        },
        _ => format!("is now {}", name(change.state)),
    };
    let emoji = match change.state {
        Some(State::Ok) => ":large_green_circle:",
        Some(State::Warning) => ":large_orange_circle:",
        Some(State::Critical) => ":red_circle:",
        _ => ":white_circle:",
    };
    let folded = match change.coalesced {
        0 => String::new(),
        n => format!(" ({n} earlier changes folded in)"),
    };
    let link = escape(&change.dashboard).replace('|', "%7C");
    format!(
        "{emoji} {who} {what}{folded} at {} <{link}|dashboard>",
        escape(&change.at)
    )
}

/// Untrusted text as a Slack / Mattermost code span: one line (controls
/// escaped by [`printable`]), no backtick to close the span early, `&`,
/// `<` and `>` escaped as Slack asks, and a word joiner after each `@` so
/// that no `@channel` or `@user` is a mention even where code spans are
/// not honoured.
fn code(text: &str) -> String {
    let text = escape(&printable(text))
        .replace('`', "\u{02cb}")
        .replace('@', "@\u{2060}");
    format!("`{text}`")
}

/// Slack's three control characters as entities.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What a lane's task does next.
#[derive(Debug, PartialEq)]
pub(super) enum Next {
    /// Send this one.
    Send(Item),
    /// Nothing to send before this instant (a change waits out the
    /// minimum interval).
    WaitUntil(Instant),
    /// Nothing queued.
    Idle,
}

/// What became of a pushed change.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    Queued,
    /// The lane was full; `first_of_burst` is the first drop since the
    /// last change that was queued (log that one).
    Dropped {
        first_of_burst: bool,
    },
}

/// A lane's queue (no I/O, the clock passed in): FIFO, bounded, and with a
/// minimum interval per application, coalescing.
#[derive(Debug)]
pub(super) struct LaneQueue {
    items: VecDeque<Item>,
    /// Changes waiting out the minimum interval, by application: when they
    /// may go, and the order they became due in.
    deferred: HashMap<Key, (Instant, u64, Item)>,
    due: BTreeMap<(Instant, u64), Key>,
    seq: u64,
    /// When each application's last notification went (only with a
    /// minimum interval).
    last_sent: HashMap<Key, Instant>,
    min_interval: Duration,
    cap: usize,
    in_flight: bool,
    dropping: bool,
}

impl LaneQueue {
    pub(super) fn new(min_interval: Duration, cap: usize) -> LaneQueue {
        LaneQueue {
            items: VecDeque::new(),
            deferred: HashMap::new(),
            due: BTreeMap::new(),
            seq: 0,
            last_sent: HashMap::new(),
            min_interval,
            cap: cap.max(1),
            in_flight: false,
            dropping: false,
        }
    }

    /// Waiting changes (a deferred one counts once, however many it folds)
    /// and the one in flight.
    pub(super) fn len(&self) -> usize {
        self.items.len() + self.deferred.len() + usize::from(self.in_flight)
    }

    /// Queue `change`; one of an application with a deferred change folds
    /// into it (and is never refused).
    pub(super) fn push(&mut self, change: Item, now: Instant) -> Pushed {
        let _ = now;
        if let Some((_, _, waiting)) = self.deferred.get_mut(&key_of(&change.change)) {
            fold(waiting, change);
            self.dropping = false;
            return Pushed::Queued;
        }
        if self.items.len() + self.deferred.len() >= self.cap {
            let first_of_burst = !self.dropping;
            self.dropping = true;
            return Pushed::Dropped { first_of_burst };
        }
        self.dropping = false;
        self.items.push_back(change);
        Pushed::Queued
    }

    /// The next change to send at `now`, if any.
    pub(super) fn next(&mut self, now: Instant) -> Next {
        // deferred changes that may go now join the end of the queue
        while let Some((&(at, seq), _)) = self.due.first_key_value() {
            if at > now {
                break;
            }
            if let Some(key) = self.due.remove(&(at, seq)) {
                if let Some((_, _, change)) = self.deferred.remove(&key) {
                    self.items.push_back(change);
                }
            }
        }
        while let Some(change) = self.items.pop_front() {
            let key = key_of(&change.change);
            let too_soon = self
                .last_sent
                .get(&key)
                .map(|sent| *sent + self.min_interval)
                .filter(|may_go| *may_go > now);
            let Some(may_go) = too_soon else {
                self.in_flight = true;
                return Next::Send(change);
            };
            // wait out the interval; later changes of the same application
            // already queued fold in now, so none overtakes it
            let mut waiting = change;
            let mut rest = VecDeque::with_capacity(self.items.len());
            for other in self.items.drain(..) {
                if key_of(&other.change) == key {
                    fold(&mut waiting, other);
                } else {
                    rest.push_back(other);
                }
            }
            self.items = rest;
            self.seq += 1;
            self.due.insert((may_go, self.seq), key.clone());
            self.deferred.insert(key, (may_go, self.seq, waiting));
        }
        match self.due.first_key_value() {
            Some((&(at, _), _)) => Next::WaitUntil(at),
            None => Next::Idle,
        }
    }

    /// `change` went (or was given up) at `now`.
    pub(super) fn sent(&mut self, change: &StateChange, now: Instant) {
        self.in_flight = false;
        if self.min_interval.is_zero() {
            return;
        }
        self.last_sent.insert(key_of(change), now);
        // forget applications whose interval is over, now and then
        if self.last_sent.len() > 1024 && self.last_sent.len().is_power_of_two() {
            let min = self.min_interval;
            self.last_sent.retain(|_, sent| *sent + min > now);
        }
    }
}

/// Fold `later` into `waiting`: the latest change, the state before the
/// earliest, and the outbox entries of both.
fn fold(waiting: &mut Item, later: Item) {
    let previous = waiting.change.previous;
    let coalesced = waiting.change.coalesced + later.change.coalesced + 1;
    waiting.seqs.extend(later.seqs);
    waiting.change = later.change;
    waiting.change.previous = previous;
    waiting.change.coalesced = coalesced;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(
        app: &str,
        event: Change,
        previous: Option<State>,
        state: Option<State>,
    ) -> StateChange {
        StateChange {
            event,
            app: app.to_owned(),
            host: Some("10.0.0.5".to_owned()),
            previous,
            state,
            overdue: None,
            exit_code: None,
            at: "2026-12-07T02:00:00.000Z".to_owned(),
            coalesced: 0,
            dashboard: "http://monitor:8888/".to_owned(),
            server: "http://monitor:8888".to_owned(),
        }
    }

    fn item(change: StateChange) -> Item {
        Item {
            seqs: Vec::new(),
            change,
        }
    }

    fn sent(next: Next) -> StateChange {
        match next {
            Next::Send(item) => item.change,
            other => panic!("expected a change to send, got {other:?}"),
        }
    }

    const OK: Option<State> = Some(State::Ok);
    const WARN: Option<State> = Some(State::Warning);
    const CRIT: Option<State> = Some(State::Critical);

    #[test]
    fn without_an_interval_every_change_goes_in_order() {
        let t = Instant::now();
        let mut q = LaneQueue::new(Duration::ZERO, 10);
        for c in [
            change("a", Change::Created, None, OK),
            change("a", Change::Warning, OK, WARN),
            change("b", Change::Created, None, OK),
            change("a", Change::Recovered, WARN, OK),
        ] {
            assert_eq!(q.push(item(c), t), Pushed::Queued);
        }
        let mut order = Vec::new();
        while let Next::Send(Item { change: c, .. }) = q.next(t) {
            assert_eq!(q.len(), q.items.len() + 1, "the one in flight counts");
            q.sent(&c, t);
            order.push((c.app, c.event));
        }
        assert_eq!(
            order,
            [
                ("a".to_owned(), Change::Created),
                ("a".to_owned(), Change::Warning),
                ("b".to_owned(), Change::Created),
                ("a".to_owned(), Change::Recovered)
            ]
        );
        assert_eq!(q.next(t), Next::Idle);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_flapping_app_is_folded_into_its_latest_state_after_the_interval() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut q = LaneQueue::new(min, 10);
        q.push(item(change("a", Change::Created, None, OK)), t0);
        let first = sent(q.next(t0));
        q.sent(&first, t0);
        // three changes within the minute, and another app's in between
        q.push(item(change("a", Change::Warning, OK, WARN)), t0);
        q.push(item(change("b", Change::Created, None, OK)), t0);
        q.push(item(change("a", Change::Critical, WARN, CRIT)), t0);
        let t1 = t0 + Duration::from_secs(10);
        let b = sent(q.next(t1));
        assert_eq!(b.app, "b", "another app is not held up");
        q.sent(&b, t1);
        assert_eq!(q.next(t1), Next::WaitUntil(t0 + min));
        q.push(item(change("a", Change::Recovered, CRIT, OK)), t1);
        assert_eq!(
            q.len(),
            1,
            "one waiting change for a, however many it folds"
        );
        assert_eq!(
            q.next(t0 + min - Duration::from_millis(1)),
            Next::WaitUntil(t0 + min)
        );
        let a = sent(q.next(t0 + min));
        assert_eq!(a.event, Change::Recovered);
        assert_eq!((a.previous, a.state), (OK, OK));
        assert_eq!(a.coalesced, 2);
        q.sent(&a, t0 + min);
        assert_eq!(q.next(t0 + min), Next::Idle);
        // after a quiet interval the next change goes at once
        let later = t0 + min * 3;
        q.push(item(change("a", Change::Warning, OK, WARN)), later);
        assert_eq!(sent(q.next(later)).coalesced, 0);
    }

    #[test]
    fn a_full_lane_drops_new_changes_and_says_so_once_per_burst() {
        let t = Instant::now();
        let mut q = LaneQueue::new(Duration::ZERO, 2);
        assert_eq!(
            q.push(item(change("a", Change::Created, None, OK)), t),
            Pushed::Queued
        );
        assert_eq!(
            q.push(item(change("b", Change::Created, None, OK)), t),
            Pushed::Queued
        );
        let full = |q: &mut LaneQueue| q.push(item(change("c", Change::Created, None, OK)), t);
        assert_eq!(
            full(&mut q),
            Pushed::Dropped {
                first_of_burst: true
            }
        );
        assert_eq!(
            full(&mut q),
            Pushed::Dropped {
                first_of_burst: false
            }
        );
        let a = sent(q.next(t));
        q.sent(&a, t);
        assert_eq!(full(&mut q), Pushed::Queued);
        assert_eq!(
            q.push(item(change("d", Change::Created, None, OK)), t),
            Pushed::Dropped {
                first_of_burst: true
            }
        );
    }

    #[test]
    fn lanes_are_stable_per_app() {
        let a = change("kiosk", Change::Created, None, OK);
        let b = change("kiosk", Change::Critical, WARN, CRIT);
        assert_eq!(lane_of(&a), lane_of(&b));
        let spread: std::collections::HashSet<_> = (0..64)
            .map(|i| lane_of(&change(&format!("app{i}"), Change::Created, None, OK)))
            .collect();
        assert_eq!(spread.len(), LANES, "64 apps use every lane");
    }

    #[test]
    fn json_is_the_documented_document() {
        let mut c = change("kiosk-3", Change::Critical, WARN, CRIT);
        c.overdue = Some(3.0);
        let body = String::from_utf8(encode(&c, WebhookFormat::Json)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["event"], "critical");
        assert_eq!(value["previous"], "warning");
        assert_eq!(value["state"], "critical");
        assert_eq!(value["overdue"], 3.0);
        assert_eq!(value["host"], "10.0.0.5");
        let back: StateChange = serde_json::from_str(&body).unwrap();
        assert_eq!(back, c);
        let done = change("x", Change::Done, OK, None);
        let value: serde_json::Value =
            serde_json::from_slice(&encode(&done, WebhookFormat::Json)).unwrap();
        assert!(value["state"].is_null() && value["overdue"].is_null());
    }

    #[test]
    fn hostile_ids_stay_text_in_slack() {
        let mut c = change(
            "<!channel> @here `x` [a](http://evil) *b*\n<http://evil|click> &amp;",
            Change::Critical,
            WARN,
            CRIT,
        );
        c.host = Some("@all".to_owned());
        let text = slack_text(&c);
        assert!(!text.contains('\n'));
        assert!(!text.contains("<!"), "{text}");
        assert!(!text.contains("<http://evil"), "{text}");
        assert!(!text.contains("@here") && !text.contains("@all"), "{text}");
        // the only control sequence left is ours, the dashboard link
        assert_eq!(text.matches('<').count(), 1, "{text}");
        assert!(text.ends_with("<http://monitor:8888/|dashboard>"), "{text}");
        // exactly four backticks: the two code spans, none from the id
        assert_eq!(text.matches('`').count(), 4, "{text}");
        assert!(text.contains("&amp;amp;"), "{text}");
        let body: serde_json::Value =
            serde_json::from_slice(&encode(&c, WebhookFormat::Slack)).unwrap();
        assert_eq!(body["text"], text);
    }
}

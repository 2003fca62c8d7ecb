//! The log as an [`EventSink`]: [`LogSink`], with every line bounded in
//! length and each peer's lines bounded in rate, so that a client cannot
//! fill the disk with constructions and destructions of fresh long ids.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::events::{Event, EventKind, EventSink};
use super::registry::Registry;
use crate::protocol::{printable, split_key};

/// The longest id written whole in a log line, in bytes; a longer one is
/// written as its first 48 bytes, its length and a short hash
/// ([`bounded_key`]).
pub const MAX_LOGGED_ID: usize = 96;
/// The bytes of a long id kept in a log line.
const ID_PREFIX: usize = 48;
/// Lines one peer may log at once ([`LogSink`]).
pub const LOG_BURST: u32 = 100;
/// Lines one peer may log per second in the long run.
pub const LOG_PER_SECOND: u32 = 20;
/// Peers whose budget is tracked at once; past it, the ones with a full
/// budget are forgotten, and if none has, the rest share one budget.
const TRACKED_PEERS: usize = 4096;

/// The log as a sink: updates at debug, everything else at info, every
/// key through [`printable`] (a peer cannot forge or break a log line) and
/// [`bounded_key`] (nor make one long). Each peer (events without one,
/// those of the sweeper, count as one more) may log [`LOG_BURST`] lines at
/// once and [`LOG_PER_SECOND`] a second after that; what is over is
/// counted, and said in one line when that peer may log again: `N more
/// events from 10.0.0.5 not logged (rate limit)`. Every
/// [`SharedRegistry`](super::SharedRegistry) starts with one.
#[derive(Debug, Default)]
pub struct LogSink {
    budgets: Mutex<Budgets>,
}

/// The budgets of the peers seen lately, by peer (`None`: the sweeper;
/// [`OTHERS`]: the peers past [`TRACKED_PEERS`]).
#[derive(Debug, Default)]
struct Budgets {
    peers: HashMap<Option<IpAddr>, Budget>,
    /// When idle budgets were last forgotten (at most once a second).
    pruned: Option<Instant>,
}

/// The budget shared by peers past [`TRACKED_PEERS`] (`::`, which is
/// never a peer).
const OTHERS: Option<IpAddr> = Some(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));

impl Budgets {
    /// The budget `peer`'s lines are counted on at `now`.
    fn of(&mut self, peer: Option<IpAddr>, now: Instant) -> (Option<IpAddr>, &mut Budget) {
        let full = |b: &Budgets| b.peers.len() >= TRACKED_PEERS && !b.peers.contains_key(&peer);
        if full(self)
            && self
                .pruned
                .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1))
        {
            self.pruned = Some(now);
            self.peers.retain(|_, budget| !budget.is_idle(now));
        }
        let peer = if full(self) { OTHERS } else { peer };
        (
            peer,
            self.peers.entry(peer).or_insert_with(|| Budget::new(now)),
        )
    }
}

/// Who `peer` is in a summary line.
fn describe(peer: Option<IpAddr>) -> String {
    match peer {
        None => "the sweeper".to_owned(),
        p if p == OTHERS => "other peers".to_owned(),
        Some(ip) => ip.to_string(),
    }
}

/// A peer's lines: a token bucket and what it held back.
#[derive(Debug, Clone, Copy)]
struct Budget {
    tokens: f64,
    at: Instant,
    suppressed: u64,
}

impl Budget {
    fn new(now: Instant) -> Budget {
        Budget {
            tokens: f64::from(LOG_BURST),
            at: now,
            suppressed: 0,
        }
    }

    /// The tokens at `now`: those left plus the refill since, up to a burst.
    fn tokens_at(&self, now: Instant) -> f64 {
        let refill =
            now.saturating_duration_since(self.at).as_secs_f64() * f64::from(LOG_PER_SECOND);
        (self.tokens + refill).min(f64::from(LOG_BURST))
    }

    /// Refills for the time since the last call; whether a line may go.
    fn take(&mut self, now: Instant) -> bool {
        self.tokens = self.tokens_at(now);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Nothing held back and the budget full again: safe to forget.
    fn is_idle(&self, now: Instant) -> bool {
        self.suppressed == 0 && self.tokens_at(now) >= f64::from(LOG_BURST)
    }
}

impl LogSink {
    /// A log sink with every peer's budget full.
    pub fn new() -> LogSink {
        LogSink::default()
    }

    /// The lines of `events` at `now`, each with whether it is at debug
    /// level, with the summaries of what the rate limit held back.
    fn lines(&self, events: &[Event], now: Instant) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        let Ok(mut budgets) = self.budgets.lock() else {
            return out;
        };
        for event in events {
            let (peer, budget) = budgets.of(event.peer, now);
            if !budget.take(now) {
                budget.suppressed += 1;
                continue;
            }
            if budget.suppressed > 0 {
                let line = format!(
                    "{} more events from {} not logged (rate limit)",
                    std::mem::take(&mut budget.suppressed),
                    describe(peer)
                );
                out.push((false, line));
            }
            let mut line = String::new();
            let _ = event.write_line(&mut line, &bounded_key(&event.key));
            out.push((
                event.kind == EventKind::Updated,
                printable(&line).into_owned(),
            ));
        }
        out
    }
}

impl EventSink for LogSink {
    fn deliver(&self, events: &[Event], _: &Registry, now: Instant) {
        for (debug, line) in self.lines(events, now) {
            if debug {
                tracing::debug!("{line}");
            } else {
                tracing::info!("{line}");
            }
        }
    }

    fn missed(&self, count: u64, _: &Registry, _: Instant) {
        tracing::info!("{count} registry events were not logged (too many at once)");
    }
}

/// `key` as a log line writes it: whole when its id is at most
/// [`MAX_LOGGED_ID`] bytes, else the id's first bytes, its length and a
/// hash of it (the same id always gives the same text), then the host.
///
/// ```
/// use heartbeat_sdk::monitor::log::bounded_key;
///
/// assert_eq!(bounded_key("kiosk-7 @ 10.0.0.5"), "kiosk-7 @ 10.0.0.5");
/// let long = format!("{} @ 10.0.0.5", "x".repeat(1000));
/// let logged = bounded_key(&long);
/// assert!(logged.len() < 100, "{logged}");
/// assert!(logged.starts_with("xxxx") && logged.ends_with("… (1000 bytes, #07d18165) @ 10.0.0.5"));
/// ```
pub fn bounded_key(key: &str) -> std::borrow::Cow<'_, str> {
    let (id, host) = split_key(key);
    if id.len() <= MAX_LOGGED_ID {
        return key.into();
    }
    let mut cut = ID_PREFIX;
    while !id.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = format!(
        "{}… ({} bytes, #{:08x})",
        &id[..cut],
        id.len(),
        fnv1a(id.as_bytes())
    );
    if let Some(host) = host {
        out.push_str(crate::protocol::KEY_SEPARATOR);
        out.push_str(host);
    }
    out.into()
}

/// 32-bit FNV-1a: stable across builds and versions (log lines of two
/// runs can be compared), no dependency.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a peer over its budget waits for its next line.
    const ONE_LINE: Duration = Duration::from_millis(1000 / LOG_PER_SECOND as u64);

    fn event(kind: EventKind, key: &str, peer: Option<IpAddr>, at: Instant) -> Event {
        Event {
            kind,
            key: key.into(),
            previous: None,
            at,
            granted: None,
            peer,
        }
    }

    #[test]
    fn a_flood_from_one_peer_is_cut_and_summed_up_and_others_still_log() {
        let t0 = Instant::now();
        let sink = LogSink::new();
        let flooder = Some(IpAddr::from([10, 0, 0, 5]));
        let other = Some(IpAddr::from([10, 0, 0, 6]));
        let flood: Vec<Event> = (0..1000)
            .map(|i| {
                event(
                    EventKind::Created,
                    &format!("f-{i} @ 10.0.0.5"),
                    flooder,
                    t0,
                )
            })
            .collect();
        let lines = sink.lines(&flood, t0);
        assert_eq!(lines.len(), LOG_BURST as usize);
        assert_eq!(lines[0].1, "Construction of [f-0 @ 10.0.0.5]");
        // another peer has its own budget
        let lines = sink.lines(&[event(EventKind::Created, "k @ 10.0.0.6", other, t0)], t0);
        assert_eq!(
            lines,
            [(false, "Construction of [k @ 10.0.0.6]".to_owned())]
        );
        // a line's worth of time later: the summary, then the line
        let later = t0 + ONE_LINE;
        let lines = sink.lines(
            &[event(EventKind::Done, "f-1 @ 10.0.0.5", flooder, later)],
            later,
        );
        assert_eq!(
            lines,
            [
                (
                    false,
                    "900 more events from 10.0.0.5 not logged (rate limit)".to_owned()
                ),
                (false, "Destruction of [f-1 @ 10.0.0.5]".to_owned()),
            ]
        );
        // updates are at debug level, and count too
        let much_later = later + Duration::from_secs(60);
        let lines = sink.lines(
            &[event(
                EventKind::Updated,
                "f-1 @ 10.0.0.5",
                flooder,
                much_later,
            )],
            much_later,
        );
        assert_eq!(lines, [(true, "Update of [f-1 @ 10.0.0.5]".to_owned())]);
    }

    #[test]
    fn the_sweeper_has_a_budget_of_its_own() {
        let t0 = Instant::now();
        let sink = LogSink::new();
        let expiries: Vec<Event> = (0..500)
            .map(|i| event(EventKind::Expired, &format!("e-{i} @ 10.0.0.5"), None, t0))
            .collect();
        assert_eq!(sink.lines(&expiries, t0).len(), LOG_BURST as usize);
        let later = t0 + Duration::from_secs(60);
        let lines = sink.lines(&expiries[..1], later);
        assert_eq!(
            lines[0].1,
            "400 more events from the sweeper not logged (rate limit)"
        );
    }

    #[test]
    fn many_peers_are_bounded_in_memory_and_still_logged() {
        let t0 = Instant::now();
        let sink = LogSink::new();
        let events: Vec<Event> = (0..20_000_u32)
            .map(|i| {
                let ip = IpAddr::from(i.to_be_bytes());
                event(EventKind::Created, &format!("k @ {ip}"), Some(ip), t0)
            })
            .collect();
        let lines = sink.lines(&events, t0);
        assert!(sink.budgets.lock().unwrap().peers.len() <= TRACKED_PEERS + 1);
        // the first TRACKED_PEERS each logged; the rest shared one budget
        assert_eq!(lines.len(), TRACKED_PEERS + LOG_BURST as usize);
        let later = t0 + ONE_LINE;
        let lines = sink.lines(&events[19_999..], later);
        assert_eq!(
            lines[0].1,
            format!(
                "{} more events from other peers not logged (rate limit)",
                20_000 - TRACKED_PEERS - LOG_BURST as usize
            )
        );
        // a second on, the idle ones are forgotten and newcomers get their own
        let idle = t0 + Duration::from_secs(10);
        let ip = IpAddr::from([192, 168, 0, 1]);
        let lines = sink.lines(
            &[event(EventKind::Created, "n @ 192.168.0.1", Some(ip), idle)],
            idle,
        );
        assert_eq!(
            lines,
            [(false, "Construction of [n @ 192.168.0.1]".to_owned())]
        );
        assert!(sink.budgets.lock().unwrap().peers.contains_key(&Some(ip)));
    }

    #[test]
    fn long_ids_are_cut_with_their_length_and_a_stable_hash_hostile_ones_escaped() {
        let id = "é".repeat(100); // 200 bytes, the cut falls inside a character
        let key = format!("{id} @ 10.0.0.5");
        let logged = bounded_key(&key);
        assert!(logged.starts_with(&"é".repeat(24)), "{logged}");
        assert!(logged.contains("(200 bytes, #"), "{logged}");
        assert_eq!(bounded_key(&key), logged, "the same id, the same text");
        assert_ne!(bounded_key(&format!("{id}x @ 10.0.0.5")), logged);
        assert_eq!(
            bounded_key(&"a".repeat(MAX_LOGGED_ID)),
            "a".repeat(MAX_LOGGED_ID)
        );
        // a bare key (no host), and a line break stays escaped
        let sink = LogSink::new();
        let t0 = Instant::now();
        let nasty = format!("x\nFORGED {}", "b".repeat(200));
        let lines = sink.lines(&[event(EventKind::Created, &nasty, None, t0)], t0);
        assert!(
            lines[0].1.starts_with("Construction of [x\\nFORGED b"),
            "{lines:?}"
        );
        assert!(lines[0].1.len() < 120, "{lines:?}");
        let short = "x\ny @ 10.0.0.5";
        let lines = sink.lines(&[event(EventKind::Created, short, None, t0)], t0);
        assert_eq!(lines[0].1, "Construction of [x\\ny @ 10.0.0.5]");
    }
}

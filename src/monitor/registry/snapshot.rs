//! [`Snapshot`]: the records as of one instant, for the whole-registry
//! replies rendered after the lock is released.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use super::{info, AppInfo, Counters, Expectations, Expected, Record, RegistryConfig};
use crate::protocol::split_key;

/// The records of a [`Registry`] as of one instant, for rendering a
/// whole-registry reply (`/list`, the host `/status`, `/metrics`) after the
/// lock is released: see [`Registry::snapshot`] and [`crate::monitor::service`].
///
/// Keys are the registry's own `Arc<str>`s, so the snapshot costs 32 bytes
/// per record whatever the key length, and any number of snapshots share
/// the key text with the registry (and with each other).
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(super) records: Vec<(Arc<str>, Record)>,
    pub(super) now_us: u64,
    pub(super) counters: Counters,
    pub(super) config: RegistryConfig,
    pub(super) expected: Arc<Expectations>,
    /// Worked out from the records on first use, outside the lock.
    pub(super) missing: OnceLock<Vec<Expected>>,
    pub(super) base_wall: Option<SystemTime>,
    /// The registry's layout when the snapshot was taken, and where the
    /// key order of the last sorted snapshot is kept.
    pub(super) layout: u64,
    pub(super) key_order: Arc<KeyOrder>,
    /// Whether `records` are in key order already (else in the map's).
    pub(super) sorted: bool,
}

/// The key order of the last sorted snapshot of a registry: the positions,
/// in the map's iteration order, of the records in key order, and the
/// registry layout it holds for. While no key is added or removed the map
/// iterates in the same order, so the next snapshot is put in key order by
/// following these positions (one pass) instead of sorting again: a
/// `/metrics` scrape of an unchanged fleet of a million skips a sort of a
/// million keys.
#[derive(Debug, Default)]
pub(crate) struct KeyOrder(pub(super) Mutex<Option<(u64, Arc<[u32]>)>>);

impl Snapshot {
    /// Puts the records in key order (byte-wise ascending), as every
    /// whole-registry reply lists them: by the last snapshot's order when
    /// the registry's keys have not changed since ([`KeyOrder`]), else by
    /// sorting (and keeping that order for the next one).
    pub(crate) fn sort(&mut self) {
        if std::mem::replace(&mut self.sorted, true) {
            return;
        }
        let n = self.records.len();
        let Ok(count) = u32::try_from(n) else {
            self.records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            return;
        };
        let kept = self.key_order.0.lock().ok().and_then(|kept| {
            kept.as_ref()
                .filter(|(layout, order)| *layout == self.layout && order.len() == n)
                .map(|(_, order)| Arc::clone(order))
        });
        let order = kept.unwrap_or_else(|| {
            let mut order: Vec<u32> = (0..count).collect();
            order.sort_unstable_by(|&a, &b| {
                self.records[a as usize].0.cmp(&self.records[b as usize].0)
            });
            let order: Arc<[u32]> = order.into();
            if let Ok(mut kept) = self.key_order.0.lock() {
                *kept = Some((self.layout, Arc::clone(&order)));
            }
            order
        });
        self.records = order
            .iter()
            .map(|&i| self.records[i as usize].clone())
            .collect();
        // A map may reorder even when no key came or went (hashbrown's
        // insert of an existing key can grow the table): a kept order that
        // no longer sorts is dropped and the records sorted.
        if !self.records.windows(2).all(|w| w[0].0 < w[1].0) {
            self.records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            if let Ok(mut kept) = self.key_order.0.lock() {
                *kept = None;
            }
        }
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Totals as of the snapshot.
    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    /// The key of record `i`.
    pub(crate) fn key(&self, i: usize) -> &str {
        &self.records[i].0
    }

    /// Record `i` as of the snapshot.
    pub(crate) fn app(&self, i: usize) -> AppInfo<'_> {
        let (key, record) = &self.records[i];
        info(&self.config, key, record, self.now_us)
    }

    /// How long before the snapshot record `i` last sent `init` or `ping`.
    pub(crate) fn since_last(&self, i: usize) -> Duration {
        Duration::from_micros(self.now_us.saturating_sub(self.records[i].1.last_us))
    }

    /// The wall-clock time of the snapshot: the registry's wall-clock
    /// anchor plus the monotonic time since (so two snapshots at the same
    /// `now` agree, and a clock step does not move past timestamps).
    pub(crate) fn wall_now(&self) -> SystemTime {
        let base = self.base_wall.unwrap_or(SystemTime::UNIX_EPOCH);
        base.checked_add(Duration::from_micros(self.now_us))
            .unwrap_or(base)
    }

    /// Record `i`'s last init or ping in milliseconds since the epoch: the
    /// registry's wall-clock anchor plus the record's own offset, so the
    /// same in every snapshot until the record beats again.
    pub(crate) fn last_seen_ms(&self, i: usize) -> u64 {
        let base = self.base_wall.unwrap_or(SystemTime::UNIX_EPOCH);
        base.checked_add(Duration::from_micros(self.records[i].1.last_us))
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, crate::protocol::whole_ms)
    }

    /// Whether record `i` matches an expected spec (it is never dropped).
    pub(crate) fn is_expected(&self, i: usize) -> bool {
        self.records[i].1.expected
    }

    /// The registry's configuration.
    pub(crate) fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The expected specs no record matches, in spec order. Worked out on
    /// the first call (`O(records + expected)`), after the lock.
    pub(crate) fn missing(&self) -> &[Expected] {
        self.missing.get_or_init(|| {
            let expected = &self.expected;
            if expected.is_empty() {
                return Vec::new();
            }
            let mut ids: HashSet<&str> = HashSet::new();
            let mut keys: HashSet<&str> = HashSet::new();
            for (key, _) in &self.records {
                if expected.key_by_peer {
                    ids.insert(split_key(key).0);
                    keys.insert(key);
                } else {
                    ids.insert(key);
                }
            }
            expected
                .specs
                .iter()
                .filter(|(spec, key)| match key {
                    Some(key) => !expected.key_by_peer || !keys.contains(&**key),
                    None => !ids.contains(spec.id()),
                })
                .map(|(spec, _)| spec.clone())
                .collect()
        })
    }
}

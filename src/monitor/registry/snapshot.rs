//! [`Snapshot`]: the records as of one instant, for the whole-registry
//! replies rendered after the lock is released.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
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
}

impl Snapshot {
    /// Puts the records in key order (byte-wise ascending), as every
    /// whole-registry reply lists them.
    pub(crate) fn sort(&mut self) {
        self.records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
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

//! The last minutes of the busiest pools, one sample a second, for the chart of `top`.
//! Pure: the caller passes the clock and the figures. Memory is bounded: at most
//! `max_pools` rings of at most `capacity` samples (32 x 600 x 32 bytes: ~600 KiB).
use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::logic::pool::PoolKey;

/// Ten minutes at one sample a second.
pub(crate) const CAPACITY: usize = 600;
/// Rings kept at once: the fullest pools of a frame and the one a user looks at.
pub(crate) const MAX_POOLS: usize = 32;

/// A pool at one second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Boot-clock second.
    pub(crate) at_s: u64,
    pub(crate) size: u32,
    pub(crate) used: u32,
    pub(crate) time_wait: u32,
    /// connect() failures counted so far (the ledger's running total).
    pub(crate) failures: u64,
}

impl Sample {
    pub(crate) fn free(&self) -> u32 {
        self.size.saturating_sub(self.used)
    }
}

#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    /// The second the first failure was seen (kept when its sample ages out, so that
    /// the text can still say when the trouble began).
    first_failure_s: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct PoolHistory {
    rings: FxHashMap<PoolKey, Ring>,
    capacity: usize,
    max_pools: usize,
}

impl Default for PoolHistory {
    fn default() -> Self {
        PoolHistory::new(CAPACITY, MAX_POOLS)
    }
}

impl PoolHistory {
    pub(crate) fn new(capacity: usize, max_pools: usize) -> Self {
        PoolHistory {
            rings: FxHashMap::default(),
            capacity: capacity.max(1),
            max_pools: max_pools.max(1),
        }
    }

    /// Adds the sample of `key`; a second sample in the same second replaces the first
    /// (the UI redraws on every key press), one older than the newest is ignored.
    pub(crate) fn record(&mut self, key: &PoolKey, s: Sample) {
        let ring = match self.rings.get_mut(key) {
            Some(r) => r,
            None => self.rings.entry(key.clone()).or_default(),
        };
        match ring.samples.back_mut() {
            Some(last) if last.at_s > s.at_s => return,
            Some(last) if last.at_s == s.at_s => *last = s,
            _ => ring.samples.push_back(s),
        }
        // A running total that falls is a new pool under the same key.
        if s.failures == 0 {
            ring.first_failure_s = None;
        } else if ring.first_failure_s.is_none() {
            ring.first_failure_s = Some(s.at_s);
        }
        while ring.samples.len() > self.capacity {
            ring.samples.pop_front();
        }
    }

    /// Forgets samples older than the capacity in seconds, rings left empty, and then
    /// the rings updated longest ago until at most `max_pools` remain.
    pub(crate) fn prune(&mut self, now_s: u64) {
        let horizon = now_s.saturating_sub(self.capacity as u64);
        for ring in self.rings.values_mut() {
            while ring.samples.front().is_some_and(|s| s.at_s < horizon) {
                ring.samples.pop_front();
            }
        }
        self.rings.retain(|_, r| !r.samples.is_empty());
        if self.rings.len() > self.max_pools {
            let mut by_age: Vec<(u64, PoolKey)> = self
                .rings
                .iter()
                .map(|(k, r)| (r.samples.back().map_or(0, |s| s.at_s), k.clone()))
                .collect();
            // Oldest update first; ties by key, so the choice is stable.
            by_age.sort();
            let excess = self.rings.len() - self.max_pools;
            for (_, k) in by_age.into_iter().take(excess) {
                self.rings.remove(&k);
            }
        }
    }

    /// The samples of `key`, oldest first (empty for a pool not recorded).
    pub(crate) fn samples(&self, key: &PoolKey) -> impl Iterator<Item = &Sample> {
        self.rings
            .get(key)
            .into_iter()
            .flat_map(|r| r.samples.iter())
    }

    /// The second the first failure of `key` was seen, if any.
    pub(crate) fn first_failure_s(&self, key: &PoolKey) -> Option<u64> {
        self.rings.get(key).and_then(|r| r.first_failure_s)
    }

    #[cfg(test)]
    pub(crate) fn pools(&self) -> usize {
        self.rings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::model::Transport;

    fn key(dport: u16) -> PoolKey {
        PoolKey {
            netns: 1,
            transport: Transport::Tcp,
            saddr: "10.0.0.1".parse().unwrap(),
            daddr: "10.0.0.9".parse().unwrap(),
            dport,
        }
    }

    fn sample(at_s: u64, used: u32, failures: u64) -> Sample {
        Sample {
            at_s,
            size: 40,
            used,
            time_wait: used / 2,
            failures,
        }
    }

    #[test]
    fn a_filling_pool_keeps_one_sample_a_second_and_the_first_failure() {
        let mut h = PoolHistory::default();
        let k = key(80);
        for t in 0..50 {
            h.record(
                &k,
                sample(100 + t, (t as u32).min(40), t.saturating_sub(40)),
            );
            // A redraw within the same second replaces, never adds.
            h.record(
                &k,
                sample(100 + t, (t as u32).min(40), t.saturating_sub(40)),
            );
        }
        let s: Vec<&Sample> = h.samples(&k).collect();
        assert_eq!(s.len(), 50);
        assert_eq!((s[0].at_s, s[49].at_s), (100, 149));
        assert_eq!(s[49].used, 40);
        assert_eq!(s[49].free(), 0);
        // Failures start once the pool is full: 1 at second 141.
        assert_eq!(h.first_failure_s(&k), Some(141));
        // A late sample does not go back in time.
        h.record(&k, sample(120, 1, 0));
        assert_eq!(h.samples(&k).count(), 50);
        assert_eq!(h.first_failure_s(&k), Some(141));
        assert_eq!(h.samples(&key(81)).count(), 0);
    }

    #[test]
    fn rings_are_bounded_in_length_and_in_age() {
        let mut h = PoolHistory::new(10, 4);
        let k = key(80);
        for t in 0..25 {
            h.record(&k, sample(t, 1, 0));
        }
        let s: Vec<u64> = h.samples(&k).map(|s| s.at_s).collect();
        assert_eq!(s, (15..25).collect::<Vec<_>>());
        // A gap: only what is younger than the capacity in seconds stays.
        h.prune(30);
        let s: Vec<u64> = h.samples(&k).map(|s| s.at_s).collect();
        assert_eq!(s, (20..25).collect::<Vec<_>>());
        h.prune(100);
        assert_eq!(h.pools(), 0, "an old ring goes");
    }

    #[test]
    fn the_pools_updated_longest_ago_go_first() {
        let mut h = PoolHistory::new(600, 3);
        for (i, dport) in (80..86).enumerate() {
            h.record(&key(dport), sample(10 + i as u64, 1, 0));
        }
        // The one a user looks at, recorded again now, stays.
        h.record(&key(80), sample(20, 2, 0));
        h.prune(20);
        assert_eq!(h.pools(), 3);
        for (dport, kept) in [(80, true), (81, false), (84, true), (85, true)] {
            assert_eq!(h.samples(&key(dport)).count() > 0, kept, "{dport}");
        }
    }

    #[test]
    fn failures_that_start_over_clear_the_mark() {
        let mut h = PoolHistory::default();
        let k = key(80);
        h.record(&k, sample(1, 40, 3));
        assert_eq!(h.first_failure_s(&k), Some(1), "seen with the first sample");
        h.record(&k, sample(2, 0, 0));
        assert_eq!(h.first_failure_s(&k), None);
        h.record(&k, sample(3, 40, 1));
        assert_eq!(h.first_failure_s(&k), Some(3));
    }
}

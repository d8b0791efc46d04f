//! Which port-failure warnings reach stderr one by one, and when the rest are summed up.
//!
//! An exhaustion fails thousands of connects a second; a line for each would bury
//! everything else on stderr (and fill journald). The first failures of an episode of a
//! pool are shown the moment they happen: they are what the user is hunting. The rest
//! are counted, and once per interval a summary says how many were not shown and which
//! process failed most. An episode ends after a whole interval without a failure of that
//! pool; the next failure is then shown again at once. This module decides; the render
//! stage writes the lines.
use std::hash::Hash;

use rustc_hash::FxHashMap;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Failures shown one by one per pool and episode.
    pub burst: u32,
    /// Summary period, and how long a pool must stay quiet to end its episode.
    pub interval_ns: u64,
    /// Pools followed one by one; failures of further pools are summed up together and
    /// never shown one by one (memory and lines stay bounded whatever the traffic).
    pub max_pools: usize,
    /// Processes counted per pool and interval to name the top one; the failures of
    /// further processes count in the total only.
    pub max_processes: usize,
}

pub(crate) const LIMITS: Limits = Limits {
    burst: 5,
    interval_ns: 10_000_000_000,
    max_pools: 1024,
    max_processes: 16,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write this failure's warning now.
    Show,
    /// Count it; a summary will.
    Count,
}

/// The failures of one pool (or, `pool: None`, of every pool beyond `max_pools`) that
/// were not shown during the last `seconds`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Summary<K> {
    pub pool: Option<K>,
    pub not_shown: u64,
    /// Length of the interval, rounded to whole seconds (at least 1).
    pub seconds: u64,
    /// The process with the most of them: (pid, name, failures).
    pub top: Option<(u32, String, u64)>,
}

#[derive(Debug)]
struct Window {
    started: u64,
    /// Shown in this episode.
    shown: u32,
    /// Failures (shown or not) in this interval.
    failures: u64,
    not_shown: u64,
    processes: Vec<(u32, String, u64)>,
}

impl Window {
    fn new(now: u64) -> Window {
        Window {
            started: now,
            shown: 0,
            failures: 0,
            not_shown: 0,
            processes: Vec::new(),
        }
    }

    fn count(&mut self, pid: u32, name: &str, max_processes: usize) {
        self.not_shown += 1;
        if let Some(p) = self.processes.iter_mut().find(|p| p.0 == pid) {
            p.2 += 1;
        } else if self.processes.len() < max_processes {
            self.processes.push((pid, name.to_string(), 1));
        }
    }

    /// Ends the interval at `now`: the summary of what was not shown, if anything was.
    fn close<K>(&mut self, pool: Option<K>, now: u64) -> Option<Summary<K>> {
        let summary = (self.not_shown > 0).then(|| {
            let top = self
                .processes
                .iter()
                // The most failures; the lowest pid among equals, so the choice is stable.
                .max_by(|a, b| a.2.cmp(&b.2).then(b.0.cmp(&a.0)))
                .cloned();
            let ns = now.saturating_sub(self.started);
            Summary {
                pool,
                not_shown: self.not_shown,
                seconds: ((ns + 500_000_000) / 1_000_000_000).max(1),
                top,
            }
        });
        self.started = now;
        self.failures = 0;
        self.not_shown = 0;
        self.processes.clear();
        summary
    }
}

pub(crate) struct WarnLimit<K> {
    limits: Limits,
    pools: FxHashMap<K, Window>,
    /// Pools beyond max_pools, together.
    overflow: Option<Window>,
}

impl<K: Eq + Hash + Clone> WarnLimit<K> {
    pub(crate) fn new(limits: Limits) -> WarnLimit<K> {
        WarnLimit {
            limits,
            pools: FxHashMap::default(),
            overflow: None,
        }
    }

    /// A failure of `pool` by process `pid` (`name`) at `now` (ns, any monotonic clock).
    pub(crate) fn failure(&mut self, pool: &K, pid: u32, name: &str, now: u64) -> Verdict {
        let l = self.limits;
        if !self.pools.contains_key(pool) && self.pools.len() >= l.max_pools {
            let w = self.overflow.get_or_insert_with(|| Window::new(now));
            w.failures += 1;
            w.count(pid, name, l.max_processes);
            return Verdict::Count;
        }
        let w = self
            .pools
            .entry(pool.clone())
            .or_insert_with(|| Window::new(now));
        w.failures += 1;
        if w.shown < l.burst {
            w.shown += 1;
            Verdict::Show
        } else {
            w.count(pid, name, l.max_processes);
            Verdict::Count
        }
    }

    /// Closes every interval that is `interval_ns` old at `now`: the summaries to write,
    /// the most failures first. Pools quiet for a whole interval are forgotten (their
    /// episode is over). Call it at least once a second.
    pub(crate) fn tick(&mut self, now: u64) -> Vec<Summary<K>> {
        let interval = self.limits.interval_ns;
        let due = |w: &Window| now.saturating_sub(w.started) >= interval;
        let mut out = Vec::new();
        self.pools.retain(|pool, w| {
            if !due(w) {
                return true;
            }
            let quiet = w.failures == 0;
            out.extend(w.close(Some(pool.clone()), now));
            !quiet
        });
        if let Some(w) = self.overflow.as_mut().filter(|w| due(w)) {
            let quiet = w.failures == 0;
            out.extend(w.close(None, now));
            if quiet {
                self.overflow = None;
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.not_shown));
        out
    }

    /// Closes every interval at `now`, due or not (the end of the run): what is still
    /// counted, summed up.
    pub(crate) fn finish(&mut self, now: u64) -> Vec<Summary<K>> {
        let mut out: Vec<_> = self
            .pools
            .drain()
            .filter_map(|(pool, mut w)| w.close(Some(pool), now))
            .collect();
        out.extend(self.overflow.take().and_then(|mut w| w.close(None, now)));
        out.sort_by_key(|s| std::cmp::Reverse(s.not_shown));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn limiter() -> WarnLimit<&'static str> {
        WarnLimit::new(LIMITS)
    }

    /// Drives a synthetic stream: `per_sec` failures a second of `pool` by `pid` for
    /// `seconds`, ticking every 250 ms as the output thread does. Returns (failures
    /// shown, summaries written).
    fn stream(
        l: &mut WarnLimit<&'static str>,
        pool: &'static str,
        pid: u32,
        start: u64,
        seconds: u64,
        per_sec: u64,
    ) -> (u64, Vec<Summary<&'static str>>) {
        let (mut shown, mut summaries) = (0, Vec::new());
        let step = S / per_sec;
        let end = start + seconds * S;
        let mut next_tick = start;
        let mut t = start;
        while t < end {
            if t >= next_tick {
                summaries.extend(l.tick(t));
                next_tick += S / 4;
            }
            if l.failure(&pool, pid, "curl", t) == Verdict::Show {
                shown += 1;
            }
            t += step;
        }
        (shown, summaries)
    }

    #[test]
    fn the_first_failures_are_shown_and_the_rest_summed_up_once_per_interval() {
        let mut l = limiter();
        // 1,000 failures a second for 60 s: 60,000 failures.
        let (shown, mut summaries) = stream(&mut l, "a", 7, 0, 60, 1000);
        summaries.extend(l.tick(60 * S));
        assert_eq!(shown, 5);
        // One summary per 10 s, and every failure is either shown or summed up.
        assert_eq!(summaries.len(), 6, "{summaries:?}");
        let summed: u64 = summaries.iter().map(|s| s.not_shown).sum();
        assert_eq!(shown + summed, 60_000);
        for s in &summaries {
            assert_eq!(s.pool, Some("a"));
            assert_eq!(s.seconds, 10);
            assert_eq!(s.top, Some((7, "curl".to_string(), s.not_shown)));
        }
        assert_eq!(summaries[0].not_shown, 10_000 - 5);
    }

    #[test]
    fn a_few_failures_write_no_summary() {
        let mut l = limiter();
        for i in 0..5 {
            assert_eq!(l.failure(&"a", 1, "x", i * S), Verdict::Show);
        }
        assert!(l.tick(10 * S).is_empty());
        assert!(l.tick(30 * S).is_empty());
    }

    #[test]
    fn a_quiet_interval_ends_the_episode_and_the_next_failure_is_shown_again() {
        let mut l = limiter();
        let (shown, _) = stream(&mut l, "a", 1, 0, 2, 100);
        assert_eq!(shown, 5);
        let s = l.tick(10 * S);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].not_shown, 195);
        // 10 s to 20 s: nothing. The episode is over at the end of that interval.
        assert!(l.tick(20 * S).is_empty());
        assert_eq!(l.failure(&"a", 1, "x", 21 * S), Verdict::Show);
    }

    #[test]
    fn a_slow_steady_failure_stays_in_its_episode() {
        let mut l = limiter();
        // One failure a second for a minute: 5 shown, then a summary per interval.
        let (shown, mut summaries) = stream(&mut l, "a", 1, 0, 60, 1);
        summaries.extend(l.tick(60 * S));
        assert_eq!(shown, 5);
        assert_eq!(summaries.len(), 6, "{summaries:?}");
        assert_eq!(summaries.iter().map(|s| s.not_shown).sum::<u64>(), 55);
    }

    #[test]
    fn pools_are_limited_independently() {
        let mut l = limiter();
        let (a, _) = stream(&mut l, "a", 1, 0, 1, 1000);
        // Pool b starts failing while a is being counted: its first failures show.
        let (b, _) = stream(&mut l, "b", 2, S, 1, 1000);
        assert_eq!((a, b), (5, 5));
        let s = l.tick(11 * S);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].not_shown, 995);
        let pools: Vec<_> = s.iter().map(|s| s.pool.unwrap()).collect();
        assert!(pools.contains(&"a") && pools.contains(&"b"), "{pools:?}");
    }

    #[test]
    fn the_top_process_is_the_one_that_failed_most() {
        let mut l = limiter();
        for _ in 0..5 {
            l.failure(&"a", 1, "one", 0);
        }
        for (pid, name, n) in [(2, "two", 30), (3, "three", 70), (4, "four", 10)] {
            for _ in 0..n {
                assert_eq!(l.failure(&"a", pid, name, S), Verdict::Count);
            }
        }
        let s = l.tick(10 * S);
        assert_eq!(s[0].not_shown, 110);
        assert_eq!(s[0].top, Some((3, "three".to_string(), 70)));
    }

    #[test]
    fn processes_beyond_the_bound_count_in_the_total_only() {
        let mut l = WarnLimit::new(Limits {
            max_processes: 2,
            burst: 0,
            ..LIMITS
        });
        for pid in 1..=10 {
            l.failure(&"a", pid, "p", 0);
        }
        l.failure(&"a", 2, "p", 0);
        let s = l.tick(10 * S);
        assert_eq!(s[0].not_shown, 11);
        assert_eq!(s[0].top, Some((2, "p".to_string(), 2)));
    }

    #[test]
    fn pools_beyond_the_bound_are_summed_up_together_and_never_shown() {
        let mut l: WarnLimit<u32> = WarnLimit::new(Limits {
            max_pools: 3,
            ..LIMITS
        });
        let mut shown = 0;
        for pool in 0..100u32 {
            for _ in 0..10 {
                if l.failure(&pool, pool, "p", S) == Verdict::Show {
                    shown += 1;
                }
            }
        }
        assert_eq!(shown, 3 * 5);
        let s = l.tick(11 * S);
        assert_eq!(s.len(), 4, "{s:?}");
        // The most failures first: the 97 untracked pools together.
        assert_eq!(s[0].pool, None);
        assert_eq!(s[0].not_shown, 970);
        assert!(s[1..].iter().all(|s| s.pool.is_some() && s.not_shown == 5));
        // Quiet for an interval: everything forgotten, room for new pools.
        assert!(l.tick(21 * S).is_empty());
        assert_eq!(l.failure(&500, 1, "p", 22 * S), Verdict::Show);
    }

    #[test]
    fn the_end_of_the_run_sums_up_what_is_still_counted() {
        let mut l = limiter();
        let (shown, summaries) = stream(&mut l, "a", 3, 0, 4, 100);
        assert_eq!((shown, summaries.len()), (5, 0));
        let s = l.finish(4 * S);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].not_shown, s[0].seconds), (395, 4));
        assert!(l.finish(5 * S).is_empty());
    }

    #[test]
    fn a_clock_that_goes_back_does_not_panic_nor_close_early() {
        let mut l = limiter();
        for _ in 0..10 {
            l.failure(&"a", 1, "p", 5 * S);
        }
        assert!(l.tick(S).is_empty());
        assert_eq!(l.tick(15 * S)[0].not_shown, 5);
    }
}

//! Events per second over a sliding window of one-second buckets. Pure (time passed in).

/// Counts in the last `N` whole seconds, plus the current one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rate {
    buckets: [u32; WINDOW],
    /// The second (boot clock) the newest bucket counts.
    head_s: u64,
    /// The first second anything was counted: a young window divides by what it saw.
    first_s: Option<u64>,
    pub total: u64,
}

pub(crate) const WINDOW: usize = 10;

impl Rate {
    fn advance(&mut self, now_s: u64) {
        if now_s <= self.head_s {
            return;
        }
        let steps = (now_s - self.head_s).min(WINDOW as u64) as usize;
        for i in 1..=steps {
            self.buckets[(self.head_s as usize + i) % WINDOW] = 0;
        }
        self.head_s = now_s;
    }

    pub(crate) fn add(&mut self, now_ns: u64, n: u32) {
        let s = now_ns / 1_000_000_000;
        self.advance(s);
        self.first_s.get_or_insert(s);
        self.buckets[(self.head_s as usize) % WINDOW] += n;
        self.total += n as u64;
    }

    /// Per second over the completed seconds of the window (the current one is partial).
    pub(crate) fn per_sec(&mut self, now_ns: u64) -> f64 {
        let s = now_ns / 1_000_000_000;
        self.advance(s);
        let cur = (self.head_s as usize) % WINDOW;
        let sum: u64 = (0..WINDOW)
            .filter(|&i| i != cur)
            .map(|i| self.buckets[i] as u64)
            .sum();
        let seen = self
            .first_s
            .map(|f| self.head_s.saturating_sub(f))
            .unwrap_or(0);
        sum as f64 / seen.clamp(1, WINDOW as u64 - 1) as f64
    }

    /// Counted in the current (partial) second: for "something happened just now".
    #[cfg(test)]
    pub(crate) fn this_second(&mut self, now_ns: u64) -> u32 {
        self.advance(now_ns / 1_000_000_000);
        self.buckets[(self.head_s as usize) % WINDOW]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const S: u64 = 1_000_000_000;

    #[test]
    fn steady_rate_is_measured_over_the_window() {
        let mut r = Rate::default();
        for sec in 100..120u64 {
            r.add(sec * S, 50);
        }
        assert_eq!(r.per_sec(120 * S), 50.0);
        // Silence empties the window.
        assert_eq!(r.per_sec(200 * S), 0.0);
        assert_eq!(r.total, 1000);
    }

    #[test]
    fn current_second_is_not_counted_in_the_rate() {
        let mut r = Rate::default();
        r.add(5 * S, 9);
        assert_eq!(r.per_sec(5 * S), 0.0);
        assert_eq!(r.this_second(5 * S), 9);
        assert_eq!(r.per_sec(6 * S), 9.0, "one complete second seen");
        assert_eq!(r.per_sec(7 * S), 4.5);
    }
}

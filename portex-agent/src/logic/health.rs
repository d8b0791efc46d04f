//! Whether the pipeline is alive, for /healthz: each of its threads stamps a heartbeat
//! every time its loop comes round, and a heartbeat older than `STALL_NS` means that
//! thread is stuck (a deadlock, a call that never returns, a thread that died).
//!
//! How often they come round when all is well: the reader every 20 ms at most (its
//! drain tick, reader::DRAIN_EVERY), the output thread every 250 ms at most (its
//! receive timeout) and after every batch. Its slowest legitimate pass is the
//! reconciliation with sock_diag every 10 s, which reads every namespace's socket table
//! (`status` reads 100,000 sockets in ~50 ms): 10 s without a heartbeat is 40 missed
//! rounds of the slower thread, far beyond a slow pass and soon enough for a liveness
//! probe to restart an agent that stopped reporting.

/// A heartbeat older than this is a stall.
pub(crate) const STALL_NS: u64 = 10_000_000_000;

/// The verdict of one health check.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Health {
    Alive,
    /// The named thread has not come round for `for_ns`.
    Stalled {
        thread: &'static str,
        for_ns: u64,
    },
    /// No pipeline runs (before start, after shutdown).
    NotRunning,
}

/// Judges `beats` (thread name, time of its last heartbeat) at `now`, all on one clock.
/// The stalest thread is named. A heartbeat later than `now` (read before another
/// thread stamped) is fresh.
pub(crate) fn judge(now: u64, beats: &[(&'static str, u64)]) -> Health {
    if beats.is_empty() {
        return Health::NotRunning;
    }
    let (thread, last) = beats
        .iter()
        .copied()
        .min_by_key(|(_, t)| *t)
        .expect("not empty");
    let age = now.saturating_sub(last);
    if age > STALL_NS {
        Health::Stalled {
            thread,
            for_ns: age,
        }
    } else {
        Health::Alive
    }
}

impl Health {
    /// The body of the answer: one line.
    pub(crate) fn line(&self) -> String {
        match self {
            Health::Alive => "ok\n".into(),
            Health::Stalled { thread, for_ns } => format!(
                "stalled: the {thread} thread has not come round for {:.1} s (limit {} s)\n",
                *for_ns as f64 / 1e9,
                STALL_NS / 1_000_000_000
            ),
            Health::NotRunning => {
                "not running: the pipeline has not started or has stopped\n".into()
            }
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        *self == Health::Alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn alive_while_every_thread_beats_within_the_limit() {
        let now = 100 * S;
        assert_eq!(
            judge(now, &[("reader", now), ("output", now - S)]),
            Health::Alive
        );
        // Exactly at the limit is still alive.
        assert_eq!(judge(now, &[("output", now - STALL_NS)]), Health::Alive);
        // A beat stamped after `now` was read.
        assert_eq!(judge(now, &[("output", now + S)]), Health::Alive);
    }

    #[test]
    fn the_stalest_thread_is_named() {
        let now = 100 * S;
        let h = judge(now, &[("reader", now - 11 * S), ("output", now - 30 * S)]);
        assert_eq!(
            h,
            Health::Stalled {
                thread: "output",
                for_ns: 30 * S
            }
        );
        assert!(!h.is_alive());
        assert_eq!(
            h.line(),
            "stalled: the output thread has not come round for 30.0 s (limit 10 s)\n"
        );
        assert_eq!(
            judge(now, &[("reader", now - 11 * S), ("output", now)]),
            Health::Stalled {
                thread: "reader",
                for_ns: 11 * S
            }
        );
    }

    #[test]
    fn no_thread_is_not_running() {
        assert_eq!(judge(5 * S, &[]), Health::NotRunning);
        assert!(!Health::NotRunning.is_alive());
    }
}

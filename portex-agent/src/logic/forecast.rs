//! When does a pool run out? Pure arithmetic over rates the ledger measures.
//!
//! A pool fills when new connections per second x (lifetime + the time a TIME_WAIT port
//! is held, for the connections this side closes first) approaches its size (Little's
//! law). The hold is 60 s, or tcp_tw_reuse_delay where the kernel reuses TIME_WAIT ports.

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Forecast {
    /// Ports the pool will hold once the current rates settle.
    pub steady_state_used: f64,
    /// Seconds until no port is left at the current net growth; None when not growing.
    pub seconds_to_full: Option<f64>,
}

/// `opens_per_s`: new connections; `releases_per_s`: ports given back (closes without
/// TIME_WAIT, TIME_WAIT ports reusable or ended); `lifetime_s`: mean open-to-close time;
/// `tw_share`: the fraction of closes that leave the port in TIME_WAIT; `tw_hold_s`: how
/// long such a port stays unusable.
pub(crate) fn forecast(
    size: u32,
    used: u32,
    (opens_per_s, releases_per_s): (f64, f64),
    lifetime_s: f64,
    tw_share: f64,
    tw_hold_s: f64,
) -> Forecast {
    let steady = opens_per_s * (lifetime_s.max(0.0) + tw_share.clamp(0.0, 1.0) * tw_hold_s);
    let growth = opens_per_s - releases_per_s;
    let free = size.saturating_sub(used) as f64;
    let seconds_to_full = if used >= size {
        Some(0.0)
    } else if growth > 1e-9 && steady >= size as f64 {
        Some(free / growth)
    } else {
        None
    };
    Forecast {
        steady_state_used: steady,
        seconds_to_full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pool_fills_at_about_470_per_second_with_client_close() {
        // The default range holds 28,232 ports, each kept 60 s in TIME_WAIT by a client
        // that closes first: ~470 connections/s to one destination at most.
        let f = forecast(28_232, 0, (500.0, 0.0), 0.01, 1.0, 60.0);
        assert!(f.steady_state_used > 28_232.0);
        let t = f.seconds_to_full.unwrap();
        assert!((t - 56.464).abs() < 0.01, "{t}");
        let f = forecast(28_232, 0, (400.0, 0.0), 0.01, 1.0, 60.0);
        assert!(f.steady_state_used < 28_232.0);
        assert_eq!(
            f.seconds_to_full, None,
            "settles below the size: never full"
        );
    }

    #[test]
    fn a_full_pool_is_full_now_and_a_shrinking_one_never() {
        assert_eq!(
            forecast(4, 4, (0.0, 0.0), 0.0, 0.0, 60.0).seconds_to_full,
            Some(0.0)
        );
        assert_eq!(
            forecast(100, 50, (10.0, 20.0), 100.0, 0.0, 60.0).seconds_to_full,
            None
        );
    }
}

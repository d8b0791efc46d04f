//! Demand against what a pool sustains: when this side closes first, each connection
//! keeps its port for the TIME_WAIT hold, so a pool of N ports sustains N / hold new
//! connections per second (Little's law). A client asking for more runs out however
//! big the pool looks now. Pure.
use rustc_hash::FxHashMap;

use crate::logic::{
    diagnose::{Diagnosis, Severity},
    model::DiagSocket,
    pool::{Pool, PoolKey, sustainable_per_s, table_rules, tw_hold_ms},
    sysctls::NetSettings,
};

/// The window over which a socket table shows the recent rate of closes: TIME_WAIT
/// sockets younger than this, over its length. Short enough to be "now", long enough
/// for a handful of sockets at low rates.
pub(crate) const RECENT_MS: u64 = 10_000;

/// Demand below this share of the sustainable rate is not worth a word.
const NEAR: f64 = 0.8;

/// Per TCP pool, connections this side closed first per second over the last RECENT_MS,
/// from the ages of its TIME_WAIT sockets. A lower bound where tcp_tw_reuse hands ports
/// back early (a TIME_WAIT socket taken over is gone from the table).
pub(crate) fn recent_close_rates(
    netns: u64,
    settings: &NetSettings,
    sockets: &[DiagSocket],
) -> Vec<(PoolKey, f64)> {
    let rules = table_rules(settings, sockets);
    let mut counts: FxHashMap<PoolKey, u32> = FxHashMap::default();
    for s in sockets.iter().filter(|s| {
        s.in_time_wait() && rules.client_side(s.local) && s.time_wait_age_ms() < RECENT_MS
    }) {
        let key = PoolKey::tcp_of(netns, s);
        *counts.entry(key).or_default() += 1;
    }
    let mut v: Vec<(PoolKey, f64)> = counts
        .into_iter()
        .map(|(k, n)| (k, n as f64 * 1000.0 / RECENT_MS as f64))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A diagnosis for each pool whose demand (closes per second, this side first) is at
/// or above NEAR of what it sustains, with the fix that raises the ceiling most.
pub(crate) fn rate_below_demand(
    settings: &NetSettings,
    pools: &[Pool],
    demand: &[(PoolKey, f64)],
) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    for (key, rate) in demand {
        let Some(p) = pools.iter().find(|p| &p.key == key) else {
            continue;
        };
        let hold_ms = tw_hold_ms(settings, key.saddr, key.daddr);
        let ceiling = sustainable_per_s(p.size, hold_ms);
        if *rate < NEAR * ceiling || *rate <= 0.0 {
            continue;
        }
        let with_reuse = NetSettings {
            tw_reuse: 1,
            ..settings.clone()
        };
        let reuse_hold = tw_hold_ms(&with_reuse, key.saddr, key.daddr);
        let fix = if reuse_hold < hold_ms {
            format!(
                "sysctl -w net.ipv4.tcp_tw_reuse=1 lets connect() take over a TIME_WAIT port after \
                 {} ms, raising the ceiling to ~{:.0}/s; better still, reuse connections \
                 (keep-alive, a connection pool) so that fewer close at all",
                settings.tw_reuse_delay_ms,
                sustainable_per_s(p.size, reuse_hold)
            )
        } else if !settings.timestamps {
            "turn TCP timestamps back on (net.ipv4.tcp_timestamps=1): tcp_tw_reuse needs them; \
             and reuse connections so that fewer close at all"
                .into()
        } else {
            "reuse connections (keep-alive, a connection pool) or let the server close first; \
             widen ip_local_port_range or add source addresses to raise the ceiling"
                .into()
        };
        out.push(Diagnosis {
            id: "rate_above_sustainable",
            severity: if *rate >= ceiling {
                Severity::Critical
            } else {
                Severity::Warning
            },
            summary: format!(
                "{} closes ~{:.1} connections/s from this side; the pool sustains ~{:.1}/s ({} \
                 ports, each held {} ms in TIME_WAIT), so it runs out whatever its fill now",
                key.label(),
                rate,
                ceiling,
                p.size,
                hold_ms
            ),
            fix,
            pool: Some(key.clone()),
            pids: p
                .holders
                .iter()
                .filter_map(|h| h.owner.as_ref().map(|o| o.pid))
                .collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::{fixtures::tcp, pool::build_pools};

    fn tw(local: &str, age_ms: u64) -> DiagSocket {
        let mut s = tcp(6, local, "10.0.0.9:80", 0);
        s.expires_ms = (crate::logic::pool::TIME_WAIT_MS - age_ms) as u32;
        s
    }

    #[test]
    fn demand_above_what_the_pool_sustains_is_diagnosed_with_tcp_tw_reuse() {
        // 100 ports, reuse off towards a non-loopback address: 100 / 60 s = 1.7/s.
        let settings = NetSettings {
            range: (40000, 40099),
            tw_reuse: 2,
            ..Default::default()
        };
        // 30 closes in the last 10 s (3/s) and 20 older ones.
        let socks: Vec<DiagSocket> = (0..50)
            .map(|i| {
                tw(
                    &format!("10.0.0.1:{}", 40000 + i),
                    if i < 30 { 5_000 } else { 30_000 },
                )
            })
            .collect();
        let rates = recent_close_rates(1, &settings, &socks);
        assert_eq!(rates.len(), 1);
        assert_eq!(rates[0].1, 3.0);
        let pools = build_pools(1, &settings, &socks, |_| None);
        let d = rate_below_demand(&settings, &pools, &rates);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].id, "rate_above_sustainable");
        assert_eq!(d[0].severity, Severity::Critical);
        assert!(d[0].fix.contains("tcp_tw_reuse=1"), "{}", d[0].fix);
        assert!(d[0].summary.contains("~1.7/s"), "{}", d[0].summary);
        // A slow client is not a problem.
        let slow = recent_close_rates(1, &settings, &socks[..5]);
        assert!(rate_below_demand(&settings, &pools, &slow).is_empty());
    }
}

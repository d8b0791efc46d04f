//! What is wrong with a namespace's NAT, and what to change: NAT pools near full, the
//! conntrack TIME_WAIT timeout against the close rate, the conntrack table near full.
//! Pure.
use crate::logic::{
    diagnose::{Diagnosis, Severity, Thresholds},
    nat::{NatPool, RangeSource},
};

/// What is wrong with a namespace's NAT: pools near full (and why), the table near full.
pub(crate) fn diagnose_nat(
    pools: &[NatPool],
    table: Option<(u64, u64)>,
    tw_timeout_s: Option<u64>,
    th: &Thresholds,
) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    for p in pools {
        let Some(sev) = th.severity(p.utilisation()) else {
            continue;
        };
        let tw_note = if p.time_wait * 2 >= p.used && p.time_wait > 0 {
            format!(
                "; {} of them are mappings in TIME_WAIT, each held {} s \
                 (net.netfilter.nf_conntrack_tcp_timeout_time_wait)",
                p.time_wait,
                tw_timeout_s.unwrap_or(120)
            )
        } else {
            String::new()
        };
        out.push(Diagnosis {
            id: "nat_pool_exhaustion",
            severity: sev,
            summary: format!(
                "NAT pool {}: {} of {} ports mapped ({:.0}%; size from {}){tw_note}: \
                 when it is full, SYNs are dropped (conntrack insert_failed) and clients \
                 time out instead of failing fast",
                p.key.label(),
                p.used,
                p.size,
                p.utilisation() * 100.0,
                match p.size_from {
                    RangeSource::Rule => "the NAT rule's port range",
                    RangeSource::Default => "the kernel's default range (no rule range read)",
                }
            ),
            fix: "give the NAT more addresses (snat to a set or a range of IPs) or a wider port \
                  range; reuse connections from the pods (keep-alive, connection pools); use \
                  `masquerade random-fully` where port collisions dominate"
                .into(),
            pool: None,
            pids: Vec::new(),
        });
    }
    out.extend(
        pools
            .iter()
            .filter_map(|p| time_wait_rate(p, tw_timeout_s.unwrap_or(DEFAULT_TW_TIMEOUT_S), th)),
    );
    if let Some((count, max)) = table
        && max > 0
    {
        let util = count as f64 / max as f64;
        if let Some(sev) = th.severity(util) {
            out.push(Diagnosis {
                id: "conntrack_table_full",
                severity: sev,
                summary: format!(
                    "the conntrack table holds {count} of {max} entries ({:.0}%): when it is \
                     full, new connections through this host are dropped",
                    util * 100.0
                ),
                fix: "raise net.netfilter.nf_conntrack_max (and nf_conntrack_buckets), or shorten \
                      the timeouts of finished connections (nf_conntrack_tcp_timeout_time_wait)"
                    .into(),
                pool: None,
                pids: Vec::new(),
            });
        }
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.severity));
    out
}

/// nf_conntrack_tcp_timeout_time_wait's default, seconds.
pub(crate) const DEFAULT_TW_TIMEOUT_S: u64 = 120;

/// The close rate, as a share of what the pool sustains, from which the TIME_WAIT
/// timeout is worth a diagnosis.
const TW_RATE_WARN: f64 = 0.5;

/// The TIME_WAIT timeout against the rate, from one scan: a pool's mappings in TIME_WAIT
/// were closed within the last `timeout` seconds, so `time_wait / timeout` is the average
/// close rate over that time; the pool sustains `size / timeout` closes per second. A
/// diagnosis when the rate is above TW_RATE_WARN of it (critical above the critical
/// threshold), with how long the free ports last at that rate.
fn time_wait_rate(p: &NatPool, timeout_s: u64, th: &Thresholds) -> Option<Diagnosis> {
    if p.key.proto != 6 || p.time_wait == 0 || p.size == 0 || timeout_s == 0 {
        return None;
    }
    let rate = p.time_wait as f64 / timeout_s as f64;
    let sustainable = p.size as f64 / timeout_s as f64;
    let share = rate / sustainable;
    let severity = if share >= th.critical {
        Severity::Critical
    } else if share >= TW_RATE_WARN {
        Severity::Warning
    } else {
        return None;
    };
    let free = p.size.saturating_sub(p.used);
    let headroom = if free == 0 {
        "no port is free now".to_string()
    } else {
        format!(
            "its {free} free ports are {:.0} s of new connections at that rate",
            free as f64 / rate
        )
    };
    Some(Diagnosis {
        id: "nat_time_wait_rate",
        severity,
        summary: format!(
            "NAT pool {}: {} mappings in TIME_WAIT, each held {timeout_s} s, mean \
             {rate:.1} closes/s over the last {timeout_s} s against the {sustainable:.1}/s \
             the pool sustains ({:.0}%); {headroom}",
            p.key.label(),
            p.time_wait,
            share * 100.0
        ),
        fix: format!(
            "lower net.netfilter.nf_conntrack_tcp_timeout_time_wait (now {timeout_s} s; it \
             only shortens how long conntrack keeps a closed mapping, the endpoints' own \
             TIME_WAIT is separate); reuse connections (keep-alive, connection pools) so \
             fewer close; give the NAT more addresses (each adds {} ports)",
            p.size
        ),
        pool: None,
        pids: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::{fixtures::ct_entry as e, nat::nat_pools};

    #[test]
    fn the_time_wait_timeout_is_weighed_against_the_close_rate() {
        // 1000 ports, 300 used of which 240 in TIME_WAIT held 120 s: 2 closes/s against
        // the 8.3/s the pool sustains (24%): nothing to say.
        let mut p = nat_pools(9, &[e("10.77.0.2:50000", "10.78.0.1:40000", true)], None).remove(0);
        p.size = 1000;
        p.used = 300;
        p.time_wait = 240;
        let th = Thresholds::default();
        assert!(time_wait_rate(&p, 120, &th).is_none());
        // 600 of 700 used in TIME_WAIT: 5/s of 8.3/s (60%); 300 free ports = 60 s.
        p.used = 700;
        p.time_wait = 600;
        let d = time_wait_rate(&p, 120, &th).unwrap();
        assert_eq!(d.severity, Severity::Warning);
        assert!(d.summary.contains("mean 5.0 closes/s"), "{}", d.summary);
        assert!(
            d.summary.contains("8.3/s the pool sustains (60%)"),
            "{}",
            d.summary
        );
        assert!(
            d.summary.contains("300 free ports are 60 s"),
            "{}",
            d.summary
        );
        assert!(
            d.fix
                .contains("nf_conntrack_tcp_timeout_time_wait (now 120 s")
        );
        assert!(d.fix.contains("endpoints' own TIME_WAIT is separate"));
        // A shorter timeout makes the same mappings a higher rate: critical.
        p.used = 1000;
        p.time_wait = 980;
        let d = time_wait_rate(&p, 120, &th).unwrap();
        assert_eq!(d.severity, Severity::Critical);
        assert!(d.summary.contains("no port is free now"));
        // UDP has no TIME_WAIT; a zero timeout says nothing.
        p.key.proto = 17;
        assert!(time_wait_rate(&p, 120, &th).is_none());
        p.key.proto = 6;
        assert!(time_wait_rate(&p, 0, &th).is_none());
    }

    #[test]
    fn a_full_conntrack_table_is_critical() {
        let d = diagnose_nat(&[], Some((262_000, 262_144)), None, &Thresholds::default());
        assert_eq!(d[0].id, "conntrack_table_full");
        assert_eq!(d[0].severity, Severity::Critical);
    }
}

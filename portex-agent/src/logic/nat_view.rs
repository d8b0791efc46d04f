//! The host's NAT as the live views (watch, agent, top) see it: one scan of every
//! namespace's conntrack table (pipeline::nat_scan reads it), when to scan next, and the
//! pool_pressure crossings of its NAT pools. Pure.
use std::collections::HashMap;

use crate::logic::{
    diagnose::{Diagnosis, Severity, Thresholds},
    model::Owner,
    nat::{NatPool, NatPoolKey},
    nat_diagnose::diagnose_nat,
};

/// One namespace's conntrack table: its fill and how long a TIME_WAIT mapping lives.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConntrackTable {
    pub netns: u64,
    /// nf_conntrack_count, nf_conntrack_max.
    pub count: u64,
    pub max: u64,
    /// net.netfilter.nf_conntrack_tcp_timeout_time_wait, seconds.
    pub tw_timeout_s: Option<u64>,
    /// conntrack's insert_failed counter (packets it could not map: behind a NAT, SYNs
    /// for which no free port was found), when ctnetlink gave it.
    pub insert_failed: Option<u64>,
}

/// One scan of the host's NAT.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NatView {
    /// When the scan ended (boot ns) and how long it took.
    pub at_ns: u64,
    pub duration_ns: u64,
    /// Scans so far, this one included.
    pub scans: u64,
    /// Every namespace's NAT pools, fullest first.
    pub pools: Vec<NatPool>,
    /// The namespaces whose table holds entries (empty tables are left out).
    pub tables: Vec<ConntrackTable>,
}

impl NatView {
    pub(crate) fn table(&self, netns: u64) -> Option<&ConntrackTable> {
        self.tables.iter().find(|t| t.netns == netns)
    }

    /// What diagnose_nat says of each namespace: its NAT pools, its table, the
    /// TIME_WAIT timeout against the rate.
    pub(crate) fn diagnoses(&self, th: &Thresholds) -> Vec<(u64, Vec<Diagnosis>)> {
        let mut out = Vec::new();
        for t in &self.tables {
            let pools: Vec<NatPool> = self
                .pools
                .iter()
                .filter(|p| p.key.netns == t.netns)
                .cloned()
                .collect();
            let d = diagnose_nat(&pools, Some((t.count, t.max)), t.tw_timeout_s, th);
            if !d.is_empty() {
                out.push((t.netns, d));
            }
        }
        out
    }
}

/// A scan may cost at most 1/SCAN_COST_FACTOR of a core: the next one waits at least
/// this many times the last one's duration (a dump of 100,000 entries takes tens of
/// ms, so a busy gateway is scanned every few seconds, not every second).
pub(crate) const SCAN_COST_FACTOR: u64 = 40;

/// The default period between scans, seconds (`--nat-scan`).
pub(crate) const SCAN_PERIOD_S: u64 = 5;

/// How long to wait after a scan that took `last_ns`: the period, or longer when scans
/// are expensive.
pub(crate) fn next_scan_in_ns(period_ns: u64, last_ns: u64) -> u64 {
    period_ns.max(last_ns.saturating_mul(SCAN_COST_FACTOR))
}

/// The rule range is read from a dump of the whole ruleset: again only after this long,
/// or when the set of NAT addresses of a namespace changed.
pub(crate) const RULE_RANGE_TTL_NS: u64 = 60_000_000_000;

/// Whether a cached rule range is still good: young enough and read for the same NAT
/// addresses (a new masquerade or snat rule brings a new one).
pub(crate) fn rule_range_fresh<T: PartialEq>(
    read_at: u64,
    read_for: &T,
    now: u64,
    addrs_now: &T,
) -> bool {
    now.saturating_sub(read_at) < RULE_RANGE_TTL_NS && read_for == addrs_now
}

/// A NAT pool crossed a utilisation threshold upwards.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NatPressure {
    pub severity: Severity,
    pub pool: NatPool,
    /// The process behind each of the first PRESSURE_SOURCES sources, when the source
    /// is a namespace of this host whose sockets the live ledger knows.
    pub processes: Vec<Option<Owner>>,
    /// The container of each of those processes (its id), when its cgroup names one.
    pub containers: Vec<Option<String>>,
}

/// Sources a NAT pool's pool_pressure names.
pub(crate) const PRESSURE_SOURCES: usize = 5;

/// The standing alert of each NAT pool (the same hysteresis as the ledger's pools).
#[derive(Default, Debug)]
pub(crate) struct NatAlerts {
    standing: HashMap<NatPoolKey, Severity>,
}

impl NatAlerts {
    /// The crossings of one scan. A pool the scan no longer shows is empty: its alert
    /// is cleared.
    pub(crate) fn observe(&mut self, pools: &[NatPool], th: &Thresholds) -> Vec<NatPressure> {
        let mut out = Vec::new();
        let mut next = HashMap::with_capacity(self.standing.len());
        for p in pools {
            let mut alert = self.standing.get(&p.key).copied();
            if let Some(s) = th.crossing(&mut alert, p.utilisation()) {
                out.push(NatPressure {
                    severity: s,
                    pool: p.clone(),
                    processes: Vec::new(),
                    containers: Vec::new(),
                });
            }
            if let Some(a) = alert {
                next.insert(p.key.clone(), a);
            }
        }
        self.standing = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::fixtures::nat_pool;

    fn pool(used: u32) -> NatPool {
        nat_pool(7, 100, used, used / 2, used)
    }

    #[test]
    fn a_nat_pool_alerts_once_per_threshold_crossed_and_rearms_below_it() {
        let th = Thresholds::default();
        let mut a = NatAlerts::default();
        let sev = |a: &mut NatAlerts, used: u32| -> Vec<Severity> {
            a.observe(&[pool(used)], &th)
                .into_iter()
                .map(|p| p.severity)
                .collect()
        };
        assert!(sev(&mut a, 50).is_empty());
        assert_eq!(sev(&mut a, 81), vec![Severity::Warning]);
        assert!(sev(&mut a, 82).is_empty(), "standing: once");
        assert_eq!(sev(&mut a, 96), vec![Severity::Critical]);
        // Hovering just below critical does not re-arm; clearly below does.
        assert!(sev(&mut a, 93).is_empty());
        assert!(sev(&mut a, 96).is_empty());
        assert!(sev(&mut a, 89).is_empty());
        assert_eq!(sev(&mut a, 96), vec![Severity::Critical]);
        // Gone from the scan (no mapping left): cleared, alerts again when it refills.
        assert!(a.observe(&[], &th).is_empty());
        assert_eq!(sev(&mut a, 85), vec![Severity::Warning]);
        let p = &a.observe(&[pool(100)], &th)[0];
        assert_eq!((p.pool.used, p.pool.time_wait), (100, 50));
    }

    #[test]
    fn scans_wait_at_least_forty_times_their_cost() {
        let s = 1_000_000_000;
        assert_eq!(next_scan_in_ns(5 * s, 10_000_000), 5 * s);
        assert_eq!(next_scan_in_ns(5 * s, 200_000_000), 8 * s);
        assert_eq!(next_scan_in_ns(0, u64::MAX), u64::MAX);
    }

    #[test]
    fn the_rule_range_is_read_again_after_a_minute_or_for_new_addresses() {
        let a = vec!["10.78.0.1"];
        assert!(rule_range_fresh(0, &a, 59_000_000_000, &a));
        assert!(!rule_range_fresh(0, &a, 60_000_000_000, &a));
        assert!(!rule_range_fresh(0, &a, 1, &vec!["10.78.0.1", "10.79.0.1"]));
    }

    #[test]
    fn a_view_diagnoses_each_namespace_with_its_own_table() {
        let v = NatView {
            pools: vec![pool(100)],
            tables: vec![
                ConntrackTable {
                    netns: 7,
                    count: 100,
                    max: 262_144,
                    tw_timeout_s: Some(120),
                    insert_failed: None,
                },
                ConntrackTable {
                    netns: 8,
                    count: 10,
                    max: 1000,
                    tw_timeout_s: None,
                    insert_failed: None,
                },
            ],
            ..NatView::default()
        };
        let d = v.diagnoses(&Thresholds::default());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 7);
        assert!(d[0].1.iter().any(|d| d.id == "nat_pool_exhaustion"));
        assert_eq!(v.table(8).map(|t| t.max), Some(1000));
    }
}

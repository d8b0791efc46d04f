//! The NAT part of a namespace's report: the conntrack table's fill and the NAT pools,
//! as text and JSON. Pure.
use std::fmt::Write;

use serde_json::{Value, json};

use crate::logic::{
    diagnose::{Severity, Thresholds},
    nat::{CtStats, NatPool, RangeSource, proto_name},
};

/// NAT pools from the conntrack table, and the table itself.
pub(crate) struct NatReport {
    pub pools: Vec<NatPool>,
    /// (nf_conntrack_count, nf_conntrack_max).
    pub table: (u64, u64),
    /// The rules' port range, when the ruleset gave one.
    pub range: Option<(u16, u16)>,
    /// conntrack's counters since the namespace was created.
    pub stats: Option<CtStats>,
}

pub(super) fn nat_json(n: &NatReport) -> Value {
    json!({
        "conntrack": {
            "entries": n.table.0,
            "max": n.table.1,
            "insert_failed": n.stats.map(|s| s.insert_failed),
            "drop": n.stats.map(|s| s.drop),
            "early_drop": n.stats.map(|s| s.early_drop),
        },
        "rule_port_range": n.range.map(|(a, b)| [a, b]),
        "pools": n.pools.iter().map(|p| json!({
            "network": { "transport": proto_name(p.key.proto) },
            "nat": { "ip": p.key.nat_ip.to_string() },
            "destination": { "ip": p.key.daddr.to_string(), "port": p.key.dport },
            "size": p.size,
            "size_from": match p.size_from {
                RangeSource::Rule => "rule",
                RangeSource::Default => "kernel_default",
            },
            "used": p.used,
            "free": p.size.saturating_sub(p.used),
            "time_wait": p.time_wait,
            "sources": p.sources.iter().map(|(ip, n)| json!({ "ip": ip.to_string(), "held": n })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The NAT section of a namespace: the table's fill, then its NAT pools.
pub(super) fn nat_text(n: &NatReport, th: &Thresholds, limit: usize, o: &mut String) {
    let (count, max) = n.table;
    let _ = writeln!(
        o,
        "  conntrack table: {count} of {max} entries ({:.0}%); NAT port range {}",
        if max > 0 {
            count as f64 * 100.0 / max as f64
        } else {
            0.0
        },
        match n.range {
            Some((a, b)) => format!("{a}-{b} (from the rules)"),
            None => "not read from the rules: the kernel's default 1024-65535 assumed".into(),
        }
    );
    if let Some(s) = n.stats.filter(|s| s.insert_failed + s.drop > 0) {
        // Behind a NAT these are mostly SYNs for which no free port was found.
        let _ = writeln!(
            o,
            "  conntrack dropped {} packets ({} could not be inserted: no free NAT port or \
             a clash; {} entries evicted from a full table) since the namespace started",
            s.drop, s.insert_failed, s.early_drop
        );
    }
    if n.pools.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "  {:<46} {:>6} {:>6} {:>6} {:>5} {:>9}  TOP SOURCES",
        "NAT POOL", "SIZE", "USED", "FREE", "UTIL", "TIME_WAIT"
    );
    for p in n.pools.iter().take(limit) {
        let mark = match th.severity(p.utilisation()) {
            Some(Severity::Critical) => "!!",
            Some(_) => "! ",
            None => "  ",
        };
        let sources: Vec<String> = p
            .sources
            .iter()
            .take(3)
            .map(|(ip, k)| format!("{ip} ({k})"))
            .collect();
        let _ = writeln!(
            o,
            "{mark}{:<46} {:>6} {:>6} {:>6} {:>4.0}% {:>9}  {}",
            p.key.label(),
            p.size,
            p.used,
            p.size.saturating_sub(p.used),
            p.utilisation() * 100.0,
            p.time_wait,
            sources.join(", ")
        );
    }
}

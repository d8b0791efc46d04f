//! The NAT part of the Prometheus page: NAT pools (bounded like the host's pools: the
//! utilisation floor and the top N), each namespace's conntrack table, and the NAT
//! scanner's own cost. Pure.
use std::fmt::Write;

use super::prometheus::{esc, head};

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NatPoolGauge {
    pub netns: u64,
    pub protocol: &'static str,
    pub nat_address: String,
    pub destination_address: String,
    pub destination_port: u16,
    pub size: u32,
    /// "rule" (the masquerade/snat rule's port range) or "default" (none read).
    pub size_from: &'static str,
    pub used: u32,
    pub time_wait: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ConntrackGauge {
    pub netns: u64,
    pub entries: u64,
    pub max: u64,
}

/// What the NAT scanner last saw, as published for scrapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NatSnapshot {
    pub pools: Vec<NatPoolGauge>,
    pub tables: Vec<ConntrackGauge>,
    /// The last scan's duration; None before the first (or with the scanner off).
    pub scan_seconds: Option<f64>,
    pub scans: u64,
}

pub(crate) fn render_nat(o: &mut String, s: &NatSnapshot) {
    let labels = |p: &NatPoolGauge| {
        format!(
            "netns=\"{}\",protocol=\"{}\",nat_address=\"{}\",destination_address=\"{}\",destination_port=\"{}\"",
            p.netns,
            p.protocol,
            esc(&p.nat_address),
            esc(&p.destination_address),
            p.destination_port
        )
    };
    head(
        o,
        "portex_nat_pool_size_ports",
        "gauge",
        "Ports a NAT (masquerade/snat) rule can map towards the destination from one NAT address; size_from: the rule's port range, or the kernel's default.",
    );
    for p in &s.pools {
        let _ = writeln!(
            o,
            "portex_nat_pool_size_ports{{{},size_from=\"{}\"}} {}",
            labels(p),
            p.size_from,
            p.size
        );
    }
    for (name, help, get) in [
        (
            "portex_nat_pool_used_ports",
            "NAT mappings (conntrack entries) holding a port of the pool, TIME_WAIT included.",
            (|p: &NatPoolGauge| p.used) as fn(&NatPoolGauge) -> u32,
        ),
        (
            "portex_nat_pool_time_wait_ports",
            "Of them, mappings in TIME_WAIT (held nf_conntrack_tcp_timeout_time_wait).",
            |p: &NatPoolGauge| p.time_wait,
        ),
    ] {
        head(o, name, "gauge", help);
        for p in &s.pools {
            let _ = writeln!(o, "{name}{{{}}} {}", labels(p), get(p));
        }
    }
    for (name, help, get) in [
        (
            "portex_conntrack_entries",
            "Entries in the namespace's conntrack table (nf_conntrack_count); namespaces with an empty table are left out.",
            (|t: &ConntrackGauge| t.entries) as fn(&ConntrackGauge) -> u64,
        ),
        (
            "portex_conntrack_max",
            "The namespace's conntrack table limit (nf_conntrack_max).",
            |t: &ConntrackGauge| t.max,
        ),
    ] {
        head(o, name, "gauge", help);
        for t in &s.tables {
            let _ = writeln!(o, "{name}{{netns=\"{}\"}} {}", t.netns, get(t));
        }
    }
    head(
        o,
        "portex_nat_scans_total",
        "counter",
        "Scans of every namespace's conntrack table by the NAT scanner.",
    );
    let _ = writeln!(o, "portex_nat_scans_total {}", s.scans);
    if let Some(secs) = s.scan_seconds {
        head(
            o,
            "portex_nat_scan_seconds",
            "gauge",
            "How long the last NAT scan took (every namespace's conntrack dump and count).",
        );
        let _ = writeln!(o, "portex_nat_scan_seconds {secs:.6}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_pools_and_tables_render_with_their_labels() {
        let s = NatSnapshot {
            pools: vec![NatPoolGauge {
                netns: 9,
                protocol: "tcp",
                nat_address: "10.78.0.1".into(),
                destination_address: "10.78.0.2".into(),
                destination_port: 8080,
                size: 10,
                size_from: "rule",
                used: 10,
                time_wait: 4,
            }],
            tables: vec![ConntrackGauge {
                netns: 9,
                entries: 12,
                max: 262_144,
            }],
            scan_seconds: Some(0.0125),
            scans: 3,
        };
        let mut o = String::new();
        render_nat(&mut o, &s);
        let l = "netns=\"9\",protocol=\"tcp\",nat_address=\"10.78.0.1\",destination_address=\"10.78.0.2\",destination_port=\"8080\"";
        for line in [
            format!("portex_nat_pool_size_ports{{{l},size_from=\"rule\"}} 10"),
            format!("portex_nat_pool_used_ports{{{l}}} 10"),
            format!("portex_nat_pool_time_wait_ports{{{l}}} 4"),
            "portex_conntrack_entries{netns=\"9\"} 12".into(),
            "portex_conntrack_max{netns=\"9\"} 262144".into(),
            "portex_nat_scans_total 3".into(),
            "portex_nat_scan_seconds 0.012500".into(),
        ] {
            assert!(o.lines().any(|x| x == line), "{line}\n{o}");
        }
        // Scanner off: the counter at 0, no duration.
        let mut o = String::new();
        render_nat(&mut o, &NatSnapshot::default());
        assert!(o.contains("portex_nat_scans_total 0"));
        assert!(!o.contains("portex_nat_scan_seconds"));
    }
}

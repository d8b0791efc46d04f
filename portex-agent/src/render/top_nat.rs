//! The NAT pools in `portex top`: rows under the host's pools in the pools table,
//! marked NAT, in the same columns (used/size/TW, what the pool sustains, and its top
//! original source where the host's pools show a forecast). Pure.
use std::net::IpAddr;

use crate::{
    logic::{
        ledger::PoolView, nat::proto_name, nat_diagnose::DEFAULT_TW_TIMEOUT_S, nat_view::NatView,
    },
    render::text::rate,
};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NatRow {
    /// "NAT 10.78.0.2:8080 @10.78.0.1": the destination first (the column is narrow),
    /// then the NAT address; "NAT udp ..." for UDP.
    pub label: String,
    pub size: u32,
    pub used: u32,
    pub time_wait: u32,
    pub utilisation: f64,
    /// Closes per second the pool sustains: size / the TIME_WAIT timeout.
    pub sustainable_per_s: f64,
    /// The original source holding the most mappings, or the process behind it.
    pub top_source: String,
    /// To name that process: the source's address and the pool's destination.
    pub top_source_ip: Option<IpAddr>,
    pub daddr: IpAddr,
    pub dport: u16,
}

pub(crate) fn nat_rows(v: &NatView) -> Vec<NatRow> {
    v.pools
        .iter()
        .map(|p| {
            let k = &p.key;
            let timeout = v
                .table(k.netns)
                .and_then(|t| t.tw_timeout_s)
                .unwrap_or(DEFAULT_TW_TIMEOUT_S)
                .max(1);
            let dest = std::net::SocketAddr::new(k.daddr, k.dport);
            NatRow {
                label: match k.proto {
                    6 => format!("NAT {dest} @{}", k.nat_ip),
                    p => format!("NAT {} {dest} @{}", proto_name(p), k.nat_ip),
                },
                size: p.size,
                used: p.used,
                time_wait: p.time_wait,
                utilisation: p.utilisation(),
                sustainable_per_s: p.size as f64 / timeout as f64,
                top_source: p
                    .sources
                    .first()
                    .map(|(ip, _)| ip.to_string())
                    .unwrap_or_default(),
                top_source_ip: p.sources.first().map(|s| s.0),
                daddr: k.daddr,
                dport: k.dport,
            }
        })
        .collect()
}

/// Names the process behind each row's top source where the live ledger has a pool from
/// that address towards the same destination (a pod or container of this host).
pub(crate) fn name_nat_sources(rows: &mut [NatRow], views: &[PoolView]) {
    for r in rows {
        let holder = views.iter().find_map(|v| {
            let k = &v.pool.key;
            (Some(k.saddr) == r.top_source_ip && k.daddr == r.daddr && k.dport == r.dport)
                .then(|| v.pool.holders.iter().find(|h| h.owner.is_some()))
                .flatten()
        });
        if let Some(h) = holder {
            r.top_source = h.label();
        }
    }
}

/// The pools table's columns (render::top::POOL_HEADER): no connect rate (conntrack
/// does not say), the top source in the forecast's place.
pub(crate) fn nat_cells(r: &NatRow) -> [String; 8] {
    [
        r.label.clone(),
        r.size.to_string(),
        r.used.to_string(),
        r.time_wait.to_string(),
        format!("{:.0}%", r.utilisation * 100.0),
        "-".into(),
        rate(r.sustainable_per_s),
        r.top_source.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::{fixtures::nat_pool, nat_view::ConntrackTable};

    #[test]
    fn a_nat_pool_is_a_row_marked_nat_with_its_top_source() {
        let v = NatView {
            pools: vec![nat_pool(5, 10, 10, 6, 9)],
            tables: vec![ConntrackTable {
                netns: 5,
                count: 10,
                max: 100,
                tw_timeout_s: Some(60),
                insert_failed: None,
            }],
            ..NatView::default()
        };
        let r = &nat_rows(&v)[0];
        assert_eq!(
            nat_cells(r),
            [
                "NAT 10.78.0.2:8080 @10.78.0.1",
                "10",
                "10",
                "6",
                "100%",
                "-",
                "0.2",
                "10.77.0.2"
            ]
            .map(String::from)
        );
    }
}

//! Ports behind the host's NAT: the pools a masquerade (SNAT) rule draws from, read
//! from the conntrack table, and the table itself as a pool. Pure.
//!
//! conntrack picks a NAT source port per (protocol, NAT address, destination address,
//! destination port) from the rule's port range (without one: 1024-65535 for sources
//! at or above 1024). When none is left the SYN is dropped (conntrack insert_failed/drop): the
//! client sees a timeout, never EADDRNOTAVAIL. A mapping in TIME_WAIT holds its port
//! for nf_conntrack_tcp_timeout_time_wait (120 s by default), not 60 s.
use std::{collections::BTreeMap, net::IpAddr, net::SocketAddr};

/// conntrack's TCP states (nf_conntrack_tcp.h).
pub(crate) const CT_TCP_TIME_WAIT: u8 = 7;

/// conntrack's counters of a namespace since it was created, over every CPU (what
/// `conntrack -S` prints per CPU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CtStats {
    /// Packets whose new entry could not be inserted: behind a NAT, mostly SYNs for
    /// which no free port was found (or a clash).
    pub insert_failed: u64,
    pub drop: u64,
    /// Entries evicted to make room when the table was full.
    pub early_drop: u64,
}

/// The port range of a NAT rule without one (nf_nat_l4proto_unique_tuple).
pub(crate) const DEFAULT_NAT_RANGE: (u16, u16) = (1024, 65535);

/// One conntrack entry, as much of it as the pools need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CtEntry {
    pub proto: u8,
    /// The original direction: who connected to whom.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The reply direction's destination: the NAT address and port for SNAT.
    pub reply_dst: SocketAddr,
    /// The original source was rewritten (IPS_SRC_NAT).
    pub snat: bool,
    /// conntrack's TCP state, for TCP.
    pub tcp_state: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct NatPoolKey {
    pub netns: u64,
    pub proto: u8,
    pub nat_ip: IpAddr,
    pub daddr: IpAddr,
    pub dport: u16,
}

impl NatPoolKey {
    /// "tcp 10.78.0.1 -> 10.78.0.2:8080 (NAT)".
    pub(crate) fn label(&self) -> String {
        format!(
            "{} {} -> {} (NAT)",
            proto_name(self.proto),
            self.nat_ip,
            SocketAddr::new(self.daddr, self.dport)
        )
    }
}

pub(crate) fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        _ => "other",
    }
}

/// Where a NAT pool's size came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeSource {
    /// The port range of the namespace's masquerade/snat rules (all the same).
    Rule,
    /// No rule range could be read (none, or several different ones): the kernel's
    /// default for a rule without one.
    Default,
}

impl RangeSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RangeSource::Rule => "rule",
            RangeSource::Default => "default",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NatPool {
    pub key: NatPoolKey,
    pub size: u32,
    pub size_from: RangeSource,
    /// Mappings holding a port now, TIME_WAIT included.
    pub used: u32,
    pub time_wait: u32,
    /// Original sources (pod or container addresses), biggest first.
    pub sources: Vec<(IpAddr, u32)>,
}

impl NatPool {
    pub(crate) fn utilisation(&self) -> f64 {
        if self.size == 0 {
            1.0
        } else {
            self.used as f64 / self.size as f64
        }
    }
}

/// The NAT pools of one namespace's conntrack table, fullest first. `range`: the rules'
/// port range when it could be read.
pub(crate) fn nat_pools(
    netns: u64,
    entries: &[CtEntry],
    range: Option<(u16, u16)>,
) -> Vec<NatPool> {
    let (size_from, (lo, hi)) = match range {
        Some(r) => (RangeSource::Rule, r),
        None => (RangeSource::Default, DEFAULT_NAT_RANGE),
    };
    let size = (hi as u32 + 1).saturating_sub(lo as u32);
    let mut by: BTreeMap<NatPoolKey, (u32, u32, BTreeMap<IpAddr, u32>)> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.snat) {
        let key = NatPoolKey {
            netns,
            proto: e.proto,
            nat_ip: e.reply_dst.ip(),
            daddr: e.dst.ip(),
            dport: e.dst.port(),
        };
        let p = by.entry(key).or_default();
        p.0 += 1;
        p.1 += (e.tcp_state == Some(CT_TCP_TIME_WAIT)) as u32;
        *p.2.entry(e.src.ip()).or_default() += 1;
    }
    let mut pools: Vec<NatPool> = by
        .into_iter()
        .map(|(key, (used, time_wait, srcs))| {
            let mut sources: Vec<(IpAddr, u32)> = srcs.into_iter().collect();
            sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            NatPool {
                key,
                size,
                size_from,
                used,
                time_wait,
                sources,
            }
        })
        .collect();
    pools.sort_by(|a, b| b.utilisation().total_cmp(&a.utilisation()));
    pools
}

/// The full NAT pool (fullest first) towards `dest` over `proto`, if one is: what a
/// connection that never got its SYN answered most likely ran into.
pub(crate) fn full_pool_towards(
    pools: &[NatPool],
    proto: u8,
    dest: SocketAddr,
) -> Option<&NatPool> {
    pools
        .iter()
        .filter(|p| {
            p.key.proto == proto
                && p.key.daddr == dest.ip()
                && p.key.dport == dest.port()
                && p.used >= p.size
        })
        .max_by(|a, b| a.utilisation().total_cmp(&b.utilisation()))
}

/// The NAT port range the rules of a namespace use, from `nft -j list ruleset`: every
/// masquerade/snat statement with a port range; Some only when they all agree. A rule
/// iptables-nft made with the MASQUERADE or SNAT target keeps its range inside an xt
/// target that nft does not show: its range is unknown, and so is the namespace's.
pub(crate) fn rule_range(nft_json: &serde_json::Value) -> Option<(u16, u16)> {
    let mut ranges = Vec::new();
    let items = nft_json["nftables"].as_array()?;
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        for e in rule["expr"].as_array().into_iter().flatten() {
            if e["xt"]["type"] == "target"
                && matches!(e["xt"]["name"].as_str(), Some("MASQUERADE" | "SNAT"))
            {
                return None;
            }
            let stmt = e.get("masquerade").or_else(|| e.get("snat"));
            let Some(port) = stmt.and_then(|s| s.get("port")) else {
                if stmt.is_some() {
                    ranges.push(DEFAULT_NAT_RANGE);
                }
                continue;
            };
            let r = match (port.get("range"), port.as_u64()) {
                (Some(r), _) => (r[0].as_u64()?, r[1].as_u64()?),
                (None, Some(p)) => (p, p),
                _ => return None,
            };
            ranges.push((u16::try_from(r.0).ok()?, u16::try_from(r.1).ok()?));
        }
    }
    ranges.sort_unstable();
    ranges.dedup();
    match ranges.as_slice() {
        [one] if *one != DEFAULT_NAT_RANGE => Some(*one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::fixtures::ct_entry as e;
    use crate::logic::{
        diagnose::{Severity, Thresholds},
        nat_diagnose::diagnose_nat,
    };

    #[test]
    fn snat_entries_make_one_pool_per_nat_address_and_destination() {
        let mut entries: Vec<CtEntry> = (0..8)
            .map(|i| {
                e(
                    &format!("10.77.0.2:{}", 50000 + i),
                    &format!("10.78.0.1:{}", 40000 + i),
                    i < 5,
                )
            })
            .collect();
        entries.push(e("10.77.0.3:50000", "10.78.0.1:40008", false));
        // Not NATed: no pool.
        let mut plain = e("10.78.0.1:33000", "10.78.0.1:33000", false);
        plain.snat = false;
        entries.push(plain);
        let pools = nat_pools(9, &entries, Some((40000, 40009)));
        assert_eq!(pools.len(), 1);
        let p = &pools[0];
        assert_eq!((p.size, p.used, p.time_wait), (10, 9, 5));
        assert_eq!(p.size_from, RangeSource::Rule);
        assert_eq!(p.sources[0], ("10.77.0.2".parse().unwrap(), 8));
        assert_eq!(p.key.label(), "tcp 10.78.0.1 -> 10.78.0.2:8080 (NAT)");
        let d = diagnose_nat(&pools, Some((9, 262144)), Some(120), &Thresholds::default());
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].id, "nat_pool_exhaustion");
        assert_eq!(d[1].id, "nat_time_wait_rate");
        assert_eq!(d[0].severity, Severity::Warning);
        assert!(
            d[0].summary.contains("5 of them are mappings in TIME_WAIT"),
            "{}",
            d[0].summary
        );
        // Without a rule range: the kernel's default, and said so.
        let p = &nat_pools(9, &entries, None)[0];
        assert_eq!((p.size, p.size_from), (64512, RangeSource::Default));
    }

    #[test]
    fn the_rule_range_is_read_when_the_rules_agree() {
        let j = |exprs: &str| -> serde_json::Value {
            serde_json::from_str(&format!(
                r#"{{"nftables":[{{"metainfo":{{}}}},{{"rule":{{"expr":[{exprs}]}}}}]}}"#
            ))
            .unwrap()
        };
        assert_eq!(
            rule_range(&j(r#"{"masquerade":{"port":{"range":[40000,40009]}}}"#)),
            Some((40000, 40009))
        );
        assert_eq!(
            rule_range(&j(r#"{"snat":{"addr":"1.2.3.4","port":5000}}"#)),
            Some((5000, 5000))
        );
        assert_eq!(rule_range(&j(r#"{"masquerade":null}"#)), None);
        // iptables-nft's MASQUERADE, as nft lists it here: its range cannot be read.
        let xt = r#"{"xt":{"type":"target","name":"MASQUERADE"}}"#;
        assert_eq!(rule_range(&j(xt)), None);
        let both = format!(r#"{{"masquerade":{{"port":{{"range":[40000,40009]}}}}}},{xt}"#);
        assert_eq!(rule_range(&j(&both)), None);
        assert_eq!(
            rule_range(&j(
                r#"{"masquerade":{"port":{"range":[40000,40009]}}},{"snat":{"port":{"range":[1,2]}}}"#
            )),
            None
        );
    }

    #[test]
    fn a_handshake_towards_a_full_nat_pool_finds_it() {
        let entries: Vec<CtEntry> = (0..10)
            .map(|i| {
                e(
                    &format!("10.77.0.2:{}", 50000 + i),
                    &format!("10.78.0.1:{}", 40000 + i),
                    false,
                )
            })
            .collect();
        let pools = nat_pools(9, &entries, Some((40000, 40009)));
        let dest = "10.78.0.2:8080".parse().unwrap();
        assert_eq!(full_pool_towards(&pools, 6, dest).map(|p| p.used), Some(10));
        assert!(full_pool_towards(&pools, 17, dest).is_none());
        assert!(full_pool_towards(&pools, 6, "10.78.0.2:8081".parse().unwrap()).is_none());
        let roomy = nat_pools(9, &entries, Some((40000, 40019)));
        assert!(full_pool_towards(&roomy, 6, dest).is_none());
    }
}

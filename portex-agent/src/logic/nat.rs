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

/// What one masquerade or snat statement of a namespace's rules says about its source
/// port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NatPorts {
    /// No port range: the kernel's default (DEFAULT_NAT_RANGE).
    Default,
    /// These ports, first and last (one port: both the same).
    Range(u16, u16),
    /// A range that cannot be read: iptables-nft's MASQUERADE or SNAT target (its range
    /// sits in an xt target's private data), or ports that come from a map or any
    /// register no constant was loaded into.
    Unknown,
}

/// The NAT port range the rules of a namespace use, folded statement by statement (a
/// ruleset can be long: nothing of it is kept): Some only when there is at least one
/// masquerade/snat statement and they all say the same range, other than the kernel's
/// default. One unknown range makes the namespace's unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RuleRanges {
    first: Option<NatPorts>,
    disagree: bool,
}

impl RuleRanges {
    pub(crate) fn add(&mut self, p: NatPorts) {
        match self.first {
            None => self.first = Some(p),
            Some(f) => self.disagree |= f != p,
        }
    }

    /// Nothing that follows can make the range known: the reader may stop early.
    pub(crate) fn settled(&self) -> bool {
        self.disagree || matches!(self.first, Some(NatPorts::Unknown | NatPorts::Default))
    }

    pub(crate) fn range(&self) -> Option<(u16, u16)> {
        match self.first {
            Some(NatPorts::Range(lo, hi)) if !self.disagree && (lo, hi) != DEFAULT_NAT_RANGE => {
                Some((lo, hi))
            }
            _ => None,
        }
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

    /// The range of a whole ruleset's statements.
    fn rule_range(statements: &[NatPorts]) -> Option<(u16, u16)> {
        let mut r = RuleRanges::default();
        statements.iter().for_each(|p| r.add(*p));
        r.range()
    }

    #[test]
    fn the_rule_range_is_read_when_the_rules_agree() {
        use NatPorts::*;
        let r = (40000, 40009);
        assert_eq!(rule_range(&[Range(40000, 40009)]), Some(r));
        assert_eq!(rule_range(&[Range(40000, 40009); 3]), Some(r));
        assert_eq!(rule_range(&[Range(5000, 5000)]), Some((5000, 5000)));
        assert_eq!(rule_range(&[]), None);
        assert_eq!(rule_range(&[Default]), None);
        // A range written out as the kernel's default is no news.
        assert_eq!(rule_range(&[Range(1024, 65535)]), None);
        // iptables-nft's MASQUERADE, or a port map: its range cannot be read.
        assert_eq!(rule_range(&[Unknown]), None);
        assert_eq!(rule_range(&[Range(40000, 40009), Unknown]), None);
        assert_eq!(rule_range(&[Unknown, Range(40000, 40009)]), None);
        assert_eq!(rule_range(&[Range(40000, 40009), Default]), None);
        assert_eq!(rule_range(&[Range(40000, 40009), Range(1, 2)]), None);
        // Once unknown or disagreeing, nothing that follows can change the answer.
        let mut f = RuleRanges::default();
        f.add(Range(40000, 40009));
        assert!(!f.settled());
        f.add(Range(40000, 40009));
        assert!(!f.settled());
        f.add(Range(1, 2));
        assert!(f.settled());
        f.add(Range(40000, 40009));
        assert_eq!(f.range(), None);
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

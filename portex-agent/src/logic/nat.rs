//! Ports behind the host's NAT: the pools a masquerade (SNAT) rule draws from, read
//! from the conntrack table, and the table itself as a pool. Pure.
//!
//! conntrack picks a NAT source port per (protocol, NAT address, destination address,
//! destination port) from the rule's port range (without one: 1024-65535 for sources
//! at or above 1024). When none is left the SYN is dropped (conntrack insert_failed/drop): the
//! client sees a timeout, never EADDRNOTAVAIL. A mapping in TIME_WAIT holds its port
//! for nf_conntrack_tcp_timeout_time_wait (120 s by default), not 60 s.
use std::{collections::BTreeMap, net::IpAddr, net::SocketAddr};

use crate::logic::diagnose::{Diagnosis, Severity, Thresholds};

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

    fn e(src: &str, nat: &str, tw: bool) -> CtEntry {
        CtEntry {
            proto: 6,
            src: src.parse().unwrap(),
            dst: "10.78.0.2:8080".parse().unwrap(),
            reply_dst: nat.parse().unwrap(),
            snat: true,
            tcp_state: Some(if tw { CT_TCP_TIME_WAIT } else { 3 }),
        }
    }

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

//! Port pools: how many source ports each destination has left. One model for the
//! one-shot status (a socket table) and the live ledger (events): the same key, the same
//! membership and size rules (rules.rs), the same tally of holders (tally.rs), the same
//! order. Pure.
//!
//! A TCP pool is (namespace, source IP, destination IP, destination port): connect()
//! only needs the 4-tuple to be unique, so one busy backend can run out while the host
//! has thousands of free ports. Its size is the namespace's ip_local_port_range, minus
//! ip_local_reserved_ports, minus the ports listeners hold inside the range (bind() makes
//! a port unusable for every destination). UDP auto-bind needs a port no other UDP socket
//! holds, whatever the destination, so UDP has one pool per namespace.
mod rules;
mod table;
mod tally;
#[cfg(test)]
mod tests;
mod tw_owners;

use std::{collections::BTreeMap, net::IpAddr};

pub(crate) use rules::{
    PortRules, TIME_WAIT_MS, TcpState, held_states_mask, sustainable_per_s, tw_hold_ms,
};
pub(crate) use table::{build_pools, servers_without_listener, table_rules};
pub(crate) use tally::{PortUse, Tally};
pub(crate) use tw_owners::TwOwners;

use crate::logic::model::{Owner, Transport};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PoolKey {
    pub netns: u64,
    pub transport: Transport,
    /// Unspecified for the per-namespace UDP pool.
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    /// 0 for the per-namespace UDP pool.
    pub dport: u16,
}

impl PoolKey {
    /// The TCP pool a socket of namespace `netns` draws from (its source address,
    /// destination address and port).
    pub(crate) fn tcp_of(netns: u64, s: &crate::logic::model::DiagSocket) -> PoolKey {
        PoolKey {
            netns,
            transport: Transport::Tcp,
            saddr: s.local.ip(),
            daddr: s.remote.ip(),
            dport: s.remote.port(),
        }
    }

    pub(crate) fn is_udp_pool(&self) -> bool {
        self.transport == Transport::Udp
    }

    /// "10.0.0.1 -> 10.0.0.9:80", or "udp (any destination)".
    pub(crate) fn route(&self) -> String {
        if self.is_udp_pool() {
            "udp (any destination)".into()
        } else {
            format!(
                "{} -> {}",
                self.saddr,
                std::net::SocketAddr::new(self.daddr, self.dport)
            )
        }
    }

    /// The route with its transport: "tcp 10.0.0.1 -> 10.0.0.9:80".
    pub(crate) fn label(&self) -> String {
        if self.is_udp_pool() {
            self.route()
        } else {
            format!("tcp {}", self.route())
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    /// None: no process holds it (TIME_WAIT, or an orphaned socket its process closed
    /// and that waits for the peer: FIN_WAIT1/2, CLOSING, LAST_ACK).
    pub owner: Option<Owner>,
    pub held: u32,
    pub time_wait: u32,
}

impl Holder {
    /// "1234 curl" for a process (the name made safe for a terminal); for ports no
    /// process holds, what holds them.
    pub(crate) fn label(&self) -> String {
        let orphaned = self.held.saturating_sub(self.time_wait);
        match &self.owner {
            Some(o) => {
                let mut n = format!("{} ", o.pid);
                crate::logic::untrusted::sanitize(&o.name, &mut n);
                n
            }
            None if orphaned == 0 => "(no owner: TIME_WAIT)".into(),
            None if self.time_wait == 0 => "(no owner: orphaned, closed by its process)".into(),
            None => format!(
                "(no owner: {} TIME_WAIT, {orphaned} orphaned)",
                self.time_wait
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Pool {
    pub key: PoolKey,
    pub size: u32,
    /// Ports connect() towards the key's destination cannot take now: live connections,
    /// and TIME_WAIT sockets the kernel will not reuse yet (or at all).
    pub used: u32,
    /// TIME_WAIT sockets, reusable ones included.
    pub time_wait: u32,
    /// TIME_WAIT sockets older than tcp_tw_reuse_delay where reuse applies: connect()
    /// takes their ports over, so they are not in `used`.
    pub reusable: u32,
    pub syn_sent: u32,
    pub established: u32,
    /// Ports of odd parity among the used ones: connect() picks even ports first and
    /// bind() odd ones, so a pool of mostly odd ports is filled by bind() before connect().
    pub odd_ports: u32,
    /// Biggest holders first.
    pub holders: Vec<Holder>,
}

impl Pool {
    /// A pool of `size` ports with none in use.
    pub(crate) fn empty(key: PoolKey, size: u32) -> Pool {
        Pool {
            key,
            size,
            used: 0,
            time_wait: 0,
            reusable: 0,
            syn_sent: 0,
            established: 0,
            odd_ports: 0,
            holders: Vec::new(),
        }
    }

    pub(crate) fn utilisation(&self) -> f64 {
        utilisation(self.used, self.size)
    }

    pub(crate) fn free(&self) -> u32 {
        self.size.saturating_sub(self.used)
    }
}

/// Share of a pool in use (0..1); a pool of size 0 is full.
pub(crate) fn utilisation(used: u32, size: u32) -> f64 {
    if size == 0 {
        1.0
    } else {
        used as f64 / size as f64
    }
}

/// Fullest first; ties by used ports, then by key, so output is stable.
pub(crate) fn pressure_order(a: &Pool, b: &Pool) -> std::cmp::Ordering {
    b.utilisation()
        .partial_cmp(&a.utilisation())
        .unwrap_or(std::cmp::Ordering::Equal)
        .then_with(|| b.used.cmp(&a.used))
        .then_with(|| a.key.cmp(&b.key))
}

pub(crate) fn sort_by_pressure(pools: &mut [Pool]) {
    pools.sort_by(pressure_order);
}

/// Biggest holders first; ties by owner (no owner first), so output is stable.
pub(crate) fn rank_holders(holders: &mut [Holder]) {
    holders.sort_by(|a, b| b.held.cmp(&a.held).then_with(|| a.owner.cmp(&b.owner)));
}

/// Per-process totals over one namespace's pools.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProcessUsage {
    pub(crate) owner: Owner,
    pub(crate) held: u32,
    pub(crate) time_wait: u32,
    /// The largest share of one pool's size this process holds.
    pub(crate) fullest_share: f64,
}

/// What each process holds over `pools`, biggest holders first.
pub(crate) fn usage_by_process<'a>(pools: impl IntoIterator<Item = &'a Pool>) -> Vec<ProcessUsage> {
    let mut by: BTreeMap<Owner, ProcessUsage> = BTreeMap::new();
    for p in pools {
        for h in &p.holders {
            let Some(o) = &h.owner else { continue };
            let u = by.entry(o.clone()).or_insert(ProcessUsage {
                owner: o.clone(),
                held: 0,
                time_wait: 0,
                fullest_share: 0.0,
            });
            u.held += h.held;
            u.time_wait += h.time_wait;
            if p.size > 0 {
                u.fullest_share = u.fullest_share.max(h.held as f64 / p.size as f64);
            }
        }
    }
    let mut v: Vec<_> = by.into_values().collect();
    v.sort_by(|a, b| b.held.cmp(&a.held).then(a.owner.pid.cmp(&b.owner.pid)));
    v
}

/// The unspecified address of a key's family, for the per-namespace UDP pool.
pub(crate) fn any_address() -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
}

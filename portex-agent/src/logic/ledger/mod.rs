//! The live picture of which ports are held: seeded and periodically corrected from the
//! kernel's own table (sock_diag), kept exact in between by events. Pure: time comes in
//! as arguments, IO happens elsewhere (pipeline::tracker).
//!
//! TIME_WAIT is never announced and never ends with an event: a close that leaves the
//! port in TIME_WAIT starts a 60 s timer here, and reconciliation removes entries the
//! kernel recycled earlier (a new SYN on the same 4-tuple, tcp_tw_reuse, or
//! tcp_max_tw_buckets overflow).
//!
//! Files: entry (the packed per-connection record), events (records applied),
//! reconcile (the kernel's table), procs (per-process statistics), views (pools as the
//! views and pressure events show them, through the one pool model), diagnoses (what
//! `status` would say of those pools).
mod diagnoses;
mod entry;
mod events;
mod procs;
mod reconcile;
#[cfg(test)]
mod tests;
mod views;

// Hashed on every event: Fx, not SipHash (keys are not attacker-chosen in a way that
// matters here: the kernel's own sockets).
use rustc_hash::FxHashMap as HashMap;

pub(crate) use diagnoses::NsDiagnoses;
pub(crate) use procs::ProcStats;
pub(crate) use views::{PoolView, Pressure};

use crate::logic::{
    addr,
    diagnose::Severity,
    model::Transport,
    pool::{PoolKey, PortRules},
    rate::Rate,
};
use entry::{Entry, Tuple};

struct NsInfo {
    rules: PortRules,
    epoch: u32,
    /// (local port, peer port) of the unlistened sockets of the reconciliation under
    /// way: its end infers from them the ports of servers whose listener closed.
    peers: Vec<(u16, u16)>,
}

#[derive(Default)]
struct PoolStats {
    size: u32,
    used: u32,
    time_wait: u32,
    /// Of them, TIME_WAIT ports connect() may take over (not in `used`).
    reusable: u32,
    opens: Rate,
    releases: Rate,
    closes: u64,
    tw_closes: u64,
    /// Closes that left this side in TIME_WAIT (it closed first), per second: the
    /// demand diagnose() weighs against what the pool sustains.
    tw_close_rate: Rate,
    lifetime_s_sum: f64,
    failures: u64,
    /// Entries of this pool whose port bind() chose (they shrink the other pools only).
    bound_here: u32,
    /// The highest threshold crossed and not yet cleared (hysteresis for pool_pressure).
    alert: Option<Severity>,
}

#[derive(Default)]
pub(crate) struct Ledger {
    ns: HashMap<u64, NsInfo>,
    /// Namespace inode by Tuple::ns.
    ns_ids: Vec<u64>,
    ns_index: HashMap<u64, u32>,
    socks: HashMap<Tuple, Entry>,
    pools: HashMap<PoolKey, PoolStats>,
    procs: HashMap<u32, ProcStats>,
    /// Ports chosen by bind() per (namespace, source address), among pooled entries.
    bound: HashMap<(u32, [u8; 16]), u32>,
    last_expire_ms: u64,
}

impl Ledger {
    pub(crate) fn new() -> Self {
        Ledger::default()
    }

    pub(crate) fn netns_known(&self, netns: u64) -> bool {
        self.ns.contains_key(&netns)
    }

    pub(crate) fn tracked_sockets(&self) -> usize {
        self.socks.len()
    }

    fn ns_idx(&mut self, inode: u64) -> u32 {
        if let Some(&i) = self.ns_index.get(&inode) {
            return i;
        }
        let i = self.ns_ids.len() as u32;
        self.ns_ids.push(inode);
        self.ns_index.insert(inode, i);
        i
    }

    fn pool_key(&self, t: &Tuple) -> PoolKey {
        PoolKey {
            netns: self.ns_ids[t.ns as usize],
            transport: Transport::Tcp,
            saddr: addr::from_bytes(t.laddr),
            daddr: addr::from_bytes(t.raddr),
            dport: t.rport,
        }
    }

    /// The pool model's membership rule, for the namespace of `t`.
    fn is_pooled(&self, t: &Tuple) -> bool {
        self.ns
            .get(&self.ns_ids[t.ns as usize])
            .is_some_and(|ns| ns.rules.client_side(t.local()))
    }

    fn tcp_size(&self, netns: u64) -> u32 {
        self.ns.get(&netns).map(|n| n.rules.tcp_size()).unwrap_or(0)
    }
}

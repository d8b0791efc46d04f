//! Reconciliation: the kernel's table replaces what the ledger holds for a namespace,
//! streamed socket by socket (mark and sweep), and namespaces that are gone are dropped.
use std::net::IpAddr;

use rustc_hash::FxHashSet as HashSet;

use super::{
    Ledger, NsInfo,
    entry::{BOUND, EPOCH, Entry, POOLED, REUSABLE, REUSE_DECIDED, Tuple, ms, state_bits},
};
#[cfg(test)]
use crate::logic::model::Owner;
use crate::logic::{
    model::DiagSocket,
    pool::{PortRules, PortUse, servers_without_listener},
    sysctls::NetSettings,
};

impl Ledger {
    /// Replaces what the ledger holds for `netns` with the kernel's table (the agent
    /// streams it through reconcile_begin/socket/end instead). Owners of
    /// TIME_WAIT sockets (which the kernel does not keep) survive from the ledger.
    #[cfg(test)]
    pub(crate) fn reconcile(
        &mut self,
        netns: u64,
        settings: NetSettings,
        sockets: &[DiagSocket],
        owner_of: impl Fn(&DiagSocket) -> Option<Owner>,
        now: u64,
    ) {
        let listeners = sockets
            .iter()
            .filter(|s| s.binds_tcp_port())
            .map(|s| (s.local.ip(), s.local.port()));
        self.reconcile_begin(netns, settings, listeners);
        for s in sockets {
            self.reconcile_socket(netns, s, &mut |s| owner_of(s).map(|o| o.pid), now);
        }
        self.reconcile_end(netns);
    }

    /// Makes room at once for the sockets of a namespace about to be read for the first
    /// time (`expected`: from /proc/net/sockstat): growing by doubling while 250,000
    /// entries stream in holds the old and the new table together at each step, which
    /// is the agent's peak memory.
    pub(crate) fn reserve_for_new_namespace(&mut self, netns: u64, expected: usize) {
        if !self.netns_known(netns) {
            self.socks.reserve(expected);
        }
    }

    /// Starts a reconciliation of `netns`: its settings and listeners are replaced, its
    /// pools recounted from the sockets that follow (reconcile_socket), and entries not
    /// seen again are removed by reconcile_end (mark and sweep: the table is never
    /// copied, which matters at 250,000 entries).
    pub(crate) fn reconcile_begin(
        &mut self,
        netns: u64,
        settings: NetSettings,
        listeners: impl Iterator<Item = (IpAddr, u16)>,
    ) {
        let old = self.ns.get(&netns);
        // The ports inferred last time stay until this pass's end says otherwise.
        let bound = old.map(|n| n.rules.bound_in_range().to_vec());
        let rules = PortRules::new(settings, listeners).with_bound(bound.unwrap_or_default());
        let tcp_size = rules.tcp_size();
        let epoch = old.map(|n| (n.epoch + 1) & EPOCH).unwrap_or(1);
        let peers = Vec::new();
        self.ns.insert(
            netns,
            NsInfo {
                rules,
                epoch,
                peers,
            },
        );
        self.ns_idx(netns);
        for (_, p) in self.pools.iter_mut().filter(|(k, _)| k.netns == netns) {
            p.used = 0;
            p.time_wait = 0;
            p.reusable = 0;
            p.size = tcp_size;
        }
    }

    /// One socket of the kernel's table (others than TCP holding a port are ignored).
    /// `owner_of` is asked only for a socket the ledger has no owner for (a new entry, or
    /// one whose owner was never known): the /proc walk behind it is the expensive part
    /// of a reconciliation, and events already named the owners of almost every socket.
    pub(crate) fn reconcile_socket(
        &mut self,
        netns: u64,
        s: &DiagSocket,
        owner_of: &mut dyn FnMut(&DiagSocket) -> Option<u32>,
        now: u64,
    ) {
        if !s.holds_tcp_port() {
            return;
        }
        let Some(info) = self.ns.get_mut(&netns) else {
            return;
        };
        if info.rules.unlistened(s.local) {
            info.peers.push((s.local.port(), s.remote.port()));
        }
        let (epoch, tcp_size) = (info.epoch, info.rules.tcp_size());
        let idx = self.ns_idx(netns);
        let t = Tuple::new(idx, s.local, s.remote);
        let tw = s.in_time_wait();
        let state = state_bits(PortUse::of_tcp(s.state));
        let pooled = self.is_pooled(&t);
        let now_ms = ms(now);
        let ns = &self.ns;
        let reuse_applies = |age: u64| {
            ns.get(&netns)
                .is_some_and(|n| n.rules.tw_reusable(s.local.ip(), s.remote.ip(), age))
        };
        let e = self.socks.entry(t).or_insert(Entry {
            tw_since_ms: 0,
            pid: 0,
            bits: 0,
        });
        if e.pid == 0
            && s.inode != 0
            && let Some(pid) = owner_of(s)
        {
            e.pid = pid;
        }
        if !tw {
            e.tw_since_ms = 0;
        } else if e.tw_since_ms == 0 {
            // Not seen closing: its timer says how long it has been in TIME_WAIT.
            e.tw_since_ms = now_ms.saturating_sub(s.time_wait_age_ms()).max(1);
        }
        let reusable = pooled && tw && reuse_applies(now_ms.saturating_sub(e.tw_since_ms));
        e.bits = epoch
            | if pooled { POOLED } else { 0 }
            | if reusable {
                REUSABLE | REUSE_DECIDED
            } else {
                0
            }
            | (e.bits & BOUND)
            | state;
        if pooled {
            self.count_in_pool(&t, tcp_size, tw, reusable);
        }
    }

    /// One pooled entry into its pool's counts (a reconciliation recounts from zero).
    fn count_in_pool(&mut self, t: &Tuple, tcp_size: u32, tw: bool, reusable: bool) {
        let key = self.pool_key(t);
        let p = self.pools.entry(key).or_default();
        p.size = tcp_size;
        p.used += !reusable as u32;
        p.time_wait += tw as u32;
        p.reusable += reusable as u32;
    }

    /// Removes what the kernel no longer has (TIME_WAIT recycled early, missed closes).
    pub(crate) fn reconcile_end(&mut self, netns: u64) {
        let Some(info) = self.ns.get_mut(&netns) else {
            return;
        };
        let epoch = info.epoch;
        let peers = std::mem::take(&mut info.peers);
        let bound = servers_without_listener(peers, info.rules.settings.usable_ports());
        let idx = self.ns_idx(netns);
        self.socks.retain(|t, e| t.ns != idx || e.epoch() == epoch);
        if let Some(info) = self.ns.get_mut(&netns)
            && info.rules.bound_in_range() != bound.as_slice()
        {
            info.rules = info.rules.clone().with_bound(bound);
            self.repool(netns, idx);
        }
        self.recount_bound();
        self.pools
            .retain(|k, p| k.netns != netns || p.used > 0 || p.opens.total > 0 || p.failures > 0);
        self.recount_procs();
    }

    /// Drops every namespace not in `live` (deleted since: containers come and go), with
    /// its sockets and pools, which would otherwise stay forever.
    pub(crate) fn forget_namespaces_except(&mut self, live: &HashSet<u64>) {
        let gone: Vec<u64> = self
            .ns
            .keys()
            .filter(|n| !live.contains(n))
            .copied()
            .collect();
        if gone.is_empty() {
            return;
        }
        let idx: HashSet<u32> = gone
            .iter()
            .filter_map(|n| self.ns_index.get(n))
            .copied()
            .collect();
        for n in &gone {
            self.ns.remove(n);
        }
        self.socks.retain(|t, _| !idx.contains(&t.ns));
        self.pools.retain(|k, _| !gone.contains(&k.netns));
        self.recount_bound();
        self.recount_procs();
    }

    /// Decides again which of the namespace's entries are pooled (its rules changed) and
    /// recounts its pools from them.
    fn repool(&mut self, netns: u64, idx: u32) {
        let Some(info) = self.ns.get(&netns) else {
            return;
        };
        let (rules, tcp_size) = (info.rules.clone(), info.rules.tcp_size());
        for (_, p) in self.pools.iter_mut().filter(|(k, _)| k.netns == netns) {
            p.used = 0;
            p.time_wait = 0;
            p.reusable = 0;
            p.size = tcp_size;
        }
        let mut counts: Vec<(Tuple, bool, bool)> = Vec::new();
        for (t, e) in self.socks.iter_mut().filter(|(t, _)| t.ns == idx) {
            let pooled = rules.client_side(t.local());
            e.bits = if pooled {
                e.bits | POOLED
            } else {
                e.bits & !POOLED
            };
            if pooled {
                counts.push((*t, e.in_time_wait(), e.reusable()));
            }
        }
        for (t, tw, reusable) in counts {
            self.count_in_pool(&t, tcp_size, tw, reusable);
        }
    }

    fn recount_procs(&mut self) {
        for p in self.procs.values_mut() {
            p.held = 0;
            p.time_wait = 0;
        }
        for e in self.socks.values().filter(|e| e.pooled() && e.pid != 0) {
            let p = self.procs.entry(e.pid).or_default();
            p.held += 1;
            p.time_wait += e.in_time_wait() as u32;
        }
    }

    fn recount_bound(&mut self) {
        self.bound.clear();
        for p in self.pools.values_mut() {
            p.bound_here = 0;
        }
        let bound: Vec<Tuple> = self
            .socks
            .iter()
            .filter(|(_, e)| e.pooled() && e.bound())
            .map(|(t, _)| *t)
            .collect();
        for t in bound {
            *self.bound.entry((t.ns, t.laddr)).or_default() += 1;
            let key = self.pool_key(&t);
            if let Some(p) = self.pools.get_mut(&key) {
                p.bound_here += 1;
            }
        }
    }
}

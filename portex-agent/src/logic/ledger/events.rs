//! Records applied to the ledger: connects fill pools (or take over a TIME_WAIT port),
//! closes free them or start TIME_WAIT, failures are counted; TIME_WAIT ports become
//! reusable after tcp_tw_reuse_delay where reuse applies, and end after 60 s.
use super::{
    Ledger, PoolStats,
    entry::{BOUND, ESTABLISHED, Entry, POOLED, REUSABLE, REUSE_DECIDED, Tuple, ms},
};
use crate::logic::{
    errno,
    model::{Action, Record, Transport},
    pool::{PoolKey, PortRules, TIME_WAIT_MS},
};

/// How often TIME_WAIT entries are checked for reuse and expiry (one pass over the table).
const EXPIRE_EVERY_MS: u64 = 250;

/// Ports a process bound with port 0 recently, to spot bind() before connect().
const RECENT_BINDS: usize = 4096;

impl Ledger {
    /// Applies one record. `netns` is the namespace of the owner, when known. Returns
    /// the pool the record touched.
    pub(crate) fn apply(&mut self, r: &Record, netns: Option<u64>, now: u64) -> Option<PoolKey> {
        let netns = netns?;
        let dest = r.destination?;
        let idx = self.ns_idx(netns);
        let t = Tuple::new(idx, r.source, dest);
        let pid = r.process.pid;
        match r.action {
            Action::Connect | Action::Established
                if r.transport == Transport::Tcp && !r.passive =>
            {
                if r.source.port() == 0 {
                    return None;
                }
                let established = if r.action == Action::Established {
                    ESTABLISHED
                } else {
                    0
                };
                let recently_bound = self
                    .procs
                    .get(&pid)
                    .is_some_and(|p| p.recent_binds.contains(&r.source.port()));
                if let Some(e) = self.socks.get_mut(&t) {
                    e.bits |= established;
                    if !e.in_time_wait() {
                        if !(recently_bound && e.pooled() && !e.bound()) {
                            return None;
                        }
                        // Seeded by a reconciliation (a namespace read for the first
                        // time) before its connect was applied: its bind() is known
                        // only now, and takes the port from every other destination.
                        e.bits |= BOUND;
                        let key = self.pool_key(&t);
                        *self.bound.entry((t.ns, t.laddr)).or_default() += 1;
                        if let Some(p) = self.pools.get_mut(&key) {
                            p.bound_here += 1;
                        }
                        if let Some(p) = self.procs.get_mut(&pid) {
                            p.bind_then_connect += 1;
                        }
                        return Some(key);
                    }
                    // A connect on a 4-tuple in TIME_WAIT: the kernel took the port over
                    // (tcp_tw_reuse). The entry is a live connection again.
                    let (was, reusable) = (e.pid, e.reusable());
                    e.tw_since_ms = 0;
                    e.bits &= !(REUSABLE | REUSE_DECIDED);
                    e.pid = pid;
                    if !e.pooled() {
                        return None;
                    }
                    if let Some(old) = self.procs.get_mut(&was) {
                        old.held = old.held.saturating_sub(1);
                        old.time_wait = old.time_wait.saturating_sub(1);
                    }
                    let proc_ = self.procs.entry(pid).or_default();
                    proc_.connects.add(now, 1);
                    proc_.held += 1;
                    let key = self.pool_key(&t);
                    let p = self.pools.entry(key.clone()).or_default();
                    p.time_wait = p.time_wait.saturating_sub(1);
                    if reusable {
                        p.reusable = p.reusable.saturating_sub(1);
                        p.used += 1;
                    }
                    p.opens.add(now, 1);
                    return Some(key);
                }
                let pooled = self.is_pooled(&t);
                let epoch = self.ns.get(&netns).map(|n| n.epoch).unwrap_or(0);
                let bound = self
                    .procs
                    .get(&pid)
                    .is_some_and(|p| p.recent_binds.contains(&r.source.port()));
                let bits = epoch
                    | if pooled { POOLED } else { 0 }
                    | if bound { BOUND } else { 0 }
                    | established;
                self.socks.insert(
                    t,
                    Entry {
                        tw_since_ms: 0,
                        pid,
                        bits,
                    },
                );
                let proc_ = self.procs.entry(pid).or_default();
                proc_.connects.add(now, 1);
                if bound {
                    proc_.bind_then_connect += 1;
                }
                if !pooled {
                    return None;
                }
                proc_.held += 1;
                let size = self.tcp_size(netns);
                let key = self.pool_key(&t);
                let p = self.pools.entry(key.clone()).or_default();
                p.size = size;
                p.used += 1;
                p.opens.add(now, 1);
                if bound {
                    p.bound_here += 1;
                    *self.bound.entry((t.ns, t.laddr)).or_default() += 1;
                }
                Some(key)
            }
            Action::Close => {
                let close = r.close.as_ref()?;
                let e = self.socks.get_mut(&t)?;
                if e.in_time_wait() {
                    return None;
                }
                let (pooled, owner, bound) = (e.pooled(), e.pid, e.bound());
                if close.time_wait {
                    e.tw_since_ms = ms(r.ts_ns);
                } else {
                    self.socks.remove(&t);
                    if pooled && bound {
                        self.unbind(&t);
                    }
                }
                let proc_ = self.procs.entry(owner).or_default();
                proc_.closes.add(now, 1);
                if !pooled {
                    return None;
                }
                if close.time_wait {
                    proc_.time_wait += 1;
                } else {
                    proc_.held = proc_.held.saturating_sub(1);
                }
                let key = self.pool_key(&t);
                let p = self.pools.entry(key.clone()).or_default();
                p.closes += 1;
                if let Some(d) = r.duration_ns {
                    p.lifetime_s_sum += d as f64 / 1e9;
                }
                if close.time_wait {
                    p.tw_closes += 1;
                    p.tw_close_rate.add(now, 1);
                    p.time_wait += 1;
                } else {
                    p.used = p.used.saturating_sub(1);
                    p.releases.add(now, 1);
                }
                Some(key)
            }
            Action::ConnectFailed => {
                let proc_ = self.procs.entry(pid).or_default();
                *proc_
                    .failures
                    .entry(errno::name(r.errno.unwrap_or(0)))
                    .or_default() += 1;
                proc_.last_failure_ns = now;
                if r.transport != Transport::Tcp {
                    return None;
                }
                let key = self.pool_key(&t);
                let size = self.tcp_size(netns);
                let p = self.pools.entry(key.clone()).or_insert_with(|| PoolStats {
                    size,
                    ..Default::default()
                });
                p.failures += 1;
                Some(key)
            }
            _ => None,
        }
    }

    /// bind() results do not name a destination; they only feed the bind-before-connect
    /// detection and the failure counts.
    pub(crate) fn apply_bind(&mut self, r: &Record, now: u64) {
        let p = self.procs.entry(r.process.pid).or_default();
        match r.action {
            Action::Bind if r.source.port() != 0 => {
                if p.recent_binds.len() >= RECENT_BINDS {
                    p.recent_binds.pop_front();
                }
                p.recent_binds.push_back(r.source.port());
            }
            Action::BindFailed => {
                *p.failures
                    .entry(errno::name(r.errno.unwrap_or(0)))
                    .or_default() += 1;
                p.last_failure_ns = now;
            }
            _ => {}
        }
    }

    /// Moves TIME_WAIT entries on: reusable once older than the reuse delay where reuse
    /// applies (their port is free again for connect() towards the same destination),
    /// gone after 60 s. One pass over the table every 250 ms (a few milliseconds at
    /// 250,000 entries), instead of timer queues as large as the table.
    pub(crate) fn expire(&mut self, now: u64) {
        let now_ms = ms(now);
        if now_ms < self.last_expire_ms + EXPIRE_EVERY_MS {
            return;
        }
        self.last_expire_ms = now_ms;
        let mut ended: Vec<(Tuple, Entry)> = Vec::new();
        let mut freed: Vec<Tuple> = Vec::new();
        // Each namespace's rules by Tuple::ns, looked up once per pass, not per entry.
        let rules: Vec<Option<&PortRules>> = self
            .ns_ids
            .iter()
            .map(|id| self.ns.get(id).map(|n| &n.rules))
            .collect();
        self.socks.retain(|t, e| {
            if !e.in_time_wait() {
                return true;
            }
            let age = now_ms.saturating_sub(e.tw_since_ms);
            if age >= TIME_WAIT_MS {
                if e.pooled() {
                    ended.push((*t, *e));
                }
                return false;
            }
            let undecided = e.pooled() && !e.reusable() && e.bits & REUSE_DECIDED == 0;
            if let Some(r) = rules[t.ns as usize].filter(|_| undecided) {
                if !r.tw_reuse_applies(t.local().ip(), t.remote().ip()) {
                    e.bits |= REUSE_DECIDED;
                } else if age >= r.settings.tw_reuse_delay_ms as u64 {
                    e.bits |= REUSABLE | REUSE_DECIDED;
                    freed.push(*t);
                }
            }
            true
        });
        for t in freed {
            if let Some(p) = self.pools.get_mut(&self.pool_key(&t)) {
                p.used = p.used.saturating_sub(1);
                p.reusable += 1;
                p.releases.add(now, 1);
            }
        }
        for (t, e) in ended {
            if e.bound() {
                self.unbind(&t);
            }
            if let Some(p) = self.procs.get_mut(&e.pid) {
                p.held = p.held.saturating_sub(1);
                p.time_wait = p.time_wait.saturating_sub(1);
            }
            let key = self.pool_key(&t);
            if let Some(p) = self.pools.get_mut(&key) {
                p.time_wait = p.time_wait.saturating_sub(1);
                if e.reusable() {
                    p.reusable = p.reusable.saturating_sub(1);
                } else {
                    p.used = p.used.saturating_sub(1);
                    p.releases.add(now, 1);
                }
            }
        }
    }

    /// One bound entry of pool `t` is gone.
    fn unbind(&mut self, t: &Tuple) {
        if let Some(n) = self.bound.get_mut(&(t.ns, t.laddr)) {
            *n = n.saturating_sub(1);
        }
        let key = self.pool_key(t);
        if let Some(p) = self.pools.get_mut(&key) {
            p.bound_here = p.bound_here.saturating_sub(1);
        }
    }
}

//! The live picture of which ports are held: seeded and periodically corrected from the
//! kernel's own table (sock_diag), kept exact in between by events. Pure: time comes in
//! as arguments, IO happens elsewhere.
//!
//! TIME_WAIT is never announced and never ends with an event: a close that leaves the
//! port in TIME_WAIT starts a 60 s timer here, and reconciliation removes entries the
//! kernel recycled earlier (a new SYN on the same 4-tuple, tcp_tw_reuse, or
//! tcp_max_tw_buckets overflow).
use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr},
};

// Hashed on every event: Fx, not SipHash (keys are not attacker-chosen in a way that
// matters here: the kernel's own sockets).
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::{
    diagnose::{Severity, Thresholds},
    errno,
    forecast::{Forecast, TIME_WAIT_S, forecast},
    model::{Action, Record, Transport},
    owners::Owner,
    pools::{
        Holder, Pool, PoolKey, TCP_LISTEN, TCP_TIME_WAIT, holds_port, tcp_pool_size, utilisation,
    },
    rate::Rate,
    settings::NetSettings,
    sockdiag::DiagSocket,
};

/// Ports a process bound with port 0 recently, to spot bind() before connect().
const RECENT_BINDS: usize = 4096;

/// A connection's identity, packed: 40 bytes, because the ledger holds one per port in
/// use (250,000 on a busy host). IPv4 is stored IPv4-mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Index into Ledger::ns_ids.
    ns: u32,
    lport: u16,
    rport: u16,
    laddr: [u8; 16],
    raddr: [u8; 16],
}

fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn ip_of(b: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(b);
    v6.to_ipv4_mapped()
        .map(IpAddr::V4)
        .unwrap_or(IpAddr::V6(v6))
}

impl Tuple {
    fn new(ns: u32, local: SocketAddr, remote: SocketAddr) -> Tuple {
        Tuple {
            ns,
            lport: local.port(),
            rport: remote.port(),
            laddr: ip16(local.ip()),
            raddr: ip16(remote.ip()),
        }
    }

    fn local_ip(&self) -> IpAddr {
        ip_of(self.laddr)
    }
}

/// 12 bytes per connection.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Boot-clock second it entered TIME_WAIT; 0 while the connection lives.
    tw_since_s: u32,
    /// 0 when unknown.
    pid: u32,
    /// POOLED, and the reconciliation epoch that last saw it.
    bits: u32,
}

const POOLED: u32 = 1 << 31;
/// The port was chosen by bind() before connect(): it is unusable for every other
/// destination from the same source address while the socket (or its TIME_WAIT) lives.
const BOUND: u32 = 1 << 30;
const EPOCH: u32 = !(POOLED | BOUND);
const TW_S: u32 = 60;

impl Entry {
    fn pooled(&self) -> bool {
        self.bits & POOLED != 0
    }

    fn epoch(&self) -> u32 {
        self.bits & EPOCH
    }

    fn bound(&self) -> bool {
        self.bits & BOUND != 0
    }
}

fn secs(ns: u64) -> u32 {
    ((ns / 1_000_000_000) as u32).max(1)
}

struct NsInfo {
    settings: NetSettings,
    listeners: HashSet<(IpAddr, u16)>,
    tcp_size: u32,
    epoch: u32,
}

#[derive(Default)]
struct PoolStats {
    size: u32,
    used: u32,
    time_wait: u32,
    syn_or_established: u32,
    opens: Rate,
    releases: Rate,
    closes: u64,
    tw_closes: u64,
    lifetime_s_sum: f64,
    failures: u64,
    /// Entries of this pool whose port bind() chose (they shrink the other pools only).
    bound_here: u32,
    /// The highest threshold crossed and not yet cleared (hysteresis for pool_pressure).
    alert: Option<Severity>,
}

/// What the ledger knows of one process.
#[derive(Clone, Debug, Default)]
pub struct ProcStats {
    pub name: String,
    pub start: u64,
    pub connects: Rate,
    pub closes: Rate,
    pub held: u32,
    pub time_wait: u32,
    pub failures: BTreeMap<&'static str, u64>,
    /// Boot ns of the last failure, for highlighting.
    pub last_failure_ns: u64,
    pub bind_then_connect: u64,
    recent_binds: VecDeque<u16>,
}

/// A pool as the views show it.
#[derive(Clone, Debug)]
pub struct PoolView {
    pub pool: Pool,
    pub opens_per_s: f64,
    pub failures: u64,
    pub forecast: Forecast,
}

/// A pool_pressure event: utilisation crossed a threshold upwards.
#[derive(Clone, Debug)]
pub struct Pressure {
    pub severity: Severity,
    pub view: PoolView,
}

#[derive(Default)]
pub struct Ledger {
    ns: HashMap<u64, NsInfo>,
    /// Namespace inode by Tuple::ns.
    ns_ids: Vec<u64>,
    ns_index: HashMap<u64, u32>,
    socks: HashMap<Tuple, Entry>,
    pools: HashMap<PoolKey, PoolStats>,
    procs: HashMap<u32, ProcStats>,
    /// Ports chosen by bind() per (namespace, source address), among pooled entries.
    bound: HashMap<(u32, [u8; 16]), u32>,
    last_expire_s: u32,
}

impl Ledger {
    pub fn new() -> Self {
        Ledger::default()
    }

    pub fn netns_known(&self, netns: u64) -> bool {
        self.ns.contains_key(&netns)
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
            saddr: ip_of(t.laddr),
            daddr: ip_of(t.raddr),
            dport: t.rport,
        }
    }

    fn is_pooled(&self, t: &Tuple) -> bool {
        let Some(ns) = self.ns.get(&self.ns_ids[t.ns as usize]) else {
            return false;
        };
        let port = t.lport;
        // Hash lookups, not a scan: this runs for every event.
        let listens_on = |ip: IpAddr| ns.listeners.contains(&(ip, port));
        ns.settings.in_range(port)
            && !ns.settings.is_reserved(port)
            && !(listens_on(t.local_ip())
                || listens_on(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
                || listens_on(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)))
    }

    /// Replaces what the ledger holds for `netns` with the kernel's table. Owners of
    /// TIME_WAIT sockets (which the kernel does not keep) survive from the ledger.
    pub fn reconcile(
        &mut self,
        netns: u64,
        settings: NetSettings,
        sockets: &[DiagSocket],
        owner_of: impl Fn(&DiagSocket) -> Option<Owner>,
        now: u64,
    ) {
        let listeners = sockets
            .iter()
            .filter(|s| s.protocol == 6 && s.state == TCP_LISTEN)
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
    pub fn reserve_for_new_namespace(&mut self, netns: u64, expected: usize) {
        if !self.netns_known(netns) {
            self.socks.reserve(expected);
        }
    }

    /// Starts a reconciliation of `netns`: its settings and listeners are replaced, its
    /// pools recounted from the sockets that follow (reconcile_socket), and entries not
    /// seen again are removed by reconcile_end (mark and sweep: the table is never
    /// copied, which matters at 250,000 entries).
    pub fn reconcile_begin(
        &mut self,
        netns: u64,
        settings: NetSettings,
        listeners: impl Iterator<Item = (IpAddr, u16)>,
    ) {
        let listeners: HashSet<(IpAddr, u16)> = listeners.collect();
        let tcp_size = tcp_pool_size(&settings, listeners.iter().map(|l| l.1));
        let epoch = self
            .ns
            .get(&netns)
            .map(|n| (n.epoch + 1) & EPOCH)
            .unwrap_or(1);
        self.ns.insert(
            netns,
            NsInfo {
                settings,
                listeners,
                tcp_size,
                epoch,
            },
        );
        self.ns_idx(netns);
        for (_, p) in self.pools.iter_mut().filter(|(k, _)| k.netns == netns) {
            p.used = 0;
            p.time_wait = 0;
            p.syn_or_established = 0;
            p.size = tcp_size;
        }
    }

    /// One socket of the kernel's table (others than TCP holding a port are ignored).
    /// `owner_of` is asked only for a socket the ledger has no owner for (a new entry, or
    /// one whose owner was never known): the /proc walk behind it is the expensive part
    /// of a reconciliation, and events already named the owners of almost every socket.
    pub fn reconcile_socket(
        &mut self,
        netns: u64,
        s: &DiagSocket,
        owner_of: &mut dyn FnMut(&DiagSocket) -> Option<u32>,
        now: u64,
    ) {
        if s.protocol != 6 || !holds_port(s.state) {
            return;
        }
        let Some(info) = self.ns.get(&netns) else {
            return;
        };
        let (epoch, tcp_size) = (info.epoch, info.tcp_size);
        let idx = self.ns_idx(netns);
        let t = Tuple::new(idx, s.local, s.remote);
        let tw = s.state == TCP_TIME_WAIT;
        let pooled = self.is_pooled(&t);
        let e = self.socks.entry(t).or_insert(Entry {
            tw_since_s: 0,
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
            e.tw_since_s = 0;
        } else if e.tw_since_s == 0 {
            // Unknown start: it ends within 60 s of now at the latest.
            e.tw_since_s = secs(now);
        }
        e.bits = epoch | if pooled { POOLED } else { 0 } | (e.bits & BOUND);
        if pooled {
            let key = self.pool_key(&t);
            let p = self.pools.entry(key).or_default();
            p.size = tcp_size;
            p.used += 1;
            p.time_wait += tw as u32;
            p.syn_or_established += !tw as u32;
        }
    }

    /// Removes what the kernel no longer has (TIME_WAIT recycled early, missed closes).
    pub fn reconcile_end(&mut self, netns: u64) {
        let Some(epoch) = self.ns.get(&netns).map(|n| n.epoch) else {
            return;
        };
        let idx = self.ns_idx(netns);
        self.socks.retain(|t, e| t.ns != idx || e.epoch() == epoch);
        self.recount_bound();
        self.pools
            .retain(|k, p| k.netns != netns || p.used > 0 || p.opens.total > 0 || p.failures > 0);
        self.recount_procs();
    }

    /// Drops every namespace not in `live` (deleted since: containers come and go), with
    /// its sockets and pools, which would otherwise stay forever.
    pub fn forget_namespaces_except(&mut self, live: &HashSet<u64>) {
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

    fn recount_procs(&mut self) {
        for p in self.procs.values_mut() {
            p.held = 0;
            p.time_wait = 0;
        }
        for e in self.socks.values().filter(|e| e.pooled() && e.pid != 0) {
            let p = self.procs.entry(e.pid).or_default();
            p.held += 1;
            p.time_wait += (e.tw_since_s != 0) as u32;
        }
    }

    /// Tells the ledger who a pid is; a different start time means a new process.
    pub fn process_seen(&mut self, pid: u32, start: u64, name: &str) {
        let p = self.procs.entry(pid).or_default();
        if p.start != start && p.start != 0 {
            let (held, tw) = (p.held, p.time_wait);
            *p = ProcStats {
                held,
                time_wait: tw,
                ..Default::default()
            };
        }
        p.start = start;
        if p.name != name {
            p.name = name.to_string();
        }
    }

    /// Applies one record. `netns` is the namespace of the owner, when known. Returns
    /// the pool the record touched.
    pub fn apply(&mut self, r: &Record, netns: Option<u64>, now: u64) -> Option<PoolKey> {
        let netns = netns?;
        let dest = r.destination?;
        let idx = self.ns_idx(netns);
        let t = Tuple::new(idx, r.source, dest);
        let pid = r.process.pid;
        match r.action {
            Action::Connect | Action::Established
                if r.transport == Transport::Tcp && !r.passive =>
            {
                if r.source.port() == 0 || self.socks.contains_key(&t) {
                    return None;
                }
                let pooled = self.is_pooled(&t);
                let epoch = self.ns.get(&netns).map(|n| n.epoch).unwrap_or(0);
                let bound = self
                    .procs
                    .get(&pid)
                    .is_some_and(|p| p.recent_binds.contains(&r.source.port()));
                let bits = epoch | if pooled { POOLED } else { 0 } | if bound { BOUND } else { 0 };
                self.socks.insert(
                    t,
                    Entry {
                        tw_since_s: 0,
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
                let size = self.ns.get(&netns).map(|n| n.tcp_size).unwrap_or(0);
                let key = self.pool_key(&t);
                let p = self.pools.entry(key.clone()).or_default();
                p.size = size;
                p.used += 1;
                p.syn_or_established += 1;
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
                if e.tw_since_s != 0 {
                    return None;
                }
                let (pooled, owner, bound) = (e.pooled(), e.pid, e.bound());
                if close.time_wait {
                    e.tw_since_s = secs(r.ts_ns);
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
                p.syn_or_established = p.syn_or_established.saturating_sub(1);
                if let Some(d) = r.duration_us {
                    p.lifetime_s_sum += d as f64 / 1e6;
                }
                if close.time_wait {
                    p.tw_closes += 1;
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
                let size = self.ns.get(&netns).map(|n| n.tcp_size).unwrap_or(0);
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
    pub fn apply_bind(&mut self, r: &Record, now: u64) {
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

    /// Ends TIME_WAIT entries older than 60 s: one pass over the table per second (a
    /// few milliseconds at 250,000 entries), instead of a timer queue as large as the
    /// table.
    pub fn expire(&mut self, now: u64) {
        let now_s = secs(now);
        if now_s == self.last_expire_s {
            return;
        }
        self.last_expire_s = now_s;
        let mut ended: Vec<(Tuple, Entry)> = Vec::new();
        self.socks.retain(|t, e| {
            let over = e.tw_since_s != 0 && now_s >= e.tw_since_s + TW_S;
            if over && e.pooled() {
                ended.push((*t, *e));
            }
            !over
        });
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
                p.used = p.used.saturating_sub(1);
                p.time_wait = p.time_wait.saturating_sub(1);
                p.releases.add(now, 1);
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

    /// A pool's size: the namespace's usable range minus listeners (p.size), minus the
    /// ports bind() took for other destinations from the same source address.
    fn size_of(&self, key: &PoolKey) -> u32 {
        let Some(p) = self.pools.get(key) else {
            return 0;
        };
        let Some(&idx) = self.ns_index.get(&key.netns) else {
            return p.size;
        };
        let bound = self
            .bound
            .get(&(idx, ip16(key.saddr)))
            .copied()
            .unwrap_or(0);
        p.size.saturating_sub(bound.saturating_sub(p.bound_here))
    }

    /// (used, size, time_wait) of a pool.
    pub fn pool_state(&self, key: &PoolKey) -> Option<(u32, u32, u32)> {
        let size = self.size_of(key);
        self.pools.get(key).map(|p| (p.used, size, p.time_wait))
    }

    fn view(&mut self, key: &PoolKey, now: u64, holders: Vec<Holder>) -> Option<PoolView> {
        let size = self.size_of(key);
        let p = self.pools.get_mut(key)?;
        let opens = p.opens.per_sec(now);
        let releases = p.releases.per_sec(now);
        let lifetime = if p.closes > 0 {
            p.lifetime_s_sum / p.closes as f64
        } else {
            0.0
        };
        let tw_share = if p.closes > 0 {
            p.tw_closes as f64 / p.closes as f64
        } else {
            0.0
        };
        let f = forecast(size, p.used, opens, releases, lifetime, tw_share);
        let pool = Pool {
            key: key.clone(),
            size,
            used: p.used,
            time_wait: p.time_wait,
            syn_sent: 0,
            established: p.syn_or_established,
            odd_ports: 0,
            holders,
        };
        Some(PoolView {
            pool,
            opens_per_s: opens,
            failures: p.failures,
            forecast: f,
        })
    }

    /// Holders of every pool, from the entries (biggest first).
    fn holders(&self, names: &HashMap<u32, ProcStats>) -> HashMap<PoolKey, Vec<Holder>> {
        let mut by: HashMap<PoolKey, HashMap<u32, Holder>> = HashMap::default();
        for (t, e) in self.socks.iter().filter(|(_, e)| e.pooled()) {
            let h = by
                .entry(self.pool_key(t))
                .or_default()
                .entry(e.pid)
                .or_insert_with(|| Holder {
                    owner: (e.pid != 0).then(|| Owner {
                        pid: e.pid,
                        start: names.get(&e.pid).map(|p| p.start).unwrap_or(0),
                        name: names
                            .get(&e.pid)
                            .map(|p| p.name.clone())
                            .unwrap_or_default(),
                    }),
                    held: 0,
                    time_wait: 0,
                });
            h.held += 1;
            h.time_wait += (e.tw_since_s != 0) as u32;
        }
        by.into_iter()
            .map(|(k, m)| {
                let mut v: Vec<Holder> = m.into_values().collect();
                v.sort_by(|a, b| b.held.cmp(&a.held).then_with(|| a.owner.cmp(&b.owner)));
                (k, v)
            })
            .collect()
    }

    /// Every pool with its holders and forecast, fullest first.
    pub fn pool_views(&mut self, now: u64) -> Vec<PoolView> {
        let mut holders = self.holders(&self.procs);
        let keys: Vec<PoolKey> = self.pools.keys().cloned().collect();
        let mut v: Vec<PoolView> = keys
            .iter()
            .filter_map(|k| self.view(k, now, holders.remove(k).unwrap_or_default()))
            .collect();
        v.sort_by(|a, b| {
            b.pool
                .utilisation()
                .partial_cmp(&a.pool.utilisation())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.pool.used.cmp(&a.pool.used))
        });
        v
    }

    /// A pool_pressure event when `key` crossed a threshold upwards since the last one;
    /// the alert re-arms when utilisation falls 5 points below the threshold.
    pub fn check_pressure(&mut self, key: &PoolKey, th: &Thresholds, now: u64) -> Option<Pressure> {
        let size = self.size_of(key);
        let p = self.pools.get_mut(key)?;
        let util = utilisation(p.used, size);
        let sev = th.severity(util);
        // Lower a standing alert only once utilisation is clearly below its threshold.
        let below = |t: f64| util < t - 0.05;
        if p.alert == Some(Severity::Critical) && below(th.critical) {
            p.alert = Some(Severity::Warning);
        }
        if p.alert == Some(Severity::Warning) && below(th.warning) {
            p.alert = None;
        }
        match sev {
            Some(s) if p.alert.is_none_or(|a| s > a) => {
                p.alert = Some(s);
                let holders = self.holders(&self.procs).remove(key).unwrap_or_default();
                let view = self.view(key, now, holders)?;
                Some(Pressure { severity: s, view })
            }
            _ => None,
        }
    }

    /// The fullest pool that holds anything, with its utilisation (0..1).
    pub fn fullest_pool(&self) -> Option<(f64, &PoolKey)> {
        self.pools
            .iter()
            .filter(|(_, p)| p.used > 0)
            .map(|(k, p)| (utilisation(p.used, self.size_of(k)), k))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    pub fn processes(&self) -> &HashMap<u32, ProcStats> {
        &self.procs
    }

    pub fn processes_mut(&mut self) -> &mut HashMap<u32, ProcStats> {
        &mut self.procs
    }

    /// Share of the fullest pool each process holds.
    pub fn fullest_share(&self) -> HashMap<u32, f64> {
        let mut per: HashMap<(u32, PoolKey), u32> = HashMap::default();
        for (t, e) in self.socks.iter().filter(|(_, e)| e.pooled() && e.pid != 0) {
            *per.entry((e.pid, self.pool_key(t))).or_default() += 1;
        }
        let mut out: HashMap<u32, f64> = HashMap::default();
        for ((pid, key), n) in per {
            let size = self.size_of(&key).max(1);
            let s = out.entry(pid).or_default();
            *s = s.max(n as f64 / size as f64);
        }
        out
    }

    /// Drops processes that hold nothing and did nothing for the whole rate window, so
    /// that the table stays bounded on a host that forks a lot.
    pub fn forget_idle(&mut self, now: u64) {
        self.procs.retain(|_, p| {
            p.held > 0
                || p.connects.per_sec(now) > 0.0
                || p.closes.per_sec(now) > 0.0
                || now.saturating_sub(p.last_failure_ns) < TIME_WAIT_S as u64 * 1_000_000_000
        });
    }

    pub fn tracked_sockets(&self) -> usize {
        self.socks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CloseInfo, CloseKind, Process};

    const S: u64 = 1_000_000_000;
    const NS: u64 = 4026531840;

    fn settings() -> NetSettings {
        NetSettings {
            range: (40000, 40009),
            ..Default::default()
        }
    }

    fn rec(action: Action, sport: u16, dport: u16, ts: u64) -> Record {
        Record {
            ts_ns: ts,
            action,
            process: Process {
                pid: 7,
                tid: 7,
                thread_name: "cli".into(),
                cgroup_id: 0,
            },
            transport: Transport::Tcp,
            source: SocketAddr::new("10.0.0.1".parse().unwrap(), sport),
            destination: Some(SocketAddr::new("10.0.0.9".parse().unwrap(), dport)),
            errno: None,
            errno_inferred: false,
            cause: None,
            close: None,
            duration_us: Some(1000),
            socket: 1,
            fd: None,
            owner_guessed: false,
            passive: false,
            pool: None,
            netns: None,
            container: None,
        }
    }

    fn close(sport: u16, tw: bool, ts: u64) -> Record {
        let mut r = rec(Action::Close, sport, 80, ts);
        r.close = Some(CloseInfo {
            kind: if tw {
                CloseKind::Active
            } else {
                CloseKind::Passive
            },
            time_wait: tw,
            from_state: "FIN_WAIT2",
        });
        r
    }

    fn ledger() -> Ledger {
        let mut l = Ledger::new();
        l.reconcile(NS, settings(), &[], |_| None, 0);
        l
    }

    fn key() -> PoolKey {
        PoolKey {
            netns: NS,
            transport: Transport::Tcp,
            saddr: "10.0.0.1".parse().unwrap(),
            daddr: "10.0.0.9".parse().unwrap(),
            dport: 80,
        }
    }

    #[test]
    fn connects_fill_and_time_wait_expires_after_60s() {
        let mut l = ledger();
        for i in 0..4 {
            l.apply(&rec(Action::Connect, 40000 + i, 80, S), Some(NS), S);
        }
        assert_eq!(l.pool_state(&key()), Some((4, 10, 0)));
        l.apply(&close(40000, true, 2 * S), Some(NS), 2 * S);
        l.apply(&close(40001, false, 2 * S), Some(NS), 2 * S);
        assert_eq!(l.pool_state(&key()), Some((3, 10, 1)));
        assert_eq!(l.processes()[&7].time_wait, 1);
        l.expire(61 * S);
        assert_eq!(
            l.pool_state(&key()),
            Some((3, 10, 1)),
            "not yet: 60 s from the close"
        );
        l.expire(62 * S);
        assert_eq!(l.pool_state(&key()), Some((2, 10, 0)));
        assert_eq!(l.processes()[&7].held, 2);
    }

    #[test]
    fn duplicate_connect_and_established_count_once() {
        let mut l = ledger();
        l.apply(&rec(Action::Connect, 40000, 80, S), Some(NS), S);
        l.apply(&rec(Action::Established, 40000, 80, S), Some(NS), S);
        assert_eq!(l.pool_state(&key()).unwrap().0, 1);
        // Outside the range: not in a pool.
        assert_eq!(
            l.apply(&rec(Action::Connect, 5000, 80, S), Some(NS), S),
            None
        );
    }

    #[test]
    fn reconciliation_corrects_drift_and_keeps_time_wait_owners() {
        let mut l = ledger();
        l.apply(&rec(Action::Connect, 40000, 80, S), Some(NS), S);
        l.apply(&close(40000, true, 2 * S), Some(NS), 2 * S);
        l.apply(&rec(Action::Connect, 40001, 80, S), Some(NS), S);
        // The kernel says: 40000 still in TIME_WAIT, 40001 gone (a missed close), and a
        // connection the ledger never saw (owner from /proc).
        let d = |state, port| DiagSocket {
            protocol: 6,
            state,
            local: SocketAddr::new("10.0.0.1".parse().unwrap(), port),
            remote: "10.0.0.9:80".parse().unwrap(),
            inode: if state == 6 { 0 } else { 99 },
            cookie: 0,
        };
        let owner = |s: &DiagSocket| {
            (s.inode == 99).then(|| Owner {
                pid: 8,
                start: 1,
                name: "other".into(),
            })
        };
        l.reconcile(NS, settings(), &[d(6, 40000), d(1, 40005)], owner, 3 * S);
        assert_eq!(l.pool_state(&key()), Some((2, 10, 1)));
        let views = l.pool_views(3 * S);
        let holders: Vec<(Option<u32>, u32)> = views[0]
            .pool
            .holders
            .iter()
            .map(|h| (h.owner.as_ref().map(|o| o.pid), h.held))
            .collect();
        assert!(
            holders.contains(&(Some(7), 1)),
            "TIME_WAIT owner kept: {holders:?}"
        );
        assert!(holders.contains(&(Some(8), 1)), "{holders:?}");
        // The kept TIME_WAIT still ends 60 s after its close.
        l.expire(62 * S);
        assert_eq!(l.pool_state(&key()), Some((1, 10, 0)));
    }

    #[test]
    fn a_deleted_namespace_is_forgotten_with_its_pools() {
        let mut l = ledger();
        l.apply(&rec(Action::Connect, 40000, 80, S), Some(NS), S);
        assert_eq!(l.tracked_sockets(), 1);
        l.forget_namespaces_except(&[NS].into_iter().collect());
        assert_eq!(l.pool_state(&key()), Some((1, 10, 0)));
        l.forget_namespaces_except(&HashSet::default());
        assert_eq!(l.tracked_sockets(), 0);
        assert_eq!(l.pool_state(&key()), None);
        assert!(l.fullest_pool().is_none());
        assert_eq!(l.processes().get(&7).map(|p| p.held), Some(0));
    }

    #[test]
    fn pressure_fires_once_per_threshold_and_rearms() {
        let mut l = ledger();
        let th = Thresholds::default();
        let mut fired = Vec::new();
        for i in 0..10 {
            let k = l
                .apply(&rec(Action::Connect, 40000 + i, 80, S), Some(NS), S)
                .unwrap();
            if let Some(p) = l.check_pressure(&k, &th, S) {
                fired.push((i, p.severity));
            }
        }
        assert_eq!(fired, vec![(7, Severity::Warning), (9, Severity::Critical)]);
        for i in 0..10 {
            l.apply(&close(40000 + i, false, 2 * S), Some(NS), 2 * S);
        }
        assert!(l.check_pressure(&key(), &th, 2 * S).is_none());
        for i in 0..8 {
            l.apply(&rec(Action::Connect, 40000 + i, 80, 3 * S), Some(NS), 3 * S);
        }
        assert_eq!(
            l.check_pressure(&key(), &th, 3 * S).map(|p| p.severity),
            Some(Severity::Warning)
        );
    }

    #[test]
    fn bind_then_connect_is_counted_per_process() {
        let mut l = ledger();
        let mut b = rec(Action::Bind, 40003, 0, S);
        b.destination = None;
        l.apply_bind(&b, S);
        l.apply(&rec(Action::Connect, 40003, 80, S), Some(NS), S);
        l.apply(&rec(Action::Connect, 40004, 80, S), Some(NS), S);
        assert_eq!(l.processes()[&7].bind_then_connect, 1);
    }

    #[test]
    fn a_port_bind_chose_shrinks_the_other_pools_of_that_address() {
        let mut l = ledger();
        let mut b = rec(Action::Bind, 40003, 0, S);
        b.destination = None;
        l.apply_bind(&b, S);
        l.apply(&rec(Action::Connect, 40003, 80, S), Some(NS), S);
        l.apply(&rec(Action::Connect, 40004, 81, S), Some(NS), S);
        let k81 = PoolKey { dport: 81, ..key() };
        assert_eq!(
            l.pool_state(&key()),
            Some((1, 10, 0)),
            "its own pool counts it as used"
        );
        assert_eq!(
            l.pool_state(&k81),
            Some((1, 9, 0)),
            "every other pool lost the port"
        );
        // It stays taken through TIME_WAIT, and comes back when that ends.
        l.apply(&close(40003, true, 2 * S), Some(NS), 2 * S);
        assert_eq!(l.pool_state(&k81).unwrap().1, 9);
        l.expire(63 * S);
        assert_eq!(l.pool_state(&k81).unwrap().1, 10);
    }

    #[test]
    fn failures_are_counted_per_process_and_pool() {
        let mut l = ledger();
        let mut f = rec(Action::ConnectFailed, 0, 80, S);
        f.errno = Some(99);
        l.apply(&f, Some(NS), S);
        assert_eq!(l.processes()[&7].failures["EADDRNOTAVAIL"], 1);
        assert_eq!(l.pool_views(S)[0].failures, 1);
    }
}

//! The live ledger with its IO: seeding and reconciling from sock_diag, resolving an
//! event's network namespace from its owner, and the clock that expires TIME_WAIT.
use std::{collections::HashMap, fs, os::unix::fs::MetadataExt};

use portex_common::tcpstate;

use crate::{
    logic::diagnose::Thresholds,
    logic::ledger::{Ledger, Pressure},
    logic::model::DiagSocket,
    logic::model::Owner,
    logic::model::{Action, PoolState, Record},
    logic::pool::{PoolKey, held_states_mask, utilisation},
    sys::clock::boot_now_ns,
    sys::netns::{self, Netns},
    sys::owners::socket_owners,
    sys::snapshot,
    sys::sockdiag::{self, TCP, UDP},
};

/// How often the ledger is corrected from the kernel's table.
pub(crate) const RECONCILE_NS: u64 = 10_000_000_000;
const NETNS_TTL_NS: u64 = 5_000_000_000;

pub(crate) struct Tracker {
    pub ledger: Ledger,
    pub thresholds: Thresholds,
    netns_cache: HashMap<u32, (u64, u64)>,
    last_reconcile: u64,
    last_expire: u64,
    /// UDP (ports held in the range, usable ports) per namespace, from the last
    /// reconciliation: no event follows UDP sockets, and auto mode must see UDP pools
    /// fill up before their first EAGAIN, which only the syscall hooks report.
    udp: HashMap<u64, (u32, u32)>,
}

/// What the tracker adds to one record.
#[derive(Default)]
pub(crate) struct Touch {
    /// (used, size, time_wait) of a failure's pool, after the record.
    pub pool: Option<PoolState>,
    pub pressure: Option<Pressure>,
    /// The namespace the record was attributed to.
    pub netns: Option<u64>,
}

impl Tracker {
    /// Seeds from every namespace on the host.
    pub(crate) fn new(thresholds: Thresholds) -> Tracker {
        let mut t = Tracker {
            ledger: Ledger::new(),
            thresholds,
            netns_cache: HashMap::new(),
            last_reconcile: 0,
            last_expire: 0,
            udp: HashMap::new(),
        };
        t.reconcile(boot_now_ns());
        t
    }

    /// Re-reads every namespace's table and settings.
    pub(crate) fn reconcile(&mut self, now: u64) {
        let Ok(list) = snapshot::namespaces(true) else {
            return;
        };
        let mut owners = None;
        let live = list.iter().map(|n| n.inode).collect();
        for ns in list {
            // A namespace deleted while it was read: forgotten below, nothing to report.
            let _ = self.reconcile_ns(&ns, &mut owners, now);
        }
        self.ledger.forget_namespaces_except(&live);
        self.udp.retain(|ns, _| live.contains(ns));
        if let Some(owners) = owners {
            for (pid, o) in owners
                .values()
                .map(|o| (o.pid, o))
                .collect::<HashMap<_, _>>()
            {
                self.ledger.process_seen(pid, o.start, &o.name);
            }
        }
        self.last_reconcile = now;
    }

    /// Streams one namespace's table into the ledger (never collected in memory). The
    /// socket owners are read from /proc only if some socket needs one (`owners` is
    /// filled on first use and shared by the namespaces of one reconciliation).
    fn reconcile_ns(
        &mut self,
        ns: &Netns,
        owners: &mut Option<HashMap<u64, Owner>>,
        now: u64,
    ) -> anyhow::Result<()> {
        let ledger = &mut self.ledger;
        let udp = netns::in_netns(ns, || -> anyhow::Result<(u32, u32)> {
            ledger.reserve_for_new_namespace(ns.inode, tcp_sockets_in_use());
            let settings = crate::sys::sysctls::read();
            let mut udp_used = 0;
            sockdiag::for_each(UDP, u32::MAX, &mut |s| {
                let port = s.local.port();
                udp_used += (settings.in_range(port) && !settings.is_reserved(port)) as u32;
            })?;
            let udp = (udp_used, settings.usable_ports());
            let mut listeners = Vec::new();
            // Listeners and bound-only sockets: their ports are no pool's.
            let binds = 1 << tcpstate::LISTEN | 1 << tcpstate::BOUND_INACTIVE;
            sockdiag::for_each(TCP, binds, &mut |s| {
                listeners.push((s.local.ip(), s.local.port()))
            })?;
            ledger.reconcile_begin(ns.inode, settings, listeners.into_iter());
            let mut owner_of = |s: &DiagSocket| {
                owners
                    .get_or_insert_with(socket_owners)
                    .get(&s.inode)
                    .map(|o| o.pid)
            };
            sockdiag::for_each(TCP, held_states_mask(), &mut |s| {
                ledger.reconcile_socket(ns.inode, &s, &mut owner_of, now)
            })?;
            ledger.reconcile_end(ns.inode);
            Ok(udp)
        })??;
        self.udp.insert(ns.inode, udp);
        Ok(())
    }

    /// The fullest pool, TCP (live) or UDP (last reconciliation): its utilisation, and
    /// its label when it is worth printing (at or above `label_from`).
    pub(crate) fn fullest(&self, label_from: f64) -> Option<(f64, String)> {
        fullest_of(self.ledger.fullest_pool(), &self.udp, label_from)
    }

    fn reconcile_one(&mut self, inode: u64, pid: u32, tid: u32, now: u64) {
        let path = std::path::PathBuf::from(format!("/proc/{pid}/task/{tid}/ns/net"));
        let ns = Netns {
            inode,
            path,
            name: None,
        };
        // The task may be gone already; the next full reconciliation reads the namespace.
        let _ = self.reconcile_ns(&ns, &mut None, now);
    }

    /// Expires TIME_WAIT, reconciles when due.
    pub(crate) fn tick(&mut self, now: u64) {
        if now.saturating_sub(self.last_expire) >= 250_000_000 {
            self.ledger.expire(now);
            self.last_expire = now;
        }
        if now.saturating_sub(self.last_reconcile) >= RECONCILE_NS {
            self.ledger.forget_idle(now);
            self.reconcile(now);
        }
    }

    /// The network namespace of a task, cached for a few seconds.
    fn netns_of(&mut self, pid: u32, tid: u32, now: u64) -> Option<u64> {
        if pid == 0 {
            return None;
        }
        let key = if tid != 0 { tid } else { pid };
        if let Some(&(ns, at)) = self.netns_cache.get(&key)
            && now.saturating_sub(at) < NETNS_TTL_NS
        {
            return Some(ns);
        }
        if self.netns_cache.len() > 16_384 {
            self.netns_cache.clear();
        }
        let ns = fs::metadata(format!("/proc/{pid}/task/{tid}/ns/net"))
            .or_else(|_| fs::metadata(format!("/proc/{pid}/ns/net")))
            .ok()?
            .ino();
        self.netns_cache.insert(key, (ns, now));
        Some(ns)
    }

    /// Applies a record; returns its pool's state and any pressure crossing.
    pub(crate) fn on_record(
        &mut self,
        r: &Record,
        process_start: u64,
        name: &str,
        now: u64,
    ) -> Touch {
        if r.process.pid != 0 {
            self.ledger.process_seen(r.process.pid, process_start, name);
        }
        if matches!(r.action, Action::Bind | Action::BindFailed) {
            self.ledger.apply_bind(r, now);
            return Touch::default();
        }
        let ns = self.netns_of(r.process.pid, r.process.tid, now);
        if let Some(n) = ns
            && !self.ledger.netns_known(n)
        {
            // A namespace created since the last reconciliation: read just that one,
            // through the task that lives in it.
            self.reconcile_one(n, r.process.pid, r.process.tid, now);
        }
        let Some(key) = self.ledger.apply(r, ns, now) else {
            return Touch {
                netns: ns,
                ..Touch::default()
            };
        };
        let pressure = self.ledger.check_pressure(&key, &self.thresholds, now);
        // The pool's state goes on failures only: not worth three lookups per event.
        let pool = if r.action.is_failure() {
            self.ledger
                .pool_state(&key)
                .map(|(used, size, time_wait)| PoolState {
                    used,
                    size,
                    time_wait,
                })
        } else {
            None
        };
        Touch {
            pool,
            pressure,
            netns: ns,
        }
    }
}

fn fullest_of(
    tcp: Option<(f64, &PoolKey)>,
    udp: &HashMap<u64, (u32, u32)>,
    label_from: f64,
) -> Option<(f64, String)> {
    let tcp = tcp.map(|(u, k)| (u, Some(k), 0));
    let udp = udp
        .iter()
        .filter(|(_, (used, _))| *used > 0)
        .map(|(ns, &(used, size))| (utilisation(used, size), None, *ns))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let (util, key, ns) = [tcp, udp]
        .into_iter()
        .flatten()
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    let label = match key {
        _ if util < label_from => String::new(),
        Some(k) => k.label(),
        None => format!("udp of network namespace {ns}"),
    };
    Some((util, label))
}

/// TCP sockets of the current namespace, TIME_WAIT included; 0 when unreadable.
fn tcp_sockets_in_use() -> usize {
    // thread-self: /proc/net follows the thread group leader, not this (setns) thread.
    let text = fs::read_to_string("/proc/thread-self/net/sockstat").unwrap_or_default();
    parse_sockstat_tcp(&text)
}

/// "TCP: inuse N orphan N tw N alloc N mem N" -> inuse + tw.
pub fn parse_sockstat_tcp(text: &str) -> usize {
    let Some(line) = text.lines().find(|l| l.starts_with("TCP:")) else {
        return 0;
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    // Saturating: the numbers are text, and usize::MAX + 1 must not overflow.
    field("inuse").saturating_add(field("tw"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fullest_pool_may_be_udp() {
        let key = PoolKey {
            netns: 1,
            transport: crate::logic::model::Transport::Tcp,
            saddr: "10.0.0.1".parse().unwrap(),
            daddr: "10.0.0.9".parse().unwrap(),
            dport: 80,
        };
        let mut udp = HashMap::new();
        udp.insert(7u64, (30u32, 100u32));
        let (u, l) = fullest_of(Some((0.2, &key)), &udp, 0.5).unwrap();
        assert_eq!((u, l.as_str()), (0.3, ""));
        udp.insert(7, (60, 100));
        let (u, l) = fullest_of(Some((0.2, &key)), &udp, 0.5).unwrap();
        assert_eq!((u, l.as_str()), (0.6, "udp of network namespace 7"));
        let (u, l) = fullest_of(Some((0.9, &key)), &udp, 0.5).unwrap();
        assert_eq!((u, l.as_str()), (0.9, "tcp 10.0.0.1 -> 10.0.0.9:80"));
        assert!(fullest_of(None, &HashMap::new(), 0.5).is_none());
    }

    #[test]
    fn sockstat_counts_tcp_in_use_and_time_wait() {
        let text = "sockets: used 180\nTCP: inuse 7 orphan 0 tw 250003 alloc 12 mem 3\nUDP: inuse 2 mem 1\n";
        assert_eq!(parse_sockstat_tcp(text), 250_010);
        assert_eq!(parse_sockstat_tcp(""), 0);
    }

    #[test]
    fn sockstat_counts_past_usize_saturate() {
        // fuzz/fuzz_targets/proc_text.rs crashes on this: inuse + tw overflowed.
        let text = "TCP: inuse 18446744073709551615 orphan 0 tw 1 alloc 1 mem 1\n";
        assert_eq!(parse_sockstat_tcp(text), usize::MAX);
    }
}

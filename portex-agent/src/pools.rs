//! Port pools: from a namespace's socket table and settings, how many source ports each
//! destination has left. Pure.
//!
//! A TCP pool is (namespace, source IP, destination IP, destination port): connect()
//! only needs the 4-tuple to be unique, so one busy backend can run out while the host
//! has thousands of free ports. Its size is the namespace's ip_local_port_range, minus
//! ip_local_reserved_ports, minus the ports listeners hold inside the range (bind() makes
//! a port unusable for every destination). UDP auto-bind needs a port no other UDP socket
//! holds, whatever the destination, so UDP has one pool per namespace.
use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
};

use crate::{model::Transport, owners::Owner, settings::NetSettings, sockdiag::DiagSocket};

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_LISTEN: u8 = 10;

/// TCP states in which a connection holds its local port.
pub fn holds_port(state: u8) -> bool {
    matches!(state, 1 | 2 | 4 | 5 | 6 | 8 | 9 | 11)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub netns: u64,
    pub transport: Transport,
    /// Unspecified for the per-namespace UDP pool.
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    /// 0 for the per-namespace UDP pool.
    pub dport: u16,
}

impl PoolKey {
    pub fn is_udp_pool(&self) -> bool {
        self.transport == Transport::Udp
    }

    /// "10.0.0.1 -> 10.0.0.9:80", or "udp (any destination)".
    pub fn route(&self) -> String {
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
    pub fn label(&self) -> String {
        if self.is_udp_pool() {
            self.route()
        } else {
            format!("tcp {}", self.route())
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// None: no process holds it (TIME_WAIT, or an orphaned socket its process closed
    /// and that waits for the peer: FIN_WAIT1/2, CLOSING, LAST_ACK).
    pub owner: Option<Owner>,
    pub held: u32,
    pub time_wait: u32,
}

impl Holder {
    /// "1234 curl" for a process (the name made safe for a terminal); for ports no
    /// process holds, what holds them.
    pub fn label(&self) -> String {
        let orphaned = self.held.saturating_sub(self.time_wait);
        match &self.owner {
            Some(o) => {
                let mut n = format!("{} ", o.pid);
                crate::untrusted::sanitize(&o.name, &mut n);
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
pub struct Pool {
    pub key: PoolKey,
    pub size: u32,
    pub used: u32,
    pub time_wait: u32,
    pub syn_sent: u32,
    pub established: u32,
    /// Ports of odd parity among the used ones: connect() picks even ports first and
    /// bind() odd ones, so a pool of mostly odd ports is filled by bind() before connect().
    pub odd_ports: u32,
    /// Biggest holders first.
    pub holders: Vec<Holder>,
}

impl Pool {
    pub fn utilisation(&self) -> f64 {
        utilisation(self.used, self.size)
    }

    pub fn free(&self) -> u32 {
        self.size.saturating_sub(self.used)
    }
}

/// Share of a pool in use (0..1); a pool of size 0 is full.
pub fn utilisation(used: u32, size: u32) -> f64 {
    if size == 0 {
        1.0
    } else {
        used as f64 / size as f64
    }
}

/// The size of every TCP pool of a namespace: the usable range minus the ports that
/// listeners hold inside it (each distinct port once).
pub fn tcp_pool_size(settings: &NetSettings, listen_ports: impl Iterator<Item = u16>) -> u32 {
    let ports: BTreeSet<u16> = listen_ports.collect();
    let exclusive = ports
        .iter()
        .filter(|&&p| settings.in_range(p) && !settings.is_reserved(p))
        .count() as u32;
    settings.usable_ports().saturating_sub(exclusive)
}

/// Builds every pool of one namespace. `owner_of` names a socket's holder (by inode for
/// live sockets; for TIME_WAIT sockets only a ledger that saw the close knows it).
pub fn build_pools(
    netns: u64,
    settings: &NetSettings,
    sockets: &[DiagSocket],
    owner_of: impl Fn(&DiagSocket) -> Option<Owner>,
) -> Vec<Pool> {
    // Ports held by listeners: unusable for connect() towards any destination.
    let listening: Vec<(IpAddr, u16)> = sockets
        .iter()
        .filter(|s| s.protocol == 6 && s.state == TCP_LISTEN)
        .map(|s| (s.local.ip(), s.local.port()))
        .collect();
    let is_server_side = |s: &DiagSocket| {
        listening.iter().any(|&(ip, port)| {
            port == s.local.port() && (ip == s.local.ip() || ip.is_unspecified())
        })
    };
    let tcp_size = tcp_pool_size(settings, listening.iter().map(|l| l.1));

    let mut pools: HashMap<PoolKey, (Pool, HashMap<Option<Owner>, Holder>)> = HashMap::new();
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    for s in sockets {
        let port = s.local.port();
        if !settings.in_range(port) || settings.is_reserved(port) {
            continue;
        }
        let (key, size) = match s.protocol {
            6 if holds_port(s.state) && !is_server_side(s) => (
                PoolKey {
                    netns,
                    transport: Transport::Tcp,
                    saddr: s.local.ip(),
                    daddr: s.remote.ip(),
                    dport: s.remote.port(),
                },
                tcp_size,
            ),
            17 => (
                PoolKey {
                    netns,
                    transport: Transport::Udp,
                    saddr: any,
                    daddr: any,
                    dport: 0,
                },
                settings.usable_ports(),
            ),
            _ => continue,
        };
        let (pool, holders) = pools.entry(key.clone()).or_insert_with(|| {
            (
                Pool {
                    key,
                    size,
                    used: 0,
                    time_wait: 0,
                    syn_sent: 0,
                    established: 0,
                    odd_ports: 0,
                    holders: Vec::new(),
                },
                HashMap::new(),
            )
        });
        let tw = s.protocol == 6 && s.state == TCP_TIME_WAIT;
        pool.used += 1;
        pool.time_wait += tw as u32;
        pool.syn_sent += (s.protocol == 6 && s.state == TCP_SYN_SENT) as u32;
        pool.established += (s.protocol == 6 && s.state == TCP_ESTABLISHED) as u32;
        pool.odd_ports += (port % 2 == 1) as u32;
        let owner = owner_of(s);
        let h = holders.entry(owner.clone()).or_insert(Holder {
            owner,
            held: 0,
            time_wait: 0,
        });
        h.held += 1;
        h.time_wait += tw as u32;
    }
    let mut out: Vec<Pool> = pools
        .into_values()
        .map(|(mut p, h)| {
            p.holders = h.into_values().collect();
            p.holders
                .sort_by(|a, b| b.held.cmp(&a.held).then_with(|| a.owner.cmp(&b.owner)));
            p
        })
        .collect();
    sort_by_pressure(&mut out);
    out
}

/// Fullest first; ties by key, so output is stable.
pub fn sort_by_pressure(pools: &mut [Pool]) {
    pools.sort_by(|a, b| {
        b.utilisation()
            .partial_cmp(&a.utilisation())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| b.used.cmp(&a.used))
            .then_with(|| a.key.cmp(&b.key))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(state: u8, local: &str, remote: &str, inode: u64) -> DiagSocket {
        DiagSocket {
            protocol: 6,
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            inode,
            cookie: 0,
        }
    }

    fn settings(lo: u16, hi: u16) -> NetSettings {
        NetSettings {
            range: (lo, hi),
            ..Default::default()
        }
    }

    fn owner(pid: u32) -> Owner {
        Owner {
            pid,
            start: 1,
            name: format!("p{pid}"),
        }
    }

    #[test]
    fn pools_are_per_destination_and_count_time_wait() {
        let socks = vec![
            tcp(1, "10.0.0.1:40000", "10.0.0.9:80", 11),
            tcp(6, "10.0.0.1:40001", "10.0.0.9:80", 0),
            tcp(6, "10.0.0.1:40002", "10.0.0.9:80", 0),
            tcp(1, "10.0.0.1:40000", "10.0.0.8:443", 12),
        ];
        let pools = build_pools(1, &settings(40000, 40003), &socks, |s| {
            (s.inode == 11).then(|| owner(7))
        });
        assert_eq!(pools.len(), 2);
        let p = &pools[0];
        assert_eq!(p.key.dport, 80);
        assert_eq!((p.size, p.used, p.time_wait, p.established), (4, 3, 2, 1));
        assert_eq!(p.utilisation(), 0.75);
        assert_eq!(
            p.holders[0],
            Holder {
                owner: None,
                held: 2,
                time_wait: 2
            }
        );
        assert_eq!(p.holders[1].owner, Some(owner(7)));
        assert_eq!(pools[1].used, 1);
    }

    #[test]
    fn server_side_listeners_and_out_of_range_ports_are_not_in_pools() {
        let socks = vec![
            tcp(10, "0.0.0.0:40003", "0.0.0.0:0", 1), // listener inside the range
            tcp(1, "10.0.0.1:40003", "10.0.0.5:5555", 2), // accepted from it
            tcp(1, "10.0.0.1:8080", "10.0.0.5:40000", 3), // server port outside range
            tcp(1, "10.0.0.1:40001", "10.0.0.9:80", 4), // a client
            tcp(3, "10.0.0.1:40002", "10.0.0.9:81", 5), // SYN_RECV: not held by connect
        ];
        let pools = build_pools(1, &settings(40000, 40003), &socks, |_| None);
        assert_eq!(pools.len(), 1);
        // The listener's port is unusable for every destination.
        assert_eq!((pools[0].size, pools[0].used), (3, 1));
    }

    #[test]
    fn reserved_ports_shrink_the_pool() {
        let mut s = settings(40000, 40009);
        s.reserved = vec![(40005, 40009)];
        let socks = vec![
            tcp(1, "10.0.0.1:40001", "10.0.0.9:80", 4),
            tcp(1, "10.0.0.1:40006", "10.0.0.9:80", 5),
        ];
        let pools = build_pools(1, &s, &socks, |_| None);
        assert_eq!((pools[0].size, pools[0].used), (5, 1));
    }

    #[test]
    fn udp_has_one_pool_per_namespace() {
        let u = |l: &str, r: &str| DiagSocket {
            protocol: 17,
            state: 1,
            local: l.parse().unwrap(),
            remote: r.parse().unwrap(),
            inode: 9,
            cookie: 0,
        };
        let socks = vec![
            u("127.0.0.1:40000", "127.0.0.1:53"),
            u("0.0.0.0:40001", "0.0.0.0:0"),
        ];
        let pools = build_pools(1, &settings(40000, 40003), &socks, |_| None);
        assert_eq!(pools.len(), 1);
        assert!(pools[0].key.is_udp_pool());
        assert_eq!((pools[0].size, pools[0].used), (4, 2));
    }

    #[test]
    fn fullest_pool_first() {
        let socks = vec![
            tcp(1, "10.0.0.1:40000", "10.0.0.9:80", 1),
            tcp(1, "10.0.0.1:40000", "10.0.0.8:80", 2),
            tcp(1, "10.0.0.1:40001", "10.0.0.8:80", 3),
        ];
        let pools = build_pools(1, &settings(40000, 40003), &socks, |_| None);
        assert_eq!(pools[0].key.daddr.to_string(), "10.0.0.8");
        assert_eq!(pools[0].odd_ports, 1);
    }

    #[test]
    fn ownerless_holders_say_what_holds_the_ports() {
        let h = |held, time_wait| Holder {
            owner: None,
            held,
            time_wait,
        };
        assert_eq!(h(3, 3).label(), "(no owner: TIME_WAIT)");
        assert_eq!(
            h(2, 0).label(),
            "(no owner: orphaned, closed by its process)"
        );
        assert_eq!(h(5, 3).label(), "(no owner: 3 TIME_WAIT, 2 orphaned)");
        let mut named = h(1, 0);
        named.owner = Some(Owner {
            pid: 7,
            start: 0,
            name: "x\u{1b}[2J\u{202e}y".into(),
        });
        assert_eq!(named.label(), "7 x\\x1b[2J\\u{202e}y");
    }
}

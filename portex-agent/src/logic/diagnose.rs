//! Diagnoses: what is wrong with a namespace's pools, and the concrete fix. Pure.
use crate::{
    logic::limits,
    logic::pool::{Pool, PoolKey},
    logic::sysctls::{DEFAULT_RANGE, NetSettings},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Diagnosis {
    /// Stable identifier: narrow_port_range, pool_exhaustion, client_closes_first,
    /// short_lived_connections, tcp_tw_reuse_off, bind_before_connect,
    /// time_wait_overflow, rate_above_sustainable.
    pub id: &'static str,
    pub severity: Severity,
    pub summary: String,
    pub fix: String,
    pub pool: Option<PoolKey>,
    /// Processes involved, biggest holders first.
    pub pids: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub warning: f64,
    pub critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            warning: limits::WARN_PERCENT / 100.0,
            critical: limits::CRITICAL_PERCENT / 100.0,
        }
    }
}

impl Thresholds {
    pub fn severity(&self, utilisation: f64) -> Option<Severity> {
        if utilisation >= self.critical {
            Some(Severity::Critical)
        } else if utilisation >= self.warning {
            Some(Severity::Warning)
        } else {
            None
        }
    }

    /// A pool_pressure crossing: the severity when `utilisation` crossed a threshold
    /// upwards since the last alert `standing` (updated). A standing alert is lowered
    /// only once utilisation is 5 points below its threshold, so that a pool hovering
    /// at a threshold alerts once (the live ledger's pools and the NAT pools alike).
    pub fn crossing(&self, standing: &mut Option<Severity>, utilisation: f64) -> Option<Severity> {
        let below = |t: f64| utilisation < t - 0.05;
        if *standing == Some(Severity::Critical) && below(self.critical) {
            *standing = Some(Severity::Warning);
        }
        if *standing == Some(Severity::Warning) && below(self.warning) {
            *standing = None;
        }
        match self.severity(utilisation) {
            Some(s) if standing.is_none_or(|a| s > a) => {
                *standing = Some(s);
                Some(s)
            }
            _ => None,
        }
    }
}

/// Facts beyond the socket table and the sysctls.
#[derive(Clone, Debug, Default)]
pub(crate) struct LiveFacts {
    /// pid -> connects whose source port a bind(port 0) of that pid chose (only the
    /// event stream knows).
    pub bind_then_connect: Vec<(u32, u64)>,
    /// TCPTimeWaitOverflow of the namespace (/proc/net/netstat): TIME_WAIT sockets the
    /// kernel destroyed at once because tcp_max_tw_buckets was reached.
    pub time_wait_overflows: u64,
    /// Per pool, connections this side closed first per second recently
    /// (demand::recent_close_rates, or the live ledger's rates).
    pub close_rates: Vec<(PoolKey, f64)>,
}

fn holder_pids(p: &Pool) -> Vec<u32> {
    p.holders
        .iter()
        .filter_map(|h| h.owner.as_ref().map(|o| o.pid))
        .collect()
}

/// Minimum used ports before a pattern is worth naming: below it, noise.
const MIN_PATTERN: u32 = 16;

pub(crate) fn diagnose(
    settings: &NetSettings,
    pools: &[Pool],
    th: &Thresholds,
    live: &LiveFacts,
) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    let (lo, hi) = settings.range;
    let fullest = pools.iter().map(|p| p.utilisation()).fold(0.0, f64::max);
    for p in pools {
        let util = p.utilisation();
        let Some(sev) = th.severity(util) else {
            continue;
        };
        out.push(Diagnosis {
            id: "pool_exhaustion",
            severity: sev,
            summary: format!(
                "{} has {} of {} source ports in use ({:.0}%), {} in TIME_WAIT",
                p.key.label(),
                p.used,
                p.size,
                util * 100.0,
                p.time_wait
            ),
            fix: "reuse connections (keep-alive, a connection pool), spread them over more \
                  destination addresses or ports, or widen net.ipv4.ip_local_port_range; the \
                  processes named hold the ports"
                .into(),
            pool: Some(p.key.clone()),
            pids: holder_pids(p),
        });
    }
    if settings.range_size() < (DEFAULT_RANGE.1 - DEFAULT_RANGE.0 + 1) as u32 && fullest >= 0.5 {
        out.push(Diagnosis {
            id: "narrow_port_range",
            severity: Severity::Warning,
            summary: format!(
                "ip_local_port_range is {lo}-{hi} ({} ports), narrower than Linux's default 32768-60999 (28232)",
                settings.range_size()
            ),
            fix: "widen it: sysctl -w net.ipv4.ip_local_port_range=\"10000 65000\" (and keep \
                  listening ports out of it with net.ipv4.ip_local_reserved_ports)"
                .into(),
            pool: None,
            pids: Vec::new(),
        });
    }
    for p in pools.iter().filter(|p| !p.key.is_udp_pool()) {
        let util = p.utilisation();
        // TIME_WAIT ports connect() may take over are not a problem of this pool.
        let held_tw = p.time_wait.saturating_sub(p.reusable);
        let tw_dominates =
            p.used > 0 && held_tw * 2 >= p.used && held_tw >= MIN_PATTERN.min(p.size / 2).max(1);
        if tw_dominates && util >= 0.5 {
            out.push(Diagnosis {
                id: "client_closes_first",
                severity: if util >= th.warning { Severity::Warning } else { Severity::Info },
                summary: format!(
                    "{} of {} ports towards {} sit in TIME_WAIT: this side closes first, and each \
                     closed connection keeps its port for 60 s",
                    held_tw,
                    p.used,
                    p.key.label()
                ),
                fix: "let the server close first (e.g. the client stops sending after the response and \
                      waits for the server's FIN), or keep connections open and reuse them"
                    .into(),
                pool: Some(p.key.clone()),
                pids: holder_pids(p),
            });
            let loopback = p.key.daddr.is_loopback();
            let reuse_off = settings.tw_reuse == 0 || (settings.tw_reuse == 2 && !loopback);
            if reuse_off {
                out.push(Diagnosis {
                    id: "tcp_tw_reuse_off",
                    severity: Severity::Info,
                    summary: format!(
                        "net.ipv4.tcp_tw_reuse is {} ({}), so connect() cannot take over the TIME_WAIT \
                         ports towards {}",
                        settings.tw_reuse,
                        if settings.tw_reuse == 0 { "off" } else { "loopback only" },
                        p.key.label()
                    ),
                    fix: "sysctl -w net.ipv4.tcp_tw_reuse=1 (safe for outgoing connections with TCP timestamps on)".into(),
                    pool: Some(p.key.clone()),
                    pids: Vec::new(),
                });
            }
        }
        let established_like = p.used.saturating_sub(held_tw);
        if p.time_wait >= 4 * MIN_PATTERN && p.time_wait >= 4 * established_like.max(1) {
            out.push(Diagnosis {
                id: "short_lived_connections",
                severity: Severity::Info,
                summary: format!(
                    "{} closed connections per live one towards {}: many short connections to one destination",
                    p.time_wait / established_like.max(1),
                    p.key.label()
                ),
                fix: "pool and reuse connections (HTTP keep-alive, a client-side connection pool, \
                      gRPC/HTTP2 multiplexing) instead of one connection per request"
                    .into(),
                pool: Some(p.key.clone()),
                pids: holder_pids(p),
            });
        }
        // connect() picks even ports first, bind() odd ones (since Linux 4.6): a pool of
        // mostly odd ports was filled by bind() before connect().
        if p.used >= MIN_PATTERN && p.odd_ports * 10 >= p.used * 9 {
            out.push(bind_before_connect(
                format!(
                    "{} of {} ports towards {} are odd: they were chosen by bind() before connect(), \
                     which takes each port away from every destination",
                    p.odd_ports,
                    p.used,
                    p.key.label()
                ),
                Some(p.key.clone()),
                holder_pids(p),
            ));
        }
    }
    for &(pid, n) in &live.bind_then_connect {
        if n >= MIN_PATTERN as u64
            && !out
                .iter()
                .any(|d| d.id == "bind_before_connect" && d.pids.contains(&pid))
        {
            out.push(bind_before_connect(
                format!("pid {pid} called bind() before connect() {n} times, so each connection holds its port for every destination"),
                None,
                vec![pid],
            ));
        }
    }
    out.extend(crate::logic::demand::rate_below_demand(
        settings,
        pools,
        &live.close_rates,
    ));
    if live.time_wait_overflows > 0 {
        out.push(Diagnosis {
            id: "time_wait_overflow",
            severity: Severity::Warning,
            summary: format!(
                "the kernel destroyed {} TIME_WAIT sockets at once (tcp_max_tw_buckets = {} reached, \
                 counter TCPTimeWaitOverflow): ports came back early, so pools look emptier than \
                 the traffic that fills them, and late segments of those connections meet a new one",
                live.time_wait_overflows, settings.max_tw_buckets
            ),
            fix: "make the side that closes first produce fewer TIME_WAIT sockets (keep-alive, \
                  connection pools, let servers close first), or raise net.ipv4.tcp_max_tw_buckets"
                .into(),
            pool: None,
            pids: Vec::new(),
        });
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.severity));
    out
}

fn bind_before_connect(summary: String, pool: Option<PoolKey>, pids: Vec<u32>) -> Diagnosis {
    Diagnosis {
        id: "bind_before_connect",
        severity: Severity::Warning,
        summary,
        fix: "set IP_BIND_ADDRESS_NO_PORT on the socket before bind() (the port is then chosen at \
              connect() per destination), or do not bind() client sockets at all"
            .into(),
        pool,
        pids,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{logic::model::Owner, logic::model::Transport, logic::pool::Holder};

    fn pool(size: u32, used: u32, tw: u32, odd: u32, daddr: &str) -> Pool {
        Pool {
            key: PoolKey {
                netns: 1,
                transport: Transport::Tcp,
                saddr: "10.0.0.1".parse().unwrap(),
                daddr: daddr.parse::<IpAddr>().unwrap(),
                dport: 80,
            },
            size,
            used,
            time_wait: tw,
            reusable: 0,
            syn_sent: 0,
            established: used - tw,
            odd_ports: odd,
            holders: vec![Holder {
                owner: Some(Owner {
                    pid: 9,
                    start: 1,
                    name: "x".into(),
                }),
                held: used,
                time_wait: tw,
            }],
        }
    }

    fn ids(d: &[Diagnosis]) -> Vec<&'static str> {
        d.iter().map(|d| d.id).collect()
    }

    #[test]
    fn a_full_small_range_is_critical_and_narrow() {
        let s = NetSettings {
            range: (40000, 40003),
            ..Default::default()
        };
        let d = diagnose(
            &s,
            &[pool(4, 4, 0, 2, "10.0.0.9")],
            &Thresholds::default(),
            &LiveFacts::default(),
        );
        assert_eq!(d[0].id, "pool_exhaustion");
        assert_eq!(d[0].severity, Severity::Critical);
        assert_eq!(d[0].pids, vec![9]);
        assert!(ids(&d).contains(&"narrow_port_range"));
    }

    #[test]
    fn time_wait_pile_up_suggests_closing_order_and_tw_reuse() {
        let s = NetSettings::default();
        let d = diagnose(
            &s,
            &[pool(1000, 900, 890, 450, "10.0.0.9")],
            &Thresholds::default(),
            &LiveFacts::default(),
        );
        let ids = ids(&d);
        assert!(ids.contains(&"client_closes_first"), "{ids:?}");
        assert!(ids.contains(&"tcp_tw_reuse_off"), "{ids:?}");
        assert!(ids.contains(&"short_lived_connections"), "{ids:?}");
        assert!(!ids.contains(&"narrow_port_range"));
        // Towards loopback, tcp_tw_reuse=2 already applies.
        let d = diagnose(
            &s,
            &[pool(1000, 900, 890, 450, "127.0.0.1")],
            &Thresholds::default(),
            &LiveFacts::default(),
        );
        assert!(!d.iter().any(|d| d.id == "tcp_tw_reuse_off"));
    }

    #[test]
    fn odd_ports_reveal_bind_before_connect() {
        let s = NetSettings::default();
        let d = diagnose(
            &s,
            &[pool(28232, 100, 0, 100, "10.0.0.9")],
            &Thresholds::default(),
            &LiveFacts::default(),
        );
        assert_eq!(ids(&d), ["bind_before_connect"]);
        let d = diagnose(
            &s,
            &[pool(28232, 100, 0, 50, "10.0.0.9")],
            &Thresholds::default(),
            &LiveFacts::default(),
        );
        assert!(d.is_empty());
        let live = LiveFacts {
            bind_then_connect: vec![(77, 500)],
            ..LiveFacts::default()
        };
        let d = diagnose(&s, &[], &Thresholds::default(), &live);
        assert_eq!(d[0].pids, vec![77]);
    }

    #[test]
    fn a_quiet_namespace_has_nothing_to_say() {
        let d = diagnose(
            &NetSettings::default(),
            &[pool(28232, 10, 2, 5, "10.0.0.9")],
            &Thresholds::default(),
            &LiveFacts::default(),
        );
        assert!(d.is_empty());
    }

    #[test]
    fn time_wait_overflow_is_diagnosed() {
        let live = LiveFacts {
            time_wait_overflows: 12,
            ..LiveFacts::default()
        };
        let d = diagnose(&NetSettings::default(), &[], &Thresholds::default(), &live);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].id, "time_wait_overflow");
        assert!(
            d[0].summary.contains("12 TIME_WAIT sockets"),
            "{}",
            d[0].summary
        );
    }
}

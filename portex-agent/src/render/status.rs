//! Rendering the pool report as text or JSON. Pure.
use std::fmt::Write;

use serde_json::{Value, json};

use crate::{
    logic::diagnose::{Diagnosis, Thresholds},
    logic::model::DiagSocket,
    logic::pool::{Pool, PortRules, ProcessUsage, sustainable_per_s, tw_hold_ms, usage_by_process},
    logic::sysctls::NetSettings,
};

pub(crate) struct NetnsReport {
    pub inode: u64,
    pub name: Option<String>,
    pub is_current: bool,
    pub settings: NetSettings,
    pub tcp_held: u32,
    /// The size of every TCP pool of the namespace (a destination without a pool has
    /// this many free ports).
    pub tcp_pool_size: u32,
    pub time_wait: u32,
    pub pools: Vec<Pool>,
    pub processes: Vec<ProcessUsage>,
    pub diagnoses: Vec<Diagnosis>,
}

impl NetnsReport {
    /// One namespace's report: its identity (inode, name from /run/netns), whether it is
    /// the caller's, its settings and socket table, and the pools built from them.
    pub(crate) fn new(
        (inode, name): (u64, Option<String>),
        current: u64,
        settings: NetSettings,
        sockets: &[DiagSocket],
        pools: Vec<Pool>,
        diagnoses: Vec<Diagnosis>,
    ) -> Self {
        let tcp_held = sockets.iter().filter(|s| s.holds_tcp_port()).count() as u32;
        let time_wait = sockets.iter().filter(|s| s.in_time_wait()).count() as u32;
        let listeners = sockets
            .iter()
            .filter(|s| s.is_tcp_listener())
            .map(|s| (s.local.ip(), s.local.port()));
        let tcp_pool_size = PortRules::new(settings.clone(), listeners).tcp_size();
        NetnsReport {
            inode,
            name,
            is_current: inode == current,
            settings,
            tcp_held,
            tcp_pool_size,
            time_wait,
            processes: usage_by_process(&pools),
            pools,
            diagnoses,
        }
    }
}

fn pool_json(p: &Pool) -> Value {
    // Named as in the event lines (ECS): network.transport, source.ip,
    // destination.ip/port; a UDP pool is the namespace's, with neither end.
    let udp = p.key.is_udp_pool();
    json!({
        "network": { "transport": p.key.transport.as_str() },
        "source": if udp { Value::Null } else { json!({ "ip": p.key.saddr.to_string() }) },
        "destination": if udp { Value::Null } else { json!({ "ip": p.key.daddr.to_string(), "port": p.key.dport }) },
        "size": p.size,
        "used": p.used,
        "free": p.free(),
        "utilisation": (p.utilisation() * 10_000.0).round() / 10_000.0,
        "time_wait": p.time_wait,
        "reusable": p.reusable,
        "syn_sent": p.syn_sent,
        "established": p.established,
        "holders": p.holders.iter().map(|h| json!({
            "pid": h.owner.as_ref().map(|o| o.pid),
            "name": h.owner.as_ref().map(|o| o.name.clone()),
            "held": h.held,
            "time_wait": h.time_wait,
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn diagnosis_json(d: &Diagnosis) -> Value {
    json!({
        "id": d.id,
        "severity": d.severity.as_str(),
        "summary": d.summary,
        "fix": d.fix,
        "pids": d.pids,
    })
}

pub(crate) fn render_json(reports: &[NetnsReport], th: &Thresholds, limit: usize) -> String {
    let worst = reports
        .iter()
        .flat_map(|r| r.pools.iter())
        .map(|p| p.utilisation())
        .fold(0.0, f64::max);
    let status = th.severity(worst).map(|s| s.as_str()).unwrap_or("ok");
    let ns: Vec<Value> = reports
        .iter()
        .map(|r| {
            let s = &r.settings;
            json!({
                "netns": r.inode,
                "name": r.name,
                "current": r.is_current,
                "settings": {
                    "ip_local_port_range": [s.range.0, s.range.1],
                    "ip_local_reserved_ports": s.reserved.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect::<Vec<_>>(),
                    "usable_ports": s.usable_ports(),
                    "tcp_tw_reuse": s.tw_reuse,
                    "tcp_tw_reuse_delay_ms": s.tw_reuse_delay_ms,
                    "tcp_timestamps": s.timestamps,
                    "tcp_max_tw_buckets": s.max_tw_buckets,
                    "tcp_fin_timeout": s.fin_timeout_s,
                },
                "tcp_pool_size": r.tcp_pool_size,
                "tcp_ports_held": r.tcp_held,
                "time_wait": r.time_wait,
                "pools": r.pools.iter().take(limit).map(pool_json).collect::<Vec<_>>(),
                "pools_omitted": r.pools.len().saturating_sub(limit),
                "processes": r.processes.iter().take(limit).map(|p| json!({
                    "process": { "pid": p.owner.pid, "name": p.owner.name },
                    "start_time": p.owner.start,
                    "held": p.held,
                    "time_wait": p.time_wait,
                    "fullest_pool_share": (p.fullest_share * 10_000.0).round() / 10_000.0,
                })).collect::<Vec<_>>(),
                "diagnoses": r.diagnoses.iter().map(diagnosis_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let v = json!({
        "status": status,
        "verdict": verdict(reports).map(|v| v.json(th)),
        "thresholds": { "warning": th.warning, "critical": th.critical },
        "namespaces": ns,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// The fullest pool of all namespaces, in one line: what the on-call engineer reads first.
struct Verdict<'a> {
    report: &'a NetnsReport,
    pool: &'a Pool,
    /// How long a TIME_WAIT port of this pool stays unusable, ms.
    hold_ms: u64,
}

fn verdict(reports: &[NetnsReport]) -> Option<Verdict<'_>> {
    reports
        .iter()
        .flat_map(|r| r.pools.iter().map(move |p| (r, p)))
        .max_by(|a, b| a.1.utilisation().total_cmp(&b.1.utilisation()))
        .map(|(report, pool)| Verdict {
            report,
            pool,
            hold_ms: tw_hold_ms(&report.settings, pool.key.saddr, pool.key.daddr),
        })
}

impl Verdict<'_> {
    fn text(&self, th: &Thresholds) -> String {
        let p = self.pool;
        let sev = th
            .severity(p.utilisation())
            .map(|s| s.as_str())
            .unwrap_or("ok");
        let mut line = format!(
            "verdict: {sev}: fullest pool {} (network namespace {}): {} of {} ports free ({:.0}% used)",
            p.key.label(),
            self.report.inode,
            p.free(),
            p.size,
            p.utilisation() * 100.0
        );
        if !p.key.is_udp_pool() {
            let _ = write!(
                line,
                "; it sustains ~{} new connections/s if this side closes first (a TIME_WAIT port is held {})",
                rate(sustainable_per_s(p.size, self.hold_ms)),
                if self.hold_ms >= 1000 && self.hold_ms.is_multiple_of(1000) {
                    format!("{} s", self.hold_ms / 1000)
                } else {
                    format!("{} ms", self.hold_ms)
                }
            );
        }
        line
    }

    fn json(&self, th: &Thresholds) -> Value {
        let p = self.pool;
        json!({
            "netns": self.report.inode,
            "pool": p.key.label(),
            "severity": th.severity(p.utilisation()).map(|s| s.as_str()).unwrap_or("ok"),
            "free": p.free(),
            "size": p.size,
            "utilisation": (p.utilisation() * 10_000.0).round() / 10_000.0,
            "time_wait_hold_ms": self.hold_ms,
            "sustainable_client_close_per_s": if p.key.is_udp_pool() {
                Value::Null
            } else {
                json!((sustainable_per_s(p.size, self.hold_ms) * 10.0).round() / 10.0)
            },
        })
    }
}

/// "0.1", "20", "471": a decimal only where it matters.
fn rate(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

pub(crate) fn render_text(reports: &[NetnsReport], th: &Thresholds, limit: usize) -> String {
    let mut o = String::new();
    match verdict(reports) {
        Some(v) => {
            let _ = writeln!(o, "{}\n", v.text(th));
        }
        None => o.push_str("verdict: ok: no ephemeral port in use\n\n"),
    }
    for r in reports {
        let s = &r.settings;
        let name = r
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let here = if r.is_current { ", this one" } else { "" };
        let _ = writeln!(o, "network namespace {}{name}{here}", r.inode);
        let _ = writeln!(
            o,
            "  ip_local_port_range {}-{} ({} usable ports), tcp_tw_reuse={} (delay {} ms{}), {} TCP ports held, {} in TIME_WAIT",
            s.range.0,
            s.range.1,
            s.usable_ports(),
            s.tw_reuse,
            s.tw_reuse_delay_ms,
            if s.timestamps {
                ""
            } else {
                ", off: no TCP timestamps"
            },
            r.tcp_held,
            r.time_wait
        );
        if r.pools.is_empty() {
            let _ = writeln!(o, "  no ephemeral ports in use");
        } else {
            let _ = writeln!(
                o,
                "  {:<46} {:>6} {:>6} {:>6} {:>5} {:>9} {:>8}  TOP HOLDERS",
                "POOL", "SIZE", "USED", "FREE", "UTIL", "TIME_WAIT", "REUSABLE"
            );
            for p in r.pools.iter().take(limit) {
                let mark = match th.severity(p.utilisation()) {
                    Some(crate::logic::diagnose::Severity::Critical) => "!!",
                    Some(_) => "! ",
                    None => "  ",
                };
                let holders: Vec<String> = p
                    .holders
                    .iter()
                    .take(3)
                    .map(|h| format!("{} ({})", h.label(), h.held))
                    .collect();
                let _ = writeln!(
                    o,
                    "{mark}{:<46} {:>6} {:>6} {:>6} {:>4.0}% {:>9} {:>8}  {}",
                    p.key.label(),
                    p.size,
                    p.used,
                    p.free(),
                    p.utilisation() * 100.0,
                    p.time_wait,
                    p.reusable,
                    holders.join(", ")
                );
            }
            if r.pools.len() > limit {
                let _ = writeln!(
                    o,
                    "  ... and {} more pools (--limit)",
                    r.pools.len() - limit
                );
            }
        }
        for d in &r.diagnoses {
            let _ = writeln!(o, "  [{}] {}", d.severity.as_str(), d.summary);
            let _ = writeln!(o, "      fix: {}", d.fix);
        }
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::{fixtures::tcp, pool::build_pools};

    #[test]
    fn the_verdict_names_the_fullest_pool_and_its_sustainable_rate() {
        let settings = NetSettings {
            range: (40000, 40019),
            ..NetSettings::default()
        };
        // 15 live connections over loopback (reuse=2 applies: 1 s hold), 2 elsewhere.
        let mut socks: Vec<DiagSocket> = (0..15)
            .map(|i| tcp(1, &format!("127.0.0.1:{}", 40000 + i), "127.0.0.1:5000", 1))
            .collect();
        socks.push(tcp(1, "10.0.0.1:40000", "10.0.0.9:80", 2));
        socks.push(tcp(1, "10.0.0.1:40001", "10.0.0.9:80", 3));
        let pools = build_pools(7, &settings, &socks, |_| None);
        let report = NetnsReport::new((7, None), 7, settings, &socks, pools, Vec::new());
        let reports = [report];
        let th = Thresholds::default();
        let v = verdict(&reports).unwrap();
        assert_eq!(v.hold_ms, 1000);
        assert_eq!(
            v.text(&th),
            "verdict: ok: fullest pool tcp 127.0.0.1 -> 127.0.0.1:5000 (network namespace 7): \
             5 of 20 ports free (75% used); it sustains ~20 new connections/s if this side \
             closes first (a TIME_WAIT port is held 1 s)"
        );
        assert_eq!(v.json(&th)["sustainable_client_close_per_s"], 20.0);
        assert!(verdict(&[]).is_none());
    }
}

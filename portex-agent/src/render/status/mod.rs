//! Rendering the pool report as text or JSON. Pure.
use std::fmt::Write;

use serde_json::{Value, json};

mod agents;
mod nat;

pub(crate) use agents::Agents;
use agents::{agents_json, agents_text};
pub(crate) use nat::NatReport;
use nat::{nat_json, nat_text};

use crate::{
    logic::diagnose::{Diagnosis, Thresholds},
    logic::model::DiagSocket,
    logic::pool::{
        Pool, ProcessUsage, sustainable_per_s, table_rules, tw_hold_ms, usage_by_process,
    },
    logic::sysctls::NetSettings,
    render::text::rate,
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
    /// Listening ports inside the range: one port less for every TCP pool.
    pub listening_in_range: Vec<u16>,
    /// Ports inside the range that bind() gave sockets that neither listen nor connect
    /// (not listening too): the same.
    pub bound_only_in_range: Vec<u16>,
    /// Ports inside the range that servers bound and whose listener closed (inferred:
    /// pool::table_rules); one port less for every TCP pool until their connections end.
    pub bound_in_range: Vec<u16>,
    pub time_wait: u32,
    /// TIME_WAIT ports whose owner a running portex named (None: none is running).
    pub tw_owners_named: Option<u32>,
    pub pools: Vec<Pool>,
    pub processes: Vec<ProcessUsage>,
    pub diagnoses: Vec<Diagnosis>,
    /// The namespace's NAT, when conntrack is loaded there.
    pub nat: Option<NatReport>,
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
        let rules = table_rules(&settings, sockets);
        let in_range = |pick: fn(&DiagSocket) -> bool| {
            let mut v: Vec<u16> = sockets
                .iter()
                .filter(|s| pick(s) && rules.ephemeral(s.local.port()))
                .map(|s| s.local.port())
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let listening = in_range(DiagSocket::is_tcp_listener);
        let mut bound_only = in_range(DiagSocket::is_tcp_bound_only);
        bound_only.retain(|p| listening.binary_search(p).is_err());
        NetnsReport {
            inode,
            name,
            is_current: inode == current,
            settings,
            tcp_held,
            tcp_pool_size: rules.tcp_size(),
            listening_in_range: listening,
            bound_only_in_range: bound_only,
            bound_in_range: rules.bound_in_range().to_vec(),
            time_wait,
            tw_owners_named: None,
            processes: usage_by_process(&pools),
            pools,
            diagnoses,
            nat: None,
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

/// A diagnosis as `status` words it, "[severity] summary" and "fix: ...": `top` shows
/// the same two lines.
pub(crate) fn diagnosis_lines(d: &Diagnosis) -> [String; 2] {
    [
        format!("[{}] {}", d.severity.as_str(), d.summary),
        format!("fix: {}", d.fix),
    ]
}

pub(crate) fn render_json(
    reports: &[NetnsReport],
    agents: Option<&Agents>,
    th: &Thresholds,
    limit: usize,
) -> String {
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
                "listening_ports_in_range": r.listening_in_range,
                "bound_only_ports_in_range": r.bound_only_in_range,
                "bound_ports_in_range": r.bound_in_range,
                "tcp_ports_held": r.tcp_held,
                "time_wait": r.time_wait,
                "time_wait_owners_named": r.tw_owners_named,
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
                "nat": r.nat.as_ref().map(nat_json),
            })
        })
        .collect();
    let v = json!({
        "status": status,
        "verdict": verdict(reports).map(|v| v.json(th)),
        "thresholds": { "warning": th.warning, "critical": th.critical },
        "namespaces": ns,
        "running_agents": agents.map(agents_json),
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

/// "listening and bound ports in range: 3 (listening: 41007, 41009; listener closed:
/// 41008)": the ports bind() took, once, instead of a pool per server connection.
fn server_ports_line(r: &NetnsReport) -> Option<String> {
    let n = r.listening_in_range.len() + r.bound_only_in_range.len() + r.bound_in_range.len();
    if n == 0 {
        return None;
    }
    let list = |ports: &[u16]| {
        let mut s: Vec<String> = ports.iter().take(5).map(u16::to_string).collect();
        if ports.len() > 5 {
            s.push(format!("{} more", ports.len() - 5));
        }
        s.join(", ")
    };
    let mut parts = Vec::new();
    if !r.listening_in_range.is_empty() {
        parts.push(format!("listening: {}", list(&r.listening_in_range)));
    }
    if !r.bound_only_in_range.is_empty() {
        parts.push(format!(
            "bound, not listening: {}",
            list(&r.bound_only_in_range)
        ));
    }
    if !r.bound_in_range.is_empty() {
        parts.push(format!(
            "listener closed, connections left: {}",
            list(&r.bound_in_range)
        ));
    }
    Some(format!(
        "listening and bound ports in range: {n} ({}); each is one port less in every TCP pool",
        parts.join("; ")
    ))
}

/// Whether the TIME_WAIT holders could be named, and by whom.
fn tw_owners_line(r: &NetnsReport) -> String {
    match r.tw_owners_named {
        Some(n) => format!(
            "TIME_WAIT owners: {n} of {} named by a running portex (the rest closed before it started \
             or were not its to see)",
            r.time_wait
        ),
        None => {
            "TIME_WAIT owners: the kernel keeps none; a running `portex agent`, `watch` or `top` \
                 names them here"
                .into()
        }
    }
}

/// The pools past --limit in one line: how many, and the most any of them uses.
fn omitted_line(pools: &[Pool], limit: usize) -> Option<String> {
    let rest = pools.get(limit..).filter(|r| !r.is_empty())?;
    let used: u64 = rest.iter().map(|p| p.used as u64).sum();
    Some(format!(
        "... and {} more pools holding {used} ports, none using more than {} (--limit N lists more)",
        rest.len(),
        rest.iter().map(|p| p.used).max().unwrap_or(0)
    ))
}

pub(crate) fn render_text(
    reports: &[NetnsReport],
    agents: Option<&Agents>,
    th: &Thresholds,
    limit: usize,
) -> String {
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
        if r.time_wait > 0 {
            let _ = writeln!(o, "  {}", tw_owners_line(r));
        }
        if let Some(line) = server_ports_line(r) {
            let _ = writeln!(o, "  {line}");
        }
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
            if let Some(line) = omitted_line(&r.pools, limit) {
                let _ = writeln!(o, "  {line}");
            }
        }
        if let Some(n) = &r.nat {
            nat_text(n, th, limit, &mut o);
        }
        for d in &r.diagnoses {
            let [what, fix] = diagnosis_lines(d);
            let _ = writeln!(o, "  {what}");
            let _ = writeln!(o, "      {fix}");
        }
        o.push('\n');
    }
    if let Some(a) = agents {
        agents_text(a, &mut o);
    }
    o
}

#[cfg(test)]
mod tests;

//! One sample of the soak (the agent process, its maps and metrics, the load since the
//! previous sample) and the table they make.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::Ordering::Relaxed,
};

use anyhow::Result;
use portex_e2e::{Netns, cpu_ms, rss_kib, status_field};
use serde_json::{Value, json};

use super::{
    bpf::MapRef,
    load::{Counters, RANGE},
    probe::{self, Agent, Pools},
};

#[derive(Clone, Default)]
pub struct Sample {
    pub t: f64,
    pub phase: &'static str,
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
    pub cpu_ms: f64,
    /// (map, entries, entries whose owner is gone)
    pub maps: Vec<(String, u64, u64)>,
    pub conns: u64,
    pub conn_errors: u64,
    pub procs: u64,
    pub namespaces: u64,
    pub conn_per_s: f64,
    pub cpu_per_1k: f64,
    /// Agent CPU over the interval, percent of one core.
    pub cpu_pct: f64,
    pub metrics: BTreeMap<String, f64>,
    /// Pools the agent exports (for every namespace of the host, not only ours).
    pub pools: usize,
    /// Namespaces (inodes) the agent still exports pools for that no longer exist.
    pub stale_netns: BTreeSet<u64>,
    /// The long-lived namespace's ports held and TIME_WAIT, per the agent and per ss,
    /// read a moment apart while the load runs: the ledger's drift between
    /// reconciliations (not checked: the counts move by thousands per second).
    pub keep_agent: (u64, u64),
    pub keep_ss: (u64, u64),
}

impl Sample {
    pub fn map(&self, name: &str) -> (u64, u64) {
        self.maps
            .iter()
            .find(|m| m.0 == name)
            .map(|m| (m.1, m.2))
            .unwrap_or_default()
    }

    pub fn m(&self, k: &str) -> f64 {
        self.metrics.get(k).copied().unwrap_or(0.0)
    }

    pub fn json(&self) -> Value {
        let maps: BTreeMap<_, _> = self
            .maps
            .iter()
            .map(|(n, e, g)| (n.clone(), json!({"entries": e, "owner_gone": g})))
            .collect();
        json!({"t_s": self.t, "phase": self.phase, "rss_kib": self.rss_kib, "fds": self.fds,
            "threads": self.threads, "cpu_ms": self.cpu_ms, "cpu_percent": self.cpu_pct, "maps": maps,
            "connections": self.conns, "connect_errors": self.conn_errors, "processes": self.procs,
            "namespaces": self.namespaces, "conn_per_s": self.conn_per_s,
            "cpu_ms_per_1k_conn": self.cpu_per_1k, "metrics": self.metrics,
            "pools_exported": self.pools, "stale_netns": self.stale_netns,
            "keep_netns_agent": {"used": self.keep_agent.0, "time_wait": self.keep_agent.1},
            "keep_netns_ss": {"used": self.keep_ss.0, "time_wait": self.keep_ss.1}})
    }
}

fn totals(p: &Pools) -> (u64, u64) {
    p.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1))
}

/// Samples the agent; `keep` is the long-lived namespace (name, inode).
pub fn take(
    agent: &Agent,
    maps: &[MapRef],
    c: &Counters,
    prev: Option<&Sample>,
    (t, phase): (f64, &'static str),
    keep: (&Netns, u64),
) -> Result<Sample> {
    let pid = agent.pid();
    let mut s = Sample {
        t,
        phase,
        cpu_ms: cpu_ms(pid),
        conns: c.conns.load(Relaxed),
        conn_errors: c.conn_errors.load(Relaxed),
        procs: c.procs.load(Relaxed),
        conn_per_s: f64::NAN,
        cpu_per_1k: f64::NAN,
        namespaces: c.namespaces.load(Relaxed),
        rss_kib: rss_kib(pid),
        threads: status_field(pid, "Threads:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
        maps: probe::map_occupancy(maps)?,
        ..Sample::default()
    };
    if let Some(p) = prev {
        let (dc, dt) = (
            s.conns.saturating_sub(p.conns) as f64,
            (s.t - p.t).max(1e-3),
        );
        s.cpu_pct = (s.cpu_ms - p.cpu_ms) / dt / 10.0;
        // After the load, CPU per connection means nothing (a few stray ones).
        if phase != "after" {
            s.conn_per_s = dc / dt;
            s.cpu_per_1k = (s.cpu_ms - p.cpu_ms) / (dc / 1000.0);
        }
    }
    let m = probe::scrape(agent.port)?;
    s.keep_ss = totals(&probe::ss_pools(keep.0, RANGE.0, RANGE.1)?);
    s.keep_agent = totals(&probe::agent_pools(&m, keep.1));
    for w in [
        "ring_buffer",
        "user_space",
        "undecodable",
        "kernel_skipped_run",
    ] {
        let v = probe::sum(&m, "portex_dropped_events_total", Some(("where", w)));
        s.metrics.insert(format!("dropped_{w}"), v);
    }
    for (k, name) in [
        ("map_full", "portex_socket_map_full_total"),
        ("hooks_attached", "portex_syscall_hooks_attached"),
        ("tracked_sockets", "portex_tracked_sockets"),
        ("kernel_events", "portex_kernel_events_total"),
        ("failures", "portex_failures_total"),
        ("sink_dropped", "portex_sink_lines_total"),
    ] {
        let label = (k == "sink_dropped").then_some(("result", "dropped"));
        s.metrics.insert(k.into(), probe::sum(&m, name, label));
    }
    s.metrics
        .insert("stderr_lines".into(), agent.stderr_lines() as f64);
    s.pools = m
        .iter()
        .filter(|x| x.name == "portex_pool_used_ports")
        .count();
    s.stale_netns = probe::stale_netns(&m);
    Ok(s)
}

const HEADER: &str = "| t (s) | phase | RSS MiB | fds | SOCKS (gone) | LISTENERS (gone) | CONNECTS (gone) | BINDS (gone) | agent CPU % | CPU ms/1k conn | conn/s | processes | namespaces | dropped rb/user/undec/skipped | hooks | ledger sockets | pools (host) | keep ns held agent/ss |";

pub fn row(s: &Sample) -> String {
    let mp = |n: &str| {
        let (e, g) = s.map(n);
        format!("{e} ({g})")
    };
    format!(
        "| {:.0} | {} | {:.1} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {}/{}/{}/{} | {:.0} | {:.0} | {} | {}/{} |",
        s.t,
        s.phase,
        s.rss_kib as f64 / 1024.0,
        s.fds,
        mp("SOCKS"),
        mp("LISTENERS"),
        mp("CONNECTS"),
        mp("BINDS"),
        s.cpu_pct,
        num(s.cpu_per_1k, 2),
        num(s.conn_per_s, 0),
        s.procs,
        s.namespaces,
        s.m("dropped_ring_buffer"),
        s.m("dropped_user_space"),
        s.m("dropped_undecodable"),
        s.m("dropped_kernel_skipped_run"),
        s.m("hooks_attached"),
        s.m("tracked_sockets"),
        s.pools,
        s.keep_agent.0,
        s.keep_ss.0,
    )
}

/// A figure, or "-" for none (idle and after-load rows).
fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() && v > 0.0 {
        format!("{v:.decimals$}")
    } else {
        "-".into()
    }
}

pub fn render(samples: &[Sample]) -> String {
    let cols = HEADER.matches(" |").count();
    let mut s = format!("{HEADER}\n{}|\n", "|---".repeat(cols));
    for x in samples {
        s.push_str(&row(x));
        s.push('\n');
    }
    s
}

pub fn pools_json(p: &Pools) -> Value {
    p.iter()
        .map(|((s, d), (u, tw))| json!({"source": s, "destination": d, "used": u, "time_wait": tw}))
        .collect()
}

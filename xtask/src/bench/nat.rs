//! The cost of NAT accounting with a big conntrack table: a gateway namespace (gw) whose
//! table holds 100,000 SNAT entries (quick mode too), and what reading it costs:
//! `conntrack -L` (best of 3), `portex status --json` in gw with the entries against
//! without (its conntrack dump and NAT pool computation: the difference), and the
//! agent's CPU over a run with the entries against one without, with its NAT scan
//! metrics when the build exports them (30 s each; quick: 8 s).
//!
//! Topology: pod (10.77.0.2) -> gw (forwards, nftables masquerade on its egress veth,
//! 10.78.0.1) -> srv (10.78.0.2, drops the datagrams before anything answers). The fill
//! (`cargo xtask nat-fill`) sends one UDP datagram per (source port, destination port)
//! from the pod, over 2 destination ports: 2 NAT pools of 50,000 used ports each (of the
//! 64,512 a rule without a range has), a busy gateway under the warning threshold.
//! Nobody answers, so the entries stay unreplied; gw keeps them 600 s
//! (nf_conntrack_udp_timeout raised there), longer than the section runs.
//!
//! Broken mechanics (any mode): the table not holding the entries after the fill (or
//! not all NATed), `portex status` failing or disagreeing with `conntrack -C`, an agent
//! that does not run to the end and exit 0. Timings never fail the run. The namespaces
//! (with the veths and rules inside them) go on every path: Drop, also on a panic and on
//! Ctrl-C or SIGTERM, which this section catches while it runs.
use std::{
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use portex_e2e::{Netns, Sample, cpu_ms, http_get, parse_samples, try_run};
use serde_json::{Value, json};

use super::{
    Ctx, Report, bench_ns,
    tracers::{Tracer, start, stop},
    xtask,
};

const POD_IP: &str = "10.77.0.2";
const GW_IN_IP: &str = "10.77.0.1";
/// gw's address towards srv: what masquerade rewrites the pod's source to.
const GW_NAT_IP: &str = "10.78.0.1";
const SRV_IP: &str = "10.78.0.2";
/// Two destination ports, two NAT pools.
const DPORTS: (u16, u16) = (5001, 5002);
/// The pod's source ports: FIRST_PORT.. (50,000 of them for 100,000 entries).
const FIRST_PORT: u16 = 10_000;
/// The conntrack entries the fill makes in gw.
const ENTRIES: u64 = 100_000;
/// How many times the fill runs at most: each run only adds the tuples a previous one
/// lost (none were lost so far).
const FILL_PASSES: u32 = 3;

pub(super) fn run(ctx: &Ctx, r: &mut Report) -> Result<()> {
    // The quick mode (CI) fills the same table, so that the mechanics are checked at the
    // scale the budget is about; only the agent's runs are shorter.
    let agent_secs = if ctx.quick { 8.0 } else { 30.0 };
    let sig = Interrupts::catch();
    let topo = topology()?;
    let gw = &topo.gw;
    let inode = gw.try_inode()?;
    // A namespace's table holds at most the host's nf_conntrack_max (262,144 from 4 GiB
    // of RAM up; less on a small machine): then the fill stays under it.
    let max = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let target = ENTRIES.min(max * 9 / 10);
    if target < ENTRIES {
        eprintln!("bench: nat: nf_conntrack_max is {max}: filling {target} entries, not {ENTRIES}");
    }

    // Without entries first (the table is empty until the fill).
    let empty = status_best_of(ctx, gw, 3, &mut r.broken)?;
    sig.check()?;
    let agent_empty = agent_run(ctx, agent_secs, inode, &sig, &mut r.broken)?;

    let (entries, passes, fill_ms) = fill(&topo, target, &sig)?;
    let natted = conntrack_list(gw, &["--reply-dst", GW_NAT_IP])?.1;
    eprintln!(
        "bench: nat fill: {entries} conntrack entries in gw ({natted} NATed to {GW_NAT_IP}) after {passes} pass(es), {fill_ms:.0} ms"
    );
    if entries < target || natted != entries {
        r.broken.push(format!(
            "nat: after the fill gw's conntrack holds {entries} entries ({natted} NATed to {GW_NAT_IP}), expected {target}, all NATed"
        ));
    }
    let mut listed = vec![];
    for _ in 0..3 {
        listed.push(conntrack_list(gw, &[])?.0);
        sig.check()?;
    }
    let ct_ms = listed.iter().copied().fold(f64::INFINITY, f64::min);
    let full = status_best_of(ctx, gw, 3, &mut r.broken)?;
    check_status(&full.json, conntrack_count(gw)?, &mut r.broken);
    sig.check()?;
    let agent_full = agent_run(ctx, agent_secs, inode, &sig, &mut r.broken)?;
    let still = conntrack_count(gw)?;

    let added = full.best_ms - empty.best_ms;
    eprintln!(
        "bench: nat with {entries} entries: conntrack -L {ct_ms:.0} ms; portex status --json {:.0} ms ({:.0} ms without: {added:+.0} ms dump and accounting)",
        full.best_ms, empty.best_ms
    );
    eprintln!(
        "bench: nat agent over {agent_secs} s: {:.0} ms CPU with the entries, {:.0} ms without ({} and {} kernel events); NAT scans: {}",
        agent_full.cpu_ms,
        agent_empty.cpu_ms,
        agent_full.events.unwrap_or(0),
        agent_empty.events.unwrap_or(0),
        agent_full.scans_text()
    );
    if still < entries {
        eprintln!("bench: nat: {still} entries left at the end (of {entries})");
    }
    r.table.push(
        json!({"section": "nat", "tool": "conntrack -L", "entries": entries,
        "best_ms": ct_ms, "runs_ms": listed, "fill_ms": fill_ms, "fill_passes": passes,
        "natted": natted, "entries_at_end": still}),
    );
    r.table.push(
        json!({"section": "nat", "tool": "portex status --json", "entries": entries,
        "best_ms": full.best_ms, "best_ms_without": empty.best_ms, "added_ms": added,
        "ratio_to_conntrack": added / ct_ms, "exit": full.code}),
    );
    r.table.push(
        json!({"section": "nat", "tool": Tracer::AgentMetrics.name(), "entries": entries,
        "seconds": agent_secs, "with": agent_full.json(), "without": agent_empty.json(),
        "cpu_added_ms_per_s": (agent_full.cpu_ms - agent_empty.cpu_ms) / agent_secs}),
    );
    Ok(())
}

/// The section's namespaces; dropped (removed, with their veths and rules) together.
struct Topology {
    pod: Netns,
    gw: Netns,
    _srv: Netns,
}

fn ip(args: &[&str]) -> Result<()> {
    Ok(try_run(Command::new("ip").args(args))?)
}

/// `nft -f -` of `script` inside `ns`.
fn nft(ns: &Netns, script: &str) -> Result<()> {
    let (code, _, err) = ns.try_exec(&["nft", script])?;
    if code != Some(0) {
        bail!("nft in {}: {script}: {}", ns.name, err.trim());
    }
    Ok(())
}

fn topology() -> Result<Topology> {
    let t = Topology {
        pod: bench_ns("natpod")?,
        gw: bench_ns("natgw")?,
        _srv: bench_ns("natsrv")?,
    };
    let (pod, gw, srv) = (&t.pod.name, &t.gw.name, &t._srv.name);
    // Interface names are at most 15 bytes; the pid keeps parallel runs apart.
    let tag = std::process::id() % 100_000;
    let [p0, g0, g1, s0] = ["p0", "g0", "g1", "s0"].map(|s| format!("pxb{tag}{s}"));
    ip(&[
        "link", "add", &p0, "netns", pod, "type", "veth", "peer", "name", &g0, "netns", gw,
    ])?;
    ip(&[
        "link", "add", &g1, "netns", gw, "type", "veth", "peer", "name", &s0, "netns", srv,
    ])?;
    for (ns, dev, addr) in [
        (pod, &p0, POD_IP),
        (gw, &g0, GW_IN_IP),
        (gw, &g1, GW_NAT_IP),
        (srv, &s0, SRV_IP),
    ] {
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    ip(&["-n", pod, "route", "add", "default", "via", GW_IN_IP])?;
    nft(
        &t.gw,
        &format!(
            "add table ip nat; add chain ip nat post {{ type nat hook postrouting priority 100 ; }}; add rule ip nat post oifname {g1} masquerade"
        ),
    )?;
    // Unreplied UDP entries live 30 s by default: 600 s outlasts the section.
    t.gw.try_sysctl("net.ipv4.ip_forward", "1")?
        .try_sysctl("net.netfilter.nf_conntrack_udp_timeout", "600")?;
    // srv drops the datagrams before its stack sees them: no reply, no ICMP error.
    nft(
        &t._srv,
        &format!(
            "add table ip f; add chain ip f pre {{ type filter hook prerouting priority -300 ; }}; add rule ip f pre udp dport {}-{} drop",
            DPORTS.0, DPORTS.1
        ),
    )?;
    Ok(t)
}

/// Runs the fill until gw's table holds `target` entries (FILL_PASSES at most): the
/// entries, the passes, and the fill's time (ms, summed).
fn fill(t: &Topology, target: u64, sig: &Interrupts) -> Result<(u64, u32, f64)> {
    let (mut entries, mut ms) = (0, 0.0);
    for pass in 1..=FILL_PASSES {
        let out = Command::new(xtask())
            .args([
                "nat-fill",
                "--netns",
                &t.pod.name,
                "--src",
                POD_IP,
                "--dest",
                SRV_IP,
            ])
            .args(["--dports", &format!("{}-{}", DPORTS.0, DPORTS.1)])
            .args(["--count", &target.to_string()])
            .args(["--first-port", &FIRST_PORT.to_string()])
            .output()
            .context("running nat-fill")?;
        sig.check()?;
        if !out.status.success() {
            bail!(
                "nat-fill failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        ms += v["ms"].as_f64().unwrap_or(f64::NAN);
        entries = conntrack_count(&t.gw)?;
        if entries >= target {
            return Ok((entries, pass, ms));
        }
    }
    Ok((entries, FILL_PASSES, ms))
}

/// `conntrack -C` in `ns`.
fn conntrack_count(ns: &Netns) -> Result<u64> {
    let (code, out, err) = ns.try_exec(&["conntrack", "-C"])?;
    match (code, out.trim().parse()) {
        (Some(0), Ok(n)) => Ok(n),
        _ => bail!("conntrack -C in {}: {}{}", ns.name, out.trim(), err.trim()),
    }
}

/// `conntrack -L ARGS` in `ns`, its listing thrown away: (wall ms, the entries it
/// says it listed).
fn conntrack_list(ns: &Netns, args: &[&str]) -> Result<(f64, u64)> {
    let t0 = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "conntrack", "-L"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    // "conntrack v1.4.7 (conntrack-tools): 100000 flow entries have been shown."
    let err = String::from_utf8_lossy(&out.stderr);
    let words: Vec<&str> = err.split_whitespace().collect();
    let n = words
        .windows(2)
        .find(|w| w[1] == "flow")
        .and_then(|w| w[0].parse().ok());
    match (out.status.success(), n) {
        (true, Some(n)) => Ok((ms, n)),
        _ => bail!("conntrack -L {args:?} in {}: {}", ns.name, err.trim()),
    }
}

struct StatusRun {
    best_ms: f64,
    code: Option<i32>,
    /// The last run's report.
    json: Value,
}

/// `portex status --json` in `ns`, `n` times: the fastest, and the last report.
fn status_best_of(ctx: &Ctx, ns: &Netns, n: usize, broken: &mut Vec<String>) -> Result<StatusRun> {
    let mut run = StatusRun {
        best_ms: f64::INFINITY,
        code: None,
        json: Value::Null,
    };
    for _ in 0..n {
        let t0 = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(ctx.portex)
            .args(["status", "--json"])
            .stderr(Stdio::piped())
            .output()?;
        run.best_ms = run.best_ms.min(t0.elapsed().as_secs_f64() * 1000.0);
        run.code = out.status.code();
        // 1 and 2 are its verdict (warning, critical), 3 a failure.
        if run.code.unwrap_or(3) > 2 {
            broken.push(format!(
                "nat: portex status --json in gw: {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        run.json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    }
    Ok(run)
}

/// What `portex status` says of gw's NAT: the conntrack table as `conntrack -C` counts
/// it (`count`), every entry in a NAT pool towards srv, masqueraded to gw's address.
fn check_status(v: &Value, count: u64, broken: &mut Vec<String>) {
    let nat = &v["namespaces"][0]["nat"];
    let entries = nat["conntrack"]["entries"].as_u64();
    let pools = nat["pools"].as_array().cloned().unwrap_or_default();
    let used: u64 = pools.iter().filter_map(|p| p["used"].as_u64()).sum();
    let ours = pools
        .iter()
        .all(|p| p["nat"]["ip"] == GW_NAT_IP && p["destination"]["ip"] == SRV_IP);
    let want = usize::from(DPORTS.1 - DPORTS.0) + 1;
    if entries != Some(count) || used != count || pools.len() != want || !ours {
        broken.push(format!(
            "nat: portex status in gw: conntrack entries {entries:?}, {} pools holding {used} \
             ports, expected {count} entries (conntrack -C) in {want} pools {GW_NAT_IP} -> \
             {SRV_IP}: {}",
            pools.len(),
            if nat.is_null() { "no nat section" } else { "" }
        ));
    }
}

/// One agent run: its CPU over the run and its NAT metrics at the end.
struct AgentRun {
    cpu_ms: f64,
    /// portex_nat_scan_seconds, portex_nat_scans_total: None when this build does not
    /// export them.
    scan_seconds: Option<f64>,
    scans: Option<f64>,
    /// portex_conntrack_entries of gw; the sum of portex_nat_pool_used_ports (exported pools).
    conntrack_entries: Option<f64>,
    pool_used: Option<f64>,
    /// Kernel events the agent saw (the whole host's TCP activity): what else it had to
    /// do in the run, for reading its CPU on a shared machine.
    events: Option<u64>,
    exit: String,
}

impl AgentRun {
    fn scans_text(&self) -> String {
        match (self.scan_seconds, self.scans) {
            (Some(s), Some(n)) => format!("{n} scans, the last {:.1} ms", s * 1000.0),
            _ => "not reported by this build".into(),
        }
    }

    fn json(&self) -> Value {
        json!({"cpu_ms": self.cpu_ms, "nat_scan_seconds": self.scan_seconds,
            "nat_scans_total": self.scans, "conntrack_entries_gw": self.conntrack_entries,
            "nat_pool_used_sum": self.pool_used, "kernel_events": self.events,
            "exit": self.exit})
    }
}

/// The agent (default settings, metrics on) for `secs` from its "watching" line: its
/// CPU (utime + stime) over that time, then a scrape, then SIGINT.
fn agent_run(
    ctx: &Ctx,
    secs: f64,
    gw_inode: u64,
    sig: &Interrupts,
    broken: &mut Vec<String>,
) -> Result<AgentRun> {
    let running = start(Tracer::AgentMetrics, ctx.portex)?.context("an agent")?;
    let pid = running.child.id();
    let cpu0 = cpu_ms(pid);
    let ran = sig.sleep(Duration::from_secs_f64(secs));
    let cpu = cpu_ms(pid) - cpu0;
    let body = running
        .metrics_addr
        .as_deref()
        .and_then(|a| http_get(a, "/metrics"));
    // Stopped on every path before anything can return.
    let stopped = stop(running)?;
    if !ran {
        bail!("interrupted");
    }
    stopped.check("nat", broken);
    let Some(body) = body else {
        broken.push("nat: the agent's /metrics did not answer".into());
        return Ok(AgentRun {
            cpu_ms: cpu,
            scan_seconds: None,
            scans: None,
            conntrack_entries: None,
            pool_used: None,
            events: stopped.events,
            exit: stopped.exit,
        });
    };
    let samples = parse_samples(&body);
    fn of<'a>(samples: &'a [Sample], name: &'a str) -> impl Iterator<Item = &'a Sample> {
        samples.iter().filter(move |s| s.name == name)
    }
    let ino = gw_inode.to_string();
    let in_gw = |s: &&Sample| {
        s.label("netns")
            .is_none_or(|n| n == ino || n.contains("natgw"))
    };
    // A family this build exports shows its HELP line even without samples.
    let exported = |name: &str| body.contains(&format!("# HELP {name} "));
    Ok(AgentRun {
        cpu_ms: cpu,
        scan_seconds: of(&samples, "portex_nat_scan_seconds")
            .map(|s| s.value)
            .next(),
        scans: of(&samples, "portex_nat_scans_total")
            .map(|s| s.value)
            .next(),
        conntrack_entries: of(&samples, "portex_conntrack_entries")
            .filter(in_gw)
            .map(|s| s.value)
            .next(),
        pool_used: exported("portex_nat_pool_used_ports").then(|| {
            of(&samples, "portex_nat_pool_used_ports")
                .filter(in_gw)
                .map(|s| s.value)
                .sum()
        }),
        events: stopped.events,
        exit: stopped.exit,
    })
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM caught while the section runs (so that its namespaces are
/// removed: Drop does not run when a signal kills the process); the previous handlers
/// come back on drop.
struct Interrupts {
    old: [libc::sighandler_t; 2],
}

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

impl Interrupts {
    fn catch() -> Interrupts {
        // SAFETY: the handler only stores to an atomic.
        let old = SIGNALS
            .map(|s| unsafe { libc::signal(s, on_signal as *const () as libc::sighandler_t) });
        Interrupts { old }
    }

    fn check(&self) -> Result<()> {
        if INTERRUPTED.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Sleeps `d` unless interrupted: whether it slept all of it.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if INTERRUPTED.load(Ordering::Relaxed) {
                return false;
            }
            thread::sleep(
                Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())),
            );
        }
        true
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for (s, old) in SIGNALS.iter().zip(self.old) {
            // SAFETY: restores what was there.
            unsafe { libc::signal(*s, old) };
        }
    }
}

//! `cargo xtask soak [--quick] [--minutes M] [--out FILE]` (root): the release agent
//! under a long mixed load (connection, process and namespace churn: soak/load.rs),
//! sampled every minute (every 30 s in quick mode). Checks that its memory,
//! descriptors, kernel map occupancy and CPU per connection stay flat, that nothing is
//! left in its maps or ledger once the load is gone, and that its pool counts then equal
//! what `ss` shows. Prints a table, writes JSON (target/bench/soak.json), exits non-zero
//! with one line per failed check.
use std::{
    collections::{BTreeSet, HashSet},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use portex_e2e::Netns;
use serde_json::json;

mod bpf;
pub mod load;
mod probe;
mod sample;

use load::{Counters, Load, RANGE};
use probe::{Agent, Pools};
use sample::{Sample, pools_json, render, row};

pub struct Opts {
    pub quick: bool,
    pub minutes: Option<f64>,
    pub out: PathBuf,
}

// Tolerances. A soak on a shared 2-core machine is noisy: they are set to pass a
// healthy agent every time and to fail a leak or broken mechanics, not to measure.
/// RSS growth from the first sample after warm-up to the last: 20 % or 16 MiB, the
/// larger. Hash tables that double and allocator arenas move RSS in steps of a few
/// MiB on a steady load; per-connection, per-pid or per-namespace state that is never
/// freed grows past this within minutes at these rates.
const RSS_GROWTH: (f64, u64) = (0.20, 16 * 1024);
/// Open descriptors, same two samples: the four syscall-hook links come and go with
/// auto mode; scrapes and namespace files are open only for a moment.
const FD_GROWTH: u64 = 16;
/// CPU per 1,000 connections, mean of the last third of the samples after warm-up over
/// the first third. Quick mode's thirds are one or two 30 s samples on a machine whose
/// other work swings them by tens of percent: only a doubling means something there.
const CPU_TREND: (f64, f64) = (1.5, 2.0);
/// Entries of a kernel map at the last sample over the first after warm-up: the maps
/// hold sockets and calls in flight, which a steady load keeps steady.
const MAP_GROWTH: (f64, u64) = (2.0, 2048);
/// Map entries whose process or thread is gone, once the load has stopped: each is a
/// removal the programs missed. A tracepoint run the kernel skips (recursion, counted
/// as kernel_skipped_run) may leave one; beyond those, this many are allowed.
const STALE_SLACK: u64 = 16;
/// Connections held open, and closed by the client (TIME_WAIT), for the final count.
const HELD: u64 = 50;
const BURST: u64 = 200;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Relaxed);
}

/// Sleeps until `deadline`, failing if interrupted or if the agent died.
fn wait_until(deadline: Instant, agent: &mut Agent) -> Result<()> {
    while Instant::now() < deadline {
        if INTERRUPTED.load(Relaxed) {
            bail!("interrupted");
        }
        if !agent.alive() {
            bail!("the agent exited during the soak: {}", agent.tail());
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// (agent, ss, equal): the pools of namespace `ns` (inode `ino`), the agent's read
/// before and after ss, so that a count moving meanwhile is not taken for a match.
fn compare(agent: &Agent, ns: &Netns, ino: u64) -> Result<(Pools, Pools, bool)> {
    let a1 = probe::agent_pools(&probe::scrape(agent.port)?, ino);
    let ss = probe::ss_pools(ns, RANGE.0, RANGE.1)?;
    let a2 = probe::agent_pools(&probe::scrape(agent.port)?, ino);
    let equal = a1 == ss && a2 == ss;
    Ok((a2, ss, equal))
}

/// What one soak produced.
struct Outcome {
    samples: Vec<Sample>,
    keep: String,
    /// The final count before the next reconciliation (events only, most likely) and
    /// after it: (agent, ss, equal).
    before: (Pools, Pools, bool),
    after: (Pools, Pools, bool),
    held: u64,
    burst: u64,
    /// Inodes of the namespaces created (the kernel reuses them).
    ours: HashSet<u64>,
    /// Namespaces gone but still exported, 76 s after the load (see the "after" sample).
    stale: BTreeSet<u64>,
    workload_errors: Vec<String>,
    clean_exit: bool,
    /// The agent's last stderr line (its exit summary).
    summary: String,
    progs: Vec<u32>,
}

pub fn run(o: Opts, portex: &Path) -> Result<()> {
    let interval = if o.quick { 30.0 } else { 60.0 };
    let minutes = o.minutes.unwrap_or(if o.quick { 3.0 } else { 30.0 });
    // TIME_WAIT lasts 60 s: the ledger and the kernel's tables reach their steady state
    // within the first minute of load, so samples up to then are warm-up.
    let warmup = 60.0_f64.max(interval);
    let n = (minutes * 60.0 / interval).floor() as usize;
    if (n as f64 * interval) < warmup + 2.0 * interval {
        bail!("--minutes {minutes}: too short for two samples after the {warmup} s warm-up");
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let started = Instant::now();
    // Every guard (load, agent, servers, namespaces) is dropped when soak() returns.
    let out = soak(portex, n, interval, warmup)?;
    let checks = checks(&out, o.quick)?;
    let failures: Vec<String> = checks
        .iter()
        .filter(|c| !c.1)
        .map(|c| format!("{}: {}", c.0, c.2))
        .collect();
    let (b, a) = (&out.before, &out.after);
    let report = json!({"quick": o.quick, "minutes": minutes, "interval_s": interval,
        "warmup_s": warmup, "wall_s": started.elapsed().as_secs_f64(), "keep_netns": out.keep,
        "namespace_inodes_distinct": out.ours.len(),
        "samples": out.samples.iter().map(Sample::json).collect::<Vec<_>>(),
        "final": {"held": out.held, "time_wait_made": out.burst,
            "before_reconcile": {"equal": b.2, "agent": pools_json(&b.0), "ss": pools_json(&b.1)},
            "after_reconcile": {"equal": a.2, "agent": pools_json(&a.0), "ss": pools_json(&a.1)}},
        "checks": checks.iter().map(|c| json!({"check": c.0, "ok": c.1, "detail": c.2})).collect::<Vec<_>>(),
        "workload_errors": out.workload_errors, "failures": failures});
    if let Some(d) = o.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", render(&out.samples));
    println!(
        "final count in {} ({} held, {} closed; before the reconciliation: {}):",
        out.keep,
        out.held,
        out.burst,
        if b.2 { "equal" } else { "different" }
    );
    println!(
        "| source | destination | agent used/TIME_WAIT | ss used/TIME_WAIT |\n|---|---|---|---|"
    );
    let keys: BTreeSet<_> = a.0.keys().chain(a.1.keys()).collect();
    for k in keys {
        let g = |p: &Pools| p.get(k).map_or("-".into(), |v| format!("{}/{}", v.0, v.1));
        println!("| {} | {} | {} | {} |", k.0, k.1, g(&a.0), g(&a.1));
    }
    if !b.2 {
        // Not a check (a reconciliation may fall between the burst and this count, and
        // the issue asks for the counts after one), but worth seeing: what events alone
        // made of them. The burst is one short-lived process: when the agent reads its
        // events after it exited, it cannot tell their namespace from /proc.
        println!(
            "note: before the reconciliation the agent had {:?}, ss {:?}",
            b.0, b.1
        );
    }
    for c in &checks {
        println!("{} {}: {}", if c.1 { "ok  " } else { "FAIL" }, c.0, c.2);
    }
    println!(
        "(JSON: {}; {:.0} s)",
        o.out.display(),
        started.elapsed().as_secs_f64()
    );
    for f in &failures {
        eprintln!("soak: FAILED {f}");
    }
    if !failures.is_empty() {
        bail!("{} check(s) failed", failures.len());
    }
    Ok(())
}

fn soak(portex: &Path, n: usize, interval: f64, warmup: f64) -> Result<Outcome> {
    let keep = load::soak_ns("keep")?;
    let ino = keep.try_inode()?;
    let k = (&keep, ino);
    let server = load::server(&keep)?;
    let mut agent = Agent::start(portex)?;
    let (maps, progs) = bpf::held_by(agent.pid())?;
    let names: Vec<&str> = maps.iter().map(|m| m.name.as_str()).collect();
    eprintln!(
        "soak: agent pid {} ({} programs; maps {}); {n} samples, one every {interval} s",
        agent.pid(),
        progs.len(),
        names.join(" ")
    );
    thread::sleep(Duration::from_secs(2));
    let idle = Counters::default();
    let mut samples = vec![sample::take(&agent, &maps, &idle, None, (0.0, "idle"), k)?];
    let mut load = Load::start(&keep.name);
    let t0 = Instant::now();
    for i in 1..=n {
        let t = i as f64 * interval;
        wait_until(t0 + Duration::from_secs_f64(t), &mut agent)?;
        let phase = if t <= warmup { "warm-up" } else { "load" };
        let s = sample::take(&agent, &maps, &load.counters, samples.last(), (t, phase), k)?;
        eprintln!("soak: {}", row(&s).trim_matches('|').trim());
        samples.push(s);
    }
    load.stop();
    let t_stop = Instant::now();

    // The final count needs a namespace whose sockets stay put for a while: every
    // TIME_WAIT of the load has ended after 60 s (plus the kernel timer's slack of a few
    // seconds), and in the ledger by the first reconciliation after that (10 s). Then
    // HELD connections stay established and BURST sit in TIME_WAIT for the next minute.
    eprintln!("soak: load stopped; 76 s for its TIME_WAIT sockets to end, then the final count");
    wait_until(t_stop + Duration::from_secs(76), &mut agent)?;
    let stale = probe::stale_netns(&probe::scrape(agent.port)?);
    let (holder, held) = load::holder(&keep, HELD)?;
    let burst = load::connections(&keep.name, BURST)?;
    // Past the agent's next publication of its gauges (every second).
    wait_until(Instant::now() + Duration::from_millis(1500), &mut agent)?;
    let before = compare(&agent, &keep, ino)?;
    // The ledger is corrected from sock_diag every 10 s.
    wait_until(Instant::now() + Duration::from_secs(11), &mut agent)?;
    let mut after = compare(&agent, &keep, ino)?;
    for _ in 0..2 {
        if after.2 {
            break;
        }
        wait_until(Instant::now() + Duration::from_secs(3), &mut agent)?;
        after = compare(&agent, &keep, ino)?;
    }
    drop(holder);
    drop(server);
    wait_until(Instant::now() + Duration::from_secs(3), &mut agent)?;
    let t = t0.elapsed().as_secs_f64();
    let last = samples.last().cloned();
    samples.push(sample::take(
        &agent,
        &maps,
        &load.counters,
        last.as_ref(),
        (t, "after"),
        k,
    )?);
    let clean_exit = agent.stop();
    let summary = agent.tail().rsplit(" | ").next().unwrap_or("").to_string();
    let ours = load.counters.inodes.lock().unwrap().clone();
    let workload_errors = load.errors.lock().unwrap().clone();
    Ok(Outcome {
        samples,
        keep: keep.name.clone(),
        before,
        after,
        held,
        burst,
        ours,
        stale,
        workload_errors,
        clean_exit,
        summary,
        progs,
    })
}

/// (check, passed, detail) for each check.
fn checks(out: &Outcome, quick: bool) -> Result<Vec<(String, bool, String)>> {
    let mut v: Vec<(String, bool, String)> = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| v.push((name.into(), ok, detail));
    let post: Vec<&Sample> = out.samples.iter().filter(|s| s.phase == "load").collect();
    let (base, last) = (post[0], post[post.len() - 1]);
    let (idle, after) = (&out.samples[0], out.samples.last().unwrap());
    let mib = |k: u64| k as f64 / 1024.0;
    let rss_allowed = ((base.rss_kib as f64 * RSS_GROWTH.0) as u64).max(RSS_GROWTH.1);
    check(
        "rss flat",
        last.rss_kib <= base.rss_kib + rss_allowed,
        format!(
            "{:.1} -> {:.1} MiB (allowed +{:.1})",
            mib(base.rss_kib),
            mib(last.rss_kib),
            mib(rss_allowed)
        ),
    );
    check(
        "fds flat",
        last.fds <= base.fds + FD_GROWTH,
        format!("{} -> {} (allowed +{FD_GROWTH})", base.fds, last.fds),
    );
    let third = post.len().div_ceil(3);
    let mean = |v: &[&Sample]| v.iter().map(|s| s.cpu_per_1k).sum::<f64>() / v.len() as f64;
    let (c0, c1) = (mean(&post[..third]), mean(&post[post.len() - third..]));
    let allowed = if quick { CPU_TREND.1 } else { CPU_TREND.0 };
    check(
        "cpu per 1k connections flat",
        c1 <= c0 * allowed,
        format!("{c0:.2} -> {c1:.2} ms, first vs last third (allowed x{allowed})"),
    );
    for (name, b, _) in &base.maps {
        let (b, l) = (*b, last.map(name).0);
        let allowed = ((b as f64 * MAP_GROWTH.0) as u64).max(b + MAP_GROWTH.1);
        check(
            &format!("map {name} bounded under load"),
            l <= allowed,
            format!("{b} -> {l} entries (allowed {allowed})"),
        );
    }
    let skipped = after.m("dropped_kernel_skipped_run") - idle.m("dropped_kernel_skipped_run");
    let stale: u64 = after.maps.iter().map(|m| m.2).sum();
    let per_map: Vec<String> = after
        .maps
        .iter()
        .map(|m| format!("{} {}/{}", m.0, m.2, m.1))
        .collect();
    check(
        "maps drained after the load",
        stale <= skipped as u64 + STALE_SLACK,
        format!(
            "{stale} entries of gone processes or threads (gone/all: {}); {skipped} kernel runs skipped (allowed: those + {STALE_SLACK})",
            per_map.join(", ")
        ),
    );
    // Stale in two scrapes 15 s apart, with a reconciliation (every 10 s) between:
    // a namespace someone else deleted a moment before one scrape does not count.
    let stale: Vec<u64> = out
        .stale
        .intersection(&after.stale_netns)
        .copied()
        .collect();
    check(
        "deleted namespaces forgotten",
        stale.is_empty(),
        format!(
            "{} namespaces gone for over 10 s still have pools {stale:?} (ours among them: {}), after {} were deleted",
            stale.len(),
            stale.iter().filter(|n| out.ours.contains(n)).count(),
            last.namespaces
        ),
    );
    let a = &out.after;
    check(
        "pool counts equal ss",
        a.2,
        format!("agent {:?}, ss {:?}", a.0, a.1),
    );
    let ran = post.iter().all(|s| s.conn_per_s > 0.0) && last.namespaces > 0 && last.procs > 0;
    check(
        "load ran",
        ran && out.workload_errors.is_empty(),
        format!(
            "{} connections ({} failed), {} processes, {} namespaces; workload errors: {} {}",
            last.conns,
            last.conn_errors,
            last.procs,
            last.namespaces,
            out.workload_errors.len(),
            out.workload_errors
                .first()
                .map(String::as_str)
                .unwrap_or("")
        ),
    );
    check(
        "no undecodable events",
        after.m("dropped_undecodable") == 0.0,
        format!("{}", after.m("dropped_undecodable")),
    );
    check("agent exited cleanly", out.clean_exit, out.summary.clone());
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    let prefix = format!("portex-soak-{}-", std::process::id());
    let ns_left = String::from_utf8_lossy(&list.stdout)
        .matches(&prefix)
        .count();
    let progs_left = out.progs.iter().filter(|p| !bpf::prog_gone(**p)).count();
    check(
        "nothing left behind",
        ns_left == 0 && progs_left == 0,
        format!("{ns_left} namespaces, {progs_left} programs"),
    );
    Ok(v)
}

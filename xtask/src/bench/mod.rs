//! `cargo xtask bench [--quick]`: interleaved A/B rounds on this machine, so that ratios
//! from one run can be compared (absolute numbers are noisy here). Prints a table and
//! writes it as JSON (target/bench/bench.json).
//!
//! Whatever the mode, the run fails (exit status 1, each problem one line of `broken`,
//! also in the JSON) on broken mechanics: a tracer that does not exit 0 after SIGINT
//! (tcplife: 0 or 130) in any section, or a portex tracer without its exit summary; a
//! churn run without connections, or with fewer kernel events than connections under a
//! portex tracer (no connection line under tcplife); a failure workload whose connects
//! did not all fail with EADDRNOTAVAIL, or an agent whose `connect_failed` events in the
//! bench's namespace are not exactly those failures, all EADDRNOTAVAIL, all from the
//! workload's pid; a NAT gateway whose conntrack table does not hold the fill's SNAT
//! entries, or whose `portex status` fails or disagrees with `conntrack -C`. Quick mode
//! (CI) adds: no event dropped in churn, and two loose ceilings, failure-to-event p99 and
//! the agent's RSS.
//!
//! One file per section, in the order they run: churn, syscalls, status, failures,
//! exhaustion, memory, nat (`--only` picks some); the tracers they run beside the
//! workloads in tracers.rs, the printed table in render.rs.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use portex_e2e::{Netns, try_run};
use serde_json::{Value, json};

mod churn;
mod exhaustion;
mod failures;
mod memory;
mod nat;
mod render;
mod status;
mod syscalls;
mod tracers;
pub mod writer;

pub struct Opts {
    pub quick: bool,
    /// Only these sections (`--only nat,status`); all when None.
    pub only: Option<Vec<String>>,
    pub out: PathBuf,
}

/// One section: runs its workloads, writes its rows and broken mechanics into the report.
type Section = fn(&Ctx, &mut Report) -> Result<()>;

/// What every section reads: the mode, the portex under test, and how long it measures.
struct Ctx<'a> {
    quick: bool,
    portex: &'a Path,
    rounds: usize,
    /// Length of one workload run.
    secs: f64,
}

/// What the sections write, into the JSON report and the printed table.
#[derive(Default)]
struct Report {
    /// One row per section, case and tracer: `summary`, and the printed table.
    table: Vec<Value>,
    /// One row per run: `rounds_detail`.
    rows: Vec<Value>,
    /// Broken mechanics, one line each: any fails the run.
    broken: Vec<String>,
}

pub fn run(o: Opts, portex: &Path) -> Result<()> {
    let (rounds, secs) = if o.quick { (1, 1.0) } else { (4, 3.0) };
    let ctx = Ctx {
        quick: o.quick,
        portex,
        rounds,
        secs,
    };
    let sections: [(&str, Section); 7] = [
        ("churn", churn::run),
        ("syscalls", syscalls::run),
        ("status", status::run),
        ("failures", failures::run),
        ("exhaustion", exhaustion::run),
        ("memory", memory::run),
        ("nat", nat::run),
    ];
    if let Some(only) = &o.only
        && let Some(bad) = only.iter().find(|n| !sections.iter().any(|(s, _)| s == n))
    {
        let names: Vec<&str> = sections.iter().map(|(s, _)| *s).collect();
        bail!(
            "--only {bad}: no such section (sections: {})",
            names.join(" ")
        );
    }
    let mut r = Report::default();
    for (name, section) in sections {
        if o.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| n == name))
        {
            section(&ctx, &mut r)?;
        }
    }

    let Report {
        table,
        rows,
        broken,
    } = r;
    let report = json!({"quick": o.quick, "rounds": rounds, "seconds_per_round": secs, "summary": table, "rounds_detail": rows, "broken": broken});
    if let Some(d) = o.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", render::table(&table));
    println!("(JSON: {})", o.out.display());
    if !broken.is_empty() {
        bail!("broken mechanics:\n  {}", broken.join("\n  "));
    }
    Ok(())
}

/// A network namespace for one section (removed on drop): portex-bench-PID-TAG.
fn bench_ns(tag: &str) -> Result<Netns> {
    Ok(Netns::create(format!(
        "portex-bench-{}-{tag}",
        std::process::id()
    ))?)
}

pub(crate) fn xtask() -> PathBuf {
    std::env::current_exe().expect("current_exe")
}

/// Whether `program` is installed: it starts with `arg` (its output and status ignored).
fn installed(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A namespace holding `n` TIME_WAIT sockets (reuse off, no bucket limit in the way),
/// and how many the kernel really holds.
fn time_wait_namespace(tag: &str, n: u64) -> Result<(Netns, usize)> {
    let ns = bench_ns(tag)?;
    ns.try_port_range(1024, 65535)?
        .try_sysctl("net.ipv4.tcp_tw_reuse", "0")?
        .try_sysctl("net.ipv4.tcp_max_tw_buckets", "1000000")?;
    try_run(Command::new(xtask()).args([
        "fill-time-wait",
        "--netns",
        &ns.name,
        "--count",
        &n.to_string(),
    ]))?;
    let present = ns.try_ss_count("time-wait")?;
    Ok((ns, present))
}

/// Runs a workload (`cargo xtask churn`, `syscalls`): the JSON of its last line.
fn run_json(cmd: &mut Command) -> Result<Value> {
    let out = cmd.output().context("running a workload")?;
    if !out.status.success() {
        bail!("workload failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let s = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(s.lines().last().unwrap_or("")).context("workload output")
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

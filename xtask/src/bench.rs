//! `cargo xtask bench [--quick]`: interleaved A/B rounds on this machine, so that ratios
//! from one run can be compared (absolute numbers are noisy here). Prints a table and
//! writes it as JSON (target/bench/bench.json).
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::churn::boot_ns;

pub struct Opts {
    pub quick: bool,
    pub out: PathBuf,
}

/// A network namespace for one section, removed on drop.
pub(crate) struct Ns(pub(crate) String);

impl Ns {
    fn new(tag: &str) -> Result<Ns> {
        Ns::named(format!("portex-bench-{}-{tag}", std::process::id()))
    }

    /// A namespace of this name with its loopback up.
    pub(crate) fn named(name: String) -> Result<Ns> {
        sh(&["ip", "netns", "add", &name])?;
        let ns = Ns(name);
        sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub(crate) fn sysctl(&self, kv: &str) -> Result<()> {
        sh(&["ip", "netns", "exec", &self.0, "sysctl", "-q", "-w", kv])
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

pub(crate) fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

pub(crate) fn xtask() -> PathBuf {
    std::env::current_exe().expect("current_exe")
}

/// What runs beside the workload.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tracer {
    None,
    /// Default settings: syscall hooks auto (detached while no pool is under pressure),
    /// accepted sockets dropped in the kernel.
    Agent,
    /// What the agent costs once a pool is under pressure (hooks attached), with
    /// accepted sockets as well.
    AgentFull,
    WatchJson,
    Tcplife,
}

impl Tracer {
    fn name(self) -> &'static str {
        match self {
            Tracer::None => "untraced",
            Tracer::Agent => "portex agent",
            Tracer::AgentFull => "portex agent --syscall-hooks on --accepted",
            Tracer::WatchJson => "portex watch --json",
            Tracer::Tcplife => "tcplife (libbpf-tools)",
        }
    }
}

struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

fn start(tracer: Tracer, portex: &Path) -> Result<Option<Running>> {
    let mut cmd = match tracer {
        Tracer::None => return Ok(None),
        Tracer::Agent => {
            let mut c = Command::new(portex);
            c.arg("agent");
            c
        }
        Tracer::AgentFull => {
            let mut c = Command::new(portex);
            c.args(["agent", "--syscall-hooks", "on", "--accepted"]);
            c
        }
        Tracer::WatchJson => {
            let mut c = Command::new(portex);
            c.args(["watch", "--json"]);
            c
        }
        Tracer::Tcplife => Command::new("tcplife"),
    };
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tracer.name()))?;
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    if tracer == Tracer::Tcplife {
        thread::sleep(Duration::from_secs(2));
    } else {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.contains("watching") => break,
                Ok(l) if l.contains("error") => bail!("{}: {l}", tracer.name()),
                _ if Instant::now() > end => bail!("{} did not start", tracer.name()),
                _ => {}
            }
        }
    }
    Ok(Some(Running { child, stderr: rx }))
}

/// utime + stime of a process, in milliseconds.
pub(crate) fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf is always safe.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / hz
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

pub(crate) fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// SIGINT, wait; returns the events dropped according to portex's summary line.
fn stop(r: Running) -> Result<(u64, bool)> {
    let Running { mut child, stderr } = r;
    // SAFETY: our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait()?;
    let mut dropped = 0;
    while let Ok(l) = stderr.recv_timeout(Duration::from_millis(500)) {
        if let Some(rest) = l.split("dropped: ").nth(1) {
            dropped = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    // tcplife exits on SIGINT with 0 or 130 depending on version.
    Ok((dropped, status.success() || status.code() == Some(130)))
}

/// A namespace holding `n` TIME_WAIT sockets (reuse off, no bucket limit in the way),
/// and how many the kernel really holds.
fn time_wait_namespace(tag: &str, n: u64) -> Result<(Ns, usize)> {
    let ns = Ns::new(tag)?;
    ns.sysctl("net.ipv4.ip_local_port_range=1024 65535")?;
    ns.sysctl("net.ipv4.tcp_tw_reuse=0")?;
    ns.sysctl("net.ipv4.tcp_max_tw_buckets=1000000")?;
    sh(&[
        xtask().to_str().unwrap(),
        "fill-time-wait",
        "--netns",
        &ns.0,
        "--count",
        &n.to_string(),
    ])?;
    let tw = Command::new("ip")
        .args(["netns", "exec", &ns.0, "ss", "-tanH", "state", "time-wait"])
        .output()?;
    let present = String::from_utf8_lossy(&tw.stdout).lines().count();
    Ok((ns, present))
}

fn run_json(cmd: &mut Command) -> Result<Value> {
    let out = cmd.output().context("running a workload")?;
    if !out.status.success() {
        bail!("workload failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let s = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(s.lines().last().unwrap_or("")).context("workload output")
}

/// One tracer's figures over the rounds of a churn mode.
struct PerTracer {
    tracer: Tracer,
    rates: Vec<f64>,
    /// Rate over the untraced rate of the same round.
    ratios: Vec<f64>,
    /// Tracer CPU, ms per 1,000 connections.
    cpu: Vec<f64>,
    /// Workload CPU (clients and servers), us per connection.
    work_us: Vec<f64>,
    dropped: u64,
}

impl PerTracer {
    fn new(tracer: Tracer) -> Self {
        PerTracer {
            tracer,
            rates: vec![],
            ratios: vec![],
            cpu: vec![],
            work_us: vec![],
            dropped: 0,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn run(o: Opts, portex: &Path) -> Result<()> {
    let tcplife = Command::new("tcplife")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let mut tracers = vec![
        Tracer::None,
        Tracer::Agent,
        Tracer::AgentFull,
        Tracer::WatchJson,
    ];
    if tcplife {
        tracers.push(Tracer::Tcplife);
    }
    let (rounds, secs) = if o.quick { (1, 1.0) } else { (4, 3.0) };
    let modes: Vec<(&str, &str, bool, u32)> = if o.quick {
        vec![("client-close v4", "127.0.0.1", true, 1)]
    } else {
        vec![
            ("server-close v4", "127.0.0.1", false, 1),
            ("client-close v4", "127.0.0.1", true, 1),
            ("client-close v4 keep-alive x10", "127.0.0.1", true, 10),
            ("server-close v6", "::1", false, 1),
            ("client-close v6", "::1", true, 1),
        ]
    };
    let mut rows = Vec::new();
    let mut table = Vec::new();
    let mut broken = Vec::new();
    for (mode, ip, client_closes, requests) in &modes {
        // Per tracer: rates, ratios to the same round's untraced rate, tracer CPU per
        // 1k connections, workload CPU per connection (us), drops.
        let mut per: Vec<PerTracer> = tracers.iter().map(|t| PerTracer::new(*t)).collect();
        for round in 0..rounds {
            // Interleave: a different order each round, untraced included every time.
            let mut base = f64::NAN;
            let mut results = Vec::new();
            for i in 0..tracers.len() {
                let t = tracers[(i + round) % tracers.len()];
                // A fresh namespace per run: TIME_WAIT left by one run (60 s) would
                // slow the next one's port search and skew the comparison.
                let ns = Ns::new("churn")?;
                ns.sysctl("net.ipv4.ip_local_port_range=1024 65535")?;
                let running = start(t, portex)?;
                let pid = running.as_ref().map(|r| r.child.id());
                let cpu0 = pid.map(cpu_ms).unwrap_or(0.0);
                let v = run_json(Command::new(xtask()).args([
                    "churn",
                    "--netns",
                    &ns.0,
                    "--ip",
                    ip,
                    "--ports",
                    "8",
                    "--threads",
                    "4",
                    "--requests",
                    &requests.to_string(),
                    "--seconds",
                    &secs.to_string(),
                    if *client_closes {
                        "--client-closes"
                    } else {
                        "--server-closes"
                    },
                ]))?;
                let cpu = pid.map(cpu_ms).unwrap_or(0.0) - cpu0;
                let (dropped, ok) = match running {
                    Some(r) => stop(r)?,
                    None => (0, true),
                };
                drop(ns);
                let conns = v["connections"].as_f64().unwrap_or(0.0);
                let rate = v["per_sec"].as_f64().unwrap_or(0.0);
                let work_us = v["cpu_ms"].as_f64().unwrap_or(f64::NAN) * 1000.0 / conns.max(1.0);
                if !ok {
                    broken.push(format!("{} exited with an error in {mode}", t.name()));
                }
                if o.quick && dropped > 0 && t != Tracer::Tcplife {
                    broken.push(format!("{} dropped {dropped} events in {mode}", t.name()));
                }
                if conns == 0.0 {
                    broken.push(format!("no connections in {mode} under {}", t.name()));
                }
                if t == Tracer::None {
                    base = rate;
                }
                results.push((t, rate));
                let e = per.iter_mut().find(|p| p.tracer == t).unwrap();
                e.rates.push(rate);
                e.work_us.push(work_us);
                if t != Tracer::None && conns > 0.0 {
                    e.cpu.push(cpu / (conns / 1000.0));
                }
                e.dropped += dropped;
                rows.push(json!({"section": "churn", "mode": mode, "tracer": t.name(), "round": round, "per_sec": rate,
                    "connections": conns, "tracer_cpu_ms": cpu, "workload_cpu_us_per_conn": work_us, "dropped": dropped}));
                eprintln!(
                    "bench: {mode:<32} {:<42} round {round}: {rate:>9.0} conn/s, workload {work_us:.1} us/conn, tracer cpu {cpu:.0} ms, dropped {dropped}",
                    t.name()
                );
            }
            for (t, rate) in results {
                per.iter_mut()
                    .find(|p| p.tracer == t)
                    .unwrap()
                    .ratios
                    .push(rate / base);
            }
        }
        let base_work = median(per[0].work_us.clone());
        for p in &per {
            table.push(
                json!({"section": "churn", "mode": mode, "tracer": p.tracer.name(),
                "median_per_sec": median(p.rates.clone()),
                "ratio_to_untraced": median(p.ratios.clone()),
                "ratios": p.ratios,
                "cpu_ms_per_1000_conn": median(p.cpu.clone()),
                "workload_cpu_us_per_conn": median(p.work_us.clone()),
                "workload_cpu_added_us_per_conn": median(p.work_us.clone()) - base_work,
                "dropped": p.dropped}),
            );
        }
    }

    // An unrelated syscall-heavy workload, untraced vs under the agent.
    let mut sys: Vec<(Tracer, Vec<f64>)> = vec![
        (Tracer::None, vec![]),
        (Tracer::Agent, vec![]),
        (Tracer::AgentFull, vec![]),
    ];
    for round in 0..rounds {
        for i in 0..sys.len() {
            let t = sys[(i + round) % sys.len()].0;
            let running = start(t, portex)?;
            let v = run_json(Command::new(xtask()).args([
                "syscalls",
                "--threads",
                "2",
                "--seconds",
                &secs.to_string(),
            ]))?;
            if let Some(r) = running {
                stop(r)?;
            }
            let rate = v["per_sec"].as_f64().unwrap_or(0.0);
            sys.iter_mut().find(|s| s.0 == t).unwrap().1.push(rate);
            rows.push(
                json!({"section": "syscalls", "tracer": t.name(), "round": round, "per_sec": rate}),
            );
            eprintln!(
                "bench: getppid loop {:<24} round {round}: {rate:>12.0} calls/s",
                t.name()
            );
        }
    }
    let base = median(sys[0].1.clone());
    for (t, v) in &sys {
        let m = median(v.clone());
        table.push(json!({"section": "syscalls", "tracer": t.name(), "median_per_sec": m, "ratio_to_untraced": m / base}));
    }

    // portex status vs ss vs netstat on many TIME_WAIT sockets.
    let tw_n: u64 = if o.quick { 10_000 } else { 100_000 };
    {
        let (ns, present) = time_wait_namespace("tw", tw_n)?;
        let mut timings: Vec<(&str, Vec<String>, Vec<f64>)> = vec![
            (
                "portex status --json",
                vec![
                    portex.display().to_string(),
                    "status".into(),
                    "--json".into(),
                ],
                vec![],
            ),
            ("ss -tan", vec!["ss".into(), "-tan".into()], vec![]),
        ];
        if Command::new("netstat")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            timings.push(("netstat -an", vec!["netstat".into(), "-tan".into()], vec![]));
        }
        for _ in 0..(if o.quick { 1 } else { 5 }) {
            for (_, cmd, v) in timings.iter_mut() {
                let t0 = Instant::now();
                let out = Command::new("ip")
                    .args(["netns", "exec", &ns.0])
                    .args(cmd.iter())
                    .stdout(Stdio::null())
                    .status()?;
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                if out.code().unwrap_or(2) > 1 {
                    broken.push(format!("{cmd:?} failed"));
                }
                v.push(ms);
            }
        }
        let ss_ms = median(timings[1].2.clone());
        for (name, _, v) in &timings {
            let m = median(v.clone());
            eprintln!("bench: {name:<24} on {present} TIME_WAIT sockets: {m:.1} ms");
            table.push(json!({"section": "status", "tool": name, "time_wait_sockets": present, "median_ms": m, "ratio_to_ss": m / ss_ms}));
        }
    }

    // Failure-to-event delay.
    {
        let ns = Ns::new("lat")?;
        ns.sysctl("net.ipv4.ip_local_port_range=40000 40003")?;
        let mut agent = Command::new(portex)
            .args(["agent", "--output", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, rx) = mpsc::channel::<u64>();
        let out = agent.stdout.take().unwrap();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if l.contains("\"connect_failed\"") {
                    let _ = tx.send(boot_ns());
                }
            }
        });
        let (etx, erx) = mpsc::channel::<String>();
        let err = agent.stderr.take().unwrap();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = etx.send(l);
            }
        });
        let end = Instant::now() + Duration::from_secs(60);
        while !erx
            .recv_timeout(Duration::from_millis(200))
            .is_ok_and(|l| l.contains("watching"))
        {
            if Instant::now() > end {
                bail!("the agent did not start");
            }
        }
        let n = if o.quick { 20 } else { 200 };
        let out = Command::new(xtask())
            .args([
                "failures",
                "--netns",
                &ns.0,
                "--count",
                &n.to_string(),
                "--gap-ms",
                "5",
            ])
            .output()?;
        let returned: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        let mut seen = Vec::new();
        while let Ok(t) = rx.recv_timeout(Duration::from_millis(1000)) {
            seen.push(t);
        }
        // SAFETY: our child.
        unsafe { libc::kill(agent.id() as i32, libc::SIGINT) };
        let _ = agent.wait();
        let k = returned.len().min(seen.len());
        if k == 0 || seen.len() < returned.len() {
            broken.push(format!(
                "{} failing connects, {} connect_failed events",
                returned.len(),
                seen.len()
            ));
        }
        // The fill-up failures come first; match the measured ones from the end.
        let (r, s) = (&returned[returned.len() - k..], &seen[seen.len() - k..]);
        let mut d: Vec<f64> = r
            .iter()
            .zip(s)
            .map(|(a, b)| b.saturating_sub(*a) as f64 / 1e6)
            .collect();
        d.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| {
            d.get(((d.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        eprintln!(
            "bench: failure-to-event delay over {k}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            p(0.5),
            p(0.99),
            p(1.0)
        );
        table.push(json!({"section": "failure_latency", "samples": k, "p50_ms": p(0.5), "p99_ms": p(0.99), "max_ms": p(1.0)}));
    }

    // Agent memory while many ports are held.
    {
        let held: u64 = if o.quick { 20_000 } else { 250_000 };
        let (_ns, present) = time_wait_namespace("rss", held)?;
        let r = start(Tracer::Agent, portex)?.unwrap();
        // Past one reconciliation (every 10 s), so that its cost is in the figure.
        thread::sleep(Duration::from_secs(12));
        let rss = rss_kib(r.child.id());
        let hwm = status_kib(r.child.id(), "VmHWM:");
        let _ = stop(r)?;
        eprintln!(
            "bench: agent RSS with {present} TIME_WAIT ports held: {:.1} MiB (peak {:.1} MiB)",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        table.push(json!({"section": "memory", "ports_held": present, "agent_rss_mib": rss as f64 / 1024.0, "agent_peak_rss_mib": hwm as f64 / 1024.0}));
    }

    let report = json!({"quick": o.quick, "rounds": rounds, "seconds_per_round": secs, "summary": table, "rounds_detail": rows, "broken": broken});
    if let Some(d) = o.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", render(&table));
    println!("(JSON: {})", o.out.display());
    if !broken.is_empty() {
        bail!("broken mechanics: {}", broken.join("; "));
    }
    Ok(())
}

/// The summary as a Markdown table (what the README shows).
fn render(table: &[Value]) -> String {
    let mut s = String::from(
        "| section | case | tracer / tool | result | ratio |\n|---|---|---|---|---|\n",
    );
    for r in table {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let line = match r["section"].as_str().unwrap_or("") {
            "churn" => format!(
                "| churn | {} | {} | {:.0} conn/s; workload {:.1} us CPU/conn ({:+.1}); tracer {:.2} ms CPU/1k conn; {} dropped | {:.3} |",
                r["mode"].as_str().unwrap_or(""),
                r["tracer"].as_str().unwrap_or(""),
                f("median_per_sec"),
                f("workload_cpu_us_per_conn"),
                f("workload_cpu_added_us_per_conn"),
                f("cpu_ms_per_1000_conn"),
                r["dropped"],
                f("ratio_to_untraced")
            ),
            "syscalls" => format!(
                "| syscalls | getppid loop, 2 threads | {} | {:.0} calls/s | {:.3} |",
                r["tracer"].as_str().unwrap_or(""),
                f("median_per_sec"),
                f("ratio_to_untraced")
            ),
            "status" => format!(
                "| status | {} TIME_WAIT sockets | {} | {:.1} ms | {:.2} x ss |",
                r["time_wait_sockets"],
                r["tool"].as_str().unwrap_or(""),
                f("median_ms"),
                f("ratio_to_ss")
            ),
            "failure_latency" => format!(
                "| failure -> event | {} failing connects | portex agent | p50 {:.2} ms, p99 {:.2} ms | |",
                r["samples"],
                f("p50_ms"),
                f("p99_ms")
            ),
            "memory" => format!(
                "| memory | {} ports held | portex agent | {:.1} MiB RSS (peak {:.1}) | |",
                r["ports_held"],
                f("agent_rss_mib"),
                f("agent_peak_rss_mib")
            ),
            _ => continue,
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}

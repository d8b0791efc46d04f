//! Connection churn (`cargo xtask churn`), untraced and under each tracer, in interleaved
//! rounds: rate, workload and tracer CPU, drops, and what each tracer saw.
use std::process::Command;

use anyhow::Result;
use portex_e2e::cpu_ms;
use serde_json::{Value, json};

use super::{
    Ctx, Report, bench_ns, installed, median, run_json,
    tracers::{Stopped, Tracer, start, stop},
    xtask,
};

/// A churn mode: its name, the address, whether the client closes first, requests per
/// connection.
type Mode = (&'static str, &'static str, bool, u32);

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
    /// Kernel events and tracepoint runs the kernel skipped, over every round.
    events: u64,
    skipped: u64,
    /// Output lines and bytes (tracers whose output is counted) and the connections
    /// of those runs.
    lines: u64,
    bytes: u64,
    counted_conns: f64,
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
            events: 0,
            skipped: 0,
            lines: 0,
            bytes: 0,
            counted_conns: 0.0,
        }
    }

    fn add(&mut self, s: &Sample) {
        self.rates.push(s.rate);
        self.work_us.push(s.work_us);
        if self.tracer != Tracer::None && s.conns > 0.0 {
            self.cpu.push(s.cpu / (s.conns / 1000.0));
        }
        self.dropped += s.dropped;
        self.events += s.events;
        self.skipped += s.skipped;
        if let Some((l, b)) = s.output {
            self.lines += l;
            self.bytes += b;
            self.counted_conns += s.conns;
        }
    }

    /// Output lines and bytes per 1,000 connections, where the output is counted.
    fn per_1000(&self, n: u64) -> Option<f64> {
        (self.counted_conns > 0.0).then(|| n as f64 * 1000.0 / self.counted_conns)
    }

    /// The summary row, against the untraced workload CPU per connection.
    fn json(&self, mode: &str, base_work: f64) -> Value {
        json!({"section": "churn", "mode": mode, "tracer": self.tracer.name(),
        "median_per_sec": median(self.rates.clone()),
        "ratio_to_untraced": median(self.ratios.clone()),
        "ratios": self.ratios,
        "cpu_ms_per_1000_conn": median(self.cpu.clone()),
        "workload_cpu_us_per_conn": median(self.work_us.clone()),
        "workload_cpu_added_us_per_conn": median(self.work_us.clone()) - base_work,
        "dropped": self.dropped,
        "kernel_runs_skipped": self.skipped,
        "lines_per_1000_conn": self.per_1000(self.lines),
        "bytes_per_1000_conn": self.per_1000(self.bytes),
        "skipped_per_million_events": if self.events > 0 {
            self.skipped as f64 * 1e6 / self.events as f64
        } else {
            f64::NAN
        }})
    }
}

/// What one run of the generator measured.
struct Sample {
    /// Connections per second.
    rate: f64,
    conns: f64,
    /// Tracer CPU over the run, ms.
    cpu: f64,
    /// Workload CPU, us per connection.
    work_us: f64,
    dropped: u64,
    /// portex's kernel events and the tracepoint runs the kernel skipped (0 for others).
    events: u64,
    skipped: u64,
    /// (lines, bytes) the tracer wrote, where counted.
    output: Option<(u64, u64)>,
}

pub(super) fn run(ctx: &Ctx, r: &mut Report) -> Result<()> {
    let mut tracers = vec![
        Tracer::None,
        Tracer::Agent,
        Tracer::AgentFull,
        Tracer::WatchJson,
        Tracer::WatchConnections,
    ];
    if installed("tcplife", "-h") {
        tracers.push(Tracer::Tcplife);
    }
    let modes: Vec<Mode> = if ctx.quick {
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
    for m in &modes {
        one_mode(ctx, r, &tracers, m)?;
    }
    Ok(())
}

/// The rounds of one mode, then its summary rows.
fn one_mode(ctx: &Ctx, r: &mut Report, tracers: &[Tracer], m: &Mode) -> Result<()> {
    // Per tracer: rates, ratios to the same round's untraced rate, tracer CPU per
    // 1k connections, workload CPU per connection (us), drops.
    let mut per: Vec<PerTracer> = tracers.iter().map(|t| PerTracer::new(*t)).collect();
    for round in 0..ctx.rounds {
        // Interleave: a different order each round, untraced included every time.
        let mut base = f64::NAN;
        let mut results = Vec::new();
        for i in 0..tracers.len() {
            let t = tracers[(i + round) % tracers.len()];
            let s = one_run(ctx, r, m, t, round)?;
            if t == Tracer::None {
                base = s.rate;
            }
            results.push((t, s.rate));
            per.iter_mut().find(|p| p.tracer == t).unwrap().add(&s);
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
        r.table.push(p.json(m.0, base_work));
    }
    Ok(())
}

/// One run of the generator under `t`: its row, and its checks.
fn one_run(ctx: &Ctx, r: &mut Report, m: &Mode, t: Tracer, round: usize) -> Result<Sample> {
    let &(mode, ip, client_closes, requests) = m;
    // A fresh namespace per run: TIME_WAIT left by one run (60 s) would slow the next
    // one's port search and skew the comparison.
    let ns = bench_ns("churn")?;
    ns.try_port_range(1024, 65535)?;
    let running = start(t, ctx.portex)?;
    let pid = running.as_ref().map(|run| run.child.id());
    let cpu0 = pid.map(cpu_ms).unwrap_or(0.0);
    let v = run_json(Command::new(xtask()).args([
        "churn",
        "--netns",
        &ns.name,
        "--ip",
        ip,
        "--ports",
        "8",
        "--threads",
        "4",
        "--requests",
        &requests.to_string(),
        "--seconds",
        &ctx.secs.to_string(),
        if client_closes {
            "--client-closes"
        } else {
            "--server-closes"
        },
    ]))?;
    let cpu = pid.map(cpu_ms).unwrap_or(0.0) - cpu0;
    let stopped = running.map(stop).transpose()?;
    drop(ns);
    let conns = v["connections"].as_f64().unwrap_or(0.0);
    let rate = v["per_sec"].as_f64().unwrap_or(0.0);
    let work_us = v["cpu_ms"].as_f64().unwrap_or(f64::NAN) * 1000.0 / conns.max(1.0);
    let section = format!("churn {mode}");
    let dropped = stopped.as_ref().map(Stopped::dropped).unwrap_or(0);
    if let Some(s) = &stopped {
        check(ctx, s, conns, &section, &mut r.broken);
    }
    if conns == 0.0 {
        r.broken
            .push(format!("no connections in {mode} under {}", t.name()));
    }
    let mut row = json!({"section": "churn", "mode": mode, "tracer": t.name(), "round": round, "per_sec": rate,
        "connections": conns, "tracer_cpu_ms": cpu, "workload_cpu_us_per_conn": work_us, "dropped": dropped});
    let mut seen = String::new();
    if let Some(s) = &stopped {
        row["tracer_exit"] = s.json();
        seen = match s.events {
            Some(n) => format!(
                ", {n} kernel events ({:.1}/conn)",
                n as f64 / conns.max(1.0)
            ),
            None => String::new(),
        };
        if let (Some(l), Some(b)) = (s.lines, s.bytes) {
            seen.push_str(&format!(", {l} lines, {b} bytes"));
        }
        seen.push_str(&format!(", {}", s.exit));
    }
    r.rows.push(row);
    eprintln!(
        "bench: {mode:<32} {:<42} round {round}: {rate:>9.0} conn/s, workload {work_us:.1} us/conn, tracer cpu {cpu:.0} ms, dropped {dropped}{seen}",
        t.name()
    );
    Ok(Sample {
        rate,
        conns,
        cpu,
        work_us,
        dropped,
        events: stopped.as_ref().and_then(|s| s.events).unwrap_or(0),
        skipped: stopped.as_ref().and_then(|s| s.skipped).unwrap_or(0),
        output: stopped.as_ref().and_then(|s| s.lines.zip(s.bytes)),
    })
}

/// What a tracer must show after a churn run of `conns` connections.
fn check(ctx: &Ctx, s: &Stopped, conns: f64, section: &str, broken: &mut Vec<String>) {
    let t = s.tracer;
    s.check(section, broken);
    let dropped = s.dropped();
    if ctx.quick && dropped > 0 && t != Tracer::Tcplife {
        broken.push(format!(
            "{} dropped {dropped} events in {section}",
            t.name()
        ));
    }
    // Each connection the generator completed went SYN_SENT -> ESTABLISHED -> ... -> CLOSE
    // on its client side, and the transitions into ESTABLISHED and into CLOSE both cross
    // the ring buffer (README "How it works"): at least 2 records per connection under
    // every portex tracer; accepted sockets (--accepted, watch) and the rest of the
    // host's traffic only add. The check asks for 1 per connection, so that it catches
    // events missing wholesale, not accounting details.
    if let (true, Some(n)) = (t.is_portex(), s.events)
        && (n == 0 || (n as f64) < conns)
    {
        broken.push(format!(
            "{} reported {n} kernel events for {conns} connections in {section} (at least 1 per connection expected, 2 normally)",
            t.name()
        ));
    }
    if t == Tracer::Tcplife && s.lines == Some(0) {
        broken.push(format!("tcplife printed no connection in {section}"));
    }
}

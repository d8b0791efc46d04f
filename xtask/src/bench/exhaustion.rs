//! Kernel runs skipped during an exhaustion: a client in a 20-port namespace connects in
//! rounds of 40 (20 succeed, 20 fail with EADDRNOTAVAIL), closes them, and starts over,
//! with the agent's syscall hooks attached (what auto mode does under pressure). The
//! kernel skips a tracepoint program that fires while another BPF program runs on the
//! same CPU (recursion_misses); each failure's forced ring-buffer wake-up used to make
//! that happen to thousands of runs a second (see portex-ebpf URGENT_WAKE_GAP_NS).
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{
    Ctx, Report, bench_ns,
    tracers::{Tracer, start, stop},
    xtask,
};

pub(super) fn run(ctx: &Ctx, r: &mut Report) -> Result<()> {
    let ns = bench_ns("exh")?;
    ns.try_port_range(41000, 41019)?;
    let seconds = if ctx.quick { 3.0 } else { 15.0 };
    let running = start(Tracer::AgentFull, ctx.portex)?.unwrap();
    let out = Command::new(xtask())
        .args([
            "exhaust-loop",
            "--netns",
            &ns.name,
            "--per-round",
            "40",
            "--seconds",
            &seconds.to_string(),
        ])
        .output()
        .context("running the exhaustion loop")?;
    let stopped = stop(running)?;
    stopped.check("exhaustion", &mut r.broken);
    let w: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let failed = w["failed"].as_u64().unwrap_or(0);
    if failed == 0 {
        r.broken.push(format!(
            "exhaustion: the loop made no failing connect: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let (events, skipped) = (stopped.events.unwrap_or(0), stopped.skipped.unwrap_or(0));
    let per_million = skipped as f64 * 1e6 / events.max(1) as f64;
    eprintln!(
        "bench: exhaustion loop {seconds} s: {} connects, {failed} failed; agent: {events} kernel events, {skipped} runs skipped ({per_million:.1} per million); agent {}",
        w["connects"], stopped.exit
    );
    r.table
        .push(json!({"section": "exhaustion", "seconds": seconds,
        "connects": w["connects"], "failed": failed, "kernel_events": events,
        "kernel_runs_skipped": skipped, "skipped_per_million_events": per_million,
        "agent_exit": stopped.json()}));
    Ok(())
}

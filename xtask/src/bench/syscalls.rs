//! An unrelated syscall-heavy workload (`cargo xtask syscalls`, a getppid loop),
//! untraced vs under the agent.
use std::process::Command;

use anyhow::Result;
use serde_json::json;

use super::{
    Ctx, Report, median, run_json,
    tracers::{Tracer, start, stop},
    xtask,
};

pub(super) fn run(ctx: &Ctx, r: &mut Report) -> Result<()> {
    let mut sys: Vec<(Tracer, Vec<f64>)> = vec![
        (Tracer::None, vec![]),
        (Tracer::Agent, vec![]),
        (Tracer::AgentFull, vec![]),
    ];
    for round in 0..ctx.rounds {
        for i in 0..sys.len() {
            let t = sys[(i + round) % sys.len()].0;
            let running = start(t, ctx.portex)?;
            let v = run_json(Command::new(xtask()).args([
                "syscalls",
                "--threads",
                "2",
                "--seconds",
                &ctx.secs.to_string(),
            ]))?;
            let stopped = running.map(stop).transpose()?;
            let rate = v["per_sec"].as_f64().unwrap_or(0.0);
            sys.iter_mut().find(|s| s.0 == t).unwrap().1.push(rate);
            let mut row =
                json!({"section": "syscalls", "tracer": t.name(), "round": round, "per_sec": rate});
            if let Some(s) = &stopped {
                s.check("syscalls", &mut r.broken);
                row["tracer_exit"] = s.json();
            }
            r.rows.push(row);
            eprintln!(
                "bench: getppid loop {:<24} round {round}: {rate:>12.0} calls/s",
                t.name()
            );
        }
    }
    let base = median(sys[0].1.clone());
    for (t, v) in &sys {
        let m = median(v.clone());
        r.table.push(json!({"section": "syscalls", "tracer": t.name(), "median_per_sec": m, "ratio_to_untraced": m / base}));
    }
    Ok(())
}

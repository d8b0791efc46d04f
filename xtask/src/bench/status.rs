//! `portex status` vs `ss` vs `netstat` on many TIME_WAIT sockets: wall time of each, and
//! its ratio to ss.
use std::{
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::Result;
use serde_json::json;

use super::{Ctx, Report, installed, median, time_wait_namespace};

pub(super) fn run(ctx: &Ctx, r: &mut Report) -> Result<()> {
    let tw_n: u64 = if ctx.quick { 10_000 } else { 100_000 };
    let (ns, present) = time_wait_namespace("tw", tw_n)?;
    let mut timings: Vec<(&str, Vec<String>, Vec<f64>)> = vec![
        (
            "portex status --json",
            vec![
                ctx.portex.display().to_string(),
                "status".into(),
                "--json".into(),
            ],
            vec![],
        ),
        ("ss -tan", vec!["ss".into(), "-tan".into()], vec![]),
    ];
    if installed("netstat", "--version") {
        timings.push(("netstat -an", vec!["netstat".into(), "-tan".into()], vec![]));
    }
    for _ in 0..(if ctx.quick { 1 } else { 5 }) {
        for (name, cmd, v) in timings.iter_mut() {
            let t0 = Instant::now();
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.name])
                .args(cmd.iter())
                .stdout(Stdio::null())
                .status()?;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            // portex status: 1 and 2 are its verdict (warning, critical), 3 a failure.
            let worst_ok = if name.starts_with("portex") { 2 } else { 1 };
            if out.code().unwrap_or(3) > worst_ok {
                r.broken.push(format!("{cmd:?} failed"));
            }
            v.push(ms);
        }
    }
    let ss_ms = median(timings[1].2.clone());
    for (name, _, v) in &timings {
        let m = median(v.clone());
        eprintln!("bench: {name:<24} on {present} TIME_WAIT sockets: {m:.1} ms");
        r.table.push(json!({"section": "status", "tool": name, "time_wait_sockets": present, "median_ms": m, "ratio_to_ss": m / ss_ms}));
    }
    Ok(())
}

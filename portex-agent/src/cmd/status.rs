//! `portex status`: a one-shot report of every pool, without loading eBPF.
use anyhow::{Context, Result};

use crate::{
    cmd::cli::StatusArgs,
    logic::demand::recent_close_rates,
    logic::diagnose::{LiveFacts, diagnose},
    logic::pool::build_pools,
    render::status::{NetnsReport, render_json, render_text},
    sys::snapshot,
};

/// Exit status: 0 when no pool is over the warning threshold, 1 when one is.
pub(crate) fn run(args: StatusArgs) -> Result<i32> {
    let th = args.thresholds.thresholds()?;
    let here = crate::sys::netns::current()?.inode;
    let owners = crate::sys::owners::socket_owners();
    // Who holds TIME_WAIT ports only a running portex knows.
    let running = crate::sys::tw_owners_file::read_running();
    let mut reports = Vec::new();
    for ns in snapshot::namespaces(args.all_netns)? {
        let snap = match snapshot::read(&ns) {
            Ok(s) => s,
            // A namespace can vanish while we walk them; only ours must be readable.
            Err(e) if ns.inode != here => {
                eprintln!(
                    "portex: warning: skipping network namespace {}: {e:#}",
                    ns.inode
                );
                continue;
            }
            Err(e) => return Err(e).context("reading this network namespace"),
        };
        let mut pools = build_pools(ns.inode, &snap.settings, &snap.sockets, |s| {
            owners.get(&s.inode).cloned()
        });
        let tw_named = running
            .as_ref()
            .map(|(known, _)| pools.iter_mut().map(|p| known.name_in(p)).sum::<u32>());
        let facts = LiveFacts {
            time_wait_overflows: snap.time_wait_overflows,
            close_rates: recent_close_rates(ns.inode, &snap.settings, &snap.sockets),
            ..LiveFacts::default()
        };
        let diagnoses = diagnose(&snap.settings, &pools, &th, &facts);
        let id = (snap.netns.inode, snap.netns.name.clone());
        let mut report = NetnsReport::new(id, here, snap.settings, &snap.sockets, pools, diagnoses);
        report.tw_owners_named = tw_named;
        reports.push(report);
    }
    let over = reports
        .iter()
        .any(|r| r.pools.iter().any(|p| p.utilisation() >= th.warning));
    let out = if args.json {
        render_json(&reports, &th, args.limit)
    } else {
        render_text(&reports, &th, args.limit)
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("writing the report");
        }
        _ => {}
    }
    Ok(if over { 1 } else { 0 })
}

//! `portex status`: a one-shot report of every pool, without loading eBPF.
use anyhow::{Context, Result};

use crate::{
    cmd::cli::StatusArgs,
    logic::demand::recent_close_rates,
    logic::diagnose::{LiveFacts, Severity, Thresholds, diagnose},
    logic::pool::build_pools,
    logic::{nat::nat_pools, nat_diagnose::diagnose_nat},
    render::status::{Agents, NatReport, NetnsReport, render_json, render_text},
    sys::snapshot,
};

/// Exit statuses as monitoring plugins (Nagios, Icinga, Sensu, check_mk) read them:
/// the fullest pool is below --warn, at or above it, at or above --critical; or the
/// check could not run (bad flags, no such namespace, /proc or netlink unreadable).
pub(crate) const OK: i32 = 0;
pub(crate) const WARNING: i32 = 1;
pub(crate) const CRITICAL: i32 = 2;
pub(crate) const UNKNOWN: i32 = 3;

/// The exit status of the fullest of these pool utilisations.
fn exit_status(utilisations: impl Iterator<Item = f64>, th: &Thresholds) -> i32 {
    match th.severity(utilisations.fold(0.0, f64::max)) {
        None | Some(Severity::Info) => OK,
        Some(Severity::Warning) => WARNING,
        Some(Severity::Critical) => CRITICAL,
    }
}

/// Returns the exit status (OK, WARNING or CRITICAL); an error is UNKNOWN.
pub(crate) fn run(args: StatusArgs) -> Result<i32> {
    let th = args.thresholds.thresholds()?;
    let here = crate::sys::netns::current()?.inode;
    let namespaces = match &args.netns {
        Some(spec) => vec![crate::sys::netns::find(spec)?],
        None => snapshot::namespaces(args.all_netns)?,
    };
    let owners = crate::sys::owners::socket_owners();
    // Who holds TIME_WAIT ports only a running portex knows.
    let running = crate::sys::tw_owners_file::read_running();
    let mut reports = Vec::new();
    for ns in namespaces {
        let snap = match snapshot::read(&ns) {
            Ok(s) => s,
            // A namespace can vanish while we walk them; only ours (or the one asked
            // for) must be readable.
            Err(e) if ns.inode != here && args.netns.is_none() => {
                tracing::warn!("skipping network namespace {}: {e:#}", ns.inode);
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading network namespace {}", ns.inode));
            }
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
        let mut diagnoses = diagnose(&snap.settings, &pools, &th, &facts);
        let nat = snap.nat.as_ref().map(|n| {
            let pools = nat_pools(ns.inode, &n.entries, n.range);
            diagnoses.extend(diagnose_nat(&pools, Some(n.table), n.tw_timeout_s, &th));
            NatReport {
                pools,
                table: n.table,
                range: n.range,
                stats: n.stats,
            }
        });
        diagnoses.sort_by_key(|d| std::cmp::Reverse(d.severity));
        let id = (snap.netns.inode, snap.netns.name.clone());
        let mut report = NetnsReport::new(id, here, snap.settings, &snap.sockets, pools, diagnoses);
        report.tw_owners_named = tw_named;
        report.nat = nat;
        reports.push(report);
    }
    // NAT pools count as much as the host's own: either can refuse a connection.
    let code = exit_status(
        reports.iter().flat_map(|r| {
            r.pools.iter().map(|p| p.utilisation()).chain(
                r.nat
                    .iter()
                    .flat_map(|n| n.pools.iter().map(|p| p.utilisation())),
            )
        }),
        &th,
    );
    let agents = running.as_ref().map(|(known, pids)| Agents {
        pids,
        not_loaded: &known.programs_not_loaded,
    });
    let out = if args.json {
        render_json(&reports, agents.as_ref(), &th, args.limit)
    } else {
        render_text(&reports, agents.as_ref(), &th, args.limit)
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
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fullest_pool_sets_the_exit_status() {
        let th = Thresholds {
            warning: 0.5,
            critical: 0.9,
        };
        let code = |u: &[f64]| exit_status(u.iter().copied(), &th);
        assert_eq!(code(&[]), OK, "no pool at all");
        assert_eq!(code(&[0.1, 0.49]), OK);
        assert_eq!(code(&[0.1, 0.5]), WARNING, "at the threshold is over it");
        assert_eq!(code(&[0.9, 0.2]), CRITICAL);
        assert_eq!(code(&[1.0]), CRITICAL);
    }
}

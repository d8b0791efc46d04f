//! The packaged unit's capability set (packaging/systemd/portex.service): the agent
//! does its whole job with exactly that set, and each capability in it is needed: drop
//! one and a specific part of the job fails. The observed process belongs to another
//! user (nobody) in another network namespace, as on a real host.
use std::{path::PathBuf, process::Command, time::Duration};

use portex_e2e::*;

/// The unit's CapabilityBoundingSet, as setpriv names them ("sys_admin", ...).
fn unit_caps() -> Vec<String> {
    let unit = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/portex.service"),
    )
    .unwrap();
    unit.lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit names its capabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// A driver run as uid 65534 inside `ns` (entered by `ip netns exec` as root: nobody
/// may not setns), holding its sockets until dropped.
fn nobody(ns: &Netns, args: &[&str]) -> Held {
    Held::start(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "setpriv"])
            .args(SETPRIV_NOBODY)
            .arg(public_copy(&driver_bin()))
            .args(args),
    )
    .unwrap_or_else(|e| panic!("the driver started: {e}"))
}

/// What the agent got right with a given bounding set.
#[derive(Debug, PartialEq)]
struct Seen {
    /// The pool of the other namespace, with its real size (the namespace's sysctls).
    pool: Option<(u64, u64)>,
    /// The owner of sockets that existed before the agent (found through /proc/PID/fd).
    holder: bool,
    /// `portex.netns` on the other user's events (read through /proc/PID/ns/net).
    netns: bool,
    /// Events of the other user's connections at all (the programs loaded).
    events: usize,
}

fn run_with(set: &[String]) -> Result<Seen, String> {
    let bounding = format!(
        "--bounding-set=-all{}",
        set.iter().map(|c| format!(",+{c}")).collect::<String>()
    );
    let ns = Netns::with_range("caps", 40000, 40009);
    // Four connections held from before the agent starts: 4 of 10 ports. The metrics
    // name processes, not pids: this one gets a name of its own.
    let old_name = format!("pxcap{}", std::process::id());
    let old = nobody(
        &ns,
        &[
            "--name",
            &old_name,
            "pool-mix",
            "127.0.0.1:7460",
            "127.0.0.1:7461",
            "0",
            "4",
            "0",
        ],
    );
    let portex = Portex::start_wrapped(
        &["setpriv", &bounding],
        &[
            "agent",
            "--metrics",
            "127.0.0.1:0",
            "--metrics-pool-min",
            "0",
            "--metrics-max-pools",
            "10000",
            "--metrics-top-processes",
            "10000",
        ],
    );
    if portex.stderr_now().iter().any(|l| l.contains("error")) {
        return Err(portex.stop().stderr.join("\n"));
    }
    let eff = std::fs::read_to_string(format!("/proc/{}/status", portex.pid())).unwrap();
    let capeff = eff
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        capeff.count_ones() as usize,
        set.len(),
        "{set:?}: {capeff:x}"
    );
    let addr = portex.metrics_addr();
    // New connections while the agent runs, kept open until their events are seen.
    let new = nobody(
        &ns,
        &[
            "pool-mix",
            "127.0.0.1:7462",
            "127.0.0.1:7463",
            "0",
            "2",
            "0",
        ],
    );
    let seen_new = portex.wait_events(new.driven.pid, Duration::from_secs(10), |ev| {
        with_action(ev, "established").len() >= 2
    });
    let inode = ns.inode();
    let labels = format!(
        "netns=\"{inode}\",transport=\"tcp\",source_address=\"127.0.0.1\",destination_address=\"127.0.0.1\",destination_port=\"7460\""
    );
    let old_label = format!("process_name=\"{old_name}\"");
    // Gauges are published every second; the owner of old sockets is looked up at the
    // first reconciliation (10 s).
    let (_, body) = scrape_until(&addr, Duration::from_secs(25), |body| {
        body.contains(&old_label)
    });
    let gauge = |name: &str| -> Option<u64> {
        metric(&body, &format!("{name}{{{labels}}}")).map(|v| v as u64)
    };
    let pool = gauge("portex_pool_size_ports").zip(gauge("portex_pool_used_ports"));
    let holder = body
        .lines()
        .any(|l| l.starts_with("portex_process_held_ports{") && l.contains(&old_label));
    let events = portex.events_now(new.driven.pid);
    let netns = seen_new && events.iter().all(|e| e["portex"]["netns"] == inode);
    drop((new, old));
    let fin = portex.stop();
    assert_eq!(fin.code, Some(0), "{set:?}: {:?}", fin.stderr);
    Ok(Seen {
        pool,
        holder,
        netns,
        events: events.len(),
    })
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn the_units_capabilities_are_sufficient_and_each_is_needed() {
    if !require_root() {
        return;
    }
    let caps = unit_caps();
    let all = run_with(&caps).expect("the agent starts with the unit's set");
    assert_eq!(
        all,
        Seen {
            pool: Some((10, 4)),
            holder: true,
            netns: true,
            events: all.events,
        },
        "with exactly {caps:?}"
    );
    assert!(all.events >= 4, "{all:?}");
    let without = |cap: &str| -> Result<Seen, String> {
        let set: Vec<String> = caps.iter().filter(|c| *c != cap).cloned().collect();
        assert_eq!(set.len() + 1, caps.len(), "{cap} is in the unit");
        run_with(&set)
    };
    // setns() into the other namespace: its pools and sysctls.
    let s = without("sys_admin");
    assert!(
        s.as_ref().map_or(true, |s| s.pool != Some((10, 4))),
        "without sys_admin: {s:?}"
    );
    // /proc/PID/ns/net of another user's process.
    let s = without("sys_ptrace").expect("starts without sys_ptrace");
    assert!(!s.netns, "without sys_ptrace: {s:?}");
    // /proc/PID/fd of another user's process: the owner of sockets older than the agent.
    let s = without("dac_read_search").expect("starts without dac_read_search");
    assert!(!s.holder, "without dac_read_search: {s:?}");
}

//! The packaged unit's capability set (packaging/systemd/portex.service): the agent
//! does its whole job with exactly that set, and each capability in it is needed: drop
//! one and a specific part of the job fails. The observed process belongs to another
//! user (nobody) in another network namespace, as on a real host.
//!
//! Every run is inside the emulation of the rest of the unit's sandbox (its syscall
//! filter, address families, namespaces, read-only file system, hidden /proc: see the
//! driver's unit-sandbox), so the whole job also works under the unit's hardening.
use std::{process::Command, time::Duration};

use portex_e2e::*;

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
    /// Its TIME_WAIT owners for `status` in /run/portex (the unit's RuntimeDirectory).
    tw_owners: bool,
    /// The other namespace's conntrack table in the metrics (read over ctnetlink).
    conntrack: bool,
}

fn run_with(set: &[String]) -> Result<Seen, String> {
    let sandbox = unit_sandbox(set);
    let sandboxed = sandbox.is_some();
    let wrapper = sandbox.unwrap_or_else(|| {
        let bounding = format!(
            "--bounding-set=-all{}",
            set.iter().map(|c| format!(",+{c}")).collect::<String>()
        );
        vec!["setpriv".into(), bounding]
    });
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let ns = Netns::with_range("caps", 40000, 40009);
    // A rule with a conntrack match: the namespace tracks its connections (loopback
    // included), so its table holds the test's.
    for rule in [
        "add table inet caps",
        "add chain inet caps out { type filter hook output priority 0 ; }",
        "add rule inet caps out ct state new counter",
    ] {
        let (code, _, err) = ns.exec(&["sh", "-c", &format!("nft '{rule}'")]);
        assert_eq!(code, Some(0), "nft {rule}: {err}");
    }
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
        &wrapper,
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
    if sandboxed {
        assert!(
            eff.contains("\nSeccomp:\t2\n"),
            "the agent runs under the filter"
        );
    }
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
    // Readable by a status run by any user, whatever the unit's UMask.
    let tw_owners = std::fs::metadata(format!("/run/portex/tw-owners/{}.json", portex.pid()))
        .is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o777 == 0o644
        });
    let netns = seen_new && events.iter().all(|e| e["portex"]["netns"] == inode);
    // The NAT scanner's first scan came before the gauges above.
    let conntrack = metric(
        &body,
        &format!("portex_conntrack_entries{{netns=\"{inode}\"}}"),
    )
    .is_some_and(|n| n >= 4.0);
    drop((new, old));
    let fin = portex.stop();
    assert_eq!(fin.code, Some(0), "{set:?}: {:?}", fin.stderr);
    Ok(Seen {
        pool,
        holder,
        netns,
        events: events.len(),
        tw_owners,
        conntrack,
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
            tw_owners: true,
            conntrack: true,
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
    // ctnetlink: the conntrack table, and so the NAT pools.
    let s = without("net_admin").expect("starts without net_admin");
    assert!(!s.conntrack, "without net_admin: {s:?}");
}

/// The emulation of the unit's sandbox that the test above runs the agent in does
/// confine: what the unit forbids fails inside it, what it allows works.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn the_emulated_sandbox_confines_as_the_unit_does() {
    if !require_root() {
        return;
    }
    let Some(wrapper) = unit_sandbox(&unit_caps()) else {
        return;
    };
    let sh = |script: &str| -> (Option<i32>, Option<i32>, String) {
        use std::os::unix::process::ExitStatusExt;
        let out = Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .args(["sh", "-c", script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), out.status.signal(), text)
    };
    let (_, _, status) = sh("cat /proc/self/status");
    assert!(status.contains("\nSeccomp:\t2\n"), "{status}");
    assert!(status.contains("\nNoNewPrivs:\t1\n"), "{status}");
    // CAP_DAC_READ_SEARCH (2), CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21).
    assert!(status.contains("\nCapBnd:\t0000000000281004\n"), "{status}");
    let (_, _, mask) = sh("umask");
    assert_eq!(mask.trim(), "0027");
    // ProtectSystem=strict, with the runtime directory writable.
    let (code, _, text) = sh("touch /etc/portex-sandbox-probe");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("Read-only file system"), "{text}");
    let probe = format!("/run/portex/sandbox-probe-{}", std::process::id());
    let (code, _, text) = sh(&format!("touch {probe} && rm {probe}"));
    assert_eq!(code, Some(0), "{text}");
    // RestrictNamespaces=net: a mount namespace is refused, a network one is not.
    let (code, _, text) = sh("unshare --mount true");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    let (code, _, text) = sh("unshare --net true");
    assert_eq!(code, Some(0), "{text}");
    // SystemCallFilter: mount() is not in it (SystemCallErrorNumber=EPERM: it fails).
    let (code, signal, text) = sh("mount -t tmpfs none /mnt");
    assert!(code.is_some_and(|c| c != 0) && signal.is_none(), "{text}");
    assert!(!sh("grep ' /mnt ' /proc/self/mountinfo").2.contains("tmpfs"));
}

/// Where tracefs is not mounted (sys-kernel-tracing.mount does not run in LXC), the
/// filter refuses the agent's own mount() with EPERM (SystemCallErrorNumber) and the
/// agent exits with the one line that says how to mount it. tracefs is unmounted in a
/// mount namespace of the test's own, not on the host.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn without_tracefs_the_sandboxed_agent_says_how_to_mount_it() {
    if !require_root() {
        return;
    }
    let Some(wrapper) = unit_sandbox(&unit_caps()) else {
        return;
    };
    let script = format!(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
         exec {} {} agent --output /dev/null",
        wrapper.join(" "),
        portex_bin().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "slave", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Operation not permitted")
            && stderr.contains("mount it with: mount -t tracefs nodev /sys/kernel/tracing"),
        "{stderr}"
    );
}

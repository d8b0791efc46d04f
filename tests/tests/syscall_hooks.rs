//! `--syscall-hooks auto`, the agent's default: the connect/bind syscall tracepoints slow
//! every system call of the host, so they are attached only while ports run short. Alone
//! in its test binary: other tests' exhaustions would attach the hooks too.
use std::{
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use portex_e2e::*;
use serde_json::Value;

/// The tests of this file each watch the whole host: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the driver in a new namespace with a 4-port range (removed afterwards).
fn in_small_namespace(tag: &str, args: &[&str]) -> Driven {
    let ns = Netns::with_range(tag, 40000, 40003);
    ns.drive(args)
}

/// The agent at its defaults with a 1 s linger, alone on the host among these tests;
/// None without root.
fn auto_agent() -> Option<(MutexGuard<'static, ()>, Portex)> {
    if !require_root() {
        return None;
    }
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Some((
        one,
        Portex::start(&["agent", "--syscall-hooks-linger", "1"]),
    ))
}

fn errno_names(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["error"]["code"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn auto_mode_attaches_the_hooks_at_the_first_port_failure_and_detaches_when_quiet() {
    let Some((_one, portex)) = auto_agent() else {
        return;
    };
    assert!(
        portex.wait_stderr("3 programs attached, syscall hooks auto", 1, Duration::ZERO),
        "starts without the syscall hooks"
    );

    // Without the hooks, the exhaustion is still seen: the state signature.
    let tcp = in_small_namespace("auto-tcp", &["exhaust-tcp", "127.0.0.1:7100", "6"]);
    assert!(
        portex.wait_stderr("syscall hooks attached", 1, Duration::from_secs(10)),
        "a port failure attaches the hooks"
    );
    // With them, bind(0) exhaustion (invisible to the state tracepoint) is reported.
    let bind = in_small_namespace("auto-bind", &["exhaust-bind", "127.0.0.1:0", "6"]);
    // Both namespaces are gone: the next reconciliation forgets their pools, and after
    // the linger the hooks detach.
    assert!(
        portex.wait_stderr("syscall hooks detached", 1, Duration::from_secs(40)),
        "detached once quiet"
    );
    // Detached, the in-flight maps were emptied: an exhaustion is still reported, once
    // per failing connect, and attaches the hooks again.
    let again = in_small_namespace("auto-again", &["exhaust-tcp", "127.0.0.1:7101", "6"]);
    assert!(
        portex.wait_stderr("syscall hooks attached", 2, Duration::from_secs(10)),
        "attached again"
    );
    for d in [&tcp, &again] {
        let n = d.facts("connect err ").len();
        assert!(portex.wait_events(d.pid, Duration::from_secs(10), |ev| {
            with_action(ev, "connect_failed").len() >= n
        }));
    }
    let fin = portex.stop();
    assert_eq!(fin.code, Some(0), "{:?}", fin.stderr);

    for d in [&tcp, &again] {
        let evs = fin.events_of(d.pid);
        let failed = with_action(&evs, "connect_failed");
        let expected = d.facts("connect err ");
        assert_eq!(failed.len(), expected.len(), "{}", fin.dump(d.pid));
        assert!(!expected.is_empty());
        assert!(
            errno_names(&failed).iter().all(|e| e == "EADDRNOTAVAIL"),
            "{}",
            fin.dump(d.pid)
        );
    }
    let evs = fin.events_of(bind.pid);
    let failed = with_action(&evs, "bind_failed");
    let expected = bind.facts("bind err ");
    assert!(!expected.is_empty());
    assert_eq!(failed.len(), expected.len(), "{}", fin.dump(bind.pid));
    assert!(
        errno_names(&failed).iter().all(|e| e == "EADDRINUSE"),
        "{}",
        fin.dump(bind.pid)
    );
}

/// UDP sockets are not followed by events: the reconciliation (every 10 s) counts them,
/// so a UDP pool filling up attaches the hooks before its first EAGAIN.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn auto_mode_attaches_the_hooks_when_a_udp_pool_fills_up() {
    let Some((_one, portex)) = auto_agent() else {
        return;
    };
    let ns = Netns::with_range("auto-udp", 40000, 40009);
    // 6 of 10 ports: over the 50 % at which auto mode attaches.
    let held = ns.spawn(&["hold-udp", "127.0.0.1:9", "6"]);
    assert!(
        portex.wait_stderr(
            "syscall hooks attached: pool udp",
            1,
            Duration::from_secs(25)
        ),
        "a UDP pool at 60 % attaches the hooks"
    );
    let d = ns.drive(&["exhaust-udp", "127.0.0.1:9", "6"]);
    let n = d.facts("connect err ").len();
    assert!(portex.wait_events(d.pid, Duration::from_secs(10), |ev| {
        with_action(ev, "connect_failed").len() >= n
    }));
    drop(held);
    let fin = portex.stop();
    let evs = fin.events_of(d.pid);
    let failed = with_action(&evs, "connect_failed");
    let expected = d.facts("connect err ");
    assert!(!expected.is_empty(), "{:?}", d.lines);
    assert_eq!(failed.len(), expected.len(), "{}", fin.dump(d.pid));
    for f in failed {
        assert_eq!(f["error"]["code"], "EAGAIN", "{f}");
        assert_eq!(f["network"]["transport"], "udp", "{f}");
    }
}

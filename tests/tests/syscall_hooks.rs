//! `--syscall-hooks auto`, the agent's default: the connect/bind syscall tracepoints slow
//! every system call of the host, so they are attached only while ports run short. Alone
//! in its test binary: other tests' exhaustions would attach the hooks too.
use std::time::Duration;

use portex_e2e::*;
use serde_json::Value;

/// Runs the driver in a new namespace with a 4-port range (removed afterwards).
fn in_small_namespace(tag: &str, args: &[&str]) -> Driven {
    let ns = Netns::new(tag);
    ns.port_range(40000, 40003);
    ns.drive(args)
}

fn errno_names(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["error"]["code"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn auto_mode_attaches_the_hooks_at_the_first_port_failure_and_detaches_when_quiet() {
    if !require_root() {
        return;
    }
    let portex = Portex::start(&["agent", "--syscall-hooks-linger", "1"]);
    assert!(
        portex.wait_stderr("2 programs attached, syscall hooks auto", 1, Duration::ZERO),
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
    std::thread::sleep(Duration::from_millis(500));
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

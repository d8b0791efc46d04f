//! The live ledger (`portex agent`'s pool gauges) against the kernel, in its own test
//! binary: the agent keys namespaces by inode and learns of a deleted one at its next
//! reconciliation (10 s), so namespaces that other tests create and delete meanwhile
//! (and whose inodes the kernel hands out again) must not run beside it.
use std::{thread, time::Duration};

use portex_e2e::*;

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn the_live_ledger_matches_the_kernel_after_the_reuse_delay() {
    if !require_root() {
        return;
    }
    let dir = TmpDir::new("oracle-agent");
    // The syscall hooks on: the ledger learns of bind() from them.
    let portex = Portex::agent_to(
        &dir.join("events.ndjson"),
        &[
            "--metrics",
            "127.0.0.1:0",
            "--metrics-pool-min",
            "0",
            // Every pool: ours are empty after the delay, and other tests' pools on this
            // host would push them out of the default 20.
            "--metrics-max-pools",
            "10000",
            "--syscall-hooks",
            "on",
        ],
    );
    let metrics = portex.metrics_addr();
    let mut cases = Vec::new();
    // Both namespaces live until the end, so neither inode is handed out again.
    let mut namespaces = Vec::new();
    for (tag, reuse) in [("oral0", "0"), ("oral2", "2")] {
        namespaces.push(Netns::with_range(tag, LO, HI));
        let ns = namespaces.last().unwrap();
        ns.sysctl("net.ipv4.tcp_tw_reuse", reuse);
        When::AfterDelay.apply(ns);
        let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
        let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", FILL, "100"]);
        assert_eq!(filled(&client), 20);
        When::AfterDelay.wait();
        let netns = ns.inode().to_string();
        let gauge = |s: &[Sample], name: &str| pool_gauge(s, name, &netns);
        // The gauges are published every second: wait for one taken after the delay.
        thread::sleep(Duration::from_millis(1200));
        let (ok, s) = samples_until(&metrics, Duration::from_secs(10), |s| {
            gauge(s, "portex_pool_used_ports").is_some()
        });
        assert!(ok, "no gauge for the pool of {tag}");
        let size = gauge(&s, "portex_pool_size_ports").unwrap();
        let used = gauge(&s, "portex_pool_used_ports").unwrap();
        let name = if reuse == "0" {
            "live ledger, loopback reuse=0 after delay"
        } else {
            "live ledger, loopback reuse=2 after delay"
        };
        cases.push((name, ((size - used) as u64, kernel_count(client))));
    }
    // bind() before connect() towards A takes those ports from every destination: the
    // live ledger subtracts them from B's pool; status cannot see bind() (it would
    // predict 5 more, the bound of its error here).
    namespaces.push(Netns::with_range("oralb", LO, HI));
    let ns = namespaces.last().unwrap();
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let _bound = ns.spawn(&["bind-connect", "127.0.0.1:6000", "5"]);
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", "1", "100"]);
    let netns = ns.inode().to_string();
    let gauge = |s: &[Sample], name: &str| pool_gauge(s, name, &netns);
    thread::sleep(Duration::from_millis(1200));
    let (ok, s) = samples_until(&metrics, Duration::from_secs(10), |s| {
        gauge(s, "portex_pool_used_ports") == Some(1.0)
    });
    assert!(ok, "no gauge for the pool towards B");
    let size = gauge(&s, "portex_pool_size_ports").unwrap();
    let status_says = status_free(ns, "127.0.0.1", "127.0.0.1", 5000);
    let kernel = kernel_count(client);
    cases.push((
        "live ledger, 5 ports bound before connect() to A, free towards B",
        ((size - 1.0) as u64, kernel),
    ));
    eprintln!("status for the same pool: {status_says} (its documented error: the 5 bound ports)");
    assert_eq!(status_says, kernel + 5);
    // A listener inside the range that closed with 80 server TIME_WAIT left: the ledger
    // infers the port at its next reconciliation (every 10 s) and takes it from the pool.
    namespaces.push(Netns::with_range("oralg", LO, HI));
    let ns = namespaces.last().unwrap();
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let inside = ns.spawn(&["serve-first-close", "127.0.0.1:41007"]);
    let d = ns.drive(&["connect-from", "127.0.0.1:41007", "50000", "80"]);
    assert_eq!(d.facts("connected"), ["80"]);
    drop(inside);
    cases.push((
        "live ledger, listener inside the range closed, 80 server TIME_WAIT left",
        shrunk_pool_vs_kernel(ns, &metrics),
    ));
    // Bound-only sockets: seen at reconciliation (sock_diag's BOUND_INACTIVE).
    namespaces.push(Netns::with_range("oralo", LO, HI));
    let ns = namespaces.last().unwrap();
    // Reuse off: the one TIME_WAIT of the fill stays used however long the count waits.
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let _bound = ns.spawn(&["bind-only", "127.0.0.1", "5"]);
    cases.push((
        "live ledger, 5 bound-only sockets",
        shrunk_pool_vs_kernel(ns, &metrics),
    ));
    drop(portex.stop());
    matrix(cases);
}

/// One connection closed into TIME_WAIT towards 127.0.0.1:5000 (the server must be
/// up), then (the ledger's free ports once its pool shrank below the 20-port range, the
/// kernel's count): for the cases whose bound ports the ledger learns at reconciliation.
fn shrunk_pool_vs_kernel(ns: &Netns, metrics: &str) -> (u64, u64) {
    let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", "1", "100"]);
    let netns = ns.inode().to_string();
    let gauge = |s: &[Sample], name: &str| pool_gauge(s, name, &netns);
    let (_, s) = samples_until(metrics, Duration::from_secs(25), |s| {
        gauge(s, "portex_pool_size_ports").is_some_and(|size| size < 20.0)
            && gauge(s, "portex_pool_used_ports") == Some(1.0)
    });
    let size = gauge(&s, "portex_pool_size_ports").unwrap_or(0.0);
    ((size - 1.0) as u64, kernel_count(client))
}

/// One gauge of the pool towards 127.0.0.1:5000 in namespace `netns` (inode), if exported.
fn pool_gauge(s: &[Sample], name: &str, netns: &str) -> Option<f64> {
    s.iter()
        .find(|x| {
            x.name == name
                && x.label("netns") == Some(netns)
                && x.label("destination_address") == Some("127.0.0.1")
                && x.label("destination_port") == Some("5000")
        })
        .map(|x| x.value)
}

//! The kernel is the oracle: for each case, in its own namespace with a 20-port range,
//! the free ports portex predicts for a destination must equal the number of connect()
//! calls that then succeed before the first EADDRNOTAVAIL. Predictions from
//! `portex status --json` and from the live ledger (`portex agent`'s pool gauges).
//!
//! The TIME_WAIT cases fill the pool with client-side TIME_WAIT (this side closes
//! first), read the prediction, then count. "Before the delay" sets tcp_tw_reuse_delay
//! to 5 s and counts at once; "after" sets it to 1 s and waits 1.5 s.
use std::{process::Command, thread, time::Duration};

use portex_e2e::*;

const LO: u16 = 41000;
const HI: u16 = 41019;
const FILL: &str = "20";

/// How long after the fill the prediction is read and the count made.
#[derive(Clone, Copy, Debug)]
enum When {
    BeforeDelay,
    AfterDelay,
}

impl When {
    fn apply(self, ns: &Netns) {
        let delay = match self {
            When::BeforeDelay => "5000",
            When::AfterDelay => "1000",
        };
        ns.sysctl("net.ipv4.tcp_tw_reuse_delay", delay);
    }

    fn wait(self) {
        if let When::AfterDelay = self {
            thread::sleep(Duration::from_millis(1500));
        }
    }
}

/// Free ports `portex status` predicts in `ns` for connect() from `src` to `dst`: the
/// pool's free ports, or the namespace's TCP pool size when no socket is in that pool.
fn status_free(ns: &Netns, src: &str, dst: &str, port: u16) -> u64 {
    let (_, v) = status_in(ns, &["--limit", "1000"]);
    let n = &v["namespaces"][0];
    let pool = n["pools"].as_array().unwrap().iter().find(|p| {
        p["source_ip"] == src && p["destination_ip"] == dst && p["destination_port"] == port
    });
    match pool {
        Some(p) => p["free"].as_u64().unwrap(),
        None => n["tcp_pool_size"].as_u64().unwrap(),
    }
}

/// The kernel's answer: the driver's "connects K" after `Held::go`.
fn kernel_count(client: Held) -> u64 {
    let d = client.go();
    d.facts("connects")
        .first()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no count: {:?}", d.lines))
}

fn filled(client: &Held) -> u64 {
    client.driven.facts("filled")[0].parse().unwrap()
}

/// Client and server in one namespace over loopback.
fn loopback(tag: &str, reuse: &str, when: When) -> (u64, u64) {
    let ns = Netns::with_range(tag, LO, HI);
    ns.sysctl("net.ipv4.tcp_tw_reuse", reuse);
    when.apply(&ns);
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", FILL, "100"]);
    assert_eq!(filled(&client), 20);
    when.wait();
    let predicted = status_free(&ns, "127.0.0.1", "127.0.0.1", 5000);
    (predicted, kernel_count(client))
}

/// A veth pair between a client and a server namespace (not loopback).
fn veth(tag: &str, reuse: &str, when: When) -> (u64, u64) {
    let client_ns = Netns::with_range(&format!("{tag}-c"), LO, HI);
    let server_ns = Netns::new(&format!("{tag}-s"));
    let (a, b) = (
        format!("pxo{}{tag}a", std::process::id() % 1000),
        format!("pxo{}{tag}b", std::process::id() % 1000),
    );
    let ip = |args: &[&str]| {
        let st = Command::new("ip").args(args).status().expect("ip");
        assert!(st.success(), "ip {args:?}");
    };
    ip(&[
        "link",
        "add",
        &a,
        "netns",
        &client_ns.name,
        "type",
        "veth",
        "peer",
        "name",
        &b,
        "netns",
        &server_ns.name,
    ]);
    ip(&[
        "-n",
        &client_ns.name,
        "addr",
        "add",
        "10.201.0.1/24",
        "dev",
        &a,
    ]);
    ip(&[
        "-n",
        &server_ns.name,
        "addr",
        "add",
        "10.201.0.2/24",
        "dev",
        &b,
    ]);
    ip(&["-n", &client_ns.name, "link", "set", &a, "up"]);
    ip(&["-n", &server_ns.name, "link", "set", &b, "up"]);
    client_ns.sysctl("net.ipv4.tcp_tw_reuse", reuse);
    when.apply(&client_ns);
    let _server = server_ns.spawn(&["serve-close", "10.201.0.2:5000"]);
    let client = client_ns.spawn(&["tw-then-count", "10.201.0.2:5000", FILL, "100"]);
    assert_eq!(filled(&client), 20);
    when.wait();
    let predicted = status_free(&client_ns, "10.201.0.1", "10.201.0.2", 5000);
    (predicted, kernel_count(client))
}

/// Runs the cases and requires prediction == kernel for each; prints the matrix.
fn matrix(cases: Vec<(&str, (u64, u64))>) {
    let table: Vec<String> = cases
        .iter()
        .map(|(name, (p, k))| format!("{name}: predicted {p}, kernel {k}"))
        .collect();
    eprintln!("{}", table.join("\n"));
    for (name, (p, k)) in &cases {
        assert_eq!(
            p,
            k,
            "{name}: portex predicted {p} free ports, connect() got {k}\n{}",
            table.join("\n")
        );
    }
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn time_wait_over_loopback_matches_the_kernel_for_every_reuse_setting() {
    if !require_root() {
        return;
    }
    let cases = vec![
        (
            "loopback reuse=0 after delay",
            loopback("orl0", "0", When::AfterDelay),
        ),
        (
            "loopback reuse=1 after delay",
            loopback("orl1", "1", When::AfterDelay),
        ),
        (
            "loopback reuse=2 before delay",
            loopback("orl2b", "2", When::BeforeDelay),
        ),
        (
            "loopback reuse=2 after delay",
            loopback("orl2a", "2", When::AfterDelay),
        ),
    ];
    // The matrix only means something if the kernel answers differently across it.
    assert!(cases.iter().any(|(_, (_, k))| *k == 0));
    assert!(cases.iter().any(|(_, (_, k))| *k >= 20));
    matrix(cases);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn time_wait_over_a_veth_pair_matches_the_kernel() {
    if !require_root() {
        return;
    }
    matrix(vec![
        (
            "veth reuse=2 after delay",
            veth("ov2", "2", When::AfterDelay),
        ),
        (
            "veth reuse=1 before delay",
            veth("ov1b", "1", When::BeforeDelay),
        ),
        (
            "veth reuse=1 after delay",
            veth("ov1a", "1", When::AfterDelay),
        ),
    ]);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn an_empty_range_and_a_listener_inside_it_match_the_kernel() {
    if !require_root() {
        return;
    }
    // Nothing in use: the whole range.
    let ns = Netns::with_range("orempty", LO, HI);
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let predicted = status_free(&ns, "127.0.0.1", "127.0.0.1", 5000);
    let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", "0", "100"]);
    let empty = (predicted, kernel_count(client));
    // A listener on a port inside the range: one port less for every destination.
    let ns2 = Netns::with_range("orlisten", LO, HI);
    ns2.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let _server2 = ns2.spawn(&["serve-close", "127.0.0.1:5000"]);
    let _inside = ns2.spawn(&["serve-close", "0.0.0.0:41007"]);
    let client2 = ns2.spawn(&["tw-then-count", "127.0.0.1:5000", "5", "100"]);
    let predicted2 = status_free(&ns2, "127.0.0.1", "127.0.0.1", 5000);
    let listener = (predicted2, kernel_count(client2));
    matrix(vec![
        ("empty range", empty),
        ("listener inside the range, 5 TIME_WAIT", listener),
    ]);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn the_live_ledger_matches_the_kernel_after_the_reuse_delay() {
    if !require_root() {
        return;
    }
    let dir = TmpDir::new("oracle-agent");
    let portex = Portex::agent_to(
        &dir.join("events.ndjson"),
        &["--metrics", "127.0.0.1:0", "--metrics-pool-min", "0"],
    );
    let metrics = portex.metrics_addr();
    let mut cases = Vec::new();
    for (tag, reuse) in [("oral0", "0"), ("oral2", "2")] {
        let ns = Netns::with_range(tag, LO, HI);
        ns.sysctl("net.ipv4.tcp_tw_reuse", reuse);
        When::AfterDelay.apply(&ns);
        let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
        let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", FILL, "100"]);
        assert_eq!(filled(&client), 20);
        When::AfterDelay.wait();
        let netns = ns.inode().to_string();
        let gauge = |s: &[Sample], name: &str| {
            s.iter()
                .find(|x| {
                    x.name == name
                        && x.label("netns") == Some(netns.as_str())
                        && x.label("destination") == Some("127.0.0.1:5000")
                })
                .map(|x| x.value)
        };
        // The gauges are published every second: wait for one taken after the delay.
        thread::sleep(Duration::from_millis(1200));
        let (ok, s) = samples_until(&metrics, Duration::from_secs(10), |s| {
            gauge(s, "portex_pool_used_ports").is_some()
        });
        assert!(ok, "no gauge for the pool of {tag}");
        let size = gauge(&s, "portex_pool_size_ports").unwrap();
        let used = gauge(&s, "portex_pool_used_ports").unwrap();
        let predicted = (size - used) as u64;
        cases.push((
            if reuse == "0" {
                "live ledger, reuse=0"
            } else {
                "live ledger, reuse=2 loopback"
            },
            (predicted, kernel_count(client)),
        ));
    }
    drop(portex.stop());
    matrix(cases);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn tcp_max_tw_buckets_overflow_matches_the_kernel_and_is_diagnosed() {
    if !require_root() {
        return;
    }
    // Past tcp_max_tw_buckets the kernel destroys new TIME_WAIT sockets at once: their
    // ports are free, and status says the kernel is discarding TIME_WAIT.
    let ns = Netns::with_range("orover", LO, HI);
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "5");
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", FILL, "100"]);
    assert_eq!(filled(&client), 20);
    let (_, v) = status_in(&ns, &[]);
    let ids: Vec<&str> = v["namespaces"][0]["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert!(ids.contains(&"time_wait_overflow"), "{ids:?}");
    let predicted = status_free(&ns, "127.0.0.1", "127.0.0.1", 5000);
    matrix(vec![(
        "20 TIME_WAIT with tcp_max_tw_buckets=5",
        (predicted, kernel_count(client)),
    )]);
}

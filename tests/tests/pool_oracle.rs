//! The kernel is the oracle: for each case, in its own namespace with a 20-port range,
//! the free ports portex predicts for a destination must equal the number of connect()
//! calls that then succeed before the first EADDRNOTAVAIL. Predictions from
//! `portex status --json` and from the live ledger (`portex agent`'s pool gauges).
//!
//! The TIME_WAIT cases fill the pool with client-side TIME_WAIT (this side closes
//! first), read the prediction, then count. "Before the delay" sets tcp_tw_reuse_delay
//! to 5 s and counts at once; "after" sets it to 1 s and waits 1.5 s.
use std::process::Command;

use portex_e2e::*;

/// Client and server in one namespace over loopback.
fn loopback(tag: &str, reuse: &str, when: When) -> Option<(u64, u64)> {
    when.possible().then(|| {
        over_loopback(
            tag,
            reuse,
            when,
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("127.0.0.1", "127.0.0.1"),
        )
    })
}

/// The same with the addresses given: (server listens, client connects to), and the
/// pool's (source, destination) as status shows them.
fn over_loopback(
    tag: &str,
    reuse: &str,
    when: When,
    (listen, dest): (&str, &str),
    (src, dst): (&str, &str),
) -> (u64, u64) {
    let ns = Netns::with_range(tag, LO, HI);
    ns.sysctl("net.ipv4.tcp_tw_reuse", reuse);
    when.apply(&ns);
    let _server = ns.spawn(&["serve-close", listen]);
    let client = ns.spawn(&["tw-then-count", dest, FILL, "100"]);
    assert_eq!(filled(&client), 20);
    when.wait();
    let predicted = status_free(&ns, src, dst, 5000);
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

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn time_wait_over_loopback_matches_the_kernel_for_every_reuse_setting() {
    if !require_root() {
        return;
    }
    let cases: Vec<_> = [
        (
            "loopback reuse=0 after delay",
            "orl0",
            "0",
            When::AfterDelay,
        ),
        (
            "loopback reuse=1 after delay",
            "orl1",
            "1",
            When::AfterDelay,
        ),
        (
            "loopback reuse=2 before delay",
            "orl2b",
            "2",
            When::BeforeDelay,
        ),
        (
            "loopback reuse=2 after delay",
            "orl2a",
            "2",
            When::AfterDelay,
        ),
    ]
    .into_iter()
    .filter_map(|(what, tag, reuse, when)| Some((what, loopback(tag, reuse, when)?)))
    .collect();
    // The matrix only means something if the kernel answers differently across it.
    assert!(cases.iter().any(|(_, (_, k))| *k == 0));
    assert!(cases.iter().any(|(_, (_, k))| *k >= 20));
    matrix(cases);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn ipv6_and_ipv4_mapped_time_wait_match_the_kernel() {
    if !require_root() {
        return;
    }
    let v6 = ("[::1]:5000", "[::1]:5000");
    // A dual-stack (AF_INET6) client socket talking IPv4: one pool with IPv4 clients.
    let mapped = ("127.0.0.1:5000", "[::ffff:127.0.0.1]:5000");
    let v4 = ("127.0.0.1", "127.0.0.1");
    matrix(vec![
        (
            "IPv6 loopback reuse=2 before delay",
            over_loopback("or6b", "2", When::BeforeDelay, v6, ("::1", "::1")),
        ),
        (
            "IPv6 loopback reuse=2 after delay",
            over_loopback("or6a", "2", When::AfterDelay, v6, ("::1", "::1")),
        ),
        (
            "IPv6 loopback reuse=0 after delay",
            over_loopback("or60", "0", When::AfterDelay, v6, ("::1", "::1")),
        ),
        (
            "IPv4-mapped reuse=2 after delay",
            over_loopback("ormap", "2", When::AfterDelay, mapped, v4),
        ),
    ]);
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
fn a_closed_listeners_time_wait_inside_the_range_matches_the_kernel() {
    if !require_root() {
        return;
    }
    // A server on 41007 (inside the range) closes first 80 times, then its listener
    // closes: its TIME_WAIT sockets keep the bind bucket, so connect() never picks 41007
    // until they end. status infers the port from the 80 peers (the clients bind ports
    // outside the range) and shows it once, not as 80 one-socket pools.
    let ns = Netns::with_range("orgone", LO, HI);
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let inside = ns.spawn(&["serve-first-close", "127.0.0.1:41007"]);
    let d = ns.drive(&["connect-from", "127.0.0.1:41007", "50000", "80"]);
    assert_eq!(d.facts("connected"), ["80"]);
    drop(inside);
    let (_, v) = status_in(&ns, &["--limit", "1000"]);
    let n = &v["namespaces"][0];
    assert_eq!(n["bound_ports_in_range"], serde_json::json!([41007]), "{n}");
    let pools = n["pools"].as_array().unwrap();
    assert!(pools.is_empty(), "no pool per server connection: {pools:?}");
    let predicted = status_free(&ns, "127.0.0.1", "127.0.0.1", 5000);
    let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", "0", "100"]);
    matrix(vec![(
        "listener inside the range closed, 80 server TIME_WAIT left",
        (predicted, kernel_count(client)),
    )]);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn bound_only_sockets_match_the_kernel() {
    if !require_root() {
        return;
    }
    // 5 sockets bound to port 0 that neither listen nor connect: bind() took 5 ports
    // from every destination (sock_diag lists them as BOUND_INACTIVE).
    let ns = Netns::with_range("orbound", LO, HI);
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let _bound = ns.spawn(&["bind-only", "127.0.0.1", "5"]);
    let (_, v) = status_in(&ns, &[]);
    let n = &v["namespaces"][0];
    assert_eq!(
        n["bound_only_ports_in_range"].as_array().unwrap().len(),
        5,
        "{n}"
    );
    let predicted = status_free(&ns, "127.0.0.1", "127.0.0.1", 5000);
    let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", "0", "100"]);
    matrix(vec![(
        "5 bound-only sockets",
        (predicted, kernel_count(client)),
    )]);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_per_socket_port_range_is_the_documented_bound_of_the_error() {
    if !require_root() {
        return;
    }
    // IP_LOCAL_PORT_RANGE narrows the range of one socket; sock_diag does not show it,
    // so portex predicts for sockets without it. For a socket with its own range of R
    // ports, the kernel allows at most R, and portex's figure is off by at most
    // (namespace range - R): here 20 - 10.
    let ns = Netns::with_range("orsockrange", LO, HI);
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let predicted = status_free(&ns, "127.0.0.1", "127.0.0.1", 5000);
    let (lo, hi) = (LO.to_string(), (LO + 9).to_string());
    let d = ns.drive(&["count-with-range", "127.0.0.1:5000", &lo, &hi, "100"]);
    if !d.facts("unsupported").is_empty() {
        eprintln!("IP_LOCAL_PORT_RANGE not supported by this kernel: case skipped");
        return;
    }
    let kernel: u64 = d.facts("connects")[0].parse().unwrap();
    eprintln!("per-socket range of 10 ports: predicted {predicted}, kernel {kernel} (bound 10)");
    assert_eq!(predicted, 20);
    assert_eq!(kernel, 10);
    assert!(predicted - kernel <= 10);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_client_closing_faster_than_its_pool_sustains_is_diagnosed() {
    if !require_root() {
        return;
    }
    // 20 connections closed first by the client within a second, reuse off: ~2/s against
    // a ceiling of 20 ports / 60 s. status names it, with tcp_tw_reuse=1 as the fix, and
    // the kernel agrees the pool is spent.
    let ns = Netns::with_range("orrate", LO, HI);
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", FILL, "100"]);
    let (_, v) = status_in(&ns, &[]);
    let diagnoses = v["namespaces"][0]["diagnoses"].as_array().unwrap().clone();
    let d = diagnoses
        .iter()
        .find(|d| d["id"] == "rate_above_sustainable")
        .unwrap_or_else(|| panic!("no rate diagnosis: {diagnoses:?}"));
    assert_eq!(d["severity"], "critical");
    assert!(d["fix"].as_str().unwrap().contains("tcp_tw_reuse=1"), "{d}");
    assert_eq!(kernel_count(client), 0);
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

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn udp_auto_bind_matches_the_kernel() {
    if !require_root() {
        return;
    }
    // UDP auto-bind needs a port no UDP socket holds, whatever the destination: one pool
    // per namespace. 5 connected UDP sockets held, then connect() until EAGAIN.
    let ns = Netns::with_range("orudp", LO, HI);
    let _held = ns.spawn(&["hold-udp", "127.0.0.1:5353", "5"]);
    let (_, v) = status_in(&ns, &[]);
    let udp = v["namespaces"][0]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["network"]["transport"] == "udp")
        .unwrap_or_else(|| panic!("no udp pool: {v:#}"));
    let predicted = udp["free"].as_u64().unwrap();
    let d = ns.drive(&["exhaust-udp", "127.0.0.1:5353", "100"]);
    let kernel = d.facts("connect ok").len() as u64;
    assert!(
        d.facts("connect err").iter().all(|e| e == "11"),
        "{:?}",
        d.lines
    );
    matrix(vec![("UDP, 5 sockets held", (predicted, kernel))]);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn reserved_ports_match_the_kernel() {
    if !require_root() {
        return;
    }
    // ip_local_reserved_ports inside the range: connect() never picks them.
    let ns = Netns::with_range("orres", LO, HI);
    ns.sysctl("net.ipv4.ip_local_reserved_ports", "41000-41004,41010");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let _server = ns.spawn(&["serve-close", "127.0.0.1:5000"]);
    let client = ns.spawn(&["tw-then-count", "127.0.0.1:5000", "5", "100"]);
    assert_eq!(filled(&client), 5);
    let predicted = status_free(&ns, "127.0.0.1", "127.0.0.1", 5000);
    matrix(vec![(
        "6 reserved ports, 5 TIME_WAIT",
        (predicted, kernel_count(client)),
    )]);
}

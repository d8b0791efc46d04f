//! NAT pools from the conntrack table: three namespaces, pod -> gw (nftables masquerade
//! to a 10-port range) -> srv. The pod holds as many connections as it can: the kernel
//! lets exactly 10 through (the rest time out: their SYNs are dropped), and `portex
//! status` in the gateway must show that pool as 10 of 10 used, the same count as
//! `conntrack -L`, with the pod as its source, critical; and the conntrack table as
//! `conntrack -C` counts it. A `watch` running meanwhile reports the 2 refused
//! connections as `connect_failed` with cause `nat_exhausted`, from the pod's process. Every namespace (and so every veth and rule) goes when the
//! test ends, on every path.
use std::{process::Command, sync::Mutex};

use portex_e2e::*;

/// One test of this file at a time: each fills a NAT pool, and the agents of the others
/// (tracepoints and NAT scans see every namespace) would report it too.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

/// `conntrack -L` in `ns`: how many flow entries it lists.
fn conntrack_entries(ns: &Netns) -> u64 {
    let (_, _, err) = ns.exec(&["conntrack", "-L"]);
    err.split_whitespace()
        .zip(err.split_whitespace().skip(1))
        .find(|(_, w)| *w == "flow")
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("conntrack -L said: {err}"))
}

/// pod (10.77.0.2) -> gw (10.77.0.1 | 10.78.0.1, masquerade `to RANGE` on its way out)
/// -> srv (10.78.0.2); with `shift`, 10.77 and 10.78 are 10.77+shift and 10.78+shift (the
/// tests of this file run at once, and tracepoints and scans see every namespace).
struct Topology {
    pod: Netns,
    gw: Netns,
    srv: Netns,
}

fn topology(range: &str, shift: u8) -> Topology {
    let (a, b) = (77 + shift, 78 + shift);
    let (pod, gw, srv) = (
        Netns::new("natpod"),
        Netns::new("natgw"),
        Netns::new("natsrv"),
    );
    let tag = std::process::id() % 10000;
    let (p0, g0, g1, s0) = (
        format!("pxn{tag}x{shift}p0"),
        format!("pxn{tag}x{shift}g0"),
        format!("pxn{tag}x{shift}g1"),
        format!("pxn{tag}x{shift}s0"),
    );
    ip(&[
        "link", "add", &p0, "netns", &pod.name, "type", "veth", "peer", "name", &g0, "netns",
        &gw.name,
    ]);
    ip(&[
        "link", "add", &g1, "netns", &gw.name, "type", "veth", "peer", "name", &s0, "netns",
        &srv.name,
    ]);
    for (ns, dev, addr) in [
        (&pod, &p0, format!("10.{a}.0.2/24")),
        (&gw, &g0, format!("10.{a}.0.1/24")),
        (&gw, &g1, format!("10.{b}.0.1/24")),
        (&srv, &s0, format!("10.{b}.0.2/24")),
    ] {
        ip(&["-n", &ns.name, "addr", "add", &addr, "dev", dev]);
        ip(&["-n", &ns.name, "link", "set", dev, "up"]);
    }
    ip(&[
        "-n",
        &pod.name,
        "route",
        "add",
        "default",
        "via",
        &format!("10.{a}.0.1"),
    ]);
    gw.sysctl("net.ipv4.ip_forward", "1");
    for rule in [
        vec!["add", "table", "ip", "nat"],
        vec![
            "add",
            "chain",
            "ip",
            "nat",
            "post",
            "{ type nat hook postrouting priority 100 ; }",
        ],
        vec![
            "add",
            "rule",
            "ip",
            "nat",
            "post",
            "oifname",
            &g1,
            "meta",
            "l4proto",
            "tcp",
            "masquerade",
            "to",
            range,
        ],
    ] {
        let mut cmd = vec!["nft"];
        cmd.extend(rule.iter().copied());
        let (code, _, err) = gw.exec(&cmd);
        assert_eq!(code, Some(0), "nft {rule:?}: {err}");
    }
    Topology { pod, gw, srv }
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_full_nat_pool_is_seen_as_the_kernel_fills_it() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    let Topology { pod, gw, srv } = topology(":40000-40009", 0);
    let _server = srv.spawn(&["serve-close", "0.0.0.0:8080"]);
    let watch = Portex::start(&["watch", "--json", "--nat-scan", "1"]);
    // The agent's NAT scanner, scraped below against conntrack.
    let dir = TmpDir::new("nat-agent");
    let agent = Portex::agent_to(
        &dir.join("events.ndjson"),
        &["--metrics", "127.0.0.1:0", "--nat-scan", "1"],
    );
    let metrics = agent.metrics_addr();
    // 12 tries, 2 s each at most: the kernel's answer is how many got through.
    let client = pod.spawn(&["hold-conns", "10.78.0.2:8080", "12"]);
    let held = client.driven.facts("held");
    assert_eq!(held, ["10 failed 2"], "the NAT range is 10 ports");
    // The 2 that timed out: connect_failed, nat_exhausted, the pod's process, the pool.
    // Two connect_stalled, then two connect_failed.
    watch.wait_lines_with(&[&pid_needle(client.driven.pid), "nat_exhausted"], 4);
    // The NAT scanner saw the pool cross critical: a pool_pressure line of kind nat, of
    // this gateway (the other tests of this file fill NAT pools of their own meanwhile).
    let this_gw = format!("\"netns\":{}", gw.inode());
    assert!(
        watch.wait_lines_with(
            &[
                "pool_pressure",
                "\"kind\":\"nat\"",
                "\"critical\"",
                &this_gw
            ],
            1
        ),
        "no NAT pool_pressure line"
    );
    let fin = watch.stop();
    let pressure: Vec<Value> = fin
        .stdout
        .iter()
        .filter(|l| l.contains("\"kind\":\"nat\"") && l.contains(&this_gw))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        validate_lines(fin.stdout.iter().map(|l| l.as_str())),
        fin.stdout.len()
    );
    let p = &pressure[0];
    assert_eq!(p["portex"]["netns"], gw.inode(), "{p}");
    assert_eq!(p["source"]["ip"], "10.78.0.1", "{p}");
    assert_eq!(p["destination"]["port"], 8080, "{p}");
    assert_eq!(p["portex"]["pool"]["size"], 10, "{p}");
    assert_eq!(p["portex"]["pool"]["size_from"], "rule", "{p}");
    assert_eq!(p["portex"]["pool"]["sources"][0]["ip"], "10.77.0.2", "{p}");
    // The pod is a namespace of this host: the ledger names the process behind it.
    assert_eq!(
        p["portex"]["pool"]["sources"][0]["process"]["pid"], client.driven.pid,
        "{p}"
    );
    let failed: Vec<_> = fin
        .events_of(client.driven.pid)
        .into_iter()
        .filter(|e| e["event"]["action"] == "connect_failed")
        .collect();
    assert_eq!(failed.len(), 2, "{}", fin.dump(client.driven.pid));
    for f in &failed {
        assert_eq!(f["portex"]["cause"], "nat_exhausted", "{f}");
        assert_eq!(f["error"]["code"], "ETIMEDOUT", "{f}");
        assert_eq!(f["destination"]["ip"], "10.78.0.2", "{f}");
        assert_eq!(f["portex"]["netns"], pod.inode(), "{f}");
        assert_eq!(f["portex"]["pool"]["used"], 10, "{f}");
        assert_eq!(f["portex"]["pool"]["size"], 10, "{f}");
    }
    // Each of the two was still waiting a second in (connect_timeout is 2 s): its
    // retransmitted SYN was reported at once, with the cause and the pool.
    let stalled: Vec<_> = fin
        .events_of(client.driven.pid)
        .into_iter()
        .filter(|e| e["event"]["action"] == "connect_stalled")
        .filter(|e| e["portex"]["cause"] == "nat_exhausted")
        .collect();
    assert_eq!(stalled.len(), 2, "{}", fin.dump(client.driven.pid));
    for s in &stalled {
        assert_eq!(s["portex"]["cause"], "nat_exhausted", "{s}");
        assert_eq!(s["event"]["outcome"], "unknown", "{s}");
        assert_eq!(s["destination"]["port"], 8080, "{s}");
        assert_ne!(s["source"]["port"], 0, "{s}");
        assert_eq!(s["portex"]["pool"]["used"], 10, "{s}");
        assert!(
            s["event"]["duration"].as_u64().unwrap() >= 900_000_000,
            "{s}"
        );
    }
    let listed = conntrack_entries(&gw);
    let (code, v) = status_in(&gw, &[]);
    let n = &v["namespaces"][0];
    let nat = &n["nat"];
    let pool = &nat["pools"][0];
    eprintln!("status: {pool}; conntrack -L: {listed} entries");
    assert_eq!(pool["used"], listed, "{nat}");
    assert_eq!(pool["used"], 10);
    assert_eq!(pool["size"], 10);
    assert_eq!(pool["size_from"], "rule");
    assert_eq!(pool["destination"]["ip"], "10.78.0.2");
    assert_eq!(pool["nat"]["ip"], "10.78.0.1");
    assert_eq!(pool["sources"][0]["ip"], "10.77.0.2");
    assert_eq!(pool["sources"][0]["held"], 10);
    // conntrack's own count of the SYNs it could not map, as `conntrack -S` sums it.
    let (_, per_cpu, _) = gw.exec(&["conntrack", "-S"]);
    let insert_failed: u64 = per_cpu
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("insert_failed="))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    assert!(insert_failed >= 2, "each dropped SYN counts: {per_cpu}");
    assert_eq!(
        nat["conntrack"]["insert_failed"].as_u64(),
        Some(insert_failed),
        "{per_cpu}"
    );
    let (_, count, _) = gw.exec(&["conntrack", "-C"]);
    assert_eq!(
        nat["conntrack"]["entries"].as_u64(),
        count.trim().parse().ok()
    );
    assert!(
        n["diagnoses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == "nat_pool_exhaustion" && d["severity"] == "critical"),
        "{n}"
    );
    assert_eq!(code, Some(2), "a full NAT pool is critical");

    // The agent's gauges: the pool as `conntrack -L` lists it, the table as `conntrack
    // -C` counts it, and the scanner's own cost.
    let gwns = gw.inode().to_string();
    let of = |s: &[Sample], name: &str| -> Option<f64> {
        s.iter()
            .find(|x| x.name == name && x.label("netns") == Some(gwns.as_str()))
            .map(|x| x.value)
    };
    let (seen, s) = samples_until(&metrics, std::time::Duration::from_secs(30), |s| {
        of(s, "portex_nat_pool_used_ports") == Some(listed as f64)
    });
    assert!(seen, "NAT pool gauges never showed {listed}: {s:?}");
    let (_, count, _) = gw.exec(&["conntrack", "-C"]);
    let count: f64 = count.trim().parse().unwrap();
    assert_eq!(of(&s, "portex_nat_pool_size_ports"), Some(10.0));
    assert_eq!(of(&s, "portex_conntrack_entries"), Some(count));
    let max: f64 = gw
        .exec(&["cat", "/proc/sys/net/netfilter/nf_conntrack_max"])
        .1
        .trim()
        .parse()
        .unwrap();
    assert_eq!(of(&s, "portex_conntrack_max"), Some(max));
    let size = s
        .iter()
        .find(|x| x.name == "portex_nat_pool_size_ports" && x.label("netns") == Some(gwns.as_str()))
        .unwrap();
    assert_eq!(size.label("size_from"), Some("rule"));
    assert_eq!(size.label("nat_address"), Some("10.78.0.1"));
    assert_eq!(size.label("destination_address"), Some("10.78.0.2"));
    assert_eq!(size.label("protocol"), Some("tcp"));
    let scans = s
        .iter()
        .find(|x| x.name == "portex_nat_scans_total")
        .unwrap();
    assert!(scans.value >= 1.0);
    let secs = s
        .iter()
        .find(|x| x.name == "portex_nat_scan_seconds")
        .unwrap();
    eprintln!("NAT scan: {} s, {} scans", secs.value, scans.value);
    assert!(secs.value > 0.0 && secs.value < 5.0);
    // Counted in pool_pressure, written to the agent's events.
    assert!(
        s.iter()
            .any(|x| x.name == "portex_pool_pressure_total" && x.value >= 1.0)
    );
    agent.stop();
    // `top` shows the NAT pool under the host's pools, with its top source.
    let out = Command::new(portex_bin())
        .args(["top", "--once", "--interval", "2"])
        .output()
        .expect("portex top --once");
    let frame = String::from_utf8_lossy(&out.stdout);
    let row = frame
        .lines()
        .find(|l| l.starts_with("NAT 10.78.0.2:8080 @10.78.0.1"))
        .unwrap_or_else(|| panic!("no NAT row in top:\n{frame}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[3..8], ["10", "10", cells[5], "100%", "-"], "{row}");
    // The top source is the pod, named by the process behind it.
    let pid = client.driven.pid.to_string();
    assert_eq!(cells.get(9), Some(&pid.as_str()), "{row}");
    assert!(
        count_lines_with(&dir.join("events.ndjson"), "\"kind\":\"nat\"") >= 1,
        "no NAT pool_pressure in the agent's events"
    );
}

/// On a range wider than the kernel's search (it looks at 240 ports at most, in windows
/// from random offsets) SYNs are dropped before the last port is taken: the first drop
/// came after 969 of 1,000 here. Those stalls are the NAT's too: the pool is nearly
/// full and conntrack's insert_failed rose while they waited.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn syns_dropped_before_the_pool_is_full_are_put_down_to_the_nat() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    let Topology { pod, gw, srv } = topology(":40000-40999", 10);
    pod.sysctl("net.ipv4.ip_local_port_range", "10000 60000");
    let _server = srv.spawn(&["serve-close", "0.0.0.0:8080"]);
    let watch = Portex::start(&["watch", "--json", "--nat-scan", "1"]);
    // Until 3 connects have failed (2 s each).
    let client = pod.spawn(&["hold-conns", "10.88.0.2:8080", "1100", "3"]);
    let held = client.driven.facts("held");
    let n: u32 = held[0].split(' ').next().unwrap().parse().unwrap();
    eprintln!("held {held:?}");
    assert!((900..=1000).contains(&n), "{held:?}");
    // 3 connect_failed, and a connect_stalled for each of them and for every connect
    // whose retransmitted SYN found a port at the second try. (SYNs are retransmitted
    // for other reasons too, seen here at half the pool with conntrack dropping
    // nothing: those stalls must not get the cause.)
    watch.wait_lines_with(&[&pid_needle(client.driven.pid), "\"connect_failed\""], 3);
    let fin = watch.stop();
    let ev = fin.events_of(client.driven.pid);
    let of = |action: &str| -> Vec<&Value> {
        ev.iter()
            .filter(|e| e["event"]["action"] == action)
            .collect()
    };
    let (stalled, failed) = (of("connect_stalled"), of("connect_failed"));
    eprintln!("{} stalled, {} failed:", stalled.len(), failed.len());
    for e in stalled.iter().chain(&failed) {
        let (t, p) = (&e["@timestamp"], &e["portex"]);
        eprintln!(
            "  {t} {} {} {}",
            e["event"]["action"], p["cause"], p["pool"]
        );
    }
    assert_eq!(failed.len(), 3, "{}", fin.dump(client.driven.pid));
    let nat_stalls: Vec<_> = stalled
        .iter()
        .filter(|e| e["portex"]["cause"] == "nat_exhausted")
        .collect();
    assert!(nat_stalls.len() >= 3, "{}", fin.dump(client.driven.pid));
    for e in nat_stalls.iter().copied().chain(&failed) {
        assert_eq!(e["portex"]["cause"], "nat_exhausted", "{e}");
        let used = e["portex"]["pool"]["used"].as_u64().unwrap();
        assert!((900..=1000).contains(&used), "{e}");
        assert_eq!(e["portex"]["pool"]["size"], 1000, "{e}");
    }
    // Attributed below the full pool: the kernel's search gave up first.
    assert!(
        nat_stalls
            .iter()
            .any(|e| e["portex"]["pool"]["used"].as_u64() < Some(1000)),
        "no stall was put down to a nearly full pool"
    );
    drop(gw);
}

/// The kernel matrix's NAT case (`cargo xtask kernels`): what the kernel lets through a
/// 10-port masquerade range equals the pool `status` reads from conntrack and the rule,
/// and a SYN the NAT dropped is a `connect_stalled` of the pod's process (the
/// retransmit program, whose record layout differs across kernels). Nothing here
/// depends on how quickly the agent's scanner comes round, which differs tenfold
/// between this host and a kernel under emulation.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_masquerade_pool_in_status_is_what_the_kernel_lets_through() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    let Topology { pod, gw, srv } = topology(":40000-40009", 4);
    let _server = srv.spawn(&["serve-close", "0.0.0.0:8080"]);
    let watch = Portex::start(&["watch", "--json", "--nat-scan", "0"]);
    let client = pod.spawn(&["hold-conns", "10.82.0.2:8080", "12"]);
    let held = client.driven.facts("held");
    assert_eq!(held, ["10 failed 2"], "the NAT range is 10 ports");
    let listed = conntrack_entries(&gw);
    let (code, v) = status_in(&gw, &[]);
    let nat = &v["namespaces"][0]["nat"];
    let pool = &nat["pools"][0];
    assert_eq!(pool["used"], listed, "{nat}");
    assert_eq!(pool["used"], 10, "{nat}");
    assert_eq!(pool["size"], 10, "{nat}");
    assert_eq!(pool["size_from"], "rule", "{nat}");
    assert_eq!(pool["destination"]["ip"], "10.82.0.2", "{nat}");
    assert_eq!(pool["sources"][0]["ip"], "10.81.0.2", "{nat}");
    assert_eq!(code, Some(2), "a full NAT pool is critical");
    assert!(
        watch.wait_lines_with(&[&pid_needle(client.driven.pid), "connect_stalled"], 1),
        "no connect_stalled"
    );
    let fin = watch.stop();
    let stalled: Vec<_> = fin
        .events_of(client.driven.pid)
        .into_iter()
        .filter(|e| e["event"]["action"] == "connect_stalled")
        .collect();
    assert!(!stalled.is_empty(), "{}", fin.dump(client.driven.pid));
    for s in &stalled {
        assert_eq!(s["destination"]["ip"], "10.82.0.2", "{s}");
        assert_eq!(s["destination"]["port"], 8080, "{s}");
        assert_eq!(s["source"]["ip"], "10.81.0.2", "{s}");
        assert_ne!(s["source"]["port"], 0, "{s}");
    }
}

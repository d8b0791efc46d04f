//! Issue "Agent mode": metrics scraped by a real Prometheus, containers, and accepted
//! connections. (The file sink and stdout: agent_output.rs.)
use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use portex_e2e::*;

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn prometheus_scrapes_the_failure_counter_of_an_exhaustion() {
    if !require_root() {
        return;
    }
    let portex = Portex::start(&["agent", "--output", "/dev/null", "--metrics", "127.0.0.1:0"]);
    let metrics = portex.metrics_addr();
    let ns = Netns::with_range("prom", 40000, 40003);
    let d = ns.drive(&["exhaust-tcp", "127.0.0.1:6600", "10"]);
    let failures = d.facts("connect err ").len();
    assert!(failures > 0);

    // promtool agrees with the exposition.
    let body = http_get(&metrics, "/metrics").unwrap_or_default();
    promtool_check(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));

    // A real Prometheus scrapes it; its HTTP API finds the counter.
    let dir = TmpDir::new("prom");
    let prom_addr = format!("127.0.0.1:{}", free_port().unwrap());
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: portex\n    static_configs:\n      - targets: ['{metrics}']\n"),
    )
    .unwrap();
    let _prom = KillOnDrop(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    );
    let query = "/api/v1/query?query=portex_failures_total%7Berrno%3D%22EADDRNOTAVAIL%22%2Ccause%3D%22port_range_exhausted%22%7D";
    // The counter is host-wide (failures carry no namespace label): another process
    // failing on this host adds to it. So Prometheus must hold exactly what portex
    // serves at that moment, and at least this driver's failures.
    let direct = || {
        metric(
            &http_get(&metrics, "/metrics").unwrap_or_default(),
            "portex_failures_total{errno=\"EADDRNOTAVAIL\",cause=\"port_range_exhausted\",transport=\"tcp\"}",
        )
        .unwrap_or(-1.0)
    };
    let mut last = String::new();
    let (mut value, mut served) = (0.0, -1.0);
    wait_for(Duration::from_secs(60), || {
        if TcpStream::connect(&prom_addr).is_err() {
            return false;
        }
        last = http_get(&prom_addr, query).unwrap_or_default();
        value = serde_json::from_str::<Value>(&last)
            .ok()
            .and_then(|v| v["data"]["result"][0]["value"][1].as_str()?.parse().ok())
            .unwrap_or(0.0);
        served = direct();
        value >= failures as f64 && value == served
    });
    assert!(
        value >= failures as f64 && value == served,
        "Prometheus saw {value}, portex serves {served}, the driver failed {failures} times: {last}"
    );
    drop(portex.stop());
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_process_in_a_container_cgroup_gets_its_container_id() {
    if !require_root() {
        return;
    }
    let id = format!("{:064x}", 0xfeed_u64 + std::process::id() as u64);
    let cg = Cgroup::new(&format!(
        "portex-e2e-{}/docker-{id}.scope",
        std::process::id()
    ));
    let portex = Portex::start(&["watch", "--json"]);
    let ns = Netns::new("cgroup");
    // The driver stays alive until its events are seen: the namespace of an event is
    // read from /proc/<pid>, which a process that has exited no longer has (README,
    // "Limits and failure behaviour").
    let held = ns.spawn(&[
        "--cgroup",
        cg.path(),
        "pool-mix",
        "127.0.0.1:6700",
        "127.0.0.1:6701",
        "2",
        "2",
        "0",
    ]);
    let pid = held.driven.pid;
    assert!(portex.wait_events(pid, Duration::from_secs(10), |ev| {
        with_action(ev, "connect").len() == 4 && with_action(ev, "time_wait").len() == 2
    }));
    let ev = portex.events_now(pid);
    drop(held);
    drop(portex.stop());
    for e in &ev {
        assert_eq!(e["container"]["id"], id.as_str(), "{e}");
        assert_eq!(e["container"]["runtime"], "docker");
        assert_eq!(e["portex"]["netns"], ns.inode(), "{e}");
    }
}

/// By default the agent leaves accepted (server-side) sockets in the kernel: they hold
/// the listening port, not an ephemeral one. `--accepted` brings them back.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn accepted_connections_are_reported_only_with_the_accepted_flag() {
    if !require_root() {
        return;
    }
    for (args, expect_server) in [
        (&["agent"][..], false),
        (&["agent", "--accepted"][..], true),
    ] {
        let portex = Portex::start(args);
        let ns = Netns::with_range("accepted", 41000, 41099);
        let d = ns.drive(&["client-close", "127.0.0.1:6700", "5"]);
        assert!(portex.wait_events(d.pid, Duration::from_secs(10), |ev| {
            with_action(ev, "time_wait").len() == 5
        }));
        let out = portex.stop();
        let ev = out.events_of(d.pid);
        let server = |a: &str| {
            with_action(&ev, a)
                .into_iter()
                .filter(|v| v["source"]["port"] == 6700)
                .count()
        };
        let client = |a: &str| {
            with_action(&ev, a)
                .into_iter()
                .filter(|v| v["source"]["port"] != 6700)
                .count()
        };
        // The client side is complete either way.
        assert_eq!(
            (client("connect"), client("close"), client("time_wait")),
            (5, 5, 5),
            "{args:?}\n{}",
            out.dump(d.pid)
        );
        let n = if expect_server { 5 } else { 0 };
        assert_eq!(
            (server("established"), server("close")),
            (n, n),
            "{args:?}\n{}",
            out.dump(d.pid)
        );
        // ECS network.direction from this host's point of view; an accepted connection
        // starts at its `established`.
        for v in &ev {
            let accepted = v["source"]["port"] == 6700;
            let want = if accepted { "ingress" } else { "egress" };
            assert_eq!(v["network"]["direction"], want, "{v}");
            if accepted && v["event"]["action"] == "established" {
                assert_eq!(
                    v["event"]["type"],
                    serde_json::json!(["connection", "start"])
                );
            }
        }
    }
}

/// Every line says which ECS release it follows and which host wrote it: the kernel's
/// nodename in lower case, or NODE_NAME (a DaemonSet sets the node's name), and
/// /etc/machine-id.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn every_line_names_the_ecs_version_and_the_host() {
    if !require_root() {
        return;
    }
    let nodename = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() == 32);
    for (wrapper, name) in [
        (&[][..], nodename.trim().to_ascii_lowercase()),
        (
            &["env", "NODE_NAME=node-7.example"][..],
            "node-7.example".into(),
        ),
    ] {
        let portex = Portex::start_wrapped(wrapper, &["watch", "--json"]);
        let ns = Netns::new("host");
        let d = ns.drive(&["client-close", "127.0.0.1:6710", "1"]);
        assert!(portex.wait_events(d.pid, Duration::from_secs(10), |ev| {
            !with_action(ev, "time_wait").is_empty()
        }));
        let out = portex.stop();
        let ev = out.events_of(d.pid);
        assert!(!ev.is_empty());
        for v in &ev {
            assert_eq!(v["ecs"]["version"], "8.17.0", "{v}");
            assert_eq!(v["host"]["name"], name.as_str(), "{v}");
            assert_eq!(v["host"]["id"].as_str(), machine_id.as_deref(), "{v}");
        }
    }
}

//! The agent's live ledger and its pool gauges against `ss`, for a pool filled before the
//! agent started (so the seed from sock_diag is what is checked first), then kept by
//! events; the `--metrics-pool-min` and `--metrics-max-pools` bounds; no label that
//! carries an ephemeral port or a pid; processes by name; the agent's own process_*
//! metrics; promtool on that scrape; and /healthz.
use std::time::Duration;

use portex_e2e::*;

const LO: u16 = 40000;
const HI: u16 = 40019;
const SIZE: f64 = (HI - LO + 1) as f64;

/// `portex agent` with metrics on a free port and `flags`, its events to a file of `dir`
/// (it writes only to regular files): the agent and its metrics address.
fn agent(dir: &TmpDir, flags: &[&str]) -> (Portex, String) {
    let flags = [&["--metrics", "127.0.0.1:0"], flags].concat();
    let portex = Portex::agent_to(&dir.join("events.ndjson"), &flags);
    let metrics = portex.metrics_addr();
    (portex, metrics)
}

/// Scrapes until `done` holds (a minute at most): whether it did, and the last scrape.
fn scrape_for(metrics: &str, done: impl Fn(&[Sample]) -> bool) -> (bool, Vec<Sample>) {
    samples_until(metrics, Duration::from_secs(60), done)
}

/// (used, time_wait, size) of one pool of one namespace in a scrape, if exported; panics
/// when a pool is exported twice or a gauge family lacks it.
fn pool_gauges(s: &[Sample], netns: u64, destination: (&str, u16)) -> Option<(f64, f64, f64)> {
    let get = |name: &str| {
        let v: Vec<f64> = s
            .iter()
            .filter(|x| {
                x.name == name
                    && x.label("netns") == Some(&netns.to_string())
                    && x.label("destination_address") == Some(destination.0)
                    && x.label("destination_port") == Some(&destination.1.to_string())
            })
            .map(|x| x.value)
            .collect();
        assert!(v.len() <= 1, "{name} for {destination:?} twice: {v:?}");
        v.first().copied()
    };
    let used = get("portex_pool_used_ports")?;
    let tw = get("portex_pool_time_wait_ports").expect("time_wait gauge");
    let size = get("portex_pool_size_ports").expect("size gauge");
    Some((used, tw, size))
}

/// What ss shows for one pool of `ns`: (used, time_wait).
fn ss_pool(ns: &Netns, dst_ip: &str, dst_port: u16) -> (f64, f64) {
    let (u, t) = ns
        .ss_pools(LO, HI)
        .get(&("127.0.0.1".to_string(), dst_ip.to_string(), dst_port))
        .copied()
        .unwrap_or((0, 0));
    (u as f64, t as f64)
}

/// Local ports of the client sockets in `ns` (the ephemeral ports in use there).
fn ephemeral_ports(ns: &Netns) -> Vec<u16> {
    let (_, ss, _) = ns.exec(&["ss", "-tanH"]);
    ss.lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        })
        .filter(|p| (LO..=HI).contains(p))
        .collect()
}

/// A process name (comm, at most 15 bytes) no other test or host process has: the
/// metrics name processes by name, not pid.
fn unique_name(tag: &str) -> String {
    format!("{tag}{}", std::process::id())
}

/// Ports 8401/8402 (namespace-local): 6 TIME_WAIT + 8 open towards A (14 of 20: 70 %),
/// 6 open towards B (30 %), all before the agent starts, by a driver named
/// `unique_name(tag)`.
fn prefilled(tag: &str) -> (Netns, Held) {
    let ns = Netns::with_range(tag, LO, HI);
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let held = ns.spawn(&[
        "--name",
        &unique_name(tag),
        "pool-mix",
        "127.0.0.1:8401",
        "127.0.0.2:8402",
        "6",
        "8",
        "6",
    ]);
    assert!(
        wait_for(Duration::from_secs(20), || ss_pool(&ns, "127.0.0.1", 8401)
            == (14.0, 6.0)),
        "{:?}\n{}",
        ss_pool(&ns, "127.0.0.1", 8401),
        ns.exec(&["ss", "-tanH"]).1
    );
    assert_eq!(ss_pool(&ns, "127.0.0.2", 8402), (6.0, 0.0));
    (ns, held)
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn pool_gauges_equal_ss_for_a_pool_filled_before_the_agent_started() {
    if !require_root() {
        return;
    }
    let (ns, held) = prefilled("mpool");
    let dir = TmpDir::new("mpool");
    let inode = ns.inode();
    let (portex, metrics) = agent(
        &dir,
        &[
            "--metrics-pool-min",
            "50",
            "--metrics-max-pools",
            "10000",
            "--metrics-top-processes",
            "10000",
        ],
    );
    let (exported, s) = scrape_for(&metrics, |s| {
        pool_gauges(s, inode, ("127.0.0.1", 8401)).is_some()
    });
    assert!(exported, "the pool towards 127.0.0.1:8401 is not exported");
    let (used, tw) = ss_pool(&ns, "127.0.0.1", 8401);
    assert_eq!(
        pool_gauges(&s, inode, ("127.0.0.1", 8401)),
        Some((used, tw, SIZE))
    );
    assert_eq!((used, tw), (14.0, 6.0));
    // 30 % is below --metrics-pool-min 50.
    assert_eq!(pool_gauges(&s, inode, ("127.0.0.2", 8402)), None);
    // Every exported pool is at least 50 % full.
    for x in s.iter().filter(|x| x.name == "portex_pool_used_ports") {
        let size = s
            .iter()
            .find(|y| y.name == "portex_pool_size_ports" && y.labels == x.labels)
            .expect("a size for every pool")
            .value;
        assert!(x.value / size >= 0.5, "{x:?} of {size}");
    }
    assert_no_ephemeral_port_in_labels(&s, &ephemeral_ports(&ns), ns.inode());

    // Kept by events: 6 more connections towards B (to 12 of 20, 60 %) bring it over
    // the floor, with what ss counts.
    let more_name = unique_name("mmore");
    let more = ns.spawn(&["--name", &more_name, "hold-conns", "127.0.0.2:8402", "6"]);
    assert_eq!(more.driven.facts("held "), ["6 failed 0"]);
    assert_eq!(ss_pool(&ns, "127.0.0.2", 8402), (12.0, 0.0));
    let (kept, s) = scrape_for(&metrics, |s| {
        pool_gauges(s, inode, ("127.0.0.2", 8402)) == Some((12.0, 0.0, SIZE))
    });
    assert!(kept, "{:?}", pool_gauges(&s, inode, ("127.0.0.2", 8402)));
    assert_eq!(
        pool_gauges(&s, inode, ("127.0.0.1", 8401)),
        Some((14.0, 6.0, SIZE))
    );
    // The driver holds 8 + 6 open ports, the second one 6: one series per process
    // name (and container: none here), no pid.
    for (name, held) in [(unique_name("mpool"), 14.0), (more_name.clone(), 6.0)] {
        let v: Vec<(f64, Option<&str>)> = s
            .iter()
            .filter(|x| {
                x.name == "portex_process_held_ports" && x.label("process_name") == Some(&name)
            })
            .map(|x| (x.value, x.label("container_id")))
            .collect();
        assert_eq!(v, [(held, Some(""))], "{name}");
    }
    for x in &s {
        assert!(x.label("pid").is_none(), "a pid label: {x:?}");
    }
    assert_no_ephemeral_port_in_labels(&s, &ephemeral_ports(&ns), ns.inode());

    // The same page, with pools and processes in it, passes promtool; it carries the
    // agent's own process_* metrics; and the health check answers 200.
    let body = http_get(&metrics, "/metrics").expect("a scrape");
    promtool_check(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    own_process_metrics(&parse_samples(&body), portex.pid());
    for path in ["/healthz", "/-/healthy"] {
        let got = try_http_get_status(&metrics, path, Duration::from_secs(5)).expect(path);
        assert_eq!(got, (200, "ok\n".to_string()), "{path}");
    }
    drop(more);
    drop(held);
    drop(portex.stop());
}

/// The standard process_* metrics of the agent (`pid`), against its /proc files.
fn own_process_metrics(s: &[Sample], pid: u32) {
    let get = |name: &str| {
        let v: Vec<f64> = s
            .iter()
            .filter(|x| x.name == name)
            .map(|x| x.value)
            .collect();
        assert_eq!(v.len(), 1, "{name}: {v:?}");
        assert!(
            s.iter()
                .filter(|x| x.name == name)
                .all(|x| x.labels.is_empty())
        );
        v[0]
    };
    let cpu = get("process_cpu_seconds_total");
    let rss = get("process_resident_memory_bytes");
    let vsz = get("process_virtual_memory_bytes");
    let fds = get("process_open_fds");
    let max_fds = get("process_max_fds");
    let start = get("process_start_time_seconds");
    assert!(cpu > 0.0 && cpu < 3600.0, "cpu {cpu}");
    // The agent's RSS is tens of MiB (README: Performance).
    assert!(
        rss > 1e6 && rss < 512e6 && vsz >= rss,
        "rss {rss}, vsz {vsz}"
    );
    assert!(fds >= 3.0 && fds <= max_fds, "fds {fds} of {max_fds}");
    // Its soft open-file limit, as /proc says.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: f64 = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("Max open files");
    assert_eq!(max_fds, soft);
    // Started within this test (a few minutes at most), not in the future.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now + 1.0 && start > now - 600.0,
        "start {start}, now {now}"
    );
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn metrics_max_pools_1_exports_only_the_fullest_pool() {
    if !require_root() {
        return;
    }
    let (ns, _held) = prefilled("mmax");
    let dir = TmpDir::new("mmax");
    let inode = ns.inode();
    let (portex, metrics) = agent(
        &dir,
        &["--metrics-pool-min", "0", "--metrics-max-pools", "1"],
    );
    // Other tests' pools on this host may be fuller than ours (70 %); whichever it
    // is, exactly one pool is exported, and it is at least as full as ours.
    let util = |s: &[Sample]| {
        let used: Vec<&Sample> = s
            .iter()
            .filter(|x| x.name == "portex_pool_used_ports")
            .collect();
        let size: Vec<&Sample> = s
            .iter()
            .filter(|x| x.name == "portex_pool_size_ports")
            .collect();
        (used.len() == 1 && size.len() == 1 && used[0].labels == size[0].labels)
            .then(|| used[0].value / size[0].value)
    };
    let (one, s) = scrape_for(&metrics, |s| util(s).is_some_and(|u| u >= 0.7));
    assert!(one, "{s:?}");
    for name in [
        "portex_pool_used_ports",
        "portex_pool_time_wait_ports",
        "portex_pool_size_ports",
    ] {
        assert_eq!(s.iter().filter(|x| x.name == name).count(), 1, "{name}");
    }
    assert_eq!(pool_gauges(&s, inode, ("127.0.0.2", 8402)), None);
    if let Some(ours) = pool_gauges(&s, inode, ("127.0.0.1", 8401)) {
        assert_eq!(ours, (14.0, 6.0, SIZE));
    }
    // The same agent with room for every pool exports both of ours.
    drop(portex.stop());
    let (portex, metrics) = agent(
        &dir,
        &["--metrics-pool-min", "0", "--metrics-max-pools", "10000"],
    );
    let (both, s) = scrape_for(&metrics, |s| {
        pool_gauges(s, inode, ("127.0.0.2", 8402)).is_some()
    });
    assert!(both, "{s:?}");
    assert_eq!(
        pool_gauges(&s, inode, ("127.0.0.1", 8401)),
        Some((14.0, 6.0, SIZE))
    );
    assert_eq!(
        pool_gauges(&s, inode, ("127.0.0.2", 8402)),
        Some((6.0, 0.0, SIZE))
    );
    assert_no_ephemeral_port_in_labels(&s, &ephemeral_ports(&ns), ns.inode());
    drop(portex.stop());
}

/// No label value names one of the ephemeral ports in use in `ns` (a destination's port
/// is its listening port; a source is an address alone). netns labels are numbers of
/// another kind and are left out, and so are pools of other namespaces: a
/// port in use here may be a listening port there (a metrics server on port 0).
fn assert_no_ephemeral_port_in_labels(s: &[Sample], ports: &[u16], ns: u64) {
    assert!(!ports.is_empty());
    let ns = ns.to_string();
    for x in s
        .iter()
        .filter(|x| x.label("netns").is_none_or(|n| n == ns))
    {
        for (k, v) in &x.labels {
            if k == "netns" {
                continue;
            }
            if k == "source_address" || k == "destination_address" {
                assert!(
                    v.parse::<std::net::IpAddr>().is_ok(),
                    "{k} is an address without a port: {x:?}"
                );
            }
            for p in ports {
                assert!(
                    v != &p.to_string() && !v.ends_with(&format!(":{p}")),
                    "ephemeral port {p} in {k}={v:?}: {x:?}"
                );
            }
        }
    }
}

/// /healthz (and /-/healthy) turns 503 once the output thread has not come round for
/// 10 s, naming it, and 200 again once it runs. The thread alone is stopped (ptrace), so
/// the agent's other threads and its HTTP server go on as in a real stall.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn healthz_fails_while_the_output_thread_is_stalled_and_recovers() {
    if !require_root() {
        return;
    }
    let dir = TmpDir::new("mstall");
    let (portex, metrics) = agent(&dir, &[]);
    let health = |path: &str| try_http_get_status(&metrics, path, Duration::from_secs(5)).ok();
    let ok = Some((200, "ok\n".to_string()));
    assert!(wait_for(Duration::from_secs(10), || health("/healthz") == ok));

    let stopped = ThreadStopped::named(portex.pid(), "portex-emit").expect("stopping the thread");
    let since = std::time::Instant::now();
    let mut got = None;
    let stalled = wait_for(Duration::from_secs(30), || {
        got = health("/healthz");
        got.as_ref().is_some_and(|(code, _)| *code == 503)
    });
    let after = since.elapsed();
    assert!(stalled, "{got:?}");
    let (_, body) = got.unwrap();
    assert!(
        body.starts_with("stalled: the output thread has not come round for "),
        "{body}"
    );
    // Not before the limit (the heartbeat is at most 250 ms older than the stop).
    assert!(after >= Duration::from_secs(9), "503 after {after:?}");
    assert_eq!(health("/-/healthy").map(|(c, _)| c), Some(503));

    drop(stopped);
    assert!(
        wait_for(Duration::from_secs(5), || health("/healthz") == ok),
        "{:?}",
        health("/healthz")
    );
    let fin = portex.stop();
    assert_eq!(fin.code, Some(0), "{:?}", fin.stderr);
}

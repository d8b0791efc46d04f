//! `portex watch` filters (`--pid`/`-p`, `--comm`, `--failures-only`, `--dport`,
//! `--daddr`, `-4`/`-6`, `--netns`, `--container`): a filter
//! keeps exactly the matching events. Drivers run side by side; the others' events must
//! be absent and the matching ones all present (an unfiltered watch running at the same
//! time is the reference).
use std::collections::BTreeMap;

use portex_e2e::*;

/// Lines that are events (not pool_pressure alarms, which pass the filters when the
/// process is among the pool's holders, and which other tests' pools may raise).
fn events(f: &Finished) -> Vec<Value> {
    f.stdout
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| action(v) != "pool_pressure")
        .collect()
}

/// The events of one pid as a comparable set (pool state left out: it depends on when
/// each watcher saw the record).
fn fingerprint(events: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}:{} {}:{} {}",
                action(e),
                e["portex"]["socket"],
                e["source"]["ip"],
                e["source"]["port"],
                e["destination"]["ip"],
                e["destination"]["port"],
                e["portex"]["close"]["kind"],
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn watch_pid_keeps_exactly_that_process() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("wpid");
    let mine = ns.spawn_paused(&["client-close", "127.0.0.1:8001", "5"]);
    let other = ns.spawn_paused(&["client-close", "127.0.0.1:8002", "5"]);
    let pid = mine.driven.pid.to_string();
    let all = Portex::start(&["watch", "--json"]);
    let filtered = Portex::start(&["watch", "--json", "--pid", &pid]);
    // The other one first: once this one's last line is out, the other's were seen
    // (and filtered out).
    let other = other.go();
    let mine = mine.go();
    all.wait_lines(&pid_needle(other.pid), 30);
    all.wait_lines(&pid_needle(mine.pid), 30);
    filtered.wait_lines(&pid_needle(mine.pid), 30);
    let filtered = filtered.stop();
    let all = all.stop();
    assert_eq!(filtered.code, Some(0), "{:?}", filtered.stderr);

    let kept = events(&filtered);
    for e in &kept {
        assert_eq!(e["process"]["pid"].as_u64(), Some(mine.pid as u64), "{e}");
    }
    assert_eq!(
        by_action(&kept),
        client_close_5(),
        "{}",
        filtered.dump(mine.pid)
    );
    assert!(
        filtered.events_of(other.pid).is_empty(),
        "{}",
        filtered.dump(other.pid)
    );
    // The unfiltered watcher saw both; the filtered one has all of this one's events.
    assert_eq!(
        by_action(&all.events_only_of(other.pid)),
        client_close_5(),
        "{}",
        all.dump(other.pid)
    );
    assert_eq!(
        fingerprint(&kept),
        fingerprint(&all.events_only_of(mine.pid)),
        "{}",
        all.dump(mine.pid)
    );
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn watch_comm_keeps_exactly_that_process_name_in_text_and_json() {
    if !require_root() {
        return;
    }
    // Unique names: tests of other binaries may run drivers at the same time.
    let tag = std::process::id() % 100_000;
    let name = format!("pxcomm{tag}");
    let other_name = format!("pxcommx{tag}");
    let ns = Netns::new("wcomm");
    let text = Portex::start(&["watch", "--comm", &name]);
    let json = Portex::start(&["watch", "--json", "--comm", &name]);
    let other = ns.drive(&["--name", &other_name, "client-close", "127.0.0.1:8012", "5"]);
    let mine = ns.drive(&["--name", &name, "client-close", "127.0.0.1:8011", "5"]);
    json.wait_lines(&pid_needle(mine.pid), 30);
    text.wait_lines(&format!(" {} {name} ", mine.pid), 30);
    let text = text.stop();
    let json = json.stop();

    let kept = events(&json);
    for e in &kept {
        assert_eq!(e["process"]["name"], name.as_str(), "{e}");
        assert_eq!(e["process"]["pid"].as_u64(), Some(mine.pid as u64), "{e}");
    }
    assert_eq!(
        by_action(&kept),
        client_close_5(),
        "{}",
        json.dump(mine.pid)
    );
    assert!(
        json.events_of(other.pid).is_empty(),
        "{}",
        json.dump(other.pid)
    );

    // Text: "HH:MM:SS.micros ACTION PID NAME TRANSPORT SOURCE -> DESTINATION ...".
    let mut text_actions = BTreeMap::new();
    for l in text
        .stdout
        .iter()
        .filter(|l| !l.contains(" pool_pressure "))
    {
        let w: Vec<&str> = l.split_whitespace().collect();
        assert!(w.len() >= 7, "{l}");
        assert_eq!(
            (w[2], w[3]),
            (mine.pid.to_string().as_str(), name.as_str()),
            "{l}"
        );
        assert_eq!((w[4], w[6]), ("tcp", "->"), "{l}");
        *text_actions.entry(w[1].to_string()).or_insert(0) += 1;
    }
    assert_eq!(text_actions, client_close_5(), "{:?}", text.stdout);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn watch_failures_only_keeps_exactly_the_failures() {
    if !require_root() {
        return;
    }
    let small = Netns::with_range("wfail", 40000, 40003);
    let healthy = Netns::new("wfail-ok");
    let all = Portex::start(&["watch", "--json"]);
    let failures = Portex::start(&["watch", "--json", "--failures-only"]);
    let fine = healthy.drive(&["client-close", "127.0.0.1:8022", "5"]);
    let failing = small.drive(&["exhaust-tcp", "127.0.0.1:8021", "8"]);
    let failed = [
        pid_needle(failing.pid),
        "\"action\":\"connect_failed\"".to_string(),
    ];
    let failed: Vec<&str> = failed.iter().map(String::as_str).collect();
    failures.wait_lines_with(&failed, 4);
    all.wait_lines_with(&failed, 4);
    all.wait_lines(&pid_needle(fine.pid), 30);
    let failures = failures.stop();
    let all = all.stop();
    assert_eq!(failing.facts("connect ok ").len(), 4, "{:?}", failing.lines);
    assert_eq!(
        failing.facts("connect err ").len(),
        4,
        "{:?}",
        failing.lines
    );

    // Nothing but failures (and pool_pressure alarms) on the whole output.
    for l in &failures.stdout {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(
            matches!(
                action(&v),
                "connect_failed" | "bind_failed" | "pool_pressure"
            ),
            "{l}"
        );
    }
    let kept = failures.events_only_of(failing.pid);
    assert_eq!(
        by_action(&kept),
        counts(&[("connect_failed", 4)]),
        "{}",
        failures.dump(failing.pid)
    );
    for f in &kept {
        assert_eq!(f["error"]["code"], "EADDRNOTAVAIL", "{f}");
        assert_eq!(f["portex"]["cause"], "port_range_exhausted", "{f}");
    }
    assert!(
        failures.events_of(fine.pid).is_empty(),
        "{}",
        failures.dump(fine.pid)
    );
    // The alarm passes too: the 4-port pool went from 3 to 4 used, critical at once.
    let inode = small.inode();
    let alarms: Vec<Value> = failures
        .stdout
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| action(v) == "pool_pressure" && v["portex"]["netns"] == inode)
        .collect();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0]["portex"]["pool"]["severity"], "critical");
    assert_eq!(alarms[0]["portex"]["pool"]["used"], 4);
    assert_eq!(
        alarms[0]["process"]["pid"].as_u64(),
        Some(failing.pid as u64)
    );
    // The unfiltered watcher saw the successes that were left out, and the same
    // failures.
    let everything = all.events_only_of(failing.pid);
    assert_eq!(
        with_action(&everything, "connect").len(),
        4,
        "{}",
        all.dump(failing.pid)
    );
    assert_eq!(
        fingerprint(
            &with_action(&everything, "connect_failed")
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        ),
        fingerprint(&kept)
    );
    assert_eq!(by_action(&all.events_only_of(fine.pid)), client_close_5());
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The non-alarm lines of a finished watcher, as JSON.
fn lines(f: &Finished) -> Vec<Value> {
    events(f)
}

/// `reference`'s events of `pids` that satisfy `keep`: what a filtered watcher must show
/// of them, no more, no less.
fn expected(reference: &Finished, pids: &[u32], keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    pids.iter()
        .flat_map(|&p| reference.events_only_of(p))
        .filter(|e| keep(e))
        .collect()
}

/// Of `watcher`'s lines: those of `pids` equal `want` (as fingerprints), and every line
/// at all (other processes' and other tests' included) satisfies `keep`.
fn assert_exactly(
    name: &str,
    watcher: &Finished,
    pids: &[u32],
    want: &[Value],
    keep: impl Fn(&Value) -> bool,
) {
    assert!(
        !want.is_empty(),
        "{name}: the reference has nothing to compare"
    );
    let got: Vec<Value> = pids
        .iter()
        .flat_map(|&p| watcher.events_only_of(p))
        .collect();
    assert_eq!(
        fingerprint(&got),
        fingerprint(want),
        "{name}: {:?}",
        watcher.stdout
    );
    for e in lines(watcher) {
        assert!(keep(&e), "{name} let through {e}");
    }
}

fn port(e: &Value) -> u64 {
    e["destination"]["port"].as_u64().unwrap_or(0)
}

/// `--dport`, `--daddr`, `-4` and `-6` against a reference watcher: client-close runs to
/// 127.0.0.1, 127.0.0.2 and ::1. A server side's destination is the client's address
/// and ephemeral port, so destination filters keep only the client side there.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn watch_destination_and_family_filters_keep_exactly_the_matching_events() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("wdst");
    let d1 = ns.spawn_paused(&["client-close", "127.0.0.1:8031", "5"]);
    let d2 = ns.spawn_paused(&["client-close", "127.0.0.2:8032", "5"]);
    let d3 = ns.spawn_paused(&["client-close", "[::1]:8033", "5"]);
    let all = Portex::start(&["watch", "--json"]);
    let dport = Portex::start(&["watch", "--json", "--dport", "8031,8033"]);
    let daddr = Portex::start(&["watch", "--json", "--daddr", "127.0.0.2/32"]);
    let v6 = Portex::start(&["watch", "--json", "-6"]);
    let v4range = Portex::start(&["watch", "--json", "-4", "--dport", "8030-8032"]);
    let pids = [d1.go().pid, d2.go().pid, d3.go().pid];
    for p in pids {
        assert!(all.wait_lines(&pid_needle(p), 30), "{:?}", all.stdout_now());
    }
    let all = all.stop();
    for p in pids {
        assert_eq!(
            by_action(&all.events_only_of(p)),
            client_close_5(),
            "{}",
            all.dump(p)
        );
    }
    // (flags, watcher, what it keeps, how many of our events: 20 client-side events
    // per driver, 30 with the server side)
    type Case = (&'static str, Portex, Box<dyn Fn(&Value) -> bool>, usize);
    let cases: [Case; 4] = [
        (
            "--dport 8031,8033",
            dport,
            Box::new(|e| matches!(port(e), 8031 | 8033)),
            40,
        ),
        (
            "--daddr 127.0.0.2/32",
            daddr,
            Box::new(|e| e["destination"]["ip"] == "127.0.0.2"),
            20,
        ),
        ("-6", v6, Box::new(|e| e["network"]["type"] == "ipv6"), 30),
        (
            "-4 --dport 8030-8032",
            v4range,
            Box::new(|e| e["network"]["type"] == "ipv4" && (8030..=8032).contains(&port(e))),
            40,
        ),
    ];
    for (name, watcher, keep, n) in cases {
        let want = expected(&all, &pids, &keep);
        assert_eq!(want.len(), n, "{name}");
        // Everything of ours the reference kept has reached this watcher too.
        for p in pids {
            let n = want.iter().filter(|e| e["process"]["pid"] == p).count();
            if n > 0 {
                assert!(watcher.wait_lines(&pid_needle(p), n), "{name}: {p}");
            }
        }
        let f = watcher.stop();
        assert_eq!(f.code, Some(0), "{name}: {:?}", f.stderr);
        assert_exactly(name, &f, &pids, &want, keep);
    }
}

/// `--netns` (by name and by inode) and `--container` (an id prefix): drivers that stay
/// alive (the namespace of an event is read from /proc/<pid>) in two namespaces, one
/// of them in a container's cgroup.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn watch_netns_and_container_filters_keep_exactly_that_namespace_and_container() {
    if !require_root() {
        return;
    }
    let me = std::process::id();
    let id = format!("{me:08x}{}", "c0de".repeat(14));
    let cg = Cgroup::new(&format!("portex-e2e-wf-{me}/docker-{id}.scope"));
    let a = Netns::new("wns-a");
    let b = Netns::new("wns-b");
    let b_inode = b.inode().to_string();
    let all = Portex::start(&["watch", "--json"]);
    let by_name = Portex::start(&["watch", "--json", "--netns", &a.name]);
    let by_inode = Portex::start(&["watch", "--json", "--netns", &b_inode]);
    let by_container = Portex::start(&["watch", "--json", "--container", &id[..12]]);
    // 2 closed (TIME_WAIT) and 1 open connection each: 15 events.
    let mix = |port: u16| {
        [
            "pool-mix".to_string(),
            format!("127.0.0.1:{port}"),
            format!("127.0.0.1:{}", port + 1),
            "2".into(),
            "1".into(),
            "0".into(),
        ]
    };
    let mut in_container = vec!["--cgroup", cg.path()];
    let m1 = mix(8061);
    in_container.extend(args(&m1));
    let a1 = a.spawn(&in_container);
    let m2 = mix(8063);
    let a2 = a.spawn(&args(&m2));
    let m3 = mix(8065);
    let b1 = b.spawn(&args(&m3));
    let pids = [a1.driven.pid, a2.driven.pid, b1.driven.pid];
    for p in pids {
        assert!(all.wait_lines(&pid_needle(p), 15), "{:?}", all.stdout_now());
    }
    let all = all.stop();
    let a_inode = a.inode();
    // (flags, watcher, what it keeps, how many of our events: 15 per driver)
    type Case<'a> = (
        &'static str,
        Portex,
        Box<dyn Fn(&Value) -> bool + 'a>,
        usize,
    );
    let cases: [Case; 3] = [
        (
            "--netns NAME",
            by_name,
            Box::new(move |e| e["portex"]["netns"] == a_inode),
            30,
        ),
        (
            "--netns INODE",
            by_inode,
            Box::new(|e| e["portex"]["netns"] == b.inode()),
            15,
        ),
        (
            "--container",
            by_container,
            Box::new(|e| e["container"]["id"] == id.as_str()),
            15,
        ),
    ];
    for (name, watcher, keep, n) in cases {
        let want = expected(&all, &pids, &keep);
        assert_eq!(want.len(), n, "{name}");
        for p in pids {
            let n = want.iter().filter(|e| e["process"]["pid"] == p).count();
            if n > 0 {
                assert!(watcher.wait_lines(&pid_needle(p), n), "{name}: {p}");
            }
        }
        let f = watcher.stop();
        assert_eq!(f.code, Some(0), "{name}: {:?}", f.stderr);
        assert_exactly(name, &f, &pids, &want, keep);
    }
    // The reference itself: every event of a1 is the container's, a1 and a2 are in a,
    // b1 in b.
    for e in all.events_only_of(pids[0]) {
        assert_eq!(e["container"]["id"], id.as_str(), "{e}");
    }
    assert_eq!(all.events_only_of(pids[1])[0]["portex"]["netns"], a.inode());
    assert_eq!(all.events_only_of(pids[2])[0]["portex"]["netns"], b.inode());
    drop((a1, a2, b1));
}

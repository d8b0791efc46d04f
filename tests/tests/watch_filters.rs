//! `portex watch --pid`, `--comm`, `--failures-only`: the filter keeps exactly the
//! matching events. Two drivers run side by side; the other one's events must be absent
//! and this one's all present (an unfiltered watch running at the same time is the
//! reference).
use std::collections::BTreeMap;

use portex_e2e::*;

/// Events per action.
fn by_action(events: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(action(e).to_string()).or_default() += 1;
    }
    m
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(a, n)| (a.to_string(), *n)).collect()
}

/// What `watch` (accepted sockets included) reports for `client-close ADDR 5` run by one
/// process: 5 client connects, 5 client + 5 server established, 5 client (active) + 5
/// server (passive) closes, 5 client ports in TIME_WAIT.
fn client_close_5() -> BTreeMap<String, usize> {
    counts(&[
        ("connect", 5),
        ("established", 10),
        ("close", 10),
        ("time_wait", 5),
    ])
}

/// Lines that are events (not pool_pressure alarms, which pass the filters when the
/// process is among the pool's holders, and which other tests' pools may raise).
fn events(f: &Finished) -> Vec<Value> {
    f.stdout
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| action(v) != "pool_pressure")
        .collect()
}

/// One pid's events, pool_pressure alarms left out.
fn events_of(f: &Finished, pid: u32) -> Vec<Value> {
    f.events_of(pid)
        .into_iter()
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
        by_action(&events_of(&all, other.pid)),
        client_close_5(),
        "{}",
        all.dump(other.pid)
    );
    assert_eq!(
        fingerprint(&kept),
        fingerprint(&events_of(&all, mine.pid)),
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
    let kept = events_of(&failures, failing.pid);
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
    let everything = events_of(&all, failing.pid);
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
    assert_eq!(by_action(&events_of(&all, fine.pid)), client_close_5());
}

//! How much `watch` and `agent` write: `--count`/`--duration` end them by themselves,
//! and `--lines connections` writes one line per connection.
use std::time::Duration;

use portex_e2e::*;

/// `--count N` stops after N lines and `--duration S` after S seconds, both with status
/// 0 and the exit summary; for `watch` and `agent` alike. `-p` is `--pid`.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn watch_and_agent_stop_by_themselves_after_count_lines_or_duration() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("wcount");
    let d = ns.spawn_paused(&["client-close", "127.0.0.1:8071", "5"]);
    let pid = d.driven.pid.to_string();
    let dir = TmpDir::new("wcount");
    let file = dir.join("events.ndjson");
    let watch = Portex::start(&["watch", "--json", "-p", &pid, "--count", "7"]);
    let agent = Portex::agent_to(&file, &["-p", &pid, "--count", "4", "--accepted"]);
    // Nothing matches port 1: only the clock ends it.
    let started = std::time::Instant::now();
    let timer = Portex::start(&["watch", "--json", "--dport", "1", "--duration", "2s"]);
    let d = d.go();

    let w = watch.finish(Duration::from_secs(30));
    assert_eq!(w.code, Some(0), "{:?}", w.stderr);
    assert_eq!(w.stdout.len(), 7, "{:?}", w.stdout);
    assert_eq!(w.events_of(d.pid).len(), 7, "{:?}", w.stdout);
    assert!(rendered(&w.stderr) == 7, "{:?}", w.stderr);

    let a = agent.finish(Duration::from_secs(30));
    assert_eq!(a.code, Some(0), "{:?}", a.stderr);
    let written = lines_of(&file);
    assert_eq!(written.len(), 4, "{written:?}");
    assert_eq!(events_of_pid(&written, d.pid).len(), 4, "{written:?}");

    let t = timer.finish(Duration::from_secs(30));
    let took = started.elapsed();
    assert_eq!(t.code, Some(0), "{:?}", t.stderr);
    assert!(t.stdout.is_empty(), "{:?}", t.stdout);
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(rendered(&t.stderr) == 0, "{:?}", t.stderr);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn watch_lines_connections_writes_one_line_per_connection() {
    if !require_root() {
        return;
    }
    // 5 connections the client closes first: with --lines connections, 10 `connection`
    // lines (client and server side, watch shows accepted ones), each with its start,
    // end and duration, the client's 5 with TIME_WAIT; nothing else of this process.
    let ns = Netns::new("wlines");
    let d = ns.spawn_paused(&["client-close", "127.0.0.1:8011", "5"]);
    let per_event = Portex::start(&["watch", "--json"]);
    let per_conn = Portex::start(&["watch", "--json", "--lines", "connections"]);
    let d = d.go();
    per_event.wait_lines(&pid_needle(d.pid), 30);
    per_conn.wait_lines(&pid_needle(d.pid), 10);
    let per_conn = per_conn.stop();
    let per_event = per_event.stop();
    let mine = per_conn.events_only_of(d.pid);
    assert_eq!(
        by_action(&mine),
        counts(&[("connection", 10)]),
        "{}",
        per_conn.dump(d.pid)
    );
    for e in &mine {
        let ev = &e["event"];
        assert!(ev["start"].as_str() <= ev["end"].as_str(), "{e}");
        assert_eq!(ev["end"], e["@timestamp"], "{e}");
        assert!(ev["duration"].as_u64().is_some(), "{e}");
    }
    let tw = mine
        .iter()
        .filter(|e| e["portex"]["close"]["time_wait"] == true)
        .count();
    assert_eq!(tw, 5);
    assert_eq!(
        by_action(&per_event.events_only_of(d.pid)),
        client_close_5()
    );
}

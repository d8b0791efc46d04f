//! Issue "Agent mode", the output side: the file sink (rotation, SIGHUP, `--rotate-keep`,
//! a path it cannot write, a full disk) and a stdout nobody reads.
use std::{path::PathBuf, process::Command, time::Duration};

use portex_e2e::*;

/// Rotated files kept by the rotation test.
const KEEP: &str = "200";

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn file_sink_rotates_reopens_on_sighup_and_every_line_matches_the_schema() {
    if !require_root() {
        return;
    }
    let dir = TmpDir::new("rotate");
    let out = dir.join("events.ndjson");
    let portex = Portex::agent_to(&out, &["--rotate-size", "64k", "--rotate-keep", KEEP]);
    let ns = Netns::new("rot");
    let first = ns.drive(&["client-close", "127.0.0.1:6300", "60"]);
    // 240 lines of ~600 bytes are more than 64k: the file rotates at least once.
    assert!(
        wait_for(Duration::from_secs(10), || dir
            .join("events.ndjson.1")
            .exists()),
        "rotated at 64k: {:?}",
        std::fs::read_dir(&dir).unwrap().count()
    );
    // logrotate's way: move the file away, then SIGHUP; the agent opens a new one.
    let moved = dir.join("moved.ndjson");
    std::fs::rename(&out, &moved).unwrap();
    signal(portex.pid(), libc::SIGHUP);
    let d = ns.drive(&["client-close", "127.0.0.1:6301", "3"]);
    let all_files = || {
        std::iter::once(out.clone())
            .chain(std::iter::once(moved.clone()))
            .chain(
                (1..=KEEP.parse::<u32>().unwrap()).map(|i| dir.join(format!("events.ndjson.{i}"))),
            )
            .collect::<Vec<_>>()
    };
    let count_of = |pid: u32| {
        all_files()
            .iter()
            .map(|f| count_lines_with(f, &pid_needle(pid)))
            .sum::<usize>()
    };
    // connect, established, close, time_wait per connection.
    assert!(wait_for(Duration::from_secs(10), || count_of(d.pid) == 12));
    let fin = portex.stop();
    assert_eq!(fin.code, Some(0), "{:?}", fin.stderr);
    // Tests run in parallel and the agent sees the whole host, so the files fill with
    // other tests' events too: look through every file kept.
    let rotated: Vec<PathBuf> = (1..=KEEP.parse::<u32>().unwrap())
        .map(|i| dir.join(format!("events.ndjson.{i}")))
        .collect();
    assert!(
        !dir.join(format!(
            "events.ndjson.{}",
            KEEP.parse::<u32>().unwrap() + 1
        ))
        .exists(),
        "keeps {KEEP}"
    );
    for f in &rotated {
        if let Ok(md) = std::fs::metadata(f) {
            assert!(
                md.len() <= 64 << 10,
                "{} has {} bytes",
                f.display(),
                md.len()
            );
        }
    }
    // The new events went to the reopened file (or its rotations), not to the moved one.
    let mine = |p: &PathBuf| count_lines_with(p, &pid_needle(d.pid));
    let fresh = mine(&out) + rotated.iter().map(mine).sum::<usize>();
    assert_eq!(
        (fresh, mine(&moved)),
        (12, 0),
        "after SIGHUP every new line goes to the reopened file"
    );
    assert_eq!(
        count_of(first.pid),
        240,
        "no line of the first driver was lost"
    );
    let mut n = 0;
    for f in std::iter::once(&out)
        .chain(std::iter::once(&moved))
        .chain(rotated.iter())
    {
        n += validate_lines(lines_of(f).iter().map(String::as_str));
    }
    let (written, dropped, _) = output_counts(&fin.stderr);
    assert_eq!(dropped, 0, "{:?}", fin.stderr);
    // Nothing was rotated away (KEEP is far more than this test fills), so every line
    // the agent wrote is in one of the files.
    assert_eq!(n as u64, written, "{:?}", fin.stderr);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

/// `--rotate-keep N` keeps exactly N rotated files: the oldest is removed, never more.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn rotation_keeps_exactly_rotate_keep_files() {
    if !require_root() {
        return;
    }
    let dir = TmpDir::new("keep");
    let out = dir.join("events.ndjson");
    let portex = Portex::agent_to(&out, &["--rotate-size", "4k", "--rotate-keep", "2"]);
    let ns = Netns::new("keep");
    // 30 connections, 120 lines of ~600 bytes: ~18 files of 4k, so the oldest go.
    let d = ns.drive(&["client-close", "127.0.0.1:6350", "30"]);
    let name = |i: u32| dir.join(format!("events.ndjson.{i}"));
    assert!(d.facts("connect ok ").len() == 30, "{:?}", d.lines);
    assert!(wait_for(Duration::from_secs(10), || name(2).exists()));
    // Stopping drains what is queued: the 72 KB of the driver's lines all go through
    // the sink, about 18 rotations of 4k.
    let fin = portex.stop();
    let (written, dropped, _) = output_counts(&fin.stderr);
    assert!(written >= 120 && dropped == 0, "{:?}", fin.stderr);
    assert_eq!(fin.code, Some(0), "{:?}", fin.stderr);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["events.ndjson", "events.ndjson.1", "events.ndjson.2"],
        "exactly the live file and 2 rotated ones"
    );
    for f in [name(1), name(2)] {
        let len = std::fs::metadata(&f).unwrap().len();
        assert!(len <= 4096, "{} has {len} bytes", f.display());
    }
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn an_unwritable_output_path_at_start_is_one_line_and_exit_1() {
    if !require_root() {
        return;
    }
    let out = Command::new(portex_bin())
        .args(["agent", "--output", "/nonexistent-portex-dir/events.ndjson"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/nonexistent-portex-dir/events.ndjson"),
        "{err}"
    );
}

/// A 64 KiB tmpfs fills up: the agent says so once, keeps running, and counts what it
/// drops: every line it rendered is either written or counted as dropped. (Space coming
/// back is tests/tests/hardening_output.rs.)
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_full_disk_is_survived_and_counted() {
    if !require_root() {
        return;
    }
    let dir = Tmpfs::mount("full", "64k");
    let mut portex = Portex::agent_to(&dir.join("events.ndjson"), &["--metrics", "127.0.0.1:0"]);
    let metrics = portex.metrics_addr();
    let ns = Netns::new("full");
    drop(ns.drive(&["client-close", "127.0.0.1:6400", "300"]));
    // The counters reach the metrics within a second.
    let sink_dropped = |m: &str| -> f64 {
        metric(m, "portex_sink_lines_total{result=\"dropped\"}").unwrap_or(0.0)
    };
    let (counted, m) = scrape_until(&metrics, Duration::from_secs(10), |m| sink_dropped(m) > 0.0);
    assert!(counted, "drops are counted:\n{m}");
    let dropped = sink_dropped(&m);
    assert!(portex.alive(), "the agent stays up");
    let fin = portex.stop();
    assert!(
        fin.stderr.iter().any(|l| l.contains("No space left")),
        "{:?}",
        fin.stderr
    );
    let errors = fin
        .stderr
        .iter()
        .filter(|l| l.contains("writing events failed"))
        .count();
    assert_eq!(errors, 1, "one line, not one per chunk: {:?}", fin.stderr);
    let (written, sink_dropped, _) = output_counts(&fin.stderr);
    assert!(sink_dropped as f64 >= dropped, "{:?}", fin.stderr);
    assert_eq!(
        written + sink_dropped,
        rendered(&fin.stderr),
        "every rendered line is written or counted as dropped: {:?}",
        fin.stderr
    );
    let in_file = lines_of(&dir.join("events.ndjson")).len() as u64;
    assert_eq!(in_file, written, "{:?}", fin.stderr);
}

/// Nobody reads the agent's stdout: the pipe fills, the agent keeps reading the kernel,
/// drops and counts, and its memory stays bounded.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_blocked_stdout_never_stalls_the_agent() {
    if !require_root() {
        return;
    }
    let portex = Portex::start_blocked(&[
        "agent",
        "--output",
        "-",
        "--metrics",
        "127.0.0.1:0",
        "--queue",
        "64K",
        // A small ring: a reader that stalls with the output overflows it at once.
        "--ring-kib",
        "64",
    ]);
    let metrics = portex.metrics_addr();
    let ns = Netns::new("blocked");
    drop(ns.drive(&["client-close", "127.0.0.1:6500", "3000"]));
    let get = |m: &str, name: &str| -> f64 { metric(m, name).unwrap_or(-1.0) };
    let (counted, m) = scrape_until(&metrics, Duration::from_secs(10), |m| {
        get(m, "portex_sink_lines_total{result=\"dropped\"}") > 0.0
    });
    assert!(counted, "{m}");
    // The reader is never held up by the output: with a 64 KiB ring (~580 events) a
    // stalled reader loses nearly all of the ~12,000 records; one that keeps up loses
    // none, or a few when the host's two cores are saturated by other work.
    let ring = get(&m, "portex_dropped_events_total{where=\"ring_buffer\"}");
    let events = get(&m, "portex_kernel_events_total");
    assert!(
        events > 0.0 && ring * 20.0 < events,
        "the reader kept up: {ring} lost of {events}\n{m}"
    );
    let rss_kb = rss_kib(portex.pid());
    assert!(
        rss_kb < 64 * 1024,
        "RSS {rss_kb} KiB (the README's budget is 64 MiB)"
    );
    let fin = portex.stop();
    assert_eq!(fin.code, Some(0), "{:?}", fin.stderr);
}

//! Issue "Agent mode": sinks, metrics scraped by a real Prometheus, containers, and the
//! capability set of the systemd unit.
use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use portex_e2e::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(p: &Portex, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(p.pid() as i32, sig) };
}

/// Rotated files kept by the rotation test.
const KEEP: &str = "200";

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn file_sink_rotates_reopens_on_sighup_and_every_line_matches_the_schema() {
    if !require_root() {
        return;
    }
    let dir = tmp_dir("rotate");
    let out = dir.join("events.ndjson");
    let portex = Portex::start(&[
        "agent",
        "--output",
        out.to_str().unwrap(),
        "--rotate-size",
        "64k",
        "--rotate-keep",
        KEEP,
    ]);
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
    signal(&portex, libc::SIGHUP);
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
            .map(|f| {
                lines_of(f)
                    .iter()
                    .filter(|l| l.contains(&format!("\"pid\":{pid},")))
                    .count()
            })
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
    let mine = |p: &Path| {
        lines_of(p)
            .iter()
            .filter(|l| l.contains(&format!("\"pid\":{},", d.pid)))
            .count()
    };
    let fresh = mine(&out) + rotated.iter().map(|f| mine(f)).sum::<usize>();
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
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--rotate-keep N` keeps exactly N rotated files: the oldest is removed, never more.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn rotation_keeps_exactly_rotate_keep_files() {
    if !require_root() {
        return;
    }
    let dir = tmp_dir("keep");
    let _rm = RmDir(dir.clone());
    let out = dir.join("events.ndjson");
    let portex = Portex::start(&[
        "agent",
        "--output",
        out.to_str().unwrap(),
        "--rotate-size",
        "4k",
        "--rotate-keep",
        "2",
    ]);
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
/// back is tests/tests/hardening.rs.)
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_full_disk_is_survived_and_counted() {
    if !require_root() {
        return;
    }
    let dir = tmp_dir("full");
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "tmpfs",
            dir.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _guard = Unmount(dir.clone());
    let mut portex = Portex::start(&[
        "agent",
        "--output",
        dir.join("events.ndjson").to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = portex.metrics_addr();
    let ns = Netns::new("full");
    drop(ns.drive(&["client-close", "127.0.0.1:6400", "300"]));
    // The counters reach the metrics within a second.
    let mut m = String::new();
    let sink_dropped = |m: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with("portex_sink_lines_total{result=\"dropped\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        wait_for(Duration::from_secs(10), || {
            m = http_get(&metrics, "/metrics").unwrap_or_default();
            sink_dropped(&m) > 0.0
        }),
        "drops are counted:\n{m}"
    );
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
    let mut m = String::new();
    let get = |m: &str, name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(
        wait_for(Duration::from_secs(10), || {
            m = http_get(&metrics, "/metrics").unwrap_or_default();
            get(&m, "portex_sink_lines_total{result=\"dropped\"}") > 0.0
        }),
        "{m}"
    );
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

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn prometheus_scrapes_the_failure_counter_of_an_exhaustion() {
    if !require_root() {
        return;
    }
    let portex = Portex::start(&["agent", "--output", "/dev/null", "--metrics", "127.0.0.1:0"]);
    let metrics = portex.metrics_addr();
    let ns = Netns::new("prom");
    ns.port_range(40000, 40003);
    let d = ns.drive(&["exhaust-tcp", "127.0.0.1:6600", "10"]);
    let failures = d.facts("connect err ").len();
    assert!(failures > 0);

    // promtool agrees with the exposition.
    let body = http_get(&metrics, "/metrics").unwrap_or_default();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes it; its HTTP API finds the counter.
    let dir = tmp_dir("prom");
    let prom_addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: portex\n    static_configs:\n      - targets: ['{metrics}']\n"),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
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
        .expect("prometheus");
    struct Kill(std::process::Child, PathBuf);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _prom = Kill(
        std::mem::replace(&mut prom, Command::new("true").spawn().unwrap()),
        dir.clone(),
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
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = info
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("a cgroup v2 mount");
    let id = format!("{:064x}", 0xfeed_u64 + std::process::id() as u64);
    let parent = PathBuf::from(root).join(format!("portex-e2e-{}", std::process::id()));
    let cg = parent.join(format!("docker-{id}.scope"));
    std::fs::create_dir_all(&cg).expect("creating a test cgroup");
    struct Rm(PathBuf, PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
            let _ = std::fs::remove_dir(&self.1);
        }
    }
    let _rm = Rm(cg.clone(), parent);
    let portex = Portex::start(&["watch", "--json"]);
    let ns = Netns::new("cgroup");
    // The driver stays alive until its events are seen: the namespace of an event is
    // read from /proc/<pid>, which a process that has exited no longer has (README,
    // "Limits and failure behaviour").
    let held = ns.spawn(&[
        "--cgroup",
        cg.to_str().unwrap(),
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
    let ev: Vec<Value> = portex
        .stdout_now()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["process"]["pid"] == pid)
        .collect();
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
        let ns = Netns::new("accepted");
        ns.port_range(41000, 41099);
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
    }
}

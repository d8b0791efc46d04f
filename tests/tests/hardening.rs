//! Issue "Reliability and security": a root agent that no local user can stall, blind or
//! redirect. Each test reproduces one finding and fails without its fix.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use portex_e2e::*;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portex-e2e-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct RmDir(PathBuf);
impl Drop for RmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// GET a path; None when the server closed without an answer.
fn try_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let out = String::from_utf8_lossy(&out).into_owned();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn lines_of(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// A process of uid 65534 (nobody) holding `n` idle connections to `addr`.
struct Hostile(Child);

impl Hostile {
    fn hold(addr: &str, n: usize) -> (Hostile, String) {
        let mut child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(public_copy(&driver_bin()))
            .args(["hold-conns", addr, &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv (util-linux)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut facts = String::new();
        loop {
            let mut l = String::new();
            if out.read_line(&mut l).unwrap_or(0) == 0 || l.trim() == "ready" {
                break;
            }
            facts.push_str(&l);
        }
        (Hostile(child), facts)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Finding 1: with more idle metrics connections than the agent's open-file limit (from
/// an unprivileged user), the agent does not spin on accept(), keeps writing and
/// rotating its file without losing a line, and serves a scrape once they time out.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn idle_metrics_clients_beyond_the_fd_limit_neither_pin_a_core_nor_drop_lines() {
    if !require_root() {
        return;
    }
    let dir = tmp("fdlimit");
    let _rm = RmDir(dir.clone());
    let out = dir.join("events.ndjson");
    let portex = Portex::start_wrapped(
        &["prlimit", "--nofile=256:256", "--"],
        &[
            "agent",
            "--output",
            out.to_str().unwrap(),
            "--rotate-size",
            "64k",
            "--rotate-keep",
            "1000",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let metrics = portex.metrics_addr();
    let (hostile, facts) = Hostile::hold(&metrics, 1100);
    assert!(facts.contains("held "), "{facts}");
    // Idle, the agent must be idle too: a spinning accept() loop takes a whole core.
    let before = cpu_ticks(portex.pid());
    thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(portex.pid()) - before;
    assert!(
        spent < 100,
        "agent used {spent} ticks of CPU in 3 s while 1100 connections sat idle"
    );
    // Churn that makes the file rotate (and so reopen) while the connections are held.
    let ns = Netns::new("fdlimit");
    let d = ns.drive(&["client-close", "127.0.0.1:6900", "200"]);
    // The idle clients are closed after their 5 s; then a scrape is served.
    let mut body = None;
    assert!(
        wait_for(Duration::from_secs(30), || {
            body = try_get(&metrics, "/metrics");
            body.is_some()
        }),
        "no scrape answered while the connections were held"
    );
    let body = body.unwrap();
    assert!(
        metric(
            &body,
            "portex_http_connections_rejected_total{reason=\"too_many_clients\"}"
        )
        .unwrap_or(0.0)
            > 0.0,
        "{body}"
    );
    drop(hostile);
    let fin = portex.stop();
    let (written, dropped, errors) = output_counts(&fin.stderr);
    assert_eq!((dropped, errors), (0, 0), "{:?}", fin.stderr);
    // Every line of the driver reached a file.
    let mut mine = 0;
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        mine += lines_of(&f.path())
            .iter()
            .filter(|l| l.contains(&format!("\"pid\":{},", d.pid)))
            .count();
    }
    assert_eq!(
        mine, 800,
        "connect, established, close, time_wait for 200 connections"
    );
    assert!(written >= 800);
}

/// Finding 2: the output path is never followed through a symlink, a FIFO does not
/// block start-up, and a file with another link is refused.
#[test]
fn unsafe_output_paths_are_refused_at_start_in_one_line() {
    let dir = tmp("paths");
    let _rm = RmDir(dir.clone());
    let secret = dir.join("secret");
    std::fs::write(&secret, "keep").unwrap();
    let link = dir.join("link.ndjson");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let fifo = dir.join("fifo.ndjson");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let hard = dir.join("hard.ndjson");
    std::fs::hard_link(&secret, &hard).unwrap();
    for (path, why) in [
        (&link, "symbolic link"),
        (&fifo, "not a regular file"),
        (&hard, "hard links"),
    ] {
        let (code, err, took) = run_portex(&["agent", "--output", path.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(why), "{err}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "keep");
}

/// `portex ARGS` to completion: (exit code, stderr, how long it took). Killed after 20 s.
fn run_portex(args: &[&str]) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(portex_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    let mut pipe = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let _ = pipe.read_to_string(&mut err);
        err
    });
    let done = wait_for(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !done {
        let _ = child.kill();
    }
    let code = child.wait().unwrap().code();
    (code, reader.join().unwrap(), start.elapsed())
}

/// Findings 7 and 8: sizes and thresholds out of bounds, from flags or the file, are
/// one line and exit 1, before anything is allocated or loaded.
#[test]
fn sizes_and_thresholds_out_of_bounds_are_one_line_errors() {
    let dir = tmp("bounds");
    let _rm = RmDir(dir.clone());
    let conf = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let huge_queue = conf("queue.toml", "queue = 1000000000000\n");
    let huge_ring = conf("ring.toml", "ring_kib = 4194304\n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["agent", "--queue", "18446744073709551615"],
            "queue must be between",
        ),
        (
            vec!["agent", "--config", &huge_queue],
            "queue must be between",
        ),
        (
            vec!["agent", "--config", &huge_ring],
            "ring-kib must be between",
        ),
        (vec!["agent", "--config", "/dev/zero"], "not a regular file"),
        (
            vec!["agent", "--ring-kib", "4194304"],
            "ring-kib must be between",
        ),
        (
            vec!["agent", "--ring-kib", "1048576"],
            "ring-kib must be between",
        ),
        (
            vec!["agent", "--rotate-size", "99999999999999999999G"],
            "not a size",
        ),
        (vec!["agent", "--rotate-keep", "1000000"], "rotate-keep"),
        (vec!["agent", "--metrics", ""], "--metrics"),
        (
            vec!["agent", "--warn", "90", "--critical", "80"],
            "must not be below",
        ),
        (
            vec!["status", "--warn", "90", "--critical", "80"],
            "must not be below",
        ),
    ];
    for (args, needle) in cases {
        let (code, err, took) = run_portex(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(err.starts_with("portex: error: "), "{args:?}: {err}");
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
    }
}

/// Findings 3, 4 and 9: nobody reads the output. The agent (and watch) keep their
/// memory bounded, exit within seconds of SIGTERM, and the summary's headline loss is
/// the sum of its parts, kernel runs skipped included.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_blocked_output_bounds_memory_and_does_not_delay_sigterm() {
    if !require_root() {
        return;
    }
    for args in [&["agent", "--output", "-"][..], &["watch", "--json"][..]] {
        let portex = Portex::start_blocked(args);
        let pid = portex.pid();
        let ns = Netns::new("blocked");
        let mut peak = 0;
        let flood = {
            let name = ns.name.clone();
            thread::spawn(move || {
                Command::new(driver_bin())
                    .args(["--netns", &name, "flood", "127.0.0.1:7000", "6", "2"])
                    .output()
                    .unwrap()
            })
        };
        while !flood.is_finished() {
            peak = peak.max(rss_kib(pid));
            thread::sleep(Duration::from_millis(100));
        }
        let flooded = String::from_utf8_lossy(&flood.join().unwrap().stdout).into_owned();
        let t = Instant::now();
        let fin = portex.stop_with(libc::SIGTERM);
        let took = t.elapsed();
        // The output thread gets 3 s to finish a write before the agent leaves it.
        assert!(
            took < Duration::from_secs(8),
            "{args:?} took {took:?} to stop: {:?}",
            fin.stderr
        );
        assert_eq!(fin.code, Some(0), "{args:?}: {:?}", fin.stderr);
        assert!(
            peak < 64 * 1024,
            "{args:?}: RSS peaked at {peak} KiB ({flooded})"
        );
        let (total, parts) =
            summary_losses(&fin.stderr).unwrap_or_else(|| panic!("no summary: {:?}", fin.stderr));
        assert_eq!(
            total,
            parts.iter().map(|p| p.1).sum::<u64>(),
            "{:?}",
            fin.stderr
        );
        assert!(
            parts.iter().any(|p| p.0 == "kernel runs skipped"),
            "{:?}",
            fin.stderr
        );
        if args[0] == "agent" {
            let (_, dropped, _) = output_counts(&fin.stderr);
            assert!(
                dropped > 0,
                "the blocked output dropped nothing? {:?}",
                fin.stderr
            );
        }
    }
}

/// Finding 3: a closed terminal (SIGHUP) ends `watch`.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn watch_stops_on_sighup() {
    if !require_root() {
        return;
    }
    let mut p = Portex::start(&["watch"]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(p.pid() as i32, libc::SIGHUP) };
    assert!(wait_for(Duration::from_secs(10), || !p.alive()));
    let fin = p.stop();
    assert_eq!(fin.code, Some(0), "{:?}", fin.stderr);
}

/// Finding 5: a full disk leaves no partial line; when space returns, writing resumes
/// and every line in the file is whole JSON, as many as the summary says were written.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_full_disk_leaves_whole_lines_and_resumes() {
    if !require_root() {
        return;
    }
    let dir = tmp("enospc");
    assert!(
        Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=64k",
                "tmpfs",
                dir.to_str().unwrap()
            ])
            .status()
            .unwrap()
            .success()
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _guard = Unmount(dir.clone());
    let out = dir.join("events.ndjson");
    let portex = Portex::start(&["agent", "--output", out.to_str().unwrap()]);
    let ns = Netns::new("enospc");
    drop(ns.drive(&["client-close", "127.0.0.1:7100", "300"]));
    assert!(
        portex.wait_stderr("No space left", 1, Duration::from_secs(20)),
        "{:?}",
        portex.stderr_now()
    );
    // Space returns.
    assert!(
        Command::new("mount")
            .args(["-o", "remount,size=1g", dir.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    // Writing resumes at the first write after the retry delay: churn until it says so.
    assert!(
        wait_for(Duration::from_secs(20), || {
            drop(ns.drive(&["client-close", "127.0.0.1:7102", "2"]));
            portex
                .stderr_now()
                .iter()
                .any(|l| l.contains("written again"))
        }),
        "{:?}",
        portex.stderr_now()
    );
    let d = ns.drive(&["client-close", "127.0.0.1:7101", "20"]);
    let mine = || {
        lines_of(&out)
            .iter()
            .filter(|l| l.contains(&format!("\"pid\":{},", d.pid)))
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(10), || mine() == 80),
        "{} lines of 20 connections; {:?}",
        mine(),
        portex.stderr_now()
    );
    let fin = portex.stop();
    let lines = lines_of(&out);
    // validate_lines panics on any line that is not whole, valid JSON.
    let n = validate_lines(lines.iter().map(String::as_str));
    let (written, dropped, _) = output_counts(&fin.stderr);
    assert_eq!(n as u64, written, "{:?}", fin.stderr);
    assert!(dropped > 0);
}

/// Finding 6: a deleted output file is noticed before the next write, said once, and
/// created again; nothing more goes to the unlinked inode.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_deleted_output_file_is_created_again() {
    if !require_root() {
        return;
    }
    let dir = tmp("deleted");
    let _rm = RmDir(dir.clone());
    let out = dir.join("events.ndjson");
    let portex = Portex::start(&["agent", "--output", out.to_str().unwrap()]);
    let ns = Netns::new("deleted");
    let first = ns.drive(&["client-close", "127.0.0.1:7200", "3"]);
    assert!(wait_for(Duration::from_secs(10), || {
        lines_of(&out)
            .iter()
            .any(|l| l.contains(&format!("\"pid\":{},", first.pid)))
    }));
    std::fs::remove_file(&out).unwrap();
    let second = ns.drive(&["client-close", "127.0.0.1:7201", "3"]);
    let mine = || {
        lines_of(&out)
            .iter()
            .filter(|l| l.contains(&format!("\"pid\":{},", second.pid)))
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(10), || mine() == 12),
        "{} lines of the second driver in the new file; {:?}",
        mine(),
        portex.stderr_now()
    );
    let fin = portex.stop();
    let said = fin
        .stderr
        .iter()
        .filter(|l| l.contains("was removed"))
        .count();
    assert_eq!(said, 1, "{:?}", fin.stderr);
}

/// Finding 8: `watch --pid` of a process that does not exist says so, once.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn watch_of_a_missing_pid_says_so_once() {
    if !require_root() {
        return;
    }
    let p = Portex::start(&["watch", "--pid", "99999999"]);
    let fin = p.stop();
    let n = fin
        .stderr
        .iter()
        .filter(|l| l.contains("no process 99999999"))
        .count();
    assert_eq!(n, 1, "{:?}", fin.stderr);
}

/// Finding 10: a process named with an invalid UTF-8 byte, a right-to-left override
/// and an escape sequence is shown, never empty, and drives no terminal: in watch's
/// text, in NDJSON, and in the metrics' label values.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn hostile_process_names_are_shown_escaped_everywhere() {
    if !require_root() {
        return;
    }
    let agent = Portex::start(&[
        "agent",
        "--syscall-hooks",
        "on",
        "--metrics",
        "127.0.0.1:0",
        "--metrics-top-processes",
        "10000",
    ]);
    let metrics = agent.metrics_addr();
    let text = Portex::start(&["watch"]);
    let ns = Netns::new("names");
    // "\xff" "ev\u{202e}il" "\x1b[2J": 12 bytes.
    let held = ns.spawn(&[
        "--name-hex",
        "ff6576e280ae696c1b5b324a",
        "pool-mix",
        "127.0.0.1:7300",
        "127.0.0.1:7301",
        "0",
        "4",
        "0",
    ]);
    let pid = held.driven.pid;
    let mut body = String::new();
    assert!(
        wait_for(Duration::from_secs(15), || {
            body = try_get(&metrics, "/metrics").unwrap_or_default();
            body.contains(&format!("pid=\"{pid}\""))
        }),
        "the holder gauge of pid {pid} never appeared:\n{body}"
    );
    // No control byte and no bidi control anywhere in the exposition.
    assert!(
        !body
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "raw control characters in /metrics"
    );
    let line = body
        .lines()
        .find(|l| l.contains(&format!("pid=\"{pid}\"")))
        .unwrap();
    assert!(
        line.contains(r#"comm="\\xffev\\u{202e}il\\x1b[2J""#),
        "{line}"
    );
    drop(held);
    let fin = agent.stop();
    let ev = fin.events_of(pid);
    assert!(!ev.is_empty(), "{}", fin.dump(pid));
    for e in &ev {
        assert_eq!(
            e["process"]["name"], "\\xffev\u{202e}il\u{1b}[2J",
            "JSON keeps the name, escaped as JSON: {e}"
        );
    }
    let fin = text.stop();
    let mine: Vec<&String> = fin
        .stdout
        .iter()
        .filter(|l| l.contains(&format!(" {pid} ")))
        .collect();
    assert!(!mine.is_empty(), "{:?}", fin.stdout);
    for l in mine {
        assert!(
            l.contains(r"\xffev\u{202e}il\x1b[2J"),
            "watch shows the name escaped: {l:?}"
        );
        assert!(
            !l.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{l:?}"
        );
    }
}

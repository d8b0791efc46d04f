//! Issue "Port pools": `portex top` in a real terminal (tmux, 80x24).
use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use portex_e2e::*;

struct Tmux(String);

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        let name = format!("portex-e2e-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "80",
                "-y",
                "24",
                cmd,
            ])
            .status()
            .expect("tmux");
        assert!(ok.success());
        Tmux(name)
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, k: &str) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.0, k])
            .status()
            .unwrap();
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Waits until `pred` holds for the screen; returns the last screen either way.
    fn wait_for(&self, secs: u64, pred: impl Fn(&str) -> bool) -> (bool, String) {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if pred(&s) {
                return (true, s);
            }
            if Instant::now() > end {
                return (false, s);
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn top_shows_the_churning_process_switches_tabs_and_quits() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("top");
    let bin = portex_bin();
    let tmux = Tmux::start(&format!("{} top", bin.display()));
    let (ok, s) = tmux.wait_for(60, |s| s.contains("sorted by"));
    assert!(ok, "top did not start:\n{s}");
    // A churning client whose name carries an escape sequence (clear screen).
    let churn = ns.spawn(&["--name", "\x1b[2Jevil", "churn", "127.0.0.1:7100", "100000"]);
    let pid = churn.driven.pid.to_string();
    let (ok, s) = tmux.wait_for(15, |s| {
        s.lines()
            .map(|l| l.trim_matches(|c: char| c == '│' || c.is_whitespace()))
            .any(|l| {
                l.starts_with(&pid)
                    && l.split_whitespace()
                        .nth(2)
                        .and_then(|r| r.parse::<f64>().ok())
                        .is_some_and(|r| r > 0.0)
            })
    });
    assert!(ok, "the churning pid {pid} with a non-zero rate:\n{s}");
    assert!(
        s.contains("\\x1b[2Jevil"),
        "the name is shown escaped, not interpreted:\n{s}"
    );
    // tmux clips whatever does not fit, so a layout that overflows 80x24 shows up as
    // a missing key line at the bottom.
    assert!(
        s.lines().any(|l| l.contains("q quit")),
        "the key line fits on the 80x24 screen:\n{s}"
    );
    tmux.keys("2");
    let (ok, s) = tmux.wait_for(5, |s| s.contains("pools (source"));
    assert!(ok, "tab 2 shows pools:\n{s}");
    assert!(s.contains("127.0.0.1:7100"), "{s}");
    tmux.keys("q");
    let end = Instant::now() + Duration::from_secs(10);
    while tmux.alive() && Instant::now() < end {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(!tmux.alive(), "q quits");
    drop(churn);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn top_without_a_terminal_says_so_and_once_prints_a_frame() {
    if !require_root() {
        return;
    }
    let out = Command::new(portex_bin())
        .arg("top")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--once") && err.lines().count() == 1, "{err}");
    // A pool filled before top starts: 4 live connections out of a 10-port range.
    let ns = Netns::with_range("top-once", 40000, 40009);
    let held = ns.spawn(&[
        "pool-mix",
        "127.0.0.1:7450",
        "127.0.0.1:7451",
        "0",
        "4",
        "0",
    ]);
    let out = Command::new(portex_bin())
        .args(["top", "--once", "--interval", "0.5", "--rows", "100000"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let pid = held.driven.pid.to_string();
    let proc_row: Vec<&str> = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pid.as_str()))
        .unwrap_or_else(|| panic!("no row for pid {pid}:\n{text}"))
        .split_whitespace()
        .collect();
    // PID NAME CONN/s CLOSE/s HELD TW FAIL FULLEST
    assert_eq!(
        (proc_row[4], proc_row[5], proc_row[6], proc_row[7]),
        ("4", "0", "0", "40%"),
        "{text}"
    );
    let pool_row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("127.0.0.1 -> 127.0.0.1:7450 "))
        .unwrap_or_else(|| panic!("no pool row:\n{text}"))
        .split_whitespace()
        .collect();
    // POOL(3 words) SIZE USED TW UTIL
    assert_eq!(
        (pool_row[3], pool_row[4], pool_row[5], pool_row[6]),
        ("10", "4", "0", "40%"),
        "{text}"
    );
    drop(held);
}

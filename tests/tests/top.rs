//! Issue "Port pools": `portex top` in a real terminal (tmux, 80x24); issue 15: the
//! picture of a filling pool and the answer on the same screen (80x24 and 200x50).
use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use portex_e2e::*;

struct Tmux(String);

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        Tmux::sized(cmd, 80, 24)
    }

    fn sized(cmd: &str, width: u16, height: u16) -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "portex-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (w, h) = (width.to_string(), height.to_string());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", &w, "-y", &h, cmd])
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

/// The figure after "used " in the chart's legend ("used 12  TIME_WAIT 12 ...").
fn chart_used(screen: &str) -> Option<u32> {
    screen.lines().find_map(|l| {
        let at = l.find(" used ")? + " used ".len();
        let rest = &l[at..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        rest[digits.len()..]
            .starts_with("  TIME_WAIT")
            .then(|| digits.parse().ok())?
    })
}

/// The braille cells of a screen: the plotted lines of the chart.
fn plot(screen: &str) -> String {
    screen
        .chars()
        .filter(|c| ('\u{2801}'..='\u{28ff}').contains(c))
        .collect()
}

/// Waits for the chart's used figure to reach `n`; returns the figure and the screen.
/// Read twice alike: a capture can fall between the writes of one frame ("used 38"
/// becoming "used 40" reads "used 48" half-way).
fn wait_used(t: &Tmux, n: u32, what: &str) -> (u32, String) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let a = t.screen();
        thread::sleep(Duration::from_millis(150));
        let b = t.screen();
        match (chart_used(&a), chart_used(&b)) {
            (Some(x), Some(y)) if x == y && x >= n => return (x, b),
            _ if Instant::now() > end => panic!("{what}: the chart never showed {n} used:\n{b}"),
            _ => {}
        }
    }
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn top_draws_a_filling_pool_and_the_fix_for_a_client_that_closes_first() {
    if !require_root() {
        return;
    }
    // 40 ports, TIME_WAIT held the whole 60 s: a client closing first 3 times a second
    // fills the pool in about 13 s, then fails.
    let ns = Netns::with_range("top-fill", 40000, 40039);
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let cmd = format!("{} top", portex_bin().display());
    let screens = [
        ("80x24", Tmux::sized(&cmd, 80, 24)),
        ("200x50", Tmux::sized(&cmd, 200, 50)),
    ];
    for (what, t) in &screens {
        let (ok, s) = t.wait_for(60, |s| s.contains("sorted by"));
        assert!(ok, "{what}: top did not start:\n{s}");
    }
    let fill = ns.spawn(&["client-close-paced", "127.0.0.1:7460", "3"]);
    let pid = fill.driven.pid.to_string();
    for (_, t) in &screens {
        // The pools tab, only the pool the driver holds (other tests run beside this
        // one, maybe towards the same address in another namespace).
        t.keys("2");
        t.keys("/");
        t.keys(&pid);
        t.keys("Enter");
    }
    for (what, t) in &screens {
        let (n, before) = wait_used(t, 6, what);
        let (_, after) = wait_used(t, (n + 6).min(40), what);
        assert!(!plot(&before).is_empty(), "{what}: no plot:\n{before}");
        assert_ne!(
            plot(&before),
            plot(&after),
            "{what}: the chart did not move:\n{before}\n{after}"
        );
        assert!(
            after.lines().any(|l| l.contains("q quit")),
            "{what}: the key line fits:\n{after}"
        );
    }
    // Full: the first failure is marked and the answers are on the big screen at once.
    // (Waited for as a whole: an event lost under load leaves the ledger a port short
    // until the next reconciliation, at most 10 s.)
    let (_, big) = &screens[1];
    let want = [
        "1st failure".to_string(),
        "40 of 40 ports used (100%)".into(),
        "connect() failed towards it, the first".into(),
        format!("top holders: {pid} "),
        "fix: let the server close first".into(),
        "fix: sysctl -w net.ipv4.tcp_tw_reuse=1".into(),
    ];
    let (ok, s) = big.wait_for(60, |s| want.iter().all(|w| s.contains(w.as_str())));
    let missing: Vec<&String> = want.iter().filter(|w| !s.contains(w.as_str())).collect();
    assert!(ok, "200x50: missing {missing:?}:\n{s}");
    // On the small one, Enter gives the detail the screen and the arrows scroll it.
    let (_, small) = &screens[0];
    small.keys("Enter");
    let mut found = false;
    for _ in 0..30 {
        let s = small.screen();
        if s.contains("fix: let the server close first") {
            found = true;
            break;
        }
        small.keys("j");
        thread::sleep(Duration::from_millis(300));
    }
    assert!(found, "80x24: the fix after scrolling:\n{}", small.screen());
    for (_, t) in &screens {
        t.keys("q");
    }
    drop(fill);
}

//! More of the harness (kept apart to keep lib.rs short): drivers paused until told to
//! go, a namespace's inode, SIGTERM, waiting for portex's lines, metrics scrapes,
//! loaded BPF programs, and `portex status` inside a namespace.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::*;

/// A driver started with `after-go`: it has printed its pid and waits for `go` before
/// it makes any socket (so a test can start `portex watch --pid` on it first).
pub struct Paused {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    pub pid: u32,
}

impl Netns {
    /// Starts `driver --netns NAME after-go ARGS...` and waits until it is ready.
    pub fn spawn_paused(&self, args: &[&str]) -> Paused {
        let mut child = Command::new(driver_bin())
            .arg("--netns")
            .arg(&self.name)
            .arg("after-go")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the driver");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut pid = None;
        loop {
            let mut l = String::new();
            if out.read_line(&mut l).unwrap_or(0) == 0 {
                panic!("driver {args:?} ended before it was ready");
            }
            let l = l.trim_end();
            if l == "ready" {
                break;
            }
            if let Some(p) = l.strip_prefix("pid ") {
                pid = p.parse().ok();
            }
        }
        Paused {
            child,
            out,
            pid: pid.expect("driver printed no pid"),
        }
    }
}

impl Paused {
    /// Lets it run to its end: every fact line it printed (the pid line included).
    pub fn go(mut self) -> Driven {
        use std::io::Write;
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").expect("telling the driver to go");
        drop(stdin);
        let mut lines = vec![format!("pid {}", self.pid)];
        let mut l = String::new();
        while self.out.read_line(&mut l).unwrap_or(0) > 0 {
            lines.push(l.trim_end().to_string());
            l.clear();
        }
        let status = self.child.wait().expect("waiting for the driver");
        assert!(status.success(), "driver failed: {lines:?}");
        Driven {
            pid: self.pid,
            lines,
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One sample of the Prometheus text format: name, labels in order, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample line of an exposition (comments skipped); panics on a line it cannot
/// read, so a malformed line fails the test that scraped it.
pub fn parse_samples(body: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (head, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "label {key} unquoted: {line}");
                    let mut v = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => v.push('\n'),
                                Some(c) => v.push(c),
                                None => panic!("dangling escape: {line}"),
                            },
                            Some('"') => break,
                            Some(c) => v.push(c),
                            None => panic!("unterminated label value: {line}"),
                        }
                    }
                    labels.push((key, v));
                    match chars.next() {
                        Some(',') | None => {}
                        Some(c) => panic!("unexpected {c:?} after a label: {line}"),
                    }
                }
                (name.to_string(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// Ids of the BPF programs process `pid` holds open, from /proc/PID/fdinfo (the
/// `prog_id` of each descriptor that is a bpf-prog).
pub fn bpf_programs_of(pid: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let is_prog = std::fs::read_link(fd.path())
            .map(|t| t.to_string_lossy() == "anon_inode:bpf-prog")
            .unwrap_or(false);
        if !is_prog {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Ids of every BPF program loaded now, from `bpftool -j prog show`.
pub fn all_bpf_programs() -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool -j prints JSON");
    v.as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// `portex status --json ARGS` run inside `ns`: (exit code, the report).
pub fn status_in(ns: &Netns, args: &[&str]) -> (Option<i32>, Value) {
    let bin = portex_bin();
    let mut cmd = vec![bin.to_str().unwrap(), "status", "--json"];
    cmd.extend_from_slice(args);
    let (code, out, err) = ns.exec(&cmd);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("status --json {args:?}: {e}\n{out}\n{err}"));
    (code, v)
}

/// Diagnosis ids of a status report's namespace entry, sorted.
pub fn diagnosis_ids(ns_report: &Value) -> Vec<String> {
    let mut ids: Vec<String> = ns_report["diagnoses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Client-side sockets in state `state` (ss's name, e.g. "time-wait") inside `ns`.
pub fn ss_count(ns: &Netns, state: &str) -> usize {
    let (_, out, _) = ns.exec(&["ss", "-tanH", "state", state]);
    out.lines().filter(|l| !l.trim().is_empty()).count()
}

impl Portex {
    /// Waits (up to a minute: on a busy host the agent may lag behind) until at least
    /// `n` lines of stdout contain `needle`; true when they did. Tests call it before
    /// `stop` so that what they count was written, and then assert exact counts.
    pub fn wait_lines(&self, needle: &str, n: usize) -> bool {
        self.wait_stdout(n, |l| l.contains(needle))
    }

    /// The same with every needle on one line.
    pub fn wait_lines_with(&self, needles: &[&str], n: usize) -> bool {
        self.wait_stdout(n, |l| needles.iter().all(|x| l.contains(x)))
    }

    fn wait_stdout(&self, n: usize, pred: impl Fn(&str) -> bool) -> bool {
        wait_for(Duration::from_secs(60), || {
            self.stdout_now().iter().filter(|l| pred(l)).count() >= n
        })
    }
}

/// The text that marks a JSON line of process `pid` (for `Portex::wait_lines`).
pub fn pid_needle(pid: u32) -> String {
    format!("\"pid\":{pid},")
}

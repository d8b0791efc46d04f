//! The real `portex` binary run as a child: its output collected line by line, waiting
//! for its lines, the figures of its closing summary, and `portex status` in a namespace.
use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use crate::{
    Netns, Value, events_of_pid, lines_of, portex_bin, signal, validate_lines, wait_exit, wait_for,
};

/// A running `portex` child; SIGINT and reaped on drop. Every JSON line it wrote, to
/// stdout or to its `--output` file (and the files rotated from it), is validated
/// against docs/event.schema.json when it stops, by `stop` or on drop.
pub struct Portex {
    json: bool,
    /// The agent's `--output` file, when it is not stdout.
    output: Option<PathBuf>,
    /// Its lines were validated (by `stop`).
    checked: bool,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
    /// start_blocked: the stdout pipe, held open and never read.
    unread: Option<std::process::ChildStdout>,
}

pub struct Finished {
    pub code: Option<i32>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Portex {
    /// Starts `portex <args>` and waits until it says it is watching.
    pub fn start(args: &[&str]) -> Portex {
        Portex::start_wrapped(&[], args)
    }

    /// `portex agent --output OUT FLAGS...`: the agent with its file sink.
    pub fn agent_to(out: &std::path::Path, flags: &[&str]) -> Portex {
        let mut args = vec!["agent", "--output", out.to_str().unwrap()];
        args.extend_from_slice(flags);
        Portex::start(&args)
    }

    /// The same under a wrapper command (e.g. `prlimit --nofile=256:256 --`).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Portex {
        Portex::launch(wrapper, args, true)
    }

    /// Starts it with a stdout that nobody reads: the pipe fills and its writes block.
    pub fn start_blocked(args: &[&str]) -> Portex {
        Portex::launch(&[], args, false)
    }

    fn launch(wrapper: &[&str], args: &[&str], read_stdout: bool) -> Portex {
        let bin = portex_bin();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting portex");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut readers = Vec::new();
        let out = child.stdout.take().unwrap();
        let mut unread = None;
        if read_stdout {
            let sink = stdout.clone();
            readers.push(thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            }));
        } else {
            unread = Some(out);
        }
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        readers.push(thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let ready = line.contains("watching") || line.contains("error");
                sink.lock().unwrap().push(line);
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        }));
        let json = args.contains(&"--json") || args.first() == Some(&"agent");
        let p = Portex {
            json,
            output: output_file(args),
            checked: false,
            child,
            stdout,
            stderr,
            readers,
            unread,
        };
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let err = p.stderr.lock().unwrap().join("\n");
            panic!("portex did not start: {err}");
        }
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the JSON events of `pid` seen so far satisfy `done`.
    pub fn wait_events(
        &self,
        pid: u32,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> bool {
        wait_for(timeout, || {
            done(&events_of_pid(&self.stdout.lock().unwrap(), pid))
        })
    }

    /// The JSON events of `pid` on its stdout so far.
    pub fn events_now(&self, pid: u32) -> Vec<Value> {
        events_of_pid(&self.stdout.lock().unwrap(), pid)
    }

    /// The address the metrics server bound (start it with `--metrics 127.0.0.1:0`: the
    /// kernel picks a free port, so parallel tests never race for one).
    pub fn metrics_addr(&self) -> String {
        self.stderr_now()
            .iter()
            .find_map(|l| {
                let (_, rest) = l.split_once("metrics on http://")?;
                Some(rest.split_once("/metrics")?.0.to_string())
            })
            .expect("portex names its metrics address when it starts")
    }

    /// Lines of stderr so far.
    pub fn stderr_now(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Lines of stdout so far.
    pub fn stdout_now(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until a line of its stderr contains `needle` `times` times in all.
    pub fn wait_stderr(&self, needle: &str, times: usize, timeout: Duration) -> bool {
        wait_for(timeout, || {
            let lines = self.stderr.lock().unwrap();
            lines.iter().filter(|l| l.contains(needle)).count() >= times
        })
    }

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
            let lines = self.stdout.lock().unwrap();
            lines.iter().filter(|l| pred(l)).count() >= n
        })
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGINT, wait, and everything it printed.
    pub fn stop(self) -> Finished {
        self.stop_with(libc::SIGINT)
    }

    /// `sig`, wait (killed after 30 s: a portex that ignores it fails the test), and
    /// everything it printed.
    pub fn stop_with(mut self, sig: i32) -> Finished {
        signal(self.child.id(), sig);
        let exited = wait_exit(&mut self.child, Duration::from_secs(30)).is_some();
        if !exited {
            let _ = self.child.kill();
        }
        let status = self.child.wait().expect("waiting for portex");
        assert!(exited, "portex ignored signal {sig} for 30 s");
        self.collect(status)
    }

    /// Waits for portex to exit by itself (`--count`, `--duration`); killed after
    /// `timeout`, which fails the test. Everything it printed.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let exited = wait_exit(&mut self.child, timeout).is_some();
        if !exited {
            let _ = self.child.kill();
        }
        let status = self.child.wait().expect("waiting for portex");
        assert!(exited, "portex did not exit by itself within {timeout:?}");
        self.collect(status)
    }

    fn collect(mut self, status: std::process::ExitStatus) -> Finished {
        drop(self.unread.take());
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let f = Finished {
            code: status.code(),
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        };
        self.checked = true;
        self.check_lines(&f.stdout);
        f
    }

    /// Every JSON line it wrote matches docs/event.schema.json: stdout, and the output
    /// file with the files rotated from it (only regular files: a test may leave a
    /// symlink or a FIFO at the path to see it refused).
    fn check_lines(&self, stdout: &[String]) {
        if !self.json {
            return;
        }
        validate_lines(stdout.iter().map(String::as_str));
        let Some(out) = &self.output else { return };
        let (Some(dir), Some(name)) = (out.parent(), out.file_name()) else {
            return;
        };
        let name = name.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let rotated = file
                .strip_prefix(&name)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|n| n.parse::<u32>().is_ok());
            let regular = e.file_type().is_ok_and(|t| t.is_file());
            if regular && (file == name || rotated) {
                validate_lines(lines_of(&e.path()).iter().map(String::as_str));
            }
        }
    }
}

/// The file of `--output FILE` or `--output=FILE`; None for stdout (absent or `-`).
fn output_file(args: &[&str]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = match a.strip_prefix("--output") {
            Some("") => it.next().copied(),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        if let Some(v) = value {
            return (v != "-").then(|| PathBuf::from(v));
        }
    }
    None
}

impl Drop for Portex {
    /// A test that did not call `stop` still has its lines validated (unless it is
    /// already failing).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGINT);
            let _ = self.child.wait();
        }
        if self.checked || thread::panicking() {
            return;
        }
        self.checked = true;
        drop(self.unread.take());
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let stdout = std::mem::take(&mut *self.stdout.lock().unwrap());
        self.check_lines(&stdout);
    }
}

impl Finished {
    /// JSON events of one process.
    pub fn events_of(&self, pid: u32) -> Vec<Value> {
        events_of_pid(&self.stdout, pid)
    }

    /// One pid's events, pool_pressure alarms left out (they pass the filters when the
    /// process is among the pool's holders, and other tests' pools may raise them).
    pub fn events_only_of(&self, pid: u32) -> Vec<Value> {
        self.events_of(pid)
            .into_iter()
            .filter(|v| crate::action(v) != "pool_pressure")
            .collect()
    }

    /// For failure messages: the events of this pid, one per line.
    pub fn dump(&self, pid: u32) -> String {
        let mut s = String::new();
        for v in self.events_of(pid) {
            s.push_str(&v.to_string());
            s.push('\n');
        }
        s.push_str("stderr:\n");
        s.push_str(&self.stderr.join("\n"));
        s
    }
}

/// The loss figures of portex's closing summary line: (headline dropped, the parts
/// named in parentheses). The headline must be their sum.
pub fn summary_losses(stderr: &[String]) -> Option<(u64, Vec<(String, u64)>)> {
    let line = stderr.iter().rev().find(|l| l.contains("kernel events"))?;
    let after = line.split_once("dropped: ")?.1;
    let (total, rest) = after.split_once(" (")?;
    let parts = rest.split_once(')')?.0;
    let parts = parts
        .split(", ")
        .filter_map(|p| {
            let (name, n) = p.rsplit_once(' ')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect();
    Some((total.parse().ok()?, parts))
}

/// The agent's output summary: (lines written, lines dropped, write errors).
pub fn output_counts(stderr: &[String]) -> (u64, u64, u64) {
    let line = stderr
        .iter()
        .rev()
        .find(|l| l.contains("lines written"))
        .unwrap_or_else(|| panic!("no output summary: {stderr:?}"));
    let nums: Vec<u64> = line
        .split_once("output: ")
        .unwrap()
        .1
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse().ok())
        .collect();
    (nums[0], nums[1], nums[2])
}

/// "N lines rendered" of the closing summary.
pub fn rendered(stderr: &[String]) -> u64 {
    stderr
        .iter()
        .rev()
        .find_map(|l| {
            let (_, rest) = l.split_once("kernel events, ")?;
            rest.split_once(" lines rendered")?.0.parse().ok()
        })
        .unwrap_or_else(|| panic!("no summary: {stderr:?}"))
}

/// `portex ARGS` to completion: (exit code, stderr, how long it took). Killed after 20 s.
pub fn run_portex(args: &[&str]) -> (Option<i32>, String, Duration) {
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
    if wait_exit(&mut child, Duration::from_secs(20)).is_none() {
        let _ = child.kill();
    }
    let code = child.wait().unwrap().code();
    (code, reader.join().unwrap(), start.elapsed())
}

/// The text that marks a JSON line of process `pid` (for `Portex::wait_lines`).
pub fn pid_needle(pid: u32) -> String {
    format!("\"pid\":{pid},")
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

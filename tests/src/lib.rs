//! Harness for the privileged end-to-end tests: a network namespace that removes itself,
//! the real `portex` binary run as a child, and the driver that makes real sockets.
//!
//! Tracepoints see the whole machine, so every assertion filters portex's output by the
//! driver's pid; every namespace and portex process is removed on every path (Drop).
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

pub use serde_json::Value;

/// The portex binary, built once per test run (nested cargo build: quick when fresh).
pub fn portex_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "-q", "-p", "portex-agent", "--bin", "portex"])
            .status()
            .expect("running cargo build for portex");
        assert!(status.success(), "building portex failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or(root.join("target"));
        target.join("debug").join("portex")
    })
    .clone()
}

/// The driver, built by cargo beside the test executables (target/<profile>/).
pub fn driver_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("portex-e2e-driver")
}

/// A copy of `bin` that any user can execute: the tests run portex and the driver as
/// uid 65534, and a checkout under a private directory (such as /root) is not
/// reachable for that user.
pub fn public_copy(bin: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("portex-e2e-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a directory for public binaries");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dst = dir.join(bin.file_name().expect("a binary name"));
    // Copy to a temporary name and rename: tests running in parallel may race here.
    let tmp = dir.join(format!(
        "{}.{:?}",
        bin.file_name().unwrap().to_string_lossy(),
        std::thread::current().id()
    ));
    std::fs::copy(bin, &tmp).expect("copying a binary");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &dst).expect("placing a binary");
    dst
}

pub fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// Fails loudly when not root, unless PORTEX_SKIP_PRIVILEGED=1 says to skip.
pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("PORTEX_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("skipped: needs root (PORTEX_SKIP_PRIVILEGED=1)");
        return false;
    }
    panic!(
        "the end-to-end tests load eBPF programs and need root (or set PORTEX_SKIP_PRIVILEGED=1)"
    );
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a unique name, loopback up, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "portex-e2e-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    /// Shrinks ip_local_port_range inside the namespace (it is per namespace).
    pub fn port_range(&self, lo: u16, hi: u16) -> &Self {
        let range = format!("net.ipv4.ip_local_port_range={lo} {hi}");
        run(Command::new("ip").args(["netns", "exec", &self.name, "sysctl", "-q", "-w", &range]));
        self
    }

    /// Sets a sysctl inside the namespace, e.g. ("net.ipv4.tcp_tw_reuse", "0").
    pub fn sysctl(&self, key: &str, value: &str) -> &Self {
        let kv = format!("{key}={value}");
        run(Command::new("ip").args(["netns", "exec", &self.name, "sysctl", "-q", "-w", &kv]));
        self
    }

    /// Runs the driver inside this namespace; returns its pid and its fact lines.
    pub fn drive(&self, args: &[&str]) -> Driven {
        let out = Command::new(driver_bin())
            .arg("--netns")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("running the driver");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "driver {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<String> = stdout.lines().map(String::from).collect();
        let pid = lines
            .iter()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|p| p.parse().ok())
            .expect("driver printed no pid");
        Driven { pid, lines }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

impl Netns {
    /// Starts the driver inside this namespace and waits for its "ready" line; it holds
    /// its sockets until the returned guard is dropped (stdin closed).
    pub fn spawn(&self, args: &[&str]) -> Held {
        let mut child = Command::new(driver_bin())
            .arg("--netns")
            .arg(&self.name)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the driver");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            if out.read_line(&mut l).unwrap_or(0) == 0 {
                panic!("driver {args:?} ended before it was ready: {lines:?}");
            }
            let l = l.trim_end().to_string();
            if l == "ready" {
                break;
            }
            lines.push(l);
        }
        let pid = lines
            .iter()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|p| p.parse().ok())
            .expect("pid");
        Held {
            child,
            driven: Driven { pid, lines },
        }
    }

    /// Runs a command inside this namespace: (exit code, stdout, stderr).
    pub fn exec(&self, cmd: &[&str]) -> (Option<i32>, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A driver holding its sockets; it exits when this is dropped.
pub struct Held {
    child: Child,
    pub driven: Driven,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        if self.child.wait_timeout_ok().is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

trait WaitTimeout {
    fn wait_timeout_ok(&mut self) -> Result<(), ()>;
}

impl WaitTimeout for Child {
    /// Waits up to 10 s for the child to exit.
    fn wait_timeout_ok(&mut self) -> Result<(), ()> {
        for _ in 0..1000 {
            if let Ok(Some(_)) = self.try_wait() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Err(())
    }
}

/// Pools as `ss -tanH` shows them, by the same rule portex uses: client-side sockets
/// holding a port inside the range, keyed by (source ip, destination ip, destination
/// port), as (held, time_wait).
pub fn ss_pools(
    ss_output: &str,
    lo: u16,
    hi: u16,
) -> std::collections::BTreeMap<(String, String, u16), (u64, u64)> {
    fn split(a: &str) -> (String, u16) {
        let (ip, port) = a.rsplit_once(':').unwrap();
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip = ip
            .strip_prefix("::ffff:")
            .filter(|v4| v4.contains('.'))
            .unwrap_or(ip);
        (ip.to_string(), port.parse().unwrap_or(0))
    }
    let rows: Vec<Vec<&str>> = ss_output
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| r.len() >= 5)
        .collect();
    let listen_ports: Vec<u16> = rows
        .iter()
        .filter(|r| r[0] == "LISTEN")
        .map(|r| split(r[3]).1)
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for r in &rows {
        if r[0] == "LISTEN" || r[0] == "SYN-RECV" || r[0] == "UNCONN" {
            continue;
        }
        let (lip, lport) = split(r[3]);
        let (rip, rport) = split(r[4]);
        if lport < lo || lport > hi || listen_ports.contains(&lport) {
            continue;
        }
        let e = out.entry((lip, rip, rport)).or_insert((0, 0));
        e.0 += 1;
        if r[0] == "TIME-WAIT" {
            e.1 += 1;
        }
    }
    out
}

pub struct Driven {
    pub pid: u32,
    pub lines: Vec<String>,
}

impl Driven {
    /// The words after `prefix` on each line that starts with it.
    pub fn facts(&self, prefix: &str) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|s| s.trim().to_string())
            .collect()
    }
}

/// A running `portex` child; SIGINT and reaped on drop.
pub struct Portex {
    json: bool,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
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

    /// The same under a wrapper command (e.g. `prlimit --nofile=256:256 --`).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Portex {
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
        let sink = stdout.clone();
        readers.push(thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        }));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        readers.push(thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("watching") || line.contains("error") {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        }));
        let json = args.contains(&"--json") || args.first() == Some(&"agent");
        let p = Portex {
            json,
            child,
            stdout,
            stderr,
            readers,
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
        let end = std::time::Instant::now() + timeout;
        loop {
            let n = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .count();
            if n >= times {
                return true;
            }
            if std::time::Instant::now() > end {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGINT, wait, and everything it printed.
    pub fn stop(mut self) -> Finished {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("waiting for portex");
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let f = Finished {
            code: status.code(),
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        };
        if self.json {
            validate_lines(f.stdout.iter().map(String::as_str));
        }
        f
    }
}

impl Drop for Portex {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }
}

impl Finished {
    /// JSON events of one process.
    pub fn events_of(&self, pid: u32) -> Vec<Value> {
        self.stdout
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["process"]["pid"].as_u64() == Some(pid as u64))
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

/// The checked-in schema of an event line (docs/event.schema.json).
pub fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/event.schema.json");
        let text = std::fs::read_to_string(&path).expect("reading the schema");
        let v: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&v).expect("the schema compiles")
    })
}

/// Every line must be JSON and valid against the schema.
pub fn validate_lines<'a>(lines: impl Iterator<Item = &'a str>) -> usize {
    let mut n = 0;
    for line in lines.filter(|l| !l.is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let errors: Vec<String> = schema()
            .iter_errors(&v)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "line does not match docs/event.schema.json: {errors:?}\n{line}"
        );
        n += 1;
    }
    n
}

pub fn action(v: &Value) -> &str {
    v["event"]["action"].as_str().unwrap_or("")
}

pub fn with_action<'a>(events: &'a [Value], a: &str) -> Vec<&'a Value> {
    events.iter().filter(|v| action(v) == a).collect()
}

/// CPU time (user + system) of a process, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime); `after` starts at field 3.
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits for `cond` until `timeout`; true when it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
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

mod extra;
pub use extra::*;

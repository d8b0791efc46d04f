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
        let mut child = Command::new(portex_bin())
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
                if line.contains("watching") {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        }));
        let p = Portex {
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

    /// SIGINT, wait, and everything it printed.
    pub fn stop(mut self) -> Finished {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("waiting for portex");
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Finished {
            code: status.code(),
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        }
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

pub fn action(v: &Value) -> &str {
    v["event"]["action"].as_str().unwrap_or("")
}

pub fn with_action<'a>(events: &'a [Value], a: &str) -> Vec<&'a Value> {
    events.iter().filter(|v| action(v) == a).collect()
}

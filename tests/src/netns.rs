//! A network namespace that removes itself, and the driver run inside it.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use crate::{driver_bin, run};

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

    /// The namespace's inode: what portex reports as `portex.netns`.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/var/run/netns/{}", self.name))
            .expect("the namespace file")
            .ino()
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

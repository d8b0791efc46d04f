//! A network namespace that removes itself, what `ss` shows inside it, and entering one
//! from a helper process.
use std::{
    io,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::try_run;

/// A network namespace, loopback up, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A namespace with a unique name for a test: portex-e2e-PID-N-TAG.
    pub fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "portex-e2e-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Netns::create(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `new` with ip_local_port_range shrunk to lo..=hi.
    pub fn with_range(tag: &str, lo: u16, hi: u16) -> Netns {
        let ns = Netns::new(tag);
        ns.port_range(lo, hi);
        ns
    }

    /// A namespace of this name (which the caller makes unique), loopback up.
    pub fn create(name: String) -> io::Result<Netns> {
        try_run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        try_run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// Sets ip_local_port_range inside the namespace (it is per namespace).
    pub fn try_port_range(&self, lo: u16, hi: u16) -> io::Result<&Self> {
        self.try_sysctl("net.ipv4.ip_local_port_range", &format!("{lo} {hi}"))
    }

    /// The same, panicking.
    pub fn port_range(&self, lo: u16, hi: u16) -> &Self {
        self.try_port_range(lo, hi)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sets a sysctl inside the namespace, e.g. ("net.ipv4.tcp_tw_reuse", "0").
    pub fn try_sysctl(&self, key: &str, value: &str) -> io::Result<&Self> {
        let kv = format!("{key}={value}");
        try_run(Command::new("ip").args(["netns", "exec", &self.name, "sysctl", "-q", "-w", &kv]))?;
        Ok(self)
    }

    /// The same, panicking.
    pub fn sysctl(&self, key: &str, value: &str) -> &Self {
        self.try_sysctl(key, value)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The namespace's inode: what portex reports as `portex.netns`.
    pub fn try_inode(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(format!("/var/run/netns/{}", self.name))?.ino())
    }

    /// The same, panicking.
    pub fn inode(&self) -> u64 {
        self.try_inode().expect("the namespace file")
    }

    /// Runs a command inside this namespace: (exit code, stdout, stderr).
    pub fn try_exec(&self, cmd: &[&str]) -> io::Result<(Option<i32>, String, String)> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The same, panicking.
    pub fn exec(&self, cmd: &[&str]) -> (Option<i32>, String, String) {
        self.try_exec(cmd).expect("ip netns exec")
    }

    /// Pools as `ss -tanH` shows them inside this namespace (see `ss_pools`).
    pub fn try_ss_pools(&self, lo: u16, hi: u16) -> io::Result<PoolMap> {
        let (code, out, err) = self.try_exec(&["ss", "-tanH"])?;
        if code != Some(0) {
            return Err(io::Error::other(format!(
                "ss in {}: {}",
                self.name,
                err.trim()
            )));
        }
        Ok(ss_pools(&out, lo, hi))
    }

    /// The same, panicking.
    pub fn ss_pools(&self, lo: u16, hi: u16) -> PoolMap {
        self.try_ss_pools(lo, hi).unwrap_or_else(|e| panic!("{e}"))
    }

    /// TCP sockets in state `state` (ss's name, e.g. "time-wait") inside this namespace.
    pub fn try_ss_count(&self, state: &str) -> io::Result<usize> {
        let (_, out, _) = self.try_exec(&["ss", "-tanH", "state", state])?;
        Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Client-side sockets in state `state` (ss's name, e.g. "time-wait") inside `ns`.
pub fn ss_count(ns: &Netns, state: &str) -> usize {
    ns.try_ss_count(state).expect("ip netns exec")
}

/// Moves this process (its calling thread, and the threads it starts afterwards) into
/// the named namespace: what a helper process given `--netns NAME` does first.
pub fn enter_netns(name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{name}"))
        .map_err(|e| io::Error::other(format!("netns {name}: {e}")))?;
    // SAFETY: a valid descriptor of a network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::other(format!("setns {name}: {e}")));
    }
    Ok(())
}

/// Pools keyed by (source ip, destination ip, destination port), as (held, time_wait).
pub type PoolMap = std::collections::BTreeMap<(String, String, u16), (u64, u64)>;

/// Pools in the output of `ss -tanH`, by the same rule portex uses: client-side sockets
/// holding a port inside the range lo..=hi.
pub fn ss_pools(ss_output: &str, lo: u16, hi: u16) -> PoolMap {
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
    let mut out = PoolMap::new();
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

//! What the soak measures: the agent process (a guard that starts and stops it), its
//! /metrics, its kernel maps, and the pools `ss` shows in a namespace.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use portex_e2e::{Netns, Sample, free_port, signal, try_http_get, try_parse_samples, wait_exit};

use super::bpf::{self, MapRef};

/// The release agent with metrics on a free loopback port; SIGINT on drop.
pub struct Agent {
    child: Child,
    pub port: u16,
    /// Lines written to stderr, and the last few.
    stderr: Arc<Mutex<(u64, VecDeque<String>)>>,
}

impl Agent {
    pub fn start(portex: &Path) -> Result<Agent> {
        let port = free_port()?;
        let mut child = Command::new(portex)
            .args(["agent", "--output", "/dev/null", "--metrics"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--metrics-pool-min", "0", "--metrics-max-pools", "10000"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting portex agent")?;
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new((0, VecDeque::new())));
        let tail = stderr.clone();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let mut t = tail.lock().unwrap();
                t.0 += 1;
                if t.1.len() == 20 {
                    t.1.pop_front();
                }
                t.1.push_back(l);
            }
        });
        let mut a = Agent {
            child,
            port,
            stderr,
        };
        let end = Instant::now() + Duration::from_secs(60);
        while !a
            .stderr
            .lock()
            .unwrap()
            .1
            .iter()
            .any(|l| l.contains("watching"))
        {
            if !a.alive() || Instant::now() > end {
                bail!("the agent did not start: {}", a.tail());
            }
            thread::sleep(Duration::from_millis(200));
        }
        Ok(a)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stderr_lines(&self) -> u64 {
        self.stderr.lock().unwrap().0
    }

    /// The last lines of its stderr, joined.
    pub fn tail(&self) -> String {
        let t = self.stderr.lock().unwrap();
        t.1.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    /// SIGINT, then SIGKILL after 20 s; whether it exited by itself with success.
    pub fn stop(&mut self) -> bool {
        if !self.alive() {
            return matches!(self.child.try_wait(), Ok(Some(s)) if s.success());
        }
        signal(self.child.id(), libc::SIGINT);
        if let Some(s) = wait_exit(&mut self.child, Duration::from_secs(20)) {
            thread::sleep(Duration::from_millis(200)); // its last stderr lines
            return s.success();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The samples of the agent's /metrics (10 s at most; a malformed line is an error).
pub fn scrape(port: u16) -> Result<Vec<Sample>> {
    let body = try_http_get(
        &format!("127.0.0.1:{port}"),
        "/metrics",
        Duration::from_secs(10),
    )
    .context("metrics")?;
    try_parse_samples(&body).map_err(|e| anyhow!("metrics: {e}"))
}

/// Sum of a metric's series, optionally only those with label `k` = `v`.
pub fn sum(m: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    m.iter()
        .filter(|s| s.name == name)
        .filter(|s| label.is_none_or(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .fold(0.0, |a, b| a + b) // not sum(): an empty f64 sum is -0.0
}

/// Pools by (source, destination): (held ports, of them TIME_WAIT); empty ones left out.
pub type Pools = BTreeMap<(String, String), (u64, u64)>;

/// The agent's pools in namespace `netns` (inode), from a scrape: sockets holding a port
/// (used, plus the TIME_WAIT ports reuse makes free again, which `ss` still lists).
pub fn agent_pools(m: &[Sample], netns: u64) -> Pools {
    let mut out = Pools::new();
    for s in m {
        let (held, tw) = match s.name.as_str() {
            "portex_pool_used_ports" | "portex_pool_reusable_ports" => (true, false),
            "portex_pool_time_wait_ports" => (false, true),
            _ => continue,
        };
        if s.label("netns") != Some(&netns.to_string()) || s.label("transport") != Some("tcp") {
            continue;
        }
        let label = |k: &str| s.label(k).unwrap_or_default();
        // Keyed as ss_pools keys: the destination as one socket address.
        let dest = match (
            label("destination_address").parse::<IpAddr>(),
            label("destination_port").parse::<u16>(),
        ) {
            (Ok(ip), Ok(port)) => SocketAddr::new(ip, port).to_string(),
            _ => format!(
                "{}:{}",
                label("destination_address"),
                label("destination_port")
            ),
        };
        let e = out
            .entry((label("source_address").to_string(), dest))
            .or_default();
        if tw {
            e.1 = s.value as u64;
        } else if held {
            e.0 += s.value as u64;
        }
    }
    out.retain(|_, v| v.0 > 0);
    out
}

/// What `ss -tanH` in `ns` shows (portex_e2e::ss_pools: sockets holding a port of the
/// range, not LISTEN, SYN-RECV, nor on a listening port), keyed as the agent's labels.
pub fn ss_pools(ns: &Netns, lo: u16, hi: u16) -> Result<Pools> {
    Ok(ns
        .try_ss_pools(lo, hi)?
        .into_iter()
        .map(|((src, ip, port), counts)| {
            let dest = match ip.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, port).to_string(),
                Err(_) => format!("{ip}:{port}"),
            };
            ((src, dest), counts)
        })
        .collect())
}

/// Per hash map of the agent: (name, entries, entries whose owner no longer exists).
/// The owner is the process in SOCKS and LISTENERS values (tgid at offset 16 of
/// SockInfo) and the thread in the keys of CONNECTS and BINDS (calls in flight): an
/// entry of a process or thread that is gone is one the programs missed removing.
pub fn map_occupancy(maps: &[MapRef]) -> Result<Vec<(String, u64, u64)>> {
    let mut alive: HashMap<u32, bool> = HashMap::new();
    let mut out = Vec::new();
    for m in maps.iter().filter(|m| bpf::HASH_TYPES.contains(&m.kind)) {
        let (mut n, mut gone) = (0, 0);
        bpf::for_each_entry(m, |k, v| {
            n += 1;
            let id = match m.name.as_str() {
                "SOCKS" | "LISTENERS" if v.len() >= 20 => v[16..20].try_into().ok(),
                "CONNECTS" | "BINDS" if k.len() == 4 => k.try_into().ok(),
                _ => None,
            };
            if let Some(id) = id.map(u32::from_ne_bytes) {
                let live = *alive
                    .entry(id)
                    .or_insert_with(|| id != 0 && Path::new(&format!("/proc/{id}")).exists());
                gone += !live as u64;
            }
        })?;
        out.push((m.name.clone(), n, gone));
    }
    Ok(out)
}

/// Namespaces (inodes) the agent exports pools for that no longer exist.
pub fn stale_netns(m: &[Sample]) -> BTreeSet<u64> {
    let live = live_namespaces();
    m.iter()
        .filter(|s| s.name == "portex_pool_used_ports")
        .filter_map(|s| s.label("netns")?.parse().ok())
        .filter(|n| !live.contains(n))
        .collect()
}

/// Inodes of the network namespaces that exist now (of a process or named).
fn live_namespaces() -> HashSet<u64> {
    let mut live = HashSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(md) = std::fs::metadata(e.path().join("ns/net")) {
            live.insert(md.ino());
        }
    }
    for e in std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(md) = std::fs::metadata(e.path()) {
            live.insert(md.ino());
        }
    }
    live
}

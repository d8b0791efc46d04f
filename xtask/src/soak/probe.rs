//! What the soak measures: the agent process (a guard that starts and stops it), its
//! /metrics, its kernel maps, and the pools `ss` shows in a namespace.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

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
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
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
        // SAFETY: our child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(200)); // its last stderr lines
                return s.success();
            }
            thread::sleep(Duration::from_millis(100));
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

/// One series of a scrape: name, labels, value.
pub type Series = (String, BTreeMap<String, String>, f64);

pub fn scrape(port: u16) -> Result<Vec<Series>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("metrics")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").context("metrics response")?.1;
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let labels = labels
                .trim_end_matches('}')
                .split("\",")
                .filter_map(|kv| kv.split_once("=\""))
                .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
                .collect();
            Some((name.to_string(), labels, v.parse().ok()?))
        })
        .collect())
}

/// Sum of a metric's series, optionally only those with label `k` = `v`.
pub fn sum(m: &[Series], name: &str, label: Option<(&str, &str)>) -> f64 {
    m.iter()
        .filter(|s| s.0 == name)
        .filter(|s| label.is_none_or(|(k, v)| s.1.get(k).is_some_and(|x| x == v)))
        .map(|s| s.2)
        .fold(0.0, |a, b| a + b) // not sum(): an empty f64 sum is -0.0
}

/// Pools by (source, destination): (held ports, of them TIME_WAIT); empty ones left out.
pub type Pools = BTreeMap<(String, String), (u64, u64)>;

/// The agent's pools in namespace `netns` (inode), from a scrape.
pub fn agent_pools(m: &[Series], netns: u64) -> Pools {
    let mut out = Pools::new();
    for (name, l, v) in m {
        let tw = match name.as_str() {
            "portex_pool_used_ports" => false,
            "portex_pool_time_wait_ports" => true,
            _ => continue,
        };
        if l.get("netns").map(String::as_str) != Some(&netns.to_string())
            || l.get("transport").map(String::as_str) != Some("tcp")
        {
            continue;
        }
        let key = (l["source"].clone(), l["destination"].clone());
        let e = out.entry(key).or_default();
        *(if tw { &mut e.1 } else { &mut e.0 }) = *v as u64;
    }
    out.retain(|_, v| v.0 > 0);
    out
}

/// What `ss -tanH` in `ns` shows, by the rule of tests/src/lib.rs `ss_pools`: sockets
/// holding a port of the range (not LISTEN, SYN-RECV, nor on a listening port).
pub fn ss_pools(ns: &str, lo: u16, hi: u16) -> Result<Pools> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-tanH"])
        .output()?;
    if !out.status.success() {
        bail!(
            "ss in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let split = |a: &str| -> Option<(IpAddr, u16)> {
        let (ip, port) = a.rsplit_once(':')?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip = ip
            .strip_prefix("::ffff:")
            .filter(|v4| v4.contains('.'))
            .unwrap_or(ip);
        Some((ip.parse().ok()?, port.parse().ok()?))
    };
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|r| r.len() >= 5)
        .collect();
    let listening: HashSet<u16> = rows
        .iter()
        .filter(|r| r[0] == "LISTEN")
        .filter_map(|r| split(r[3]).map(|a| a.1))
        .collect();
    let mut pools = Pools::new();
    for r in rows
        .iter()
        .filter(|r| !matches!(r[0], "LISTEN" | "SYN-RECV" | "UNCONN"))
    {
        let (Some((lip, lport)), Some((rip, rport))) = (split(r[3]), split(r[4])) else {
            continue;
        };
        if lport < lo || lport > hi || listening.contains(&lport) {
            continue;
        }
        let key = (lip.to_string(), SocketAddr::new(rip, rport).to_string());
        let e = pools.entry(key).or_default();
        e.0 += 1;
        e.1 += (r[0] == "TIME-WAIT") as u64;
    }
    Ok(pools)
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
pub fn stale_netns(m: &[Series]) -> BTreeSet<u64> {
    let live = live_namespaces();
    m.iter()
        .filter(|s| s.0 == "portex_pool_used_ports")
        .filter_map(|s| s.1.get("netns")?.parse().ok())
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

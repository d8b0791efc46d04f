//! The soak's load (`cargo xtask soak`), three loops in threads of the driver:
//! - connection churn: `xtask churn` (client closes first, so TIME_WAIT piles up) in the
//!   long-lived namespace, in 10 s runs alternating IPv4 and IPv6;
//! - process churn: short-lived `xtask soak-client` processes, each making a few
//!   connections to a `soak-server` in that namespace and exiting (per-pid state);
//! - namespace churn: a namespace created, given a server, churn and clients, and
//!   deleted, over and over (per-namespace state).
//!
//! and the two tiny subcommands its processes run (`soak-server`, `soak-client`).
use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use portex_e2e::{Held, KillOnDrop, Netns, enter_netns, hold_conns, hold_until_stdin_closes};

use crate::bench::xtask;

/// Where each namespace's `soak-server` listens.
pub const SERVER_PORT: u16 = 21000;
/// The shrunk range of every soak namespace: 4,000 ports, so that the churn keeps its
/// pools full of TIME_WAIT (and the agent's pressure path and syscall hooks busy),
/// while TIME_WAIT reuse after 1 s (loopback, tcp_tw_reuse=2) keeps connect() from
/// failing at the rates two cores reach.
pub const RANGE: (u16, u16) = (40000, 43999);
/// Process churn pace: at most this many processes per second (each exec costs the
/// machine ~1-2 ms of CPU; the connection churn should keep most of it).
const PROCS_PER_SEC: f64 = 50.0;
const CONNS_PER_PROC: u64 = 4;

/// A namespace for the soak (removed on drop), portex-soak-PID-TAG, with its loopback up
/// and the shrunk range.
pub fn soak_ns(tag: &str) -> Result<Netns> {
    let ns = Netns::create(format!("portex-soak-{}-{tag}", std::process::id()))?;
    ns.try_port_range(RANGE.0, RANGE.1)?;
    Ok(ns)
}

/// Starts `soak-server` in `ns` and waits until it listens; it exits when the guard is
/// dropped.
pub fn server(ns: &Netns) -> Result<Held> {
    Held::start(Command::new(xtask()).args(["soak-server", "--netns", &ns.name]))
        .with_context(|| format!("soak-server in {}", ns.name))
}

/// Cumulative figures of the load.
#[derive(Default)]
pub struct Counters {
    /// Connections completed (every workload counts its own).
    pub conns: AtomicU64,
    /// Failed connects (counted, not fatal: a soak at full pools may see a few).
    pub conn_errors: AtomicU64,
    pub procs: AtomicU64,
    pub namespaces: AtomicU64,
    /// Distinct inodes among them (the kernel reuses freed ones).
    pub inodes: Mutex<HashSet<u64>>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub counters: Arc<Counters>,
    /// Workload errors (a namespace that could not be made, a process that failed).
    pub errors: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// Starts the three loops; `keep` is the long-lived namespace (its server running).
    pub fn start(keep: &str) -> Load {
        let mut l = Load {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            counters: Arc::new(Counters::default()),
            errors: Arc::new(Mutex::new(Vec::new())),
        };
        let keep = keep.to_string();
        let k2 = keep.clone();
        l.spawn("connection churn", move |c, stop, i| {
            let ip = if i % 2 == 0 { "127.0.0.1" } else { "::1" };
            churn(&keep, ip, 8, 2, 10.0, c, stop)
        });
        l.spawn("process churn", move |c, stop, _| {
            let t0 = Instant::now();
            client(&k2, c)?;
            let rest = Duration::from_secs_f64(1.0 / PROCS_PER_SEC).saturating_sub(t0.elapsed());
            if !stop.load(Relaxed) {
                thread::sleep(rest);
            }
            Ok(())
        });
        l.spawn("namespace churn", |c, stop, i| {
            let ns = soak_ns(&format!("n{i}"))?;
            c.namespaces.fetch_add(1, Relaxed);
            c.inodes.lock().unwrap().insert(ns.try_inode()?);
            let _server = server(&ns)?;
            let ip = if i % 2 == 0 { "127.0.0.1" } else { "::1" };
            let churner = {
                let (ns, c, stop) = (ns.name.clone(), c.clone(), stop.clone());
                thread::spawn(move || churn(&ns, ip, 2, 1, 3.0, &c, &stop))
            };
            // The churn ends before its namespace goes, whatever the clients did.
            let clients = (0..10).try_for_each(|_| client(&ns.name, c));
            let churned = churner
                .join()
                .map_err(|_| anyhow::anyhow!("churn panicked"))?;
            clients.and(churned)
        });
        l
    }

    /// Runs `step` in a loop (with its iteration number) until stopped.
    fn spawn<F>(&mut self, what: &'static str, step: F)
    where
        F: Fn(&Arc<Counters>, &Arc<AtomicBool>, u64) -> Result<()> + Send + 'static,
    {
        let (c, stop, errors) = (
            self.counters.clone(),
            self.stop.clone(),
            self.errors.clone(),
        );
        self.threads.push(thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Relaxed) {
                if let Err(e) = step(&c, &stop, i)
                    && !stop.load(Relaxed)
                {
                    errors.lock().unwrap().push(format!("{what}: {e:#}"));
                    thread::sleep(Duration::from_secs(1));
                }
                i += 1;
            }
        }));
    }

    /// Stops the loops: running workloads are killed, their namespaces deleted.
    pub fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `xtask churn` run in `ns`; killed early when `stop` is set.
fn churn(
    ns: &str,
    ip: &str,
    ports: u16,
    threads: u16,
    secs: f64,
    c: &Counters,
    stop: &AtomicBool,
) -> Result<()> {
    let (ports, threads, secs) = (ports.to_string(), threads.to_string(), secs.to_string());
    let mut p = KillOnDrop(
        Command::new(xtask())
            .args(["churn", "--netns", ns, "--ip", ip, "--client-closes"])
            .args(["--ports", &ports, "--threads", &threads, "--seconds", &secs])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    c.procs.fetch_add(1, Relaxed);
    loop {
        if let Some(st) = p.0.try_wait()? {
            let mut out = String::new();
            p.0.stdout.take().unwrap().read_to_string(&mut out)?;
            if !st.success() {
                bail!("churn in {ns} exited with {st}");
            }
            let v: serde_json::Value = serde_json::from_str(out.trim()).context("churn output")?;
            c.conns
                .fetch_add(v["connections"].as_u64().unwrap_or(0), Relaxed);
            c.conn_errors
                .fetch_add(v["errors"].as_u64().unwrap_or(0), Relaxed);
            return Ok(());
        }
        if stop.load(Relaxed) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One short-lived `soak-client` process towards the server of `ns`.
fn client(ns: &str, c: &Counters) -> Result<()> {
    let made = connections(ns, CONNS_PER_PROC)?;
    c.procs.fetch_add(1, Relaxed);
    c.conns.fetch_add(made, Relaxed);
    c.conn_errors
        .fetch_add(CONNS_PER_PROC.saturating_sub(made), Relaxed);
    Ok(())
}

/// `n` connections from a `soak-client` process in `ns` (client closes: TIME_WAIT);
/// how many succeeded.
pub fn connections(ns: &str, n: u64) -> Result<u64> {
    let out = Command::new(xtask())
        .args(["soak-client", "--netns", ns, "--conns", &n.to_string()])
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("soak-client in {ns} exited with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// A `soak-client --hold` process in `ns` holding `n` connections open until the guard
/// is dropped; how many it holds.
pub fn holder(ns: &Netns, n: u64) -> Result<(Held, u64)> {
    let held = Held::start(Command::new(xtask()).args([
        "soak-client",
        "--netns",
        &ns.name,
        "--hold",
        "--conns",
        &n.to_string(),
    ]))
    .context("soak-client --hold")?;
    // `held N failed F`
    let n = held
        .driven
        .facts("held ")
        .first()
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("soak-client --hold")?;
    Ok((held, n))
}

/// `xtask soak-server --netns NS`: listens on 127.0.0.1 and ::1, port SERVER_PORT; each
/// connection is read until the client closes (so the client sits in TIME_WAIT).
/// Prints "ready" once listening; runs until its stdin closes.
pub fn serve(netns: &str) -> Result<()> {
    enter_netns(netns)?;
    let ls = [
        TcpListener::bind(("127.0.0.1", SERVER_PORT))?,
        TcpListener::bind(("::1", SERVER_PORT))?,
    ];
    for l in ls {
        thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while s.read(&mut buf).is_ok_and(|k| k > 0) {}
                });
            }
        });
    }
    hold_until_stdin_closes();
    Ok(())
}

/// `xtask soak-client --netns NS --conns N [--hold]`: N connections to the server of
/// NS, closed by this side at once; prints how many succeeded. With --hold they stay
/// open until stdin closes: the driver's `hold-conns` (prints `held N failed F`, then
/// "ready").
pub fn client_main(netns: &str, n: u32, hold: bool) -> Result<()> {
    enter_netns(netns)?;
    let dest = SocketAddr::from(([127, 0, 0, 1], SERVER_PORT));
    if hold {
        hold_conns(dest, n as usize, usize::MAX);
        return Ok(());
    }
    let mut made = 0;
    for _ in 0..n {
        if let Ok(mut s) = TcpStream::connect_timeout(&dest, Duration::from_secs(2)) {
            let _ = s.write_all(b"x");
            made += 1;
        }
    }
    println!("{made}");
    Ok(())
}

//! The connection churn generator: a multi-threaded loopback client and server in one
//! process, inside a network namespace it enters itself. Prints one JSON line:
//! {"connections": N, "seconds": S, "per_sec": R, "errors": E, "cpu_ms": C}.
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use portex_e2e::{enter_netns, errno_of, listen_and_hold};

pub struct Opts {
    pub netns: Option<String>,
    /// Loopback address to listen on (127.0.0.1 or ::1).
    pub ip: std::net::IpAddr,
    /// Listening ports: each is a separate pool, so client-close churn does not exhaust.
    pub ports: u16,
    pub client_closes: bool,
    /// Requests per connection (1 = no keep-alive).
    pub requests: u32,
    pub threads: usize,
    pub seconds: f64,
}

pub fn run(o: Opts) -> Result<()> {
    if let Some(ns) = &o.netns {
        enter_netns(ns)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut addrs = Vec::new();
    for i in 0..o.ports {
        let l = TcpListener::bind(SocketAddr::new(o.ip, 20000 + i)).context("listen")?;
        addrs.push(l.local_addr()?);
        for _ in 0..2 {
            let l = l.try_clone()?;
            let (stop, client_closes, requests) = (stop.clone(), o.client_closes, o.requests);
            thread::spawn(move || serve(l, stop, client_closes, requests));
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for t in 0..o.threads {
        let (addrs, stop, done, errors) =
            (addrs.clone(), stop.clone(), done.clone(), errors.clone());
        let (client_closes, requests) = (o.client_closes, o.requests);
        workers.push(thread::spawn(move || {
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match one(addrs[i % addrs.len()], client_closes, requests) {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    thread::sleep(Duration::from_secs_f64(o.seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "{{\"connections\":{n},\"seconds\":{secs:.3},\"per_sec\":{:.1},\"errors\":{},\"cpu_ms\":{:.1}}}",
        n as f64 / secs,
        errors.load(Ordering::Relaxed),
        own_cpu_ms()
    );
    Ok(())
}

/// user + sys of this process (clients and servers): what tracing adds per connection
/// in the kernel shows up here, whatever the machine's speed of the moment.
fn own_cpu_ms() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// One connection: `requests` request/response rounds, then the chosen side closes first.
fn one(addr: SocketAddr, client_closes: bool, requests: u32) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = [0u8; 64];
    for _ in 0..requests {
        s.write_all(b"GET\n")?;
        let mut got = 0;
        while got < 3 {
            let k = s.read(&mut buf[got..])?;
            if k == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got += k;
        }
    }
    if client_closes {
        drop(s);
    } else {
        // Wait for the server's FIN, then close: the server sits in TIME_WAIT.
        while s.read(&mut buf).map(|k| k > 0).unwrap_or(false) {}
    }
    Ok(())
}

fn serve(l: TcpListener, stop: Arc<AtomicBool>, client_closes: bool, requests: u32) {
    l.set_nonblocking(false).ok();
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = l.accept() else { continue };
        let _ = s.set_nodelay(true);
        let mut buf = [0u8; 64];
        let mut ok = true;
        for _ in 0..requests {
            if !matches!(s.read(&mut buf), Ok(k) if k > 0) || s.write_all(b"OK\n").is_err() {
                ok = false;
                break;
            }
        }
        if ok && client_closes {
            while s.read(&mut buf).map(|k| k > 0).unwrap_or(false) {}
        } else {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// An unrelated syscall-heavy workload: getppid() in `threads` threads; prints ops/s.
pub fn syscalls(threads: usize, seconds: f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, ops) = (stop.clone(), ops.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        // SAFETY: no arguments.
                        unsafe { libc::syscall(libc::SYS_getppid) };
                    }
                    n += 1000;
                }
                ops.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        let _ = h.join();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"ops\":{},\"seconds\":{secs:.3},\"per_sec\":{:.1}}}",
        ops.load(Ordering::Relaxed),
        ops.load(Ordering::Relaxed) as f64 / secs
    );
}

/// Failing connects for the latency measurement: fills a (tiny) pool, then `n` attempts
/// spaced `gap_ms` apart towards it. Prints one line per failing connect, so that the
/// caller knows every failure it caused: `fill ERRNO NS` for the one that ended the fill,
/// `gap ERRNO NS` for the measured ones, NS being the CLOCK_BOOTTIME ns at which
/// connect() returned; an attempt that unexpectedly succeeded prints `connected NS`.
/// (Its listener prints `listen ADDR` first.)
pub fn failures(netns: &str, n: usize, gap_ms: u64) -> Result<()> {
    enter_netns(netns)?;
    let dest = listen_and_hold("127.0.0.1:21000".parse()?)?;
    let mut held = Vec::new();
    let mut out = String::new();
    // Fill the range first; exactly one connect fails here.
    loop {
        match TcpStream::connect(dest) {
            Ok(s) => held.push(s),
            Err(e) => {
                out.push_str(&format!("fill {} {}\n", errno_of(&e), boot_ns()));
                break;
            }
        }
    }
    for _ in 0..n {
        thread::sleep(Duration::from_millis(gap_ms));
        let r = TcpStream::connect(dest);
        let t = boot_ns();
        match r {
            Err(e) => out.push_str(&format!("gap {} {t}\n", errno_of(&e))),
            Ok(s) => {
                out.push_str(&format!("connected {t}\n"));
                held.push(s);
            }
        }
    }
    print!("{out}");
    Ok(())
}

pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Fills a namespace with `n` TIME_WAIT sockets (client closes first, many pools).
pub fn fill_time_wait(netns: &str, n: u64, threads: usize) -> Result<()> {
    enter_netns(netns)?;
    // At most ~20k connections per destination: connect() scans the range for a free
    // 4-tuple, and near a full pool each scan gets slow enough for early TIME_WAITs to
    // expire before the fill ends.
    let ports = n.div_ceil(20_000).max(1) as u16;
    let mut addrs = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    for i in 0..ports {
        let l = TcpListener::bind(("127.0.0.1", 22000 + i))?;
        addrs.push(l.local_addr()?);
        for _ in 0..2 {
            let (l, stop) = (l.try_clone()?, stop.clone());
            thread::spawn(move || serve(l, stop, true, 1));
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let ws: Vec<_> = (0..threads)
        .map(|t| {
            let (addrs, done) = (addrs.clone(), done.clone());
            thread::spawn(move || {
                let mut i = t;
                while done.load(Ordering::Relaxed) < n {
                    i += 1;
                    if one(addrs[i % addrs.len()], true, 1).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in ws {
        let _ = w.join();
    }
    stop.store(true, Ordering::Relaxed);
    Ok(())
}

/// An exhaustion in a loop, as a client that ignores its errors does it: rounds of
/// `per_round` connects to a server that closes at once (more than the namespace's range
/// holds, so the rest fail with EADDRNOTAVAIL), then every connection closed; for
/// `seconds`. Prints {"connects": N, "failed": F}.
pub fn exhaust_loop(netns: &str, per_round: usize, seconds: f64) -> Result<()> {
    enter_netns(netns)?;
    let l = TcpListener::bind("127.0.0.1:21000").context("listen")?;
    let dest = l.local_addr()?;
    thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    let (mut ok, mut failed) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let mut held = Vec::with_capacity(per_round);
        for _ in 0..per_round {
            match TcpStream::connect(dest) {
                Ok(s) => {
                    ok += 1;
                    held.push(s);
                }
                Err(_) => failed += 1,
            }
        }
    }
    println!("{{\"connects\": {ok}, \"failed\": {failed}}}");
    Ok(())
}

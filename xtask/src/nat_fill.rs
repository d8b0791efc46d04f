//! `cargo xtask nat-fill --netns NS --src IP --dest IP --dports LO-HI --count N
//! --first-port P`: one UDP datagram per (source port, destination port), from `src`
//! inside the namespace towards `dest`, for the NAT bench (bench/nat.rs). Each datagram
//! that a gateway forwards and masquerades is one conntrack entry there; nobody answers,
//! so the entries stay unreplied (they live nf_conntrack_udp_timeout).
//!
//! Datagram k goes from port P + k / D to destination port LO + k % D (D ports): the
//! same tuples on every run, so a second run only adds what the first one lost (a run is
//! idempotent for the gateway's table). Prints one JSON line:
//! {"datagrams": N, "send_errors": E, "ms": T}.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use portex_e2e::enter_netns;

pub struct Opts {
    pub netns: String,
    pub src: Ipv4Addr,
    pub dest: Ipv4Addr,
    pub dports: (u16, u16),
    pub count: u64,
    pub first_port: u16,
}

/// `LO-HI` (or one port).
pub fn parse_ports(s: &str) -> Result<(u16, u16)> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let (lo, hi): (u16, u16) = (
        lo.parse().context("--dports: not a port")?,
        hi.parse().context("--dports: not a port")?,
    );
    if lo == 0 || hi < lo {
        bail!("--dports {s}: expected LO-HI with 0 < LO <= HI");
    }
    Ok((lo, hi))
}

pub fn run(o: Opts) -> Result<()> {
    let d = u64::from(o.dports.1 - o.dports.0) + 1;
    let sources = o.count.div_ceil(d);
    if u64::from(o.first_port) + sources > 65536 || o.first_port == 0 {
        bail!(
            "--count {} over {d} destination ports needs {sources} source ports from {}: more than the port space",
            o.count,
            o.first_port
        );
    }
    enter_netns(&o.netns)?;
    let t0 = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    for i in 0..sources {
        let port = o.first_port + i as u16;
        let sock = UdpSocket::bind(SocketAddrV4::new(o.src, port))
            .with_context(|| format!("binding {}:{port}", o.src))?;
        for j in 0..d.min(o.count - sent - errors) {
            let to = SocketAddrV4::new(o.dest, o.dports.0 + j as u16);
            match sock.send_to(b"x", to) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
    }
    println!(
        "{{\"datagrams\": {sent}, \"send_errors\": {errors}, \"ms\": {:.1}}}",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

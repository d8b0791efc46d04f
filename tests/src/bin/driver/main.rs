//! Drives real sockets for the end-to-end tests, inside a network namespace it enters
//! itself (`--netns NAME`), and prints the ground truth it saw, one fact per line:
//!   pid <pid>
//!   listen <addr>
//!   connect ok <local addr> | connect err <errno>
//!   bind ok <local addr> | bind err <errno>
//! The tests compare these lines with what portex reported for this pid.
use std::{
    io::{Read, Write},
    net::SocketAddr,
};

use portex_e2e::{enter_netns, errno_of, hold_conns, hold_until_stdin_closes};

mod failing;
mod held;
mod oracle;
#[cfg(target_arch = "x86_64")]
mod sandbox;

use failing::*;
use held::*;
use oracle::*;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Not a driver of sockets but a wrapper that execs its program: prints nothing.
    #[cfg(target_arch = "x86_64")]
    if args.first().map(String::as_str) == Some("unit-sandbox") {
        sandbox::unit_sandbox(&args[1..]);
    }
    let (netns, rest) = match args.first().map(String::as_str) {
        Some("--netns") => (Some(args[1].clone()), args[2..].to_vec()),
        _ => (None, args),
    };
    // --cgroup DIR: move into that cgroup (v2) before making any socket.
    let rest = match rest.first().map(String::as_str) {
        Some("--cgroup") => {
            std::fs::write(
                format!("{}/cgroup.procs", rest[1]),
                std::process::id().to_string(),
            )
            .expect("joining the cgroup");
            rest[2..].to_vec()
        }
        _ => rest,
    };
    // --name NAME: set this process's comm (untrusted names for the display tests).
    let rest = match rest.first().map(String::as_str) {
        Some("--name") => {
            let name = std::ffi::CString::new(rest[1].as_bytes()).unwrap();
            // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated string.
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            rest[2..].to_vec()
        }
        // The same from hex, for names that are not UTF-8 (arguments must be).
        Some("--name-hex") => {
            let bytes: Vec<u8> = (0..rest[1].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&rest[1][i..i + 2], 16).expect("hex"))
                .collect();
            let name = std::ffi::CString::new(bytes).unwrap();
            // SAFETY: as above.
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            rest[2..].to_vec()
        }
        _ => rest,
    };
    if let Some(ns) = netns {
        enter_netns(&ns).unwrap_or_else(|e| panic!("{e}"));
    }
    println!("pid {}", std::process::id());
    let a: Vec<&str> = rest.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["exhaust-tcp", addr, attempts] => {
            exhaust_tcp(addr.parse().unwrap(), attempts.parse().unwrap())
        }
        ["client-close", addr, n] => client_close(addr.parse().unwrap(), n.parse().unwrap()),
        ["collision", addr] => collision(addr.parse().unwrap()),
        ["exhaust-bind", addr, attempts] => {
            exhaust_bind(addr.parse().unwrap(), attempts.parse().unwrap())
        }
        ["exhaust-udp", addr, attempts] => {
            exhaust_udp(addr.parse().unwrap(), attempts.parse().unwrap())
        }
        ["hold-udp", addr, n] => hold_udp(addr.parse().unwrap(), n.parse().unwrap()),
        ["pool-mix", a, b, tw, live_a, live_b] => pool_mix(
            a.parse().unwrap(),
            b.parse().unwrap(),
            tw.parse().unwrap(),
            live_a.parse().unwrap(),
            live_b.parse().unwrap(),
        ),
        ["count-with-range", addr, lo, hi, max] => count_with_range(
            addr.parse().unwrap(),
            lo.parse().unwrap(),
            hi.parse().unwrap(),
            max.parse().unwrap(),
        ),
        ["bind-only", ip, n] => bind_only(ip.parse().unwrap(), n.parse().unwrap()),
        ["bind-connect", addr, n] => bind_connect(addr.parse().unwrap(), n.parse().unwrap()),
        ["churn", addr, n] => churn(addr.parse().unwrap(), n.parse().unwrap()),
        ["client-close-paced", addr, per_s] => {
            client_close_paced(addr.parse().unwrap(), per_s.parse().unwrap())
        }
        ["refused", addr] => refused(addr.parse().unwrap()),
        ["hold-conns", addr, n] => {
            hold_conns(addr.parse().unwrap(), n.parse().unwrap(), usize::MAX)
        }
        ["hold-conns", addr, n, max_failed] => hold_conns(
            addr.parse().unwrap(),
            n.parse().unwrap(),
            max_failed.parse().unwrap(),
        ),
        ["flood", addr, seconds, threads] => flood(
            addr.parse().unwrap(),
            seconds.parse().unwrap(),
            threads.parse().unwrap(),
        ),
        ["after-go", rest @ ..] => after_go(rest),
        ["serve-close", addr] => serve_close(addr.parse().unwrap()),
        ["serve-first-close", addr] => serve_first_close(addr.parse().unwrap()),
        ["connect-from", addr, first, n] => connect_from(
            addr.parse().unwrap(),
            first.parse().unwrap(),
            n.parse().unwrap(),
        ),
        ["tw-then-count", addr, n, max] => tw_then_count(
            addr.parse().unwrap(),
            n.parse().unwrap(),
            max.parse().unwrap(),
        ),
        ["linger-reset", addr, n] => linger_reset(addr.parse().unwrap(), n.parse().unwrap()),
        ["bind-mix", addr, no_port, plain] => bind_mix(
            addr.parse().unwrap(),
            no_port.parse().unwrap(),
            plain.parse().unwrap(),
        ),
        _ => {
            eprintln!(
                "usage: portex-e2e-driver [--netns NAME] exhaust-tcp|client-close|collision|exhaust-bind|exhaust-udp|hold-udp|pool-mix|bind-connect|churn ..."
            );
            std::process::exit(2);
        }
    }
    std::io::stdout().flush().unwrap();
}
/// Says "ready" and waits for one line on stdin before it makes any socket, then runs
/// the rest of its arguments as a new driver in this same process (exec keeps the pid
/// and the network namespace): a test learns the pid before the first event.
pub(crate) fn after_go(rest: &[&str]) {
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut byte = [0u8; 1];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => {}
            // Stdin closed without a go (the test gave up): make no socket at all.
            _ => std::process::exit(0),
        }
    }
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(std::env::current_exe().unwrap())
        .args(rest)
        .exec();
    panic!("exec of the driver failed: {err}");
}

/// A listener that accepts and holds every connection until the process exits.
pub(crate) fn listen_and_hold(addr: SocketAddr) -> SocketAddr {
    portex_e2e::listen_and_hold(addr).expect("listen")
}

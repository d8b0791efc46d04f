//! Socket work that both the driver (src/bin/driver) and xtask's workloads do inside
//! their namespace, printing the facts they saw one per line: a listener that holds
//! what it accepts, connections held idle, and holding on until stdin closes.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

/// The errno of a failed socket call (-1 when it has none).
pub fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// A listener that accepts and holds every connection until the process exits; prints
/// `listen ADDR`.
pub fn listen_and_hold(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind(addr)?;
    let local = l.local_addr()?;
    println!("listen {local}");
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    Ok(local)
}

/// Says "ready", then holds everything until stdin closes (the caller is done looking).
pub fn hold_until_stdin_closes() {
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// Raises this process's open-file limit to its hard limit.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to a rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Opens `n` connections to a server it does not own (stopping early at `max_failed`
/// failures) and holds them idle until stdin closes; prints `held N failed F` first.
pub fn hold_conns(dest: SocketAddr, n: usize, max_failed: usize) {
    raise_nofile();
    let mut held = Vec::new();
    let mut failed = 0;
    for _ in 0..n {
        if failed >= max_failed {
            break;
        }
        match TcpStream::connect_timeout(&dest, Duration::from_secs(2)) {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
    }
    println!("held {} failed {failed}", held.len());
    hold_until_stdin_closes();
}

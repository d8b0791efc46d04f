//! The kernel's own answer for the pool-figure tests: fill a pool with client-side
//! TIME_WAIT, wait for the test to read portex's prediction, then connect until the
//! first failure. Counted connections end with a reset (SO_LINGER 0), so the count
//! leaves no TIME_WAIT of its own.
use std::{
    io::{BufRead, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use portex_e2e::errno_of;
use socket2::SockRef;

/// Until stdin closes, accepts and closes each connection after the client's FIN (a
/// passive close here, so the TIME_WAIT is the client's).
pub(crate) fn serve_close(listen: SocketAddr) {
    let l = TcpListener::bind(listen).expect("listen");
    println!("listen {}", l.local_addr().unwrap());
    println!("ready");
    std::io::stdout().flush().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                while s.read(&mut buf).map(|k| k > 0).unwrap_or(false) {}
            });
        }
    });
    let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
}

/// `n` connections to `dest`, each closed by this side first once the server closed
/// too: n client-side TIME_WAIT sockets. Prints "filled N" and "ready", waits for a line
/// on stdin (`Held::go`), then connects until the first failure (at most `max`) and
/// prints "connects K" and the error.
pub(crate) fn tw_then_count(dest: SocketAddr, n: usize, max: usize) {
    let mut filled = 0;
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(dest) else {
            break;
        };
        s.write_all(b"x").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut buf = [0u8; 64];
        while s.read(&mut buf).map(|k| k > 0).unwrap_or(false) {}
        filled += 1;
    }
    // The last FINs settle into TIME_WAIT.
    thread::sleep(Duration::from_millis(50));
    println!("filled {filled}");
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut held = Vec::new();
    let err = loop {
        if held.len() >= max {
            break None;
        }
        match TcpStream::connect(dest) {
            Ok(s) => held.push(s),
            Err(e) => break Some(errno_of(&e)),
        }
    };
    println!("connects {}", held.len());
    if let Some(e) = err {
        println!("connect err {e}");
    }
    for s in &held {
        let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
    }
}

/// Until stdin closes, accepts and closes each connection at once (an active close
/// here: the TIME_WAIT is the server's, in its listener's bind bucket).
pub(crate) fn serve_first_close(listen: SocketAddr) {
    let l = TcpListener::bind(listen).expect("listen");
    println!("listen {}", l.local_addr().unwrap());
    println!("ready");
    std::io::stdout().flush().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
}

/// `n` connections to `dest` from source ports `first`, `first + 1`, ... (bound
/// explicitly, so they come from outside the namespace's range), each read until the
/// server closes and then closed (a passive close: no TIME_WAIT on this side). Prints
/// "connected K".
pub(crate) fn connect_from(dest: SocketAddr, first: u16, n: u16) {
    let mut done = 0;
    for i in 0..n {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(dest),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        let src = SocketAddr::new(dest.ip(), first + i);
        if sock.bind(&src.into()).is_err() || sock.connect(&dest.into()).is_err() {
            continue;
        }
        let mut s: TcpStream = sock.into();
        let mut buf = [0u8; 64];
        while s.read(&mut buf).map(|k| k > 0).unwrap_or(false) {}
        done += 1;
    }
    thread::sleep(Duration::from_millis(50));
    println!("connected {done}");
}

/// Connects to `dest` with IP_LOCAL_PORT_RANGE (Linux 6.3+) set to `lo`..=`hi` on each
/// socket until the first failure (at most `max`); prints "connects K" and the error,
/// or "unsupported" when the kernel lacks the option.
pub(crate) fn count_with_range(dest: SocketAddr, lo: u16, hi: u16, max: usize) {
    use std::os::fd::AsRawFd;
    const IP_LOCAL_PORT_RANGE: libc::c_int = 51;
    let mut held = Vec::new();
    let err = loop {
        if held.len() >= max {
            break None;
        }
        let s = socket2::Socket::new(
            socket2::Domain::for_address(dest),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        let range: u32 = lo as u32 | (hi as u32) << 16;
        // SAFETY: a valid socket and a u32 option value of the size given.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                IP_LOCAL_PORT_RANGE,
                &range as *const u32 as *const libc::c_void,
                size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            println!("unsupported");
            return;
        }
        match s.connect(&dest.into()) {
            Ok(()) => held.push(s),
            Err(e) => break Some(errno_of(&e)),
        }
    };
    println!("connects {}", held.len());
    if let Some(e) = err {
        println!("connect err {e}");
    }
    for s in &held {
        let _ = s.set_linger(Some(Duration::ZERO));
    }
}

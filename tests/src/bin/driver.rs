//! Drives real sockets for the end-to-end tests, inside a network namespace it enters
//! itself (`--netns NAME`), and prints the ground truth it saw, one fact per line:
//!   pid <pid>
//!   listen <addr>
//!   connect ok <local addr> | connect err <errno>
//!   bind ok <local addr> | bind err <errno>
//! The tests compare these lines with what portex reported for this pid.
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
        enter_netns(&ns);
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
        ["bind-connect", addr, n] => bind_connect(addr.parse().unwrap(), n.parse().unwrap()),
        ["churn", addr, n] => churn(addr.parse().unwrap(), n.parse().unwrap()),
        ["refused", addr] => refused(addr.parse().unwrap()),
        ["hold-conns", addr, n] => hold_conns(addr.parse().unwrap(), n.parse().unwrap()),
        ["flood", addr, seconds, threads] => flood(
            addr.parse().unwrap(),
            seconds.parse().unwrap(),
            threads.parse().unwrap(),
        ),
        ["after-go", rest @ ..] => after_go(rest),
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

/// Says "ready", then holds everything until stdin closes (the test is done looking).
fn hold_until_stdin_closes() {
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// `tw` connections to `a` that the client closes first (TIME_WAIT), then `live_a` and
/// `live_b` open connections to `a` and `b`; held until stdin closes.
fn pool_mix(a: SocketAddr, b: SocketAddr, tw: usize, live_a: usize, live_b: usize) {
    let la = TcpListener::bind(a).expect("listen a");
    let lb = TcpListener::bind(b).expect("listen b");
    let closer = thread::spawn(move || {
        let mut live = Vec::new();
        for (i, s) in la.incoming().enumerate() {
            let mut s = s.unwrap();
            if i < tw {
                let mut buf = [0u8; 8];
                while s.read(&mut buf).map(|k| k > 0).unwrap_or(false) {}
            } else {
                live.push(s);
            }
            if i + 1 == tw + live_a {
                return live;
            }
        }
        live
    });
    let _holder_b = thread::spawn(move || {
        let mut held = Vec::new();
        for s in lb.incoming().flatten() {
            held.push(s);
        }
    });
    for _ in 0..tw {
        let s = TcpStream::connect(a).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        drop(s);
    }
    let mut held = Vec::new();
    for _ in 0..live_a {
        held.push(TcpStream::connect(a).unwrap());
    }
    for _ in 0..live_b {
        held.push(TcpStream::connect(b).unwrap());
    }
    let server_side = closer.join().unwrap();
    // Let the last FINs settle into TIME_WAIT.
    thread::sleep(Duration::from_millis(300));
    hold_until_stdin_closes();
    drop((held, server_side));
}

/// bind(port 0) then connect(), n times, without IP_BIND_ADDRESS_NO_PORT; held.
fn bind_connect(listen: SocketAddr, n: usize) {
    let dest = listen_and_hold(listen);
    let mut held = Vec::new();
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(dest), Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.bind(&SockAddr::from(SocketAddr::new(dest.ip(), 0)))
            .unwrap();
        s.connect(&SockAddr::from(dest)).unwrap();
        println!(
            "connect ok {}",
            s.local_addr().unwrap().as_socket().unwrap()
        );
        held.push(s);
    }
    hold_until_stdin_closes();
}

/// Short connections in a loop until stdin closes (or n of them): a churning client.
fn churn(listen: SocketAddr, n: usize) {
    let dest = listen_and_hold(listen);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    for _ in 0..n {
        if rx.try_recv().is_ok() {
            break;
        }
        if let Ok(s) = TcpStream::connect(dest) {
            drop(s);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A non-blocking and a blocking connect() to a port nobody listens on.
fn refused(dest: SocketAddr) {
    let s = Socket::new(Domain::for_address(dest), Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_nonblocking(true).unwrap();
    match s.connect(&SockAddr::from(dest)) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            println!("nonblocking einprogress")
        }
        Err(e) => println!("nonblocking err {}", errno_of(&e)),
        Ok(()) => println!("nonblocking ok"),
    }
    thread::sleep(Duration::from_millis(50));
    let pending = s
        .take_error()
        .ok()
        .flatten()
        .map(|e| errno_of(&e))
        .unwrap_or(0);
    println!("nonblocking so_error {pending}");
    match TcpStream::connect(dest) {
        Ok(_) => println!("blocking ok"),
        Err(e) => println!("blocking err {}", errno_of(&e)),
    }
}

fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).expect("open netns");
    use std::os::fd::AsRawFd;
    // SAFETY: valid fd of a network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// A listener that accepts and holds every connection until the process exits.
fn listen_and_hold(addr: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind(addr).expect("listen");
    let local = l.local_addr().unwrap();
    println!("listen {local}");
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    local
}

/// Opens `n` connections to a server it does not own (the agent's metrics port) and
/// holds them idle until stdin closes: more than the server's open-file limit.
fn hold_conns(dest: SocketAddr, n: usize) {
    raise_nofile();
    let mut held = Vec::new();
    let mut failed = 0;
    for _ in 0..n {
        match TcpStream::connect_timeout(&dest, Duration::from_secs(2)) {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
    }
    println!("held {} failed {failed}", held.len());
    hold_until_stdin_closes();
}

fn raise_nofile() {
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

/// As many short connections as `threads` clients can make in `seconds`, the server
/// closing first (no client TIME_WAIT, so the pool never runs out). Prints the count.
fn flood(listen: SocketAddr, seconds: f64, threads: usize) {
    let l = TcpListener::bind(listen).expect("listen");
    let dest = l.local_addr().unwrap();
    for _ in 0..2 {
        let l = l.try_clone().unwrap();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                drop(s);
            }
        });
    }
    let end = std::time::Instant::now() + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            thread::spawn(move || {
                let mut n = 0u64;
                let mut buf = [0u8; 1];
                while std::time::Instant::now() < end {
                    if let Ok(mut s) = TcpStream::connect(dest) {
                        let _ = s.read(&mut buf);
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let n: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    println!("connections {n}");
}

/// Connects until the pool towards one destination is empty, holding every socket.
fn exhaust_tcp(listen: SocketAddr, attempts: usize) {
    let dest = listen_and_hold(listen);
    let mut held = Vec::new();
    for _ in 0..attempts {
        match TcpStream::connect(dest) {
            Ok(s) => {
                println!("connect ok {}", s.local_addr().unwrap());
                held.push(s);
            }
            Err(e) => println!("connect err {}", errno_of(&e)),
        }
    }
    thread::sleep(Duration::from_millis(200));
}

/// n connections where the client closes first: client ports end in TIME_WAIT.
fn client_close(listen: SocketAddr, n: usize) {
    let l = TcpListener::bind(listen).expect("listen");
    let dest = l.local_addr().unwrap();
    println!("listen {dest}");
    let server = thread::spawn(move || {
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 16];
            // Wait for the client's FIN, then close: the server's close is passive.
            while s.read(&mut buf).map(|k| k > 0).unwrap_or(false) {}
            drop(s);
        }
    });
    for _ in 0..n {
        let mut s = TcpStream::connect(dest).unwrap();
        println!("connect ok {}", s.local_addr().unwrap());
        s.write_all(b"x").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        drop(s);
    }
    server.join().unwrap();
    thread::sleep(Duration::from_millis(200));
}

/// bind() a port, connect; bind the same port again (SO_REUSEADDR) and connect to the
/// same destination: the 4-tuple is taken, connect() fails with EADDRNOTAVAIL.
fn collision(listen: SocketAddr) {
    let dest = listen_and_hold(listen);
    let domain = Domain::for_address(dest);
    let first = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).unwrap();
    first.set_reuse_address(true).unwrap();
    first
        .bind(&SockAddr::from(SocketAddr::new(dest.ip(), 0)))
        .unwrap();
    let bound = first.local_addr().unwrap().as_socket().unwrap();
    first.connect(&SockAddr::from(dest)).unwrap();
    println!("connect ok {bound}");
    let second = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).unwrap();
    second.set_reuse_address(true).unwrap();
    second.bind(&SockAddr::from(bound)).unwrap();
    match second.connect(&SockAddr::from(dest)) {
        Ok(()) => println!("connect ok {bound}"),
        Err(e) => println!("connect err {}", errno_of(&e)),
    }
    thread::sleep(Duration::from_millis(200));
}

/// bind(port 0) until none is left, holding every socket.
fn exhaust_bind(addr: SocketAddr, attempts: usize) {
    let mut held = Vec::new();
    for _ in 0..attempts {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
        match s.bind(&SockAddr::from(SocketAddr::new(addr.ip(), 0))) {
            Ok(()) => {
                println!("bind ok {}", s.local_addr().unwrap().as_socket().unwrap());
                held.push(s);
            }
            Err(e) => println!("bind err {}", errno_of(&e)),
        }
    }
    thread::sleep(Duration::from_millis(200));
}

/// UDP connect() (auto-bind) until none is left, holding every socket.
/// `n` connected UDP sockets (each auto-binds a port), held until stdin closes.
fn hold_udp(dest: SocketAddr, n: usize) {
    let held: Vec<Socket> = (0..n)
        .map(|_| {
            let s =
                Socket::new(Domain::for_address(dest), Type::DGRAM, Some(Protocol::UDP)).unwrap();
            s.connect(&SockAddr::from(dest)).unwrap();
            s
        })
        .collect();
    hold_until_stdin_closes();
    drop(held);
}

fn exhaust_udp(dest: SocketAddr, attempts: usize) {
    let mut held = Vec::new();
    for _ in 0..attempts {
        let s = Socket::new(Domain::for_address(dest), Type::DGRAM, Some(Protocol::UDP)).unwrap();
        match s.connect(&SockAddr::from(dest)) {
            Ok(()) => {
                println!(
                    "connect ok {}",
                    s.local_addr().unwrap().as_socket().unwrap()
                );
                held.push(s);
            }
            Err(e) => println!("connect err {}", errno_of(&e)),
        }
    }
    thread::sleep(Duration::from_millis(200));
}

/// Says "ready" and waits for one line on stdin before it makes any socket, then runs
/// the rest of its arguments as a new driver in this same process (exec keeps the pid
/// and the network namespace): a test learns the pid before the first event.
fn after_go(rest: &[&str]) {
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut byte = [0u8; 1];
    let mut stdin = std::io::stdin().lock();
    while stdin.read(&mut byte).map(|k| k == 1).unwrap_or(false) && byte[0] != b'\n' {}
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(std::env::current_exe().unwrap())
        .args(rest)
        .exec();
    panic!("exec of the driver failed: {err}");
}

/// `n` connections closed with SO_LINGER 0: the client aborts with a RST, so its port
/// is free at once (no TIME_WAIT).
fn linger_reset(listen: SocketAddr, n: usize) {
    let dest = listen_and_hold(listen);
    for _ in 0..n {
        let s = TcpStream::connect(dest).unwrap();
        println!("connect ok {}", s.local_addr().unwrap());
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    }
    thread::sleep(Duration::from_millis(200));
}

/// `no_port` sockets bound to port 0 with IP_BIND_ADDRESS_NO_PORT (bind() takes no
/// port; connect() picks it), then `plain` bound to port 0 without it (bind() takes
/// the port), each connected; all held until stdin closes.
fn bind_mix(listen: SocketAddr, no_port: usize, plain: usize) {
    use std::os::fd::AsRawFd;
    let dest = listen_and_hold(listen);
    let mut held = Vec::new();
    for i in 0..no_port + plain {
        let s = Socket::new(Domain::for_address(dest), Type::STREAM, Some(Protocol::TCP)).unwrap();
        let with_no_port = i < no_port;
        if with_no_port {
            let one: libc::c_int = 1;
            // SAFETY: a valid socket and a c_int option value of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        }
        s.bind(&SockAddr::from(SocketAddr::new(dest.ip(), 0)))
            .unwrap();
        let bound = s.local_addr().unwrap().as_socket().unwrap();
        s.connect(&SockAddr::from(dest)).unwrap();
        let local = s.local_addr().unwrap().as_socket().unwrap();
        if with_no_port {
            println!("no-port bound {bound} connected {local}");
        } else {
            println!("bind ok {bound}");
        }
        held.push(s);
    }
    hold_until_stdin_closes();
}

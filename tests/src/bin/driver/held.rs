//! Drivers that hold their sockets (until stdin closes) or churn: pools filled to a
//! known state for the tests to compare with.
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::*;

/// `tw` connections to `a` that the client closes first (TIME_WAIT), then `live_a` and
/// `live_b` open connections to `a` and `b`; held until stdin closes.
pub(crate) fn pool_mix(a: SocketAddr, b: SocketAddr, tw: usize, live_a: usize, live_b: usize) {
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
    // The last FINs settle into TIME_WAIT in softirq: wait until the kernel lists them.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while time_wait_towards(a.port()) < tw && std::time::Instant::now() < end {
        thread::sleep(Duration::from_millis(5));
    }
    hold_until_stdin_closes();
    drop((held, server_side));
}

/// Sockets of this namespace in TIME_WAIT whose remote port is `port` (/proc/net/tcp
/// and tcp6: state 06, remote address in the third column as ADDR:PORT in hex).
pub(crate) fn time_wait_towards(port: u16) -> usize {
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter(|l| {
                    let c: Vec<&str> = l.split_whitespace().collect();
                    c.len() > 3
                        && c[3] == "06"
                        && c[2]
                            .rsplit_once(':')
                            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                            == Some(port)
                })
                .count()
        })
        .sum()
}

/// bind(port 0) then connect(), n times, without IP_BIND_ADDRESS_NO_PORT; held.
pub(crate) fn bind_connect(listen: SocketAddr, n: usize) {
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
pub(crate) fn churn(listen: SocketAddr, n: usize) {
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

/// As many short connections as `threads` clients can make in `seconds`, the server
/// closing first (no client TIME_WAIT, so the pool never runs out). Prints the count.
pub(crate) fn flood(listen: SocketAddr, seconds: f64, threads: usize) {
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

/// UDP connect() (auto-bind) until none is left, holding every socket.
/// `n` connected UDP sockets (each auto-binds a port), held until stdin closes.
pub(crate) fn hold_udp(dest: SocketAddr, n: usize) {
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

/// `n` connections closed with SO_LINGER 0: the client aborts with a RST, so its port
/// is free at once (no TIME_WAIT).
pub(crate) fn linger_reset(listen: SocketAddr, n: usize) {
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
pub(crate) fn bind_mix(listen: SocketAddr, no_port: usize, plain: usize) {
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
                    size_of::<libc::c_int>() as libc::socklen_t,
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

/// `n` TCP sockets bound to port 0 on `ip`, neither listening nor connected; held.
pub(crate) fn bind_only(ip: std::net::IpAddr, n: usize) {
    let mut held = Vec::new();
    for _ in 0..n {
        let s = Socket::new(
            Domain::for_address(SocketAddr::new(ip, 0)),
            Type::STREAM,
            None,
        )
        .unwrap();
        s.bind(&SockAddr::from(SocketAddr::new(ip, 0))).unwrap();
        println!("bound {}", s.local_addr().unwrap().as_socket().unwrap());
        held.push(s);
    }
    hold_until_stdin_closes();
}

/// A client that closes first, `per_s` connections a second to its own listener (which
/// reads to the end and then closes: the client's port goes to TIME_WAIT), until stdin
/// closes. Once the pool is full, connect() fails and the client keeps trying at the
/// same pace: a pool that fills at a known rate, then fails, for `top`'s chart.
pub(crate) fn client_close_paced(listen: SocketAddr, per_s: f64) {
    let l = TcpListener::bind(listen).expect("listen");
    let dest = l.local_addr().unwrap();
    println!("listen {dest}");
    thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 16];
            while s.read(&mut buf).map(|k| k > 0).unwrap_or(false) {}
        }
    });
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    let gap = Duration::from_secs_f64(1.0 / per_s.max(0.01));
    // Nothing is printed after "ready": the test no longer reads stdout.
    while rx.recv_timeout(gap).is_err() {
        let Ok(mut s) = TcpStream::connect(dest) else {
            continue;
        };
        s.write_all(b"x").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        // The server's FIN: the client closed first and now sits in TIME_WAIT.
        let mut buf = [0u8; 16];
        while s.read(&mut buf).map(|k| k > 0).unwrap_or(false) {}
    }
}

//! Drivers whose connect() or bind() fail: exhaustion, 4-tuple collision, refusal.
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::*;

/// A non-blocking and a blocking connect() to a port nobody listens on.
pub(crate) fn refused(dest: SocketAddr) {
    let s = Socket::new(Domain::for_address(dest), Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_nonblocking(true).unwrap();
    match s.connect(&SockAddr::from(dest)) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            println!("nonblocking einprogress")
        }
        Err(e) => println!("nonblocking err {}", errno_of(&e)),
        Ok(()) => println!("nonblocking ok"),
    }
    // The RST comes back in softirq: wait for it on the socket itself (5 s at most).
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let pending = loop {
        let e = s
            .take_error()
            .ok()
            .flatten()
            .map(|e| errno_of(&e))
            .unwrap_or(0);
        if e != 0 || std::time::Instant::now() > end {
            break e;
        }
        thread::sleep(Duration::from_millis(1));
    };
    println!("nonblocking so_error {pending}");
    match TcpStream::connect(dest) {
        Ok(_) => println!("blocking ok"),
        Err(e) => println!("blocking err {}", errno_of(&e)),
    }
}

/// Connects until the pool towards one destination is empty, holding every socket.
pub(crate) fn exhaust_tcp(listen: SocketAddr, attempts: usize) {
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
pub(crate) fn client_close(listen: SocketAddr, n: usize) {
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
pub(crate) fn collision(listen: SocketAddr) {
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
pub(crate) fn exhaust_bind(addr: SocketAddr, attempts: usize) {
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

pub(crate) fn exhaust_udp(dest: SocketAddr, attempts: usize) {
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

//! What /proc and the socket itself tell about an event's process: the process name
//! (the kernel records the thread's), and for bind() and some failures the socket's
//! protocol and local address.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use crate::logic::model::Transport;

/// Process names and start times by pid, re-read after `ttl_ns` so that a reused pid
/// gets its new identity.
pub(crate) struct ProcNames {
    cache: HashMap<u32, (std::sync::Arc<str>, u64, u64)>,
    ttl_ns: u64,
}

const MAX_CACHED: usize = 8192;

impl ProcNames {
    pub(crate) fn new(ttl_ns: u64) -> Self {
        ProcNames {
            cache: HashMap::new(),
            ttl_ns,
        }
    }

    /// The name of `pid` (from /proc/<pid>/stat) and its start time; `fallback` (the
    /// thread's comm) and 0 when the process is gone or unknown.
    pub(crate) fn lookup(
        &mut self,
        pid: u32,
        now_ns: u64,
        fallback: &str,
    ) -> (std::sync::Arc<str>, u64) {
        if pid == 0 {
            return (fallback.into(), 0);
        }
        if let Some((n, start, at)) = self.cache.get(&pid)
            && now_ns.saturating_sub(*at) < self.ttl_ns
        {
            return (n.clone(), *start);
        }
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap_or_default();
        match crate::sys::owners::parse_stat(&crate::logic::untrusted::decode(&stat)) {
            Some((name, start)) => {
                let name: std::sync::Arc<str> = name.into();
                self.cache.insert(pid, (name.clone(), start, now_ns));
                (name, start)
            }
            None => {
                self.cache.remove(&pid);
                (fallback.into(), 0)
            }
        }
    }
}

/// What a socket says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SocketInfo {
    pub transport: Transport,
    pub local: SocketAddr,
    /// IP_BIND_ADDRESS_NO_PORT is set: a bind(port 0) took no port (connect() picks
    /// it), whatever port the socket has by the time it is asked.
    pub bind_no_port: bool,
}

/// The protocol and local address of socket `fd` of process `pid`, read through a
/// duplicate of the descriptor (pidfd_getfd, Linux 5.6+). None when the process or the
/// descriptor is gone, or the kernel refuses.
pub(crate) fn socket_of(pid: u32, fd: i32) -> Option<SocketInfo> {
    if pid == 0 || fd < 0 {
        return None;
    }
    // SAFETY: plain syscalls on integers; every fd opened here is closed below.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) as libc::c_int;
        if pidfd < 0 {
            return None;
        }
        let sfd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as libc::c_int;
        libc::close(pidfd);
        if sfd < 0 {
            return None;
        }
        let res = query_socket(sfd);
        libc::close(sfd);
        res
    }
}

unsafe fn query_socket(fd: libc::c_int) -> Option<SocketInfo> {
    let mut proto: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out-pointers of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PROTOCOL,
            &mut proto as *mut _ as *mut _,
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let transport = Transport::of_protocol(proto as u16);
    // SAFETY: sockaddr_storage is large enough for any address.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut slen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss and slen are live locals; slen holds the size of ss.
    let rc = unsafe { libc::getsockname(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut slen) };
    if rc != 0 {
        return None;
    }
    let addr = match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: family checked.
            let sin: libc::sockaddr_in = unsafe { *(&ss as *const _ as *const libc::sockaddr_in) };
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))),
                u16::from_be(sin.sin_port),
            )
        }
        libc::AF_INET6 => {
            // SAFETY: family checked.
            let sin6: libc::sockaddr_in6 =
                unsafe { *(&ss as *const _ as *const libc::sockaddr_in6) };
            let ip = crate::logic::addr::from_bytes(sin6.sin6_addr.s6_addr);
            SocketAddr::new(ip, u16::from_be(sin6.sin6_port))
        }
        _ => return None,
    };
    let mut no_port: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out-pointers of the sizes given. SOL_IP options apply to IPv6
    // sockets too.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &mut no_port as *mut _ as *mut _,
            &mut len,
        )
    };
    Some(SocketInfo {
        transport,
        local: addr,
        bind_no_port: rc == 0 && no_port != 0,
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::*;

    /// A TCP socket of this process bound to 127.0.0.1:0, with or without
    /// IP_BIND_ADDRESS_NO_PORT.
    fn bound(no_port: bool) -> OwnedFd {
        // SAFETY: plain syscalls; the fd is owned by the returned OwnedFd.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let fd = OwnedFd::from_raw_fd(fd);
            let one: libc::c_int = 1;
            if no_port {
                let rc = libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const _ as *const _,
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
                assert_eq!(rc, 0);
            }
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            let rc = libc::bind(
                fd.as_raw_fd(),
                &sin as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            fd
        }
    }

    #[test]
    fn a_socket_says_whether_bind_took_a_port() {
        let me = std::process::id();
        let plain = bound(false);
        let s = socket_of(me, plain.as_raw_fd()).expect("our own socket");
        assert_eq!(s.transport, Transport::Tcp);
        assert_eq!(s.local.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(s.local.port(), 0);
        assert!(!s.bind_no_port);
        let no_port = bound(true);
        let s = socket_of(me, no_port.as_raw_fd()).expect("our own socket");
        assert_eq!(s.local.port(), 0);
        assert!(s.bind_no_port);
        assert_eq!(socket_of(me, -1), None);
    }
}

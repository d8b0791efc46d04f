//! One netlink dump, whatever the family (sock_diag, ctnetlink, nf_tables): open a
//! socket in the caller's network namespace, send the request, and hand each datagram
//! of the answer to the family's parser until it says the dump ended. The walkers of
//! messages and attributes the parsers share are here too.
use std::{
    io,
    time::{Duration, Instant},
};

struct Fd(i32);
impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// What one dump may cost: a dump answered by a table another user fills (their own
/// namespace's ruleset) must not hold the caller longer or make it read more than this.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// The whole answer by then (None: wait as long as the kernel takes).
    pub deadline: Option<Instant>,
    /// Bytes of answer at most.
    pub max_bytes: usize,
}

impl Budget {
    /// The kernel's own tables (sockets, conntrack), as large as they are.
    pub(crate) const UNBOUNDED: Budget = Budget {
        deadline: None,
        max_bytes: usize::MAX,
    };
}

/// Why a dump gave no verdict.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DumpError {
    #[error("opening a {what} netlink socket: {err}")]
    Open { what: &'static str, err: io::Error },
    #[error("sending a {what} request: {err}")]
    Send { what: &'static str, err: io::Error },
    /// ENOBUFS among them: the socket's queue overflowed (worth another try).
    #[error("reading {what}: {err}")]
    Recv { what: &'static str, err: io::Error },
    #[error("reading {what}: no complete answer in time")]
    TimedOut { what: &'static str },
    #[error("reading {what}: the answer is longer than {max} bytes")]
    TooLong { what: &'static str, max: usize },
}

/// Sends `req` on a `protocol` netlink socket and feeds each datagram of the answer to
/// `datagram` until it returns Some (its verdict on the dump). `what` names the family
/// in errors.
pub(crate) fn dump<R>(
    protocol: i32,
    what: &'static str,
    req: &[u8],
    datagram: impl FnMut(&[u8]) -> Option<R>,
) -> anyhow::Result<R> {
    Ok(dump_within(
        protocol,
        what,
        req,
        Budget::UNBOUNDED,
        datagram,
    )?)
}

/// `dump` within `budget`: each wait for a datagram is bounded by what is left of the
/// time (SO_RCVTIMEO), and the answer by its length.
pub(crate) fn dump_within<R>(
    protocol: i32,
    what: &'static str,
    req: &[u8],
    budget: Budget,
    mut datagram: impl FnMut(&[u8]) -> Option<R>,
) -> Result<R, DumpError> {
    // SAFETY: plain socket creation.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return Err(DumpError::Open { what, err });
    }
    let fd = Fd(fd);
    // SAFETY: a zeroed sockaddr_nl addresses the kernel.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: req and sa are live for the call; the lengths passed are theirs.
    let rc = unsafe {
        libc::sendto(
            fd.0,
            req.as_ptr() as *const _,
            req.len(),
            0,
            &sa as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(DumpError::Send { what, err });
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0usize;
    loop {
        if let Some(deadline) = budget.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            // A zero SO_RCVTIMEO would mean "wait for ever".
            if left.is_zero() {
                return Err(DumpError::TimedOut { what });
            }
            set_recv_timeout(&fd, left).map_err(|err| DumpError::Recv { what, err })?;
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr() as *mut _, buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                // A signal: the deadline (above) still bounds the wait.
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Err(DumpError::TimedOut { what }),
                _ => return Err(DumpError::Recv { what, err }),
            }
        }
        read = read.saturating_add(n as usize);
        if read > budget.max_bytes {
            let max = budget.max_bytes;
            return Err(DumpError::TooLong { what, max });
        }
        if let Some(r) = datagram(&buf[..n as usize]) {
            return Ok(r);
        }
    }
}

fn set_recv_timeout(fd: &Fd, left: Duration) -> io::Result<()> {
    // Rounded up to the next microsecond, so that it is never zero.
    let us = left.as_micros().max(1);
    let tv = libc::timeval {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_usec: (us % 1_000_000) as libc::suseconds_t,
    };
    // SAFETY: tv is live for the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            size_of::<libc::timeval>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// A message flag: the table changed while it was dumped, so the dump may have missed
/// or repeated entries (nl_dump_check_consistent).
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;

/// Walks one datagram of netlink messages, handing each one's type and payload (what
/// follows its header) to `each`: None while more follow, Some(0) at the end of the
/// dump, Some(errno) when the kernel refused or a length is wrong. Lengths are checked
/// before every read.
pub(crate) fn messages(b: &[u8], mut each: impl FnMut(u16, &[u8])) -> Option<i32> {
    messages_with_flags(b, |ty, _, payload| {
        if ty != NLMSG_DONE && ty != NLMSG_ERROR {
            each(ty, payload)
        }
    })
}

/// `messages`, with each message's flags (nlmsg_flags); the closing NLMSG_DONE or
/// NLMSG_ERROR is shown to `each` too, before the verdict: its flags may carry
/// NLM_F_DUMP_INTR.
pub(crate) fn messages_with_flags(
    mut b: &[u8],
    mut each: impl FnMut(u16, u16, &[u8]),
) -> Option<i32> {
    while b.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(b[0..4].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(b[4..6].try_into().ok()?);
        let flags = u16::from_ne_bytes(b[6..8].try_into().ok()?);
        if len < NLMSG_HDRLEN || len > b.len() {
            return Some(libc::EBADMSG);
        }
        each(ty, flags, &b[NLMSG_HDRLEN..len]);
        match ty {
            NLMSG_DONE => return Some(0),
            NLMSG_ERROR => {
                let e = b
                    .get(16..20)
                    .and_then(|x| x.try_into().ok())
                    .map(i32::from_ne_bytes)
                    .unwrap_or(-libc::EBADMSG);
                // The kernel sends a negated errno; a positive or i32::MIN one is
                // malformed (negating i32::MIN would overflow).
                return Some(match e {
                    0 => 0,
                    e if e < 0 && e != i32::MIN => -e,
                    _ => libc::EBADMSG,
                });
            }
            _ => {}
        }
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    None
}

/// The attributes of a message or a nest: (type without the nested and byte-order
/// flags, payload). Stops at the first attribute whose length is wrong.
pub(crate) fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, payload))
    })
}

/// A big-endian u32 attribute (netfilter's NLA_BE32 and register numbers).
pub(crate) fn be32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

/// The netfilter netlink family (ctnetlink and nf_tables are subsystems of it).
pub(crate) const NETLINK_NETFILTER: i32 = 12;
/// struct nfgenmsg, after the netlink header: family, version, res_id.
pub(crate) const NFGEN_LEN: usize = 4;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// A ctnetlink dump request for message `msg` (IPCTNL_MSG_*), both address families,
/// with `attrs` as big-endian u32 attributes (filters).
pub(crate) fn ctnetlink_dump_request(msg: u16, attrs: &[(u16, u32)]) -> Vec<u8> {
    nfnetlink_dump_request(NFNL_SUBSYS_CTNETLINK, msg, attrs)
}

/// A dump request of netfilter subsystem `subsys` for its message `msg`, every family
/// (AF_UNSPEC, which is also NFPROTO_UNSPEC), with `attrs` as big-endian u32
/// attributes.
pub(crate) fn nfnetlink_dump_request(subsys: u16, msg: u16, attrs: &[(u16, u32)]) -> Vec<u8> {
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    let len = NLMSG_HDRLEN + NFGEN_LEN + 8 * attrs.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&(subsys << 8 | msg).to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    // AF_UNSPEC: every family; version 0; res_id 0.
    req.extend_from_slice(&[0, 0, 0, 0]);
    for (ty, v) in attrs {
        req.extend_from_slice(&8u16.to_ne_bytes());
        req.extend_from_slice(&ty.to_ne_bytes());
        req.extend_from_slice(&v.to_be_bytes());
    }
    req
}

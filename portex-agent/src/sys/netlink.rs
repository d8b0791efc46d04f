//! One netlink dump, whatever the family (sock_diag, ctnetlink): open a socket in the
//! caller's network namespace, send the request, and hand each datagram of the answer
//! to the family's parser until it says the dump ended.
use anyhow::{Result, bail};

struct Fd(i32);
impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// Sends `req` on a `protocol` netlink socket and feeds each datagram of the answer to
/// `datagram` until it returns Some (its verdict on the dump). `what` names the family
/// in errors.
pub(crate) fn dump<R>(
    protocol: i32,
    what: &str,
    req: &[u8],
    mut datagram: impl FnMut(&[u8]) -> Option<R>,
) -> Result<R> {
    // SAFETY: plain socket creation.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        bail!(
            "opening a {what} netlink socket: {}",
            std::io::Error::last_os_error()
        );
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
        bail!(
            "sending a {what} request: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr() as *mut _, buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            bail!("reading {what}: {e}");
        }
        if let Some(r) = datagram(&buf[..n as usize]) {
            return Ok(r);
        }
    }
}

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_HDRLEN: usize = 16;

/// Walks one datagram of netlink messages, handing each one's type and payload (what
/// follows its header) to `each`: None while more follow, Some(0) at the end of the
/// dump, Some(errno) when the kernel refused or a length is wrong. Lengths are checked
/// before every read.
pub(crate) fn messages(mut b: &[u8], mut each: impl FnMut(u16, &[u8])) -> Option<i32> {
    while b.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(b[0..4].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(b[4..6].try_into().ok()?);
        if len < NLMSG_HDRLEN || len > b.len() {
            return Some(libc::EBADMSG);
        }
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
            _ => each(ty, &b[NLMSG_HDRLEN..len]),
        }
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    None
}

/// The netfilter netlink family (ctnetlink is one of its subsystems).
pub(crate) const NETLINK_NETFILTER: i32 = 12;
/// struct nfgenmsg, after the netlink header: family, version, res_id.
pub(crate) const NFGEN_LEN: usize = 4;

/// A ctnetlink dump request for message `msg` (IPCTNL_MSG_*), both address families,
/// with `attrs` as big-endian u32 attributes (filters).
pub(crate) fn ctnetlink_dump_request(msg: u16, attrs: &[(u16, u32)]) -> Vec<u8> {
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    let len = NLMSG_HDRLEN + NFGEN_LEN + 8 * attrs.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | msg).to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    // AF_UNSPEC: both families; version 0; res_id 0.
    req.extend_from_slice(&[0, 0, 0, 0]);
    for (ty, v) in attrs {
        req.extend_from_slice(&8u16.to_ne_bytes());
        req.extend_from_slice(&ty.to_ne_bytes());
        req.extend_from_slice(&v.to_be_bytes());
    }
    req
}

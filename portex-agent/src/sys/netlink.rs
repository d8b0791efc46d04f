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
const NLMSG_HDRLEN: usize = 16;

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

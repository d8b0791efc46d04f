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

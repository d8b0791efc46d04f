//! NETLINK_SOCK_DIAG dumps: the kernel's own table of sockets (what `ss` reads),
//! TIME_WAIT sockets included. A netlink socket belongs to the network namespace of the
//! task that created it, so `netns::in_netns` chooses which table is read.
use std::net::SocketAddr;

use anyhow::{Result, bail};

use crate::{
    logic::{addr, model::DiagSocket},
    sys::netlink,
};

/// The protocols sock_diag dumps, as its requests spell them.
pub(crate) const TCP: u8 = portex_common::IPPROTO_TCP as u8;
pub(crate) const UDP: u8 = portex_common::IPPROTO_UDP as u8;

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The legacy inet_diag request type for TCP; answers carry the same type.
const TCPDIAG_GETSOCK: u16 = 18;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// sizeof(struct inet_diag_msg)
const DIAG_MSG_LEN: usize = 72;

/// Every socket of `protocol` (6 or 17) and both families in the caller's namespace.
pub(crate) fn dump(protocol: u8) -> Result<Vec<DiagSocket>> {
    let mut out = Vec::new();
    for_each(protocol, u32::MAX, &mut |s| out.push(s))?;
    Ok(out)
}

/// Streams the sockets whose state bit is set in `states` (1 << TCP state) to `f`, both
/// families, without collecting them: a table of 250k sockets is never held twice.
pub(crate) fn for_each(protocol: u8, states: u32, f: &mut dyn FnMut(DiagSocket)) -> Result<()> {
    if protocol == TCP {
        // One walk of the kernel's connection hash for both families: the legacy
        // TCPDIAG_GETSOCK request dumps AF_UNSPEC. A per-family request walks the whole
        // (host-wide) table each time, and that walk is most of the cost of a dump.
        let mut delivered = false;
        let mut counted = |s: DiagSocket| {
            delivered = true;
            f(s)
        };
        match run_dump(compat_request(states), protocol, &mut counted)? {
            None => return Ok(()),
            // A kernel without the legacy request: per family, as below.
            Some(_) if !delivered => {}
            Some(errno) => bail!("sock_diag: {}", std::io::Error::from_raw_os_error(errno)),
        }
    }
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        match run_dump(request(family, protocol, states), protocol, f)? {
            None => {}
            // TCP over IPv4 is always there: its absence means sock_diag's TCP module
            // (tcp_diag) is neither built in nor loadable, and an empty table would
            // be taken for an empty host.
            Some(e) if protocol == TCP && family == libc::AF_INET as u8 => bail!(
                "sock_diag cannot dump TCP sockets ({}): is the tcp_diag module missing?",
                std::io::Error::from_raw_os_error(e)
            ),
            // A kernel without this family or protocol (no IPv6, no UDP diag module).
            Some(e) if e == libc::ENOENT || e == libc::EAFNOSUPPORT || e == libc::EINVAL => {}
            Some(e) => bail!("sock_diag: {}", std::io::Error::from_raw_os_error(e)),
        }
    }
    Ok(())
}

/// Sends one dump request and streams its answer; Some(errno) when the kernel refused.
fn run_dump(req: Vec<u8>, protocol: u8, out: &mut dyn FnMut(DiagSocket)) -> Result<Option<i32>> {
    netlink::dump(
        NETLINK_SOCK_DIAG,
        "sock_diag",
        &req,
        |d| match parse_messages(d, protocol, out) {
            Parsed::More => None,
            Parsed::Done => Some(None),
            Parsed::Error(errno) => Some(Some(errno)),
        },
    )
}

/// A dump request: nlmsghdr of type `ty` followed by `body`.
fn dump_request(ty: u16, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&(len as u32).to_ne_bytes());
    r.extend_from_slice(&ty.to_ne_bytes());
    r.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    r.extend_from_slice(&1u32.to_ne_bytes()); // seq
    r.extend_from_slice(&0u32.to_ne_bytes()); // pid
    r.extend_from_slice(body);
    r
}

/// The legacy struct inet_diag_req: family, src_len, dst_len, ext, inet_diag_sockid (48
/// bytes), states, dbs. The kernel dumps both families for it (inet_diag_dump_compat
/// sets AF_UNSPEC).
fn compat_request(states: u32) -> Vec<u8> {
    let mut b = vec![libc::AF_INET as u8, 0, 0, 0];
    b.extend_from_slice(&[0u8; 48]); // inet_diag_sockid
    b.extend_from_slice(&states.to_ne_bytes()); // idiag_states
    b.extend_from_slice(&0u32.to_ne_bytes()); // idiag_dbs
    dump_request(TCPDIAG_GETSOCK, &b)
}

/// inet_diag_req_v2 asking for the states in `states`.
fn request(family: u8, protocol: u8, states: u32) -> Vec<u8> {
    let mut b = vec![family, protocol, 0, 0];
    b.extend_from_slice(&states.to_ne_bytes()); // idiag_states
    b.extend_from_slice(&[0u8; 48]); // inet_diag_sockid
    dump_request(SOCK_DIAG_BY_FAMILY, &b)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    More,
    Done,
    Error(i32),
}

/// Parses one datagram of netlink messages, appending sockets. Lengths are checked
/// before every read; a malformed message ends the datagram.
pub fn parse_messages(mut buf: &[u8], protocol: u8, out: &mut dyn FnMut(DiagSocket)) -> Parsed {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Parsed::More;
        }
        let body = &buf[NLMSG_HDRLEN..len];
        match ty {
            NLMSG_DONE => return Parsed::Done,
            NLMSG_ERROR => {
                let err = body
                    .get(0..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                    .unwrap_or(0);
                // The kernel sends -errno; i32::MIN (bytes, not an errno) must not
                // overflow the negation.
                return if err == 0 {
                    Parsed::Done
                } else {
                    Parsed::Error(err.saturating_neg())
                };
            }
            SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => {
                if let Some(s) = parse_diag_msg(body, protocol) {
                    out(s);
                }
            }
            _ => {}
        }
        let aligned = (len + 3) & !3;
        buf = buf.get(aligned..).unwrap_or(&[]);
    }
    Parsed::More
}

/// struct inet_diag_msg: family, state, timer, retrans; sockid { be16 sport, be16 dport,
/// be32 src[4], be32 dst[4], u32 if, u32 cookie[2] }; expires, rqueue, wqueue, uid, inode.
fn parse_diag_msg(b: &[u8], protocol: u8) -> Option<DiagSocket> {
    if b.len() < DIAG_MSG_LEN {
        return None;
    }
    let family = b[0];
    let state = b[1];
    let sport = u16::from_be_bytes([b[4], b[5]]);
    let dport = u16::from_be_bytes([b[6], b[7]]);
    let src: [u8; 16] = b[8..24].try_into().ok()?;
    let dst: [u8; 16] = b[24..40].try_into().ok()?;
    let expires_ms = u32::from_ne_bytes(b[52..56].try_into().ok()?);
    let inode = u32::from_ne_bytes(b[68..72].try_into().ok()?) as u64;
    let ip = |a: [u8; 16]| addr::ip_from(family as u16, &a);
    Some(DiagSocket {
        protocol,
        state,
        local: SocketAddr::new(ip(src), sport),
        remote: SocketAddr::new(ip(dst), dport),
        inode,
        expires_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(state: u8, sport: u16, dport: u16, inode: u32) -> Vec<u8> {
        let mut body = vec![0u8; DIAG_MSG_LEN];
        body[0] = libc::AF_INET as u8;
        body[1] = state;
        body[4..6].copy_from_slice(&sport.to_be_bytes());
        body[6..8].copy_from_slice(&dport.to_be_bytes());
        body[8..12].copy_from_slice(&[127, 0, 0, 1]);
        body[24..28].copy_from_slice(&[127, 0, 0, 2]);
        body[68..72].copy_from_slice(&inode.to_ne_bytes());
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn parses_a_dump_and_its_end() {
        let mut buf = msg(6, 40000, 80, 0);
        buf.extend(msg(1, 40001, 80, 1234));
        let mut out = Vec::new();
        assert_eq!(parse_messages(&buf, 6, &mut |s| out.push(s)), Parsed::More);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].state, 6);
        assert_eq!(out[0].local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(out[1].remote, "127.0.0.2:80".parse().unwrap());
        assert_eq!(out[1].inode, 1234);
        let mut done = vec![0u8; NLMSG_HDRLEN];
        done[0..4].copy_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        assert_eq!(parse_messages(&done, 6, &mut |s| out.push(s)), Parsed::Done);
    }

    #[test]
    fn the_legacy_request_asks_for_both_families_of_tcp() {
        let r = compat_request(1 << 6);
        assert_eq!(r.len(), NLMSG_HDRLEN + 60);
        assert_eq!(
            u32::from_ne_bytes(r[0..4].try_into().unwrap()) as usize,
            r.len()
        );
        assert_eq!(
            u16::from_ne_bytes(r[4..6].try_into().unwrap()),
            TCPDIAG_GETSOCK
        );
        // idiag_states after family/lengths/ext (4) and the sockid (48).
        let at = NLMSG_HDRLEN + 52;
        assert_eq!(
            u32::from_ne_bytes(r[at..at + 4].try_into().unwrap()),
            1 << 6
        );
        // Its answers are parsed like SOCK_DIAG_BY_FAMILY ones.
        let mut m = msg(6, 40000, 80, 0);
        m[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
        let mut out = Vec::new();
        parse_messages(&m, 6, &mut |s| out.push(s));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn an_error_reply_of_i32_min_is_an_error_not_an_overflow() {
        // Found by fuzz/fuzz_targets/sock_diag.rs: -i32::MIN overflowed.
        let mut m = vec![0u8; NLMSG_HDRLEN + 4];
        m[0..4].copy_from_slice(&((NLMSG_HDRLEN + 4) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m[NLMSG_HDRLEN..].copy_from_slice(&i32::MIN.to_ne_bytes());
        assert_eq!(parse_messages(&m, 6, &mut |_| {}), Parsed::Error(i32::MAX));
        m[NLMSG_HDRLEN..].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_messages(&m, 6, &mut |_| {}),
            Parsed::Error(libc::EPERM)
        );
    }

    #[test]
    fn truncated_messages_are_skipped_not_read() {
        let buf = msg(1, 1, 2, 3);
        let mut out = Vec::new();
        assert_eq!(
            parse_messages(&buf[..40], 6, &mut |s| out.push(s)),
            Parsed::More
        );
        assert!(out.is_empty());
        let mut bad = buf.clone();
        bad[0..4].copy_from_slice(&(NLMSG_HDRLEN as u32 + 8).to_ne_bytes());
        assert_eq!(parse_messages(&bad, 6, &mut |s| out.push(s)), Parsed::More);
        assert!(out.is_empty());
    }
}

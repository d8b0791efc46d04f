//! The conntrack table over ctnetlink (what `conntrack -L` reads), in the caller's
//! network namespace (`netns::in_netns` chooses it), and the table's fill
//! (nf_conntrack_count against nf_conntrack_max).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Result, bail};

use crate::{
    logic::nat::CtEntry,
    sys::netlink::{self, NETLINK_NETFILTER, NFGEN_LEN, attrs, ctnetlink_dump_request},
};

/// IPCTNL_MSG_CT_GET
const CT_GET: u16 = 1;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
/// Status bits a dump keeps (with CTA_STATUS), Linux 5.19.
const CTA_STATUS_MASK: u16 = 26;
/// IPS_SRC_NAT: the original source was rewritten (masquerade, snat).
const IPS_SRC_NAT: u32 = 1 << 4;

/// How full the table is: (nf_conntrack_count, nf_conntrack_max), None without
/// conntrack in this namespace (the module is not loaded).
pub(crate) fn table_fill() -> Option<(u64, u64)> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
}

/// Every entry of the caller's namespace's table, both families.
pub(crate) fn dump() -> Result<Vec<CtEntry>> {
    dump_where(&request(None), |_| true)
}

/// The SNAT entries of the caller's namespace's table. The kernel is asked to send only
/// those (CTA_STATUS and CTA_STATUS_MASK on the dump, Linux 5.19): on a node whose table
/// is mostly un-NATed flows it then skips building their messages. A kernel that
/// refuses the filter gets the plain dump; either way the entries are checked here too.
pub(crate) fn dump_snat() -> Result<Vec<CtEntry>> {
    dump_where(&request(Some(IPS_SRC_NAT)), |e| e.snat)
        .or_else(|_| dump_where(&request(None), |e| e.snat))
}

/// A dump request, both families; with `status`, only entries with those status bits.
fn request(status: Option<u32>) -> Vec<u8> {
    match status {
        Some(bits) => {
            ctnetlink_dump_request(CT_GET, &[(CTA_STATUS, bits), (CTA_STATUS_MASK, bits)])
        }
        None => ctnetlink_dump_request(CT_GET, &[]),
    }
}

/// The entries a dump `req` answers that `keep` keeps: the others are dropped datagram
/// by datagram, so a table of 100,000 entries is never held whole.
fn dump_where(req: &[u8], keep: impl Fn(&CtEntry) -> bool) -> Result<Vec<CtEntry>> {
    let mut out = Vec::new();
    match netlink::dump(NETLINK_NETFILTER, "ctnetlink", req, |d| {
        let from = out.len();
        let verdict = parse_messages(d, &mut out);
        // Only this datagram's entries (those from `from` on) are judged.
        let mut seen = 0;
        out.retain(|e| {
            seen += 1;
            seen <= from || keep(e)
        });
        verdict
    })? {
        0 => Ok(out),
        errno => bail!("ctnetlink: {}", std::io::Error::from_raw_os_error(errno)),
    }
}

/// Parses one datagram of the dump into `out`: None while more follow, Some(0) at the
/// end, Some(errno) when the kernel refused. Lengths are checked before every read.
pub(crate) fn parse_messages(b: &[u8], out: &mut Vec<CtEntry>) -> Option<i32> {
    netlink::messages(b, |_, msg| {
        if let Some(e) = msg.get(NFGEN_LEN..).and_then(entry) {
            out.push(e);
        }
    })
}

fn be16(p: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(p.get(..2)?.try_into().ok()?))
}

/// A tuple: (protocol, source, destination).
fn tuple(b: &[u8]) -> Option<(u8, SocketAddr, SocketAddr)> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
    for (ty, p) in attrs(b) {
        match ty {
            CTA_TUPLE_IP => {
                for (t, a) in attrs(p) {
                    let v4 = || -> Option<IpAddr> {
                        Some(IpAddr::V4(Ipv4Addr::from(
                            <[u8; 4]>::try_from(a.get(..4)?).ok()?,
                        )))
                    };
                    let v6 = || -> Option<IpAddr> {
                        Some(IpAddr::V6(Ipv6Addr::from(
                            <[u8; 16]>::try_from(a.get(..16)?).ok()?,
                        )))
                    };
                    match t {
                        CTA_IP_V4_SRC => src = v4(),
                        CTA_IP_V4_DST => dst = v4(),
                        CTA_IP_V6_SRC => src = v6(),
                        CTA_IP_V6_DST => dst = v6(),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (t, a) in attrs(p) {
                    match t {
                        CTA_PROTO_NUM => proto = a.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(a).unwrap_or(0),
                        CTA_PROTO_DST_PORT => dport = be16(a).unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        proto?,
        SocketAddr::new(src?, sport),
        SocketAddr::new(dst?, dport),
    ))
}

fn entry(b: &[u8]) -> Option<CtEntry> {
    let (mut orig, mut reply, mut status, mut tcp_state) = (None, None, 0, None);
    for (ty, p) in attrs(b) {
        match ty {
            CTA_TUPLE_ORIG => orig = tuple(p),
            CTA_TUPLE_REPLY => reply = tuple(p),
            CTA_STATUS => status = netlink::be32(p).unwrap_or(0),
            CTA_PROTOINFO => {
                for (t, a) in attrs(p) {
                    if t == CTA_PROTOINFO_TCP {
                        tcp_state = attrs(a)
                            .find(|(t, _)| *t == CTA_PROTOINFO_TCP_STATE)
                            .and_then(|(_, s)| s.first().copied());
                    }
                }
            }
            _ => {}
        }
    }
    let (proto, src, dst) = orig?;
    let (_, _, reply_dst) = reply?;
    Some(CtEntry {
        proto,
        src,
        dst,
        reply_dst,
        snat: status & IPS_SRC_NAT != 0,
        tcp_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::netlink::{NLMSG_DONE, NLMSG_HDRLEN};

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn nest(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(ty | 0x8000, &parts.concat())
    }

    fn tuple_attr(ty: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        nest(
            ty,
            &[
                nest(
                    CTA_TUPLE_IP,
                    &[attr(CTA_IP_V4_SRC, &src), attr(CTA_IP_V4_DST, &dst)],
                ),
                nest(
                    CTA_TUPLE_PROTO,
                    &[
                        attr(CTA_PROTO_NUM, &[6]),
                        attr(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()),
                        attr(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
                    ],
                ),
            ],
        )
    }

    fn message(body: &[u8], ty: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + NFGEN_LEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[2, 0, 0, 0]);
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn a_snat_dump_asks_the_kernel_for_the_status_bit() {
        let r = request(Some(IPS_SRC_NAT));
        assert_eq!(r.len(), NLMSG_HDRLEN + NFGEN_LEN + 16);
        assert_eq!(
            u32::from_ne_bytes(r[..4].try_into().unwrap()) as usize,
            r.len()
        );
        let a: Vec<(u16, &[u8])> = attrs(&r[NLMSG_HDRLEN + NFGEN_LEN..]).collect();
        let bits = &IPS_SRC_NAT.to_be_bytes()[..];
        assert_eq!(a, vec![(CTA_STATUS, bits), (CTA_STATUS_MASK, bits)]);
        assert_eq!(request(None).len(), NLMSG_HDRLEN + NFGEN_LEN);
    }

    #[test]
    fn a_masqueraded_tcp_entry_parses_with_its_nat_port_and_state() {
        // What `conntrack -L` printed on the test gateway: src=10.77.0.2 dst=10.78.0.2
        // sport=56846 dport=8080 src=10.78.0.2 dst=10.78.0.1 sport=8080 dport=40009.
        let body = [
            tuple_attr(CTA_TUPLE_ORIG, [10, 77, 0, 2], [10, 78, 0, 2], 56846, 8080),
            tuple_attr(CTA_TUPLE_REPLY, [10, 78, 0, 2], [10, 78, 0, 1], 8080, 40009),
            attr(CTA_STATUS, &(IPS_SRC_NAT | 0x8).to_be_bytes()),
            nest(
                CTA_PROTOINFO,
                &[nest(
                    CTA_PROTOINFO_TCP,
                    &[attr(CTA_PROTOINFO_TCP_STATE, &[7])],
                )],
            ),
        ]
        .concat();
        let mut dgram = message(&body, 1 << 8 | CT_GET);
        dgram.extend(message(&[], NLMSG_DONE));
        let mut out = Vec::new();
        assert_eq!(parse_messages(&dgram, &mut out), Some(0));
        assert_eq!(
            out,
            vec![CtEntry {
                proto: 6,
                src: "10.77.0.2:56846".parse().unwrap(),
                dst: "10.78.0.2:8080".parse().unwrap(),
                reply_dst: "10.78.0.1:40009".parse().unwrap(),
                snat: true,
                tcp_state: Some(7),
            }]
        );
        // Truncated anywhere: no panic, no entry made up.
        for cut in 0..dgram.len() {
            let mut v = Vec::new();
            let _ = parse_messages(&dgram[..cut], &mut v);
            assert!(v.len() <= 1);
        }
    }
}

//! conntrack's own counters over ctnetlink (what `conntrack -S` prints), summed over
//! CPUs, in the caller's network namespace. `insert_failed` and `drop` count packets
//! conntrack could not give an entry: behind a NAT, the SYNs for which no free port
//! was found (the kernel tries a few windows of the range, 240 ports at most, so on a
//! wide range they start before the pool is quite full).
use anyhow::{Result, bail};

use crate::{
    logic::nat::CtStats,
    sys::netlink::{self, NETLINK_NETFILTER, NFGEN_LEN, ctnetlink_dump_request},
};

/// IPCTNL_MSG_CT_GET_STATS_CPU (each CPU's message has its number as res_id).
const CT_GET_STATS_CPU: u16 = 4;

const CTA_STATS_INSERT_FAILED: u16 = 9;
const CTA_STATS_DROP: u16 = 10;
const CTA_STATS_EARLY_DROP: u16 = 11;

/// Reads the counters of the caller's namespace.
pub(crate) fn read() -> Result<CtStats> {
    let req = ctnetlink_dump_request(CT_GET_STATS_CPU, &[]);
    let mut out = CtStats::default();
    match netlink::dump(NETLINK_NETFILTER, "ctnetlink", &req, |d| {
        parse_messages(d, &mut out)
    })? {
        0 => Ok(out),
        errno => bail!(
            "ctnetlink stats: {}",
            std::io::Error::from_raw_os_error(errno)
        ),
    }
}

/// Adds one datagram's per-CPU messages to `out`: None while more follow, Some(0) at
/// the end, Some(errno) when the kernel refused. Lengths are checked before every read.
pub(crate) fn parse_messages(b: &[u8], out: &mut CtStats) -> Option<i32> {
    netlink::messages(b, |_, msg| {
        add_cpu(msg.get(NFGEN_LEN..).unwrap_or(&[]), out)
    })
}

/// One CPU's attributes (u32, big-endian) into the sums.
fn add_cpu(b: &[u8], out: &mut CtStats) {
    for (ty, p) in netlink::attrs(b) {
        let v = netlink::be32(p).unwrap_or(0) as u64;
        match ty {
            CTA_STATS_INSERT_FAILED => out.insert_failed += v,
            CTA_STATS_DROP => out.drop += v,
            CTA_STATS_EARLY_DROP => out.early_drop += v,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::netlink::{NLMSG_DONE, NLMSG_HDRLEN};

    fn attr(ty: u16, v: u32) -> Vec<u8> {
        let mut a = 8u16.to_ne_bytes().to_vec();
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(&v.to_be_bytes());
        a
    }

    fn cpu(cpu: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body = attrs.concat();
        let mut m = ((NLMSG_HDRLEN + NFGEN_LEN + body.len()) as u32)
            .to_ne_bytes()
            .to_vec();
        m.extend_from_slice(&CT_GET_STATS_CPU.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&cpu.to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn sums_the_counters_of_every_cpu() {
        // `conntrack -S` on the test gateway after 2 SYNs found no NAT port:
        // cpu=0 ... insert_failed=2 drop=2 early_drop=0.
        let mut d = cpu(0, &[attr(2, 40), attr(9, 2), attr(10, 2), attr(11, 0)]);
        d.extend(cpu(1, &[attr(9, 1), attr(10, 1), attr(11, 5), attr(12, 3)]));
        let mut done = 20u32.to_ne_bytes().to_vec();
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&[0; 14]);
        d.extend(done);
        let mut s = CtStats::default();
        assert_eq!(parse_messages(&d, &mut s), Some(0));
        assert_eq!(
            s,
            CtStats {
                insert_failed: 3,
                drop: 3,
                early_drop: 5
            }
        );
        for cut in 0..d.len() {
            let mut s = CtStats::default();
            let _ = parse_messages(&d[..cut], &mut s);
            assert!(s.insert_failed <= 3);
        }
    }
}

//! The NAT rules' port range, read from the kernel's nf_tables ruleset over netlink
//! (NETLINK_NETFILTER, the NFT_MSG_GETRULE dump `nft list ruleset` itself makes) in the
//! caller's network namespace (`netns::in_netns` chooses it). No nft binary: the
//! container image has none, and a child process would run unbounded.
//!
//! Supported: nftables' masquerade and snat statements in ip, ip6 and inet tables, and
//! iptables-nft's rules (the same nf_tables ruleset). The MASQUERADE and SNAT targets
//! of iptables-nft keep their range in an xt target's private data: it is not read, so
//! the range is unknown then, and legacy iptables rules (not nf_tables) are not seen at
//! all: the kernel's default range is assumed, and the reports say so.
//!
//! The namespace may belong to someone else: its ruleset can be huge or changing all
//! the time. A read therefore has a budget (BUDGET, MAX_DUMP_BYTES, ATTEMPTS) and
//! gives up, range unknown, when it is spent.
mod rules;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

pub(crate) use rules::RuleDump;

use crate::sys::netlink::{
    self, Budget, DumpError, NETLINK_NETFILTER, NFNL_SUBSYS_NFTABLES, nfnetlink_dump_request,
};

const NFT_MSG_GETRULE: u16 = 7;
/// The whole read, retries included: how long a ruleset that keeps changing (or keeps
/// growing) can hold the NAT scanner, and so a SIGTERM that waits for it. Measured on
/// a loaded 2-core VM (Linux 6.18): the kernel dumps 20,000 rules (9 MB) in 0.5 s, and
/// this read of them took 0.6-1.4 s in a debug build; a larger ruleset gives no range.
const BUDGET: Duration = Duration::from_secs(2);
/// Bytes of dump at most: some 70,000 rules of ~450 bytes (a match, a counter and a
/// comment each). Read datagram by datagram, nothing of it kept.
const MAX_DUMP_BYTES: usize = 32 << 20;
/// Dumps at most: again only when the ruleset changed during one (NLM_F_DUMP_INTR) or
/// the socket's queue overflowed (ENOBUFS).
const ATTEMPTS: u32 = 3;

/// The range all masquerade/snat rules of the caller's namespace agree on; None when
/// there is no such rule, one without a range or with an unknown one, several ranges,
/// or the ruleset cannot be read (no CAP_NET_ADMIN, over budget: said at debug level).
pub(crate) fn nat_range() -> Option<(u16, u16)> {
    read(Instant::now() + BUDGET, MAX_DUMP_BYTES)
        .inspect_err(|e| tracing::debug!("NAT rules' port range not read: {e:#}"))
        .ok()
        .flatten()
}

/// The request of the dump: every rule of every table, all families (NFPROTO_UNSPEC).
fn request() -> Vec<u8> {
    nfnetlink_dump_request(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETRULE, &[])
}

fn read(deadline: Instant, max_bytes: usize) -> Result<Option<(u16, u16)>> {
    let req = request();
    let budget = Budget {
        deadline: Some(deadline),
        max_bytes,
    };
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let mut dump = RuleDump::default();
        let verdict = netlink::dump_within(NETLINK_NETFILTER, "nf_tables", &req, budget, |d| {
            // Once the answer is None whatever follows, the rest is not read.
            dump.datagram(d)
                .or_else(|| dump.ranges.settled().then_some(0))
        });
        match verdict {
            Ok(0) if dump.ranges.settled() || !dump.interrupted => return Ok(dump.ranges.range()),
            Ok(0) => last = "the ruleset changed during the dump".into(),
            Ok(errno) if errno == libc::EINTR || errno == libc::ENOBUFS => {
                last = std::io::Error::from_raw_os_error(errno).to_string()
            }
            Ok(errno) => bail!("nf_tables: {}", std::io::Error::from_raw_os_error(errno)),
            Err(DumpError::Recv { err, .. }) if err.raw_os_error() == Some(libc::ENOBUFS) => {
                last = err.to_string()
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!("nf_tables: {last}, {ATTEMPTS} times")
}

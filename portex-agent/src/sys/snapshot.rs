//! One look at the kernel's tables, per network namespace, without eBPF: sock_diag for
//! sockets, /proc/sys/net for settings (owners come from crate::sys::owners).
use anyhow::Result;

use crate::{
    logic::model::DiagSocket,
    logic::nat::{CtEntry, CtStats},
    logic::sysctls::NetSettings,
    sys::netns::{self, Netns},
    sys::sockdiag,
    sys::{conntrack, nft},
};

pub(crate) struct NetnsSnapshot {
    pub netns: Netns,
    pub settings: NetSettings,
    pub sockets: Vec<DiagSocket>,
    /// TCPTimeWaitOverflow: TIME_WAIT sockets destroyed at tcp_max_tw_buckets.
    pub time_wait_overflows: u64,
    /// The namespace's conntrack table, when conntrack is loaded there.
    pub nat: Option<NatSnapshot>,
}

/// What the namespace's NAT holds: its conntrack entries, the table's fill, the rules'
/// port range (when the ruleset gives one) and how long a TIME_WAIT mapping lives.
pub(crate) struct NatSnapshot {
    pub entries: Vec<CtEntry>,
    pub table: (u64, u64),
    pub range: Option<(u16, u16)>,
    pub tw_timeout_s: Option<u64>,
    /// conntrack's counters (insert_failed, drop), when ctnetlink gave them.
    pub stats: Option<CtStats>,
}

/// What a periodic scan (pipeline::nat_scan) reads of one namespace's NAT.
pub(crate) struct NatScan {
    pub table: (u64, u64),
    pub tw_timeout_s: Option<u64>,
    /// Only the SNAT entries (the others are parsed and left).
    pub entries: Vec<CtEntry>,
    /// The rules' range when `need_range` asked for it (Some(None): the ruleset gives none).
    pub range: Option<Option<(u16, u16)>>,
    /// conntrack's counters (None when ctnetlink did not give them).
    pub stats: Option<CtStats>,
}

/// Reads `ns`'s conntrack table for a scan: Ok(None) without conntrack there or with
/// an empty table (no dump then); an error when the table cannot be dumped (no
/// CAP_NET_ADMIN). `need_range` sees the SNAT entries and says whether to read the
/// ruleset.
pub(crate) fn scan_nat(
    ns: &Netns,
    need_range: impl FnOnce(&[CtEntry]) -> bool + Send,
) -> Result<Option<NatScan>> {
    netns::in_netns(ns, || -> Result<Option<NatScan>> {
        let Some(table) = conntrack::table_fill() else {
            return Ok(None);
        };
        if table.0 == 0 {
            return Ok(None);
        }
        let entries = conntrack::dump_snat()?;
        let range = (!entries.is_empty() && need_range(&entries)).then(nft::nat_range);
        Ok(Some(NatScan {
            table,
            tw_timeout_s: tw_timeout_s(),
            entries,
            range,
            stats: crate::sys::conntrack_stats::read().ok(),
        }))
    })?
}

fn tw_timeout_s() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn read_nat() -> Result<Option<NatSnapshot>> {
    let Some(table) = conntrack::table_fill() else {
        return Ok(None);
    };
    let tw_timeout_s = tw_timeout_s();
    // ctnetlink needs CAP_NET_ADMIN: without it, status still reports the host's own
    // pools (it needs no privilege for them) and leaves the NAT out.
    let entries = match conntrack::dump() {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!("NAT pools left out: {e:#}");
            return Ok(None);
        }
    };
    // The whole ruleset is dumped (sys::nft): only when some connection is NATed.
    let range = entries
        .iter()
        .any(|e| e.snat)
        .then(nft::nat_range)
        .flatten();
    let stats = crate::sys::conntrack_stats::read()
        .inspect_err(|e| tracing::debug!("conntrack counters left out: {e:#}"))
        .ok();
    Ok(Some(NatSnapshot {
        entries,
        table,
        range,
        tw_timeout_s,
        stats,
    }))
}

/// Reads one namespace (settings and TCP + UDP sockets).
pub(crate) fn read(ns: &Netns) -> Result<NetnsSnapshot> {
    let (settings, sockets, time_wait_overflows, nat) = netns::in_netns(ns, || -> Result<_> {
        let settings = crate::sys::sysctls::read();
        // thread-self: /proc/net follows the thread group leader, not this (setns) thread.
        let netstat = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
        let overflows = netstat_counter(&netstat, "TcpExt", "TCPTimeWaitOverflow").unwrap_or(0);
        let mut sockets = sockdiag::dump(sockdiag::TCP)?;
        sockets.extend(sockdiag::dump(sockdiag::UDP)?);
        Ok((settings, sockets, overflows, read_nat()?))
    })??;
    Ok(NetnsSnapshot {
        netns: ns.clone(),
        settings,
        sockets,
        time_wait_overflows,
        nat,
    })
}

/// The namespaces to report: this one, or all of them.
pub(crate) fn namespaces(all: bool) -> Result<Vec<Netns>> {
    let here = netns::current()?;
    if !all {
        return Ok(vec![here]);
    }
    let mut v = netns::all();
    // This namespace first.
    v.sort_by_key(|n| (n.inode != here.inode, n.inode));
    Ok(v)
}

/// One counter of /proc/net/netstat or /proc/net/snmp: a line of names after "Group:",
/// then a line of values after the same prefix.
pub(crate) fn netstat_counter(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let i = names.split_whitespace().position(|n| n == name);
        if let Some(i) = i {
            return values.split_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_one_netstat_counter() {
        let text = "TcpExt: SyncookiesSent TW TCPTimeWaitOverflow\nTcpExt: 0 35543 7\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(
            super::netstat_counter(text, "TcpExt", "TCPTimeWaitOverflow"),
            Some(7)
        );
        assert_eq!(super::netstat_counter(text, "TcpExt", "Nothing"), None);
        assert_eq!(super::netstat_counter("", "TcpExt", "TW"), None);
        assert_eq!(
            super::netstat_counter("TcpExt: TW\nTcpExt: x\n", "TcpExt", "TW"),
            None
        );
    }
}

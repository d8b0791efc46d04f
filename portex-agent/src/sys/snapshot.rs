//! One look at the kernel's tables, per network namespace, without eBPF: sock_diag for
//! sockets, /proc/sys/net for settings (owners come from crate::sys::owners).
use anyhow::Result;

use crate::{
    logic::model::DiagSocket,
    logic::sysctls::NetSettings,
    sys::netns::{self, Netns},
    sys::sockdiag,
};

pub(crate) struct NetnsSnapshot {
    pub netns: Netns,
    pub settings: NetSettings,
    pub sockets: Vec<DiagSocket>,
}

/// Reads one namespace (settings and TCP + UDP sockets).
pub(crate) fn read(ns: &Netns) -> Result<NetnsSnapshot> {
    let (settings, sockets) = netns::in_netns(ns, || -> Result<_> {
        let settings = crate::sys::sysctls::read();
        let mut sockets = sockdiag::dump(sockdiag::TCP)?;
        sockets.extend(sockdiag::dump(sockdiag::UDP)?);
        Ok((settings, sockets))
    })??;
    Ok(NetnsSnapshot {
        netns: ns.clone(),
        settings,
        sockets,
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

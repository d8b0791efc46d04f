//! One look at the kernel's tables, per network namespace, without eBPF: sock_diag for
//! sockets, /proc/sys/net for settings (owners come from crate::owners).
use anyhow::Result;

use crate::{
    netns::{self, Netns},
    settings::NetSettings,
    sockdiag::{self, DiagSocket},
};

pub struct NetnsSnapshot {
    pub netns: Netns,
    pub settings: NetSettings,
    pub sockets: Vec<DiagSocket>,
}

/// Reads one namespace (settings and TCP + UDP sockets).
pub fn read(ns: &Netns) -> Result<NetnsSnapshot> {
    let (settings, sockets) = netns::in_netns(ns, || -> Result<_> {
        let settings = NetSettings::read();
        let mut sockets = sockdiag::dump(libc::IPPROTO_TCP as u8)?;
        sockets.extend(sockdiag::dump(libc::IPPROTO_UDP as u8)?);
        Ok((settings, sockets))
    })??;
    Ok(NetnsSnapshot {
        netns: ns.clone(),
        settings,
        sockets,
    })
}

/// The namespaces to report: this one, or all of them.
pub fn namespaces(all: bool) -> Result<Vec<Netns>> {
    let here = netns::current()?;
    if !all {
        return Ok(vec![here]);
    }
    let mut v = netns::all();
    // This namespace first.
    v.sort_by_key(|n| (n.inode != here.inode, n.inode));
    Ok(v)
}

//! What the ledger stores per connection, packed: it holds one per port in use
//! (250,000 on a busy host).
use std::net::SocketAddr;

use crate::logic::{addr, pool::PortUse};

/// A connection's identity, packed: 40 bytes. IPv4 is stored IPv4-mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Tuple {
    /// Index into Ledger::ns_ids.
    pub(super) ns: u32,
    pub(super) lport: u16,
    pub(super) rport: u16,
    pub(super) laddr: [u8; 16],
    pub(super) raddr: [u8; 16],
}

impl Tuple {
    pub(super) fn new(ns: u32, local: SocketAddr, remote: SocketAddr) -> Tuple {
        Tuple {
            ns,
            lport: local.port(),
            rport: remote.port(),
            laddr: addr::to_bytes(local.ip()),
            raddr: addr::to_bytes(remote.ip()),
        }
    }

    pub(super) fn local(&self) -> SocketAddr {
        SocketAddr::new(addr::from_bytes(self.laddr), self.lport)
    }

    pub(super) fn remote(&self) -> SocketAddr {
        SocketAddr::new(addr::from_bytes(self.raddr), self.rport)
    }
}

/// 16 bytes per connection.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    /// Boot-clock millisecond it entered TIME_WAIT; 0 while the connection lives.
    pub(super) tw_since_ms: u64,
    /// 0 when unknown.
    pub(super) pid: u32,
    /// POOLED, BOUND, the state bits, and the reconciliation epoch that last saw it.
    pub(super) bits: u32,
}

pub(super) const POOLED: u32 = 1 << 31;
/// The port was chosen by bind() before connect(): it is unusable for every other
/// destination from the same source address while the socket (or its TIME_WAIT) lives.
pub(super) const BOUND: u32 = 1 << 30;
/// The handshake completed (an `established` event, or ESTABLISHED in the table).
pub(super) const ESTABLISHED: u32 = 1 << 29;
/// Seen by a reconciliation in a closing state (FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK,
/// CLOSING): events announce no state between ESTABLISHED and CLOSE.
pub(super) const CLOSING: u32 = 1 << 28;
/// In TIME_WAIT for longer than tcp_tw_reuse_delay where reuse applies: connect()
/// towards the same destination may take the port over, so the pool counts it free.
pub(super) const REUSABLE: u32 = 1 << 27;
/// Whether this TIME_WAIT can become reusable has been decided (reuse does not apply to
/// its addresses, or it became reusable): the expiry pass does not ask again.
pub(super) const REUSE_DECIDED: u32 = 1 << 26;
pub(super) const EPOCH: u32 = !(POOLED | BOUND | ESTABLISHED | CLOSING | REUSABLE | REUSE_DECIDED);

impl Entry {
    pub(super) fn pooled(&self) -> bool {
        self.bits & POOLED != 0
    }

    pub(super) fn epoch(&self) -> u32 {
        self.bits & EPOCH
    }

    pub(super) fn bound(&self) -> bool {
        self.bits & BOUND != 0
    }

    pub(super) fn in_time_wait(&self) -> bool {
        self.tw_since_ms != 0
    }

    pub(super) fn reusable(&self) -> bool {
        self.bits & REUSABLE != 0
    }

    /// How the connection uses its port, as the pool model counts it.
    pub(super) fn port_use(&self) -> PortUse {
        if self.reusable() {
            PortUse::TimeWaitReusable
        } else if self.in_time_wait() {
            PortUse::TimeWait
        } else if self.bits & CLOSING != 0 {
            PortUse::Closing
        } else if self.bits & ESTABLISHED != 0 {
            PortUse::Established
        } else {
            PortUse::SynSent
        }
    }
}

/// The state bits of a socket the kernel's table lists.
pub(super) fn state_bits(u: PortUse) -> u32 {
    match u {
        PortUse::Established => ESTABLISHED,
        PortUse::Closing => CLOSING,
        _ => 0,
    }
}

/// Boot-clock ns to ms, never 0 (0 means "not in TIME_WAIT").
pub(super) fn ms(ns: u64) -> u64 {
    (ns / 1_000_000).max(1)
}

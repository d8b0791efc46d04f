//! NAT exhaustion seen from the pod: a connection whose SYN was never answered (closed
//! in SYN_SENT) towards a destination that a full NAT pool of this host serves is
//! reported as a `connect_failed` with cause `nat_exhausted`, attributed to the process
//! that connected. The NAT pools are read from conntrack when such a connection shows
//! up (at most every 500 ms: a table of 100,000 entries takes tens of ms to dump), not
//! all the time.
use crate::{
    logic::{
        errno::ETIMEDOUT,
        model::{Action, Cause, CloseKind, PoolState, Record},
        nat::{NatPool, full_pool_towards},
    },
    sys::snapshot::host_nat_pools,
};

const REFRESH_NS: u64 = 500_000_000;

#[derive(Default)]
pub(crate) struct NatWatch {
    /// When the pools were read (boot ns), and what they were.
    read_at: Option<u64>,
    pools: Vec<NatPool>,
}

impl NatWatch {
    /// The `connect_failed` to report with `r`, when it is a handshake that failed
    /// towards a full NAT pool.
    pub(crate) fn failure_of(&mut self, r: &Record, now: u64) -> Option<Record> {
        let close = r.close.as_ref()?;
        let dest = r.destination?;
        if r.action != Action::Close || r.passive || close.kind != CloseKind::HandshakeFailed {
            return None;
        }
        if self
            .read_at
            .is_none_or(|t| now.saturating_sub(t) >= REFRESH_NS)
        {
            self.pools = host_nat_pools();
            self.read_at = Some(now);
        }
        let p = full_pool_towards(&self.pools, portex_common::IPPROTO_TCP as u8, dest)?;
        let mut f = r.clone();
        f.action = Action::ConnectFailed;
        f.errno = Some(ETIMEDOUT);
        f.errno_inferred = true;
        f.cause = Some(Cause::NatExhausted);
        f.close = None;
        f.duration_ns = None;
        f.pool = Some(PoolState {
            used: p.used,
            size: p.size,
            time_wait: p.time_wait,
        });
        Some(f)
    }
}

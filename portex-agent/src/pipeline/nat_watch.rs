//! NAT exhaustion seen from the pod: a connect whose SYN goes unanswered towards a
//! destination that a full NAT pool of this host serves. Its first SYN retransmission
//! (`connect_stalled`, about 1 s in) gets cause `nat_exhausted` and the pool's state;
//! when it finally closes in SYN_SENT without a RST (timed out, or given up by the
//! caller) a `connect_failed` with that cause follows, attributed to the process that
//! connected. A handshake the peer refused (RST) is never put down to the NAT. The NAT
//! pools are read from conntrack when such a connection shows up (at most every
//! 500 ms: a table of 100,000 entries takes tens of ms to dump), not all the time.
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
    /// A stalled connect towards a full NAT pool: gets the cause and the pool's state.
    pub(crate) fn attribute_stall(&mut self, r: &mut Record, now: u64) {
        if r.action != Action::ConnectStalled || r.passive {
            return;
        }
        let Some(dest) = r.destination else {
            return;
        };
        if let Some(p) = self.full_pool_towards(dest, now) {
            r.cause = Some(Cause::NatExhausted);
            r.pool = Some(p);
        }
    }

    /// The `connect_failed` to report with `r`, when it is a handshake that failed
    /// unanswered (no RST) towards a full NAT pool.
    pub(crate) fn failure_of(&mut self, r: &Record, now: u64) -> Option<Record> {
        let close = r.close.as_ref()?;
        let dest = r.destination?;
        if r.action != Action::Close
            || r.passive
            || close.kind != CloseKind::HandshakeFailed
            || close.reset_received
        {
            return None;
        }
        let pool = self.full_pool_towards(dest, now)?;
        let mut f = r.clone();
        f.action = Action::ConnectFailed;
        f.errno = Some(ETIMEDOUT);
        f.errno_inferred = true;
        f.cause = Some(Cause::NatExhausted);
        f.close = None;
        f.duration_ns = None;
        f.pool = Some(pool);
        Some(f)
    }

    /// The state of the full TCP NAT pool towards `dest`, if there is one; the pools
    /// are read again when older than REFRESH_NS.
    fn full_pool_towards(&mut self, dest: std::net::SocketAddr, now: u64) -> Option<PoolState> {
        if self
            .read_at
            .is_none_or(|t| now.saturating_sub(t) >= REFRESH_NS)
        {
            self.pools = host_nat_pools();
            self.read_at = Some(now);
        }
        let p = full_pool_towards(&self.pools, portex_common::IPPROTO_TCP as u8, dest)?;
        Some(PoolState {
            used: p.used,
            size: p.size,
            time_wait: p.time_wait,
        })
    }
}

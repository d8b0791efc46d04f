//! Which connects a full NAT pool may have stalled or failed, and the records that say
//! so. Pure: the pipeline reads the pools (pipeline::nat_watch) only for the records
//! `suspect` picks.
//!
//! conntrack drops the SYN of a connection it cannot map, so the pod sees nothing but
//! silence: a SYN retransmitted (`connect_stalled`), then a close in SYN_SENT without a
//! RST (timed out, or given up by the caller). A RST means the SYN got through, so a
//! refused connect is never put down to the NAT; nor is the server side of anything.
use std::net::SocketAddr;

use crate::logic::{
    errno::ETIMEDOUT,
    model::{Action, Cause, CloseKind, PoolState, Record},
    nat::{NatPool, full_pool_towards},
};

/// The destination of a connect that a full NAT pool could explain: a stall, or a
/// handshake that died unanswered, on the client side.
pub(crate) fn suspect(r: &Record) -> Option<SocketAddr> {
    if r.passive {
        return None;
    }
    let unanswered = |r: &Record| {
        r.close
            .as_ref()
            .is_some_and(|c| c.kind == CloseKind::HandshakeFailed && !c.reset_received)
    };
    match r.action {
        Action::ConnectStalled => r.destination,
        Action::Close if unanswered(r) => r.destination,
        _ => None,
    }
}

/// The full TCP NAT pool among `pools` that serves `dest`, as an event's pool state.
pub(crate) fn full_pool(pools: &[NatPool], dest: SocketAddr) -> Option<PoolState> {
    let p = full_pool_towards(pools, portex_common::IPPROTO_TCP as u8, dest)?;
    Some(PoolState {
        used: p.used,
        size: p.size,
        time_wait: p.time_wait,
    })
}

/// A suspect record put down to a full NAT pool: a stall gets the cause and the pool
/// in place (None returned); an unanswered close gets a `connect_failed` to follow it.
pub(crate) fn attribute(r: &mut Record, pool: PoolState) -> Option<Record> {
    match r.action {
        Action::ConnectStalled => {
            r.cause = Some(Cause::NatExhausted);
            r.pool = Some(pool);
            None
        }
        Action::Close => {
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
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::{
        fixtures::record,
        model::CloseInfo,
        nat::{CtEntry, nat_pools},
    };

    fn close(kind: CloseKind, reset_received: bool) -> Record {
        let mut r = record(
            Action::Close,
            (7, 7, "pod-app"),
            "10.77.0.2:50000",
            Some("10.78.0.2:8080"),
        );
        r.close = Some(CloseInfo {
            kind,
            time_wait: false,
            reset_received,
            from_state: "SYN_SENT",
        });
        r
    }

    /// A gateway whose NAT towards 10.78.0.2:8080 maps `used` of 10 ports.
    fn pools(used: u16) -> Vec<NatPool> {
        let entries: Vec<CtEntry> = (0..used)
            .map(|i| CtEntry {
                proto: 6,
                src: format!("10.77.0.2:{}", 50000 + i).parse().unwrap(),
                dst: "10.78.0.2:8080".parse().unwrap(),
                reply_dst: format!("10.78.0.1:{}", 40000 + i).parse().unwrap(),
                snat: true,
                tcp_state: Some(3),
            })
            .collect();
        nat_pools(9, &entries, Some((40000, 40009)))
    }

    #[test]
    fn only_silence_on_the_client_side_is_a_suspect() {
        let dest = Some("10.78.0.2:8080".parse().unwrap());
        assert_eq!(suspect(&close(CloseKind::HandshakeFailed, false)), dest);
        // Refused: the SYN got through the NAT.
        assert_eq!(suspect(&close(CloseKind::HandshakeFailed, true)), None);
        assert_eq!(suspect(&close(CloseKind::Active, false)), None);
        assert_eq!(suspect(&close(CloseKind::Reset, true)), None);
        let mut server = close(CloseKind::HandshakeFailed, false);
        server.passive = true;
        assert_eq!(suspect(&server), None);
        let mut stall = close(CloseKind::HandshakeFailed, false);
        stall.action = Action::ConnectStalled;
        stall.close = None;
        assert_eq!(suspect(&stall), dest);
        stall.action = Action::Connect;
        assert_eq!(suspect(&stall), None);
    }

    #[test]
    fn a_full_pool_makes_a_stall_a_nat_stall_and_a_timeout_a_nat_failure() {
        let dest = "10.78.0.2:8080".parse().unwrap();
        assert_eq!(full_pool(&pools(9), dest), None, "one port left");
        let pool = full_pool(&pools(10), dest).unwrap();
        assert_eq!((pool.used, pool.size), (10, 10));
        assert_eq!(
            full_pool(&pools(10), "10.78.0.2:8081".parse().unwrap()),
            None
        );

        let mut stall = close(CloseKind::HandshakeFailed, false);
        stall.action = Action::ConnectStalled;
        stall.close = None;
        assert_eq!(attribute(&mut stall, pool), None);
        assert_eq!(stall.cause, Some(Cause::NatExhausted));
        assert_eq!(stall.pool, Some(pool));

        let mut timed_out = close(CloseKind::HandshakeFailed, false);
        timed_out.duration_ns = Some(2_000_000_000);
        let f = attribute(&mut timed_out, pool).unwrap();
        assert_eq!(f.action, Action::ConnectFailed);
        assert_eq!((f.errno, f.errno_inferred), (Some(ETIMEDOUT), true));
        assert_eq!((f.cause, f.pool), (Some(Cause::NatExhausted), Some(pool)));
        assert_eq!((f.close, f.duration_ns), (None, None));
        assert_eq!(f.process, timed_out.process);
        assert_eq!(timed_out.cause, None, "the close itself is left as it was");
    }
}

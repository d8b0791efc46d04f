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

/// From this utilisation on, a NAT pool whose namespace's conntrack is failing inserts
/// counts as exhausted. The kernel looks for a free port in at most four windows of the
/// range (128, 64, 32 and 16 ports from random offsets), and the mapped ports cluster
/// (each search probes on from a random start), so on a wide range SYNs start to be
/// dropped before the last port is taken.
pub(crate) const NEARLY_FULL: f64 = 0.9;

/// The TCP NAT pool among `pools` that explains a SYN to `dest` going unanswered, as an
/// event's pool state: a full one, or a nearly full one in a namespace whose conntrack
/// failed inserts since the last look (`failing_netns`).
pub(crate) fn exhausted_pool(
    pools: &[NatPool],
    dest: SocketAddr,
    failing_netns: &[u64],
) -> Option<PoolState> {
    let tcp = portex_common::IPPROTO_TCP as u8;
    let p = full_pool_towards(pools, tcp, dest).or_else(|| {
        pools
            .iter()
            .filter(|p| {
                p.key.proto == tcp
                    && p.key.daddr == dest.ip()
                    && p.key.dport == dest.port()
                    && p.utilisation() >= NEARLY_FULL
                    && failing_netns.contains(&p.key.netns)
            })
            .max_by(|a, b| a.utilisation().total_cmp(&b.utilisation()))
    })?;
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
        fixtures::{record, snat_entries},
        model::CloseInfo,
        nat::nat_pools,
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
        let entries = snat_entries(used);
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
    fn a_nearly_full_pool_counts_only_while_conntrack_fails_inserts() {
        let dest = "10.78.0.2:8080".parse().unwrap();
        // 9 of 10: not full; the NAT's namespace (9) failing inserts makes it the one.
        assert_eq!(exhausted_pool(&pools(9), dest, &[]), None);
        assert_eq!(
            exhausted_pool(&pools(9), dest, &[4]),
            None,
            "another namespace"
        );
        let p = exhausted_pool(&pools(9), dest, &[9]).unwrap();
        assert_eq!((p.used, p.size), (9, 10));
        // 8 of 10 is below NEARLY_FULL: failing inserts there are something else.
        assert_eq!(exhausted_pool(&pools(8), dest, &[9]), None);
    }

    #[test]
    fn a_full_pool_makes_a_stall_a_nat_stall_and_a_timeout_a_nat_failure() {
        let dest = "10.78.0.2:8080".parse().unwrap();
        let pool = exhausted_pool(&pools(10), dest, &[]).unwrap();
        assert_eq!((pool.used, pool.size), (10, 10));
        let other = "10.78.0.2:8081".parse().unwrap();
        assert_eq!(exhausted_pool(&pools(10), other, &[9]), None);

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

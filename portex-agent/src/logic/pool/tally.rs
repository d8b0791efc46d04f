//! Counting sockets into pools: used ports, states, parity, holders. The status table
//! and the ledger's views both go through it, so they cannot count differently.
use std::hash::Hash;

use rustc_hash::FxHashMap as HashMap;

use super::{Holder, Pool, PoolKey, rank_holders, sort_by_pressure};
use crate::logic::model::Owner;

/// How a socket uses its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PortUse {
    SynSent,
    Established,
    /// FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING: still held, on its way out.
    Closing,
    TimeWait,
    /// TIME_WAIT that connect() may take over (tcp_tw_reuse, older than the delay).
    TimeWaitReusable,
    Udp,
}

impl PortUse {
    /// From a TCP state number (callers keep only port-holding states).
    pub(crate) fn of_tcp(state: u8) -> PortUse {
        use portex_common::tcpstate;
        match state {
            tcpstate::SYN_SENT => PortUse::SynSent,
            tcpstate::ESTABLISHED => PortUse::Established,
            tcpstate::TIME_WAIT => PortUse::TimeWait,
            _ => PortUse::Closing,
        }
    }
}

/// Ports held and in TIME_WAIT per holder.
type Holders<H> = HashMap<H, (u32, u32)>;

/// Pools being counted; `H` names a holder (an owner, or a pid).
pub(crate) struct Tally<H> {
    pools: HashMap<PoolKey, (Pool, Holders<H>)>,
}

impl<H> Default for Tally<H> {
    fn default() -> Self {
        Tally {
            pools: HashMap::default(),
        }
    }
}

impl<H: Hash + Eq> Tally<H> {
    /// One socket holding `port` in pool `key`; `size` is asked once per pool.
    pub(crate) fn add(
        &mut self,
        key: &PoolKey,
        size: impl FnOnce() -> u32,
        port: u16,
        u: PortUse,
        holder: H,
    ) {
        let (pool, holders) = match self.pools.get_mut(key) {
            Some(e) => e,
            None => self
                .pools
                .entry(key.clone())
                .or_insert_with(|| (Pool::empty(key.clone(), size()), HashMap::default())),
        };
        let reusable = u == PortUse::TimeWaitReusable;
        let tw = u == PortUse::TimeWait || reusable;
        pool.used += !reusable as u32;
        pool.time_wait += tw as u32;
        pool.reusable += reusable as u32;
        pool.syn_sent += (u == PortUse::SynSent) as u32;
        pool.established += (u == PortUse::Established) as u32;
        pool.odd_ports += (port % 2 == 1) as u32;
        let h = holders.entry(holder).or_default();
        h.0 += 1;
        h.1 += tw as u32;
    }

    /// The pool `key` with its holders ranked, taken out of the tally.
    pub(crate) fn take(
        &mut self,
        key: &PoolKey,
        owner_of: impl Fn(&H) -> Option<Owner>,
    ) -> Option<Pool> {
        self.pools.remove(key).map(|(p, h)| finish(p, h, &owner_of))
    }

    /// Every pool, fullest first.
    pub(crate) fn finish(self, owner_of: impl Fn(&H) -> Option<Owner>) -> Vec<Pool> {
        let mut v: Vec<Pool> = self
            .pools
            .into_values()
            .map(|(p, h)| finish(p, h, &owner_of))
            .collect();
        sort_by_pressure(&mut v);
        v
    }
}

fn finish<H>(mut pool: Pool, holders: Holders<H>, owner_of: &impl Fn(&H) -> Option<Owner>) -> Pool {
    pool.holders = holders
        .into_iter()
        .map(|(h, (held, time_wait))| Holder {
            owner: owner_of(&h),
            held,
            time_wait,
        })
        .collect();
    rank_holders(&mut pool.holders);
    pool
}

//! NAT exhaustion seen from the pod: a connect whose SYN goes unanswered towards a
//! destination that a full NAT pool of this host serves (logic::nat_attribution says
//! which records those are and what they become). The NAT pools are read from
//! conntrack when such a record shows up (at most every 500 ms: a table of 100,000
//! entries takes tens of ms to dump), not all the time.
use crate::{
    logic::{
        model::Record,
        nat::NatPool,
        nat_attribution::{attribute, exhausted_pool, suspect},
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
    /// Puts `r` down to a full NAT pool when it is a suspect and one serves its
    /// destination: a `connect_stalled` gets the cause and the pool in place; an
    /// unanswered close returns the `connect_failed` to report after it.
    pub(crate) fn judge(&mut self, r: &mut Record, now: u64) -> Option<Record> {
        let dest = suspect(r)?;
        if self
            .read_at
            .is_none_or(|t| now.saturating_sub(t) >= REFRESH_NS)
        {
            self.pools = host_nat_pools();
            self.read_at = Some(now);
        }
        let pool = exhausted_pool(&self.pools, dest, &[])?;
        attribute(r, pool)
    }
}

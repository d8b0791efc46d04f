//! Pools as the live views (top, metrics, pool_pressure) show them: the ledger's
//! entries counted through the one pool model (pool::Tally), with rates and forecast.
use std::net::IpAddr;

use super::Ledger;
use crate::logic::{
    addr,
    diagnose::{Severity, Thresholds},
    forecast::{Forecast, forecast},
    model::{Owner, Transport},
    pool::{Pool, PoolKey, TIME_WAIT_MS, Tally, pressure_order, sustainable_per_s, utilisation},
};

/// A pool as the views show it.
#[derive(Clone, Debug)]
pub(crate) struct PoolView {
    pub(crate) pool: Pool,
    pub(crate) opens_per_s: f64,
    /// New connections per second the pool sustains when this side closes first
    /// (size / TIME_WAIT hold).
    pub(crate) sustainable_per_s: f64,
    pub(crate) failures: u64,
    pub(crate) forecast: Forecast,
    /// Connections this side closed first per second (TIME_WAIT started), recently.
    pub(crate) closes_first_per_s: f64,
}

/// A pool_pressure event: utilisation crossed a threshold upwards.
#[derive(Clone, Debug)]
pub(crate) struct Pressure {
    pub(crate) severity: Severity,
    pub(crate) view: PoolView,
}

impl Ledger {
    /// A pool's size: the namespace's usable range minus listeners (p.size), minus the
    /// ports bind() took for other destinations from the same source address.
    fn size_of(&self, key: &PoolKey) -> u32 {
        let Some(p) = self.pools.get(key) else {
            return 0;
        };
        let Some(&idx) = self.ns_index.get(&key.netns) else {
            return p.size;
        };
        let bound = self
            .bound
            .get(&(idx, addr::to_bytes(key.saddr)))
            .copied()
            .unwrap_or(0);
        p.size.saturating_sub(bound.saturating_sub(p.bound_here))
    }

    /// (used, size, time_wait) of a pool.
    pub(crate) fn pool_state(&self, key: &PoolKey) -> Option<(u32, u32, u32)> {
        let size = self.size_of(key);
        self.pools.get(key).map(|p| (p.used, size, p.time_wait))
    }

    /// Every pooled entry counted by pool and holder pid.
    fn tally(&self) -> Tally<u32> {
        let mut tally = Tally::default();
        for (t, e) in self.socks.iter().filter(|(_, e)| e.pooled()) {
            let key = self.pool_key(t);
            tally.add(&key, || self.size_of(&key), t.lport, e.port_use(), e.pid);
        }
        tally
    }

    /// The owner behind a holder pid, as the ledger knows it (0: no owner).
    fn owner(&self, pid: &u32) -> Option<Owner> {
        (*pid != 0).then(|| {
            let p = self.procs.get(pid);
            Owner {
                pid: *pid,
                start: p.map(|p| p.start).unwrap_or(0),
                name: p.map(|p| p.name.clone()).unwrap_or_default(),
            }
        })
    }

    fn view(&mut self, key: &PoolKey, now: u64, counted: Option<Pool>) -> Option<PoolView> {
        let size = self.size_of(key);
        let p = self.pools.get_mut(key)?;
        let opens = p.opens.per_sec(now);
        let releases = p.releases.per_sec(now);
        let closes_first = p.tw_close_rate.per_sec(now);
        let lifetime = if p.closes > 0 {
            p.lifetime_s_sum / p.closes as f64
        } else {
            0.0
        };
        let tw_share = if p.closes > 0 {
            p.tw_closes as f64 / p.closes as f64
        } else {
            0.0
        };
        // A pool with failures and no port in use has nothing to count.
        let pool = counted.unwrap_or_else(|| Pool::empty(key.clone(), size));
        let hold_ms = self
            .ns
            .get(&key.netns)
            .map(|n| n.rules.tw_hold_ms(key.saddr, key.daddr))
            .unwrap_or(TIME_WAIT_MS);
        let f = forecast(
            size,
            pool.used,
            (opens, releases),
            lifetime,
            tw_share,
            hold_ms as f64 / 1000.0,
        );
        Some(PoolView {
            sustainable_per_s: sustainable_per_s(size, hold_ms),
            pool,
            opens_per_s: opens,
            failures: p.failures,
            forecast: f,
            closes_first_per_s: closes_first,
        })
    }

    /// Every pool with its holders and forecast, fullest first.
    pub(crate) fn pool_views(&mut self, now: u64) -> Vec<PoolView> {
        let mut tally = self.tally();
        let keys: Vec<PoolKey> = self.pools.keys().cloned().collect();
        let mut v: Vec<PoolView> = keys
            .iter()
            .filter_map(|k| {
                let counted = tally.take(k, |pid| self.owner(pid));
                self.view(k, now, counted)
            })
            .collect();
        v.sort_by(|a, b| pressure_order(&a.pool, &b.pool));
        v
    }

    /// A pool_pressure event when `key` crossed a threshold upwards since the last one;
    /// the alert re-arms when utilisation falls 5 points below the threshold.
    pub(crate) fn check_pressure(
        &mut self,
        key: &PoolKey,
        th: &Thresholds,
        now: u64,
    ) -> Option<Pressure> {
        let size = self.size_of(key);
        let p = self.pools.get_mut(key)?;
        let s = th.crossing(&mut p.alert, utilisation(p.used, size))?;
        let counted = self.tally().take(key, |pid| self.owner(pid));
        let view = self.view(key, now, counted)?;
        Some(Pressure { severity: s, view })
    }

    /// The fullest pool that holds anything, with its utilisation (0..1).
    pub(crate) fn fullest_pool(&self) -> Option<(f64, &PoolKey)> {
        self.pools
            .iter()
            .filter(|(_, p)| p.used > 0)
            .map(|(k, p)| (utilisation(p.used, self.size_of(k)), k))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// Who is behind NAT sources: for each (source address, destination address, port),
    /// the process holding the most ports of the TCP pools with that source and
    /// destination in any namespace of this host (a pod or container whose sockets the
    /// ledger sees). One walk over the table for all of them: called when a NAT pool
    /// crosses a threshold, not every scan.
    pub(crate) fn owners_from(&self, sources: &[(IpAddr, IpAddr, u16)]) -> Vec<Option<Owner>> {
        let mut tally = self.tally();
        sources
            .iter()
            .map(|&(saddr, daddr, dport)| {
                let keys: Vec<PoolKey> = self
                    .pools
                    .keys()
                    .filter(|k| {
                        k.transport == Transport::Tcp
                            && k.saddr == saddr
                            && k.daddr == daddr
                            && k.dport == dport
                    })
                    .cloned()
                    .collect();
                keys.iter()
                    .filter_map(|k| tally.take(k, |pid| self.owner(pid)))
                    .flat_map(|p| p.holders)
                    .filter(|h| h.owner.is_some())
                    .max_by_key(|h| h.held)
                    .and_then(|h| h.owner)
            })
            .collect()
    }
}

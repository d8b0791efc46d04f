//! What `status` would say of the live pools: diagnose() fed the ledger's pools, each
//! namespace's sysctls, and what only the events know (how many connections this side
//! closes first per second, bind() before connect() per process), so that `top` words
//! its answers as `status` does.
use std::collections::BTreeMap;

use super::{Ledger, PoolView};
use crate::logic::{
    diagnose::{Diagnosis, LiveFacts, Thresholds, diagnose},
    pool::Pool,
};

/// One namespace's diagnoses, most severe first.
#[derive(Clone, Debug, Default)]
pub(crate) struct NsDiagnoses {
    pub(crate) netns: u64,
    pub(crate) diagnoses: Vec<Diagnosis>,
}

impl Ledger {
    /// The diagnoses of every namespace that has pools in `views` (pool_views, fullest
    /// first) and whose sysctls a reconciliation has read. The ledger does not read
    /// TCPTimeWaitOverflow (`status` does), so time_wait_overflow is never among them.
    pub(crate) fn diagnoses(&self, views: Vec<PoolView>, th: &Thresholds) -> Vec<NsDiagnoses> {
        let mut by_ns: BTreeMap<u64, (Vec<Pool>, LiveFacts)> = BTreeMap::new();
        for v in views {
            let (pools, facts) = by_ns.entry(v.pool.key.netns).or_default();
            if v.closes_first_per_s > 0.0 {
                facts
                    .close_rates
                    .push((v.pool.key.clone(), v.closes_first_per_s));
            }
            pools.push(v.pool);
        }
        by_ns
            .into_iter()
            .filter_map(|(netns, (pools, mut facts))| {
                let settings = &self.ns.get(&netns)?.rules.settings;
                // The ledger counts bind() before connect() per process, not per
                // namespace: a process belongs to the namespaces it holds ports in.
                let mut binders: Vec<(u32, u64)> = self
                    .procs
                    .iter()
                    .filter(|(pid, p)| {
                        p.bind_then_connect > 0
                            && pools.iter().any(|pool| {
                                pool.holders
                                    .iter()
                                    .any(|h| h.owner.as_ref().is_some_and(|o| o.pid == **pid))
                            })
                    })
                    .map(|(pid, p)| (*pid, p.bind_then_connect))
                    .collect();
                binders.sort_unstable();
                facts.bind_then_connect = binders;
                Some(NsDiagnoses {
                    netns,
                    diagnoses: diagnose(settings, &pools, th, &facts),
                })
            })
            .collect()
    }
}

//! Owners of TIME_WAIT ports, handed from a running portex to a one-shot `status`. The
//! kernel forgets who held a TIME_WAIT port (the socket has no file, hence no process);
//! only a ledger that saw the close knows. The running agent writes what it knows per
//! TCP pool (sys::tw_owners_file), status names them from it. Pure.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Holder, Pool, PoolKey};
use crate::logic::{
    kernel::NotLoaded,
    model::{Owner, Transport},
};

/// At most this many pools and holders per pool are handed over: the fullest pools
/// and their biggest holders are what status shows.
pub(crate) const MAX_POOLS: usize = 5_000;
pub(crate) const MAX_HOLDERS: usize = 10;

/// One pool's TIME_WAIT holders as the writer's ledger knows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PoolOwners {
    pub netns: u64,
    pub source_address: IpAddr,
    pub destination_address: IpAddr,
    pub destination_port: u16,
    pub holders: Vec<TwHolder>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TwHolder {
    pub pid: u32,
    /// Start time in clock ticks since boot: with the pid, the process.
    pub start: u64,
    pub name: String,
    pub time_wait: u32,
}

/// What one writer hands over.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct TwOwners {
    pub pools: Vec<PoolOwners>,
    /// The writer's kernel programs that the kernel refused (status says so): it rides
    /// here because this file is already the trusted channel from an agent to status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs_not_loaded: Vec<NotLoaded>,
}

impl TwOwners {
    /// From the live pools (fullest first): every TCP pool with a known TIME_WAIT holder.
    pub(crate) fn from_pools<'a>(pools: impl Iterator<Item = &'a Pool>) -> TwOwners {
        let pools = pools
            .filter(|p| p.key.transport == Transport::Tcp && p.time_wait > 0)
            .filter_map(|p| {
                let holders: Vec<TwHolder> = p
                    .holders
                    .iter()
                    .filter(|h| h.time_wait > 0)
                    .filter_map(|h| {
                        h.owner.as_ref().map(|o| TwHolder {
                            pid: o.pid,
                            start: o.start,
                            name: o.name.clone(),
                            time_wait: h.time_wait,
                        })
                    })
                    .take(MAX_HOLDERS)
                    .collect();
                (!holders.is_empty()).then_some(PoolOwners {
                    netns: p.key.netns,
                    source_address: p.key.saddr,
                    destination_address: p.key.daddr,
                    destination_port: p.key.dport,
                    holders,
                })
            })
            .take(MAX_POOLS)
            .collect();
        TwOwners {
            pools,
            programs_not_loaded: Vec::new(),
        }
    }

    /// Adds another writer's knowledge: per pool and process, the larger count.
    pub(crate) fn merge(&mut self, other: TwOwners) {
        for n in other.programs_not_loaded {
            if !self.programs_not_loaded.contains(&n) {
                self.programs_not_loaded.push(n);
            }
        }
        for o in other.pools {
            let same = self.pools.iter_mut().find(|p| {
                (
                    p.netns,
                    p.source_address,
                    p.destination_address,
                    p.destination_port,
                ) == (
                    o.netns,
                    o.source_address,
                    o.destination_address,
                    o.destination_port,
                )
            });
            let Some(p) = same else {
                self.pools.push(o);
                continue;
            };
            for h in o.holders {
                match p
                    .holders
                    .iter_mut()
                    .find(|x| (x.pid, x.start) == (h.pid, h.start))
                {
                    Some(x) => x.time_wait = x.time_wait.max(h.time_wait),
                    None => p.holders.push(h),
                }
            }
        }
    }

    fn of(&self, key: &PoolKey) -> Option<&PoolOwners> {
        self.pools.iter().find(|p| {
            p.netns == key.netns
                && p.source_address == key.saddr
                && p.destination_address == key.daddr
                && p.destination_port == key.dport
        })
    }

    /// Names the owners of the pool's TIME_WAIT ports that the socket table left
    /// without one: each known holder takes its count (at most what is unowned) from
    /// the "no owner" holder. Returns how many ports were named.
    pub(crate) fn name_in(&self, pool: &mut Pool) -> u32 {
        if pool.key.transport != Transport::Tcp {
            return 0;
        }
        let Some(known) = self.of(&pool.key) else {
            return 0;
        };
        let Some(nobody) = pool.holders.iter().position(|h| h.owner.is_none()) else {
            return 0;
        };
        let mut left = pool.holders[nobody].time_wait;
        let mut named = 0;
        for k in &known.holders {
            let n = k.time_wait.min(left);
            if n == 0 {
                break;
            }
            left -= n;
            named += n;
            let owner = Owner {
                pid: k.pid,
                start: k.start,
                name: k.name.clone(),
            };
            match pool
                .holders
                .iter_mut()
                .find(|h| h.owner.as_ref() == Some(&owner))
            {
                Some(h) => {
                    h.held += n;
                    h.time_wait += n;
                }
                None => pool.holders.push(Holder {
                    owner: Some(owner),
                    held: n,
                    time_wait: n,
                }),
            }
        }
        let h = &mut pool.holders[nobody];
        h.held -= named;
        h.time_wait -= named;
        pool.holders.retain(|h| h.held > 0);
        pool.holders.sort_by_key(|h| std::cmp::Reverse(h.held));
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PoolKey {
        PoolKey {
            netns: 7,
            transport: Transport::Tcp,
            saddr: "10.0.0.1".parse().unwrap(),
            daddr: "10.0.0.9".parse().unwrap(),
            dport: 80,
        }
    }

    fn owner(pid: u32) -> Owner {
        Owner {
            pid,
            start: 5,
            name: format!("p{pid}"),
        }
    }

    fn pool(holders: Vec<Holder>) -> Pool {
        let mut p = Pool::empty(key(), 100);
        p.time_wait = holders.iter().map(|h| h.time_wait).sum();
        p.used = holders.iter().map(|h| h.held).sum();
        p.holders = holders;
        p
    }

    #[test]
    fn a_running_ledgers_owners_name_the_time_wait_status_cannot() {
        // The agent's view: pid 1 closed 6 into TIME_WAIT, pid 2 closed 3.
        let live = pool(vec![
            Holder {
                owner: Some(owner(1)),
                held: 8,
                time_wait: 6,
            },
            Holder {
                owner: Some(owner(2)),
                held: 3,
                time_wait: 3,
            },
        ]);
        let known = TwOwners::from_pools([&live].into_iter());
        let json = serde_json::to_string(&known).unwrap();
        let known: TwOwners = serde_json::from_str(&json).unwrap();
        // status's view: 2 live sockets of pid 1, 8 TIME_WAIT without owner (one more
        // than the agent knows of: closed before it started).
        let mut table = pool(vec![
            Holder {
                owner: None,
                held: 8,
                time_wait: 8,
            },
            Holder {
                owner: Some(owner(1)),
                held: 2,
                time_wait: 0,
            },
        ]);
        assert_eq!(known.name_in(&mut table), 8);
        assert_eq!(
            table.holders,
            vec![
                Holder {
                    owner: Some(owner(1)),
                    held: 8,
                    time_wait: 6
                },
                Holder {
                    owner: Some(owner(2)),
                    held: 2,
                    time_wait: 2
                },
            ]
        );
    }

    #[test]
    fn two_writers_merge_to_the_larger_count_per_process() {
        let a = pool(vec![Holder {
            owner: Some(owner(1)),
            held: 4,
            time_wait: 4,
        }]);
        let b = pool(vec![
            Holder {
                owner: Some(owner(1)),
                held: 2,
                time_wait: 2,
            },
            Holder {
                owner: Some(owner(3)),
                held: 1,
                time_wait: 1,
            },
        ]);
        let mut known = TwOwners::from_pools([&a].into_iter());
        known.merge(TwOwners::from_pools([&b].into_iter()));
        let h: Vec<(u32, u32)> = known.pools[0]
            .holders
            .iter()
            .map(|h| (h.pid, h.time_wait))
            .collect();
        assert_eq!(h, vec![(1, 4), (3, 1)]);
    }
}

//! Pure logic: what the agent decides, with time and input passed in. Nothing here does
//! IO or knows aya or tokio, so every rule is unit-tested with synthetic input.
#![deny(unsafe_code)]
pub(crate) mod addr;
pub(crate) mod arming;
pub(crate) mod clock;
pub(crate) mod decode;
pub(crate) mod demand;
pub(crate) mod diagnose;
pub(crate) mod errno;
pub(crate) mod filter;
#[cfg(test)]
pub(crate) mod fixtures;
pub(crate) mod forecast;
pub(crate) mod health;
pub(crate) mod kernel;
pub(crate) mod ledger;
pub(crate) mod lifecycle;
pub(crate) mod limits;
pub(crate) mod model;
pub(crate) mod nat;
pub(crate) mod nat_attribution;
pub(crate) mod nat_diagnose;
pub(crate) mod nat_hold;
pub(crate) mod nat_view;
pub(crate) mod pool;
pub(crate) mod pool_history;
pub(crate) mod rate;
pub(crate) mod self_stats;
pub(crate) mod sysctls;
pub(crate) mod top_holders;
pub(crate) mod untrusted;
pub(crate) mod warn_limit;
pub(crate) mod workload;

//! What the ledger knows of each process: who it is, its rates, ports and failures.
use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap as HashMap;

use super::Ledger;
use crate::logic::{pool::TIME_WAIT_MS, rate::Rate};

/// What the ledger knows of one process.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProcStats {
    pub name: String,
    pub start: u64,
    pub connects: Rate,
    pub closes: Rate,
    pub held: u32,
    pub time_wait: u32,
    pub failures: BTreeMap<&'static str, u64>,
    /// Boot ns of the last failure, for highlighting.
    pub last_failure_ns: u64,
    pub bind_then_connect: u64,
    pub(super) recent_binds: VecDeque<u16>,
}

impl Ledger {
    /// Tells the ledger who a pid is; a different start time means a new process.
    pub(crate) fn process_seen(&mut self, pid: u32, start: u64, name: &str) {
        let p = self.procs.entry(pid).or_default();
        if p.start != start && p.start != 0 {
            let (held, tw) = (p.held, p.time_wait);
            *p = ProcStats {
                held,
                time_wait: tw,
                ..Default::default()
            };
        }
        p.start = start;
        if p.name != name {
            p.name = name.to_string();
        }
    }

    pub(crate) fn processes(&self) -> &HashMap<u32, ProcStats> {
        &self.procs
    }

    pub(crate) fn processes_mut(&mut self) -> &mut HashMap<u32, ProcStats> {
        &mut self.procs
    }

    /// Drops processes that hold nothing and did nothing for the whole rate window, so
    /// that the table stays bounded on a host that forks a lot.
    pub(crate) fn forget_idle(&mut self, now: u64) {
        self.procs.retain(|_, p| {
            p.held > 0
                || p.connects.per_sec(now) > 0.0
                || p.closes.per_sec(now) > 0.0
                || now.saturating_sub(p.last_failure_ns) < TIME_WAIT_MS * 1_000_000
        });
    }
}

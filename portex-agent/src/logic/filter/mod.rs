//! Which records and pool_pressure alarms a user asked to see (`--pid`, `--comm`,
//! `--failures-only`, `--daddr`, `--dport`, `--netns`, `--container`, `-4`/`-6`), and
//! (values.rs) the parsers of the values those flags take. Pure.
mod lines;
#[cfg(test)]
mod tests;
mod values;

use std::net::IpAddr;

pub(crate) use lines::Lines;
pub(crate) use values::{AddrMatch, ContainerPrefix, PortRange};

use crate::logic::{
    model::{Action, Owner, Record},
    nat::NatPoolKey,
    pool::PoolKey,
};

#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub failures_only: bool,
    /// Destination address in any of these networks (empty: any).
    pub daddr: Vec<AddrMatch>,
    /// Destination port in any of these ranges (empty: any).
    pub dport: Vec<PortRange>,
    /// The owner's network namespace (inode).
    pub netns: Option<u64>,
    /// A prefix of the owner's container id.
    pub container: Option<String>,
    pub family: Option<Family>,
    /// One line per event, or per connection.
    pub lines: Lines,
}

/// IPv4 or IPv6, as `network.type` names a record's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl Filter {
    /// `process_name` is the resolved process name; `--comm` matches it or the thread's.
    pub(crate) fn accepts(&self, r: &Record, process_name: &str) -> bool {
        // A stalled connect is a failure in the making: an on-call watching failures
        // wants it before the timeout.
        if self.failures_only && !r.action.is_failure() && r.action != Action::ConnectStalled {
            return false;
        }
        if self.pid.is_some_and(|p| p != r.process.pid) {
            return false;
        }
        if let Some(c) = &self.comm
            && c != process_name
            && *c != r.process.thread_name.name()
        {
            return false;
        }
        // A record without a destination (bind) has none to match.
        let dst = r.destination;
        if !self.daddr.is_empty()
            && !dst.is_some_and(|d| self.daddr.iter().any(|m| m.contains(d.ip())))
        {
            return false;
        }
        if !self.dport.is_empty()
            && !dst.is_some_and(|d| self.dport.iter().any(|p| p.contains(d.port())))
        {
            return false;
        }
        // The same family `network.type` shows: the destination's, else the source's.
        let ip = dst.map(|d| d.ip()).unwrap_or(r.source.ip());
        if self.family.is_some_and(|f| f != Family::of(ip)) {
            return false;
        }
        // Unknown namespace or container (the process was gone before it was read):
        // not shown, never guessed.
        if self.netns.is_some() && r.netns != self.netns {
            return false;
        }
        self.container_matches(r)
    }

    fn container_matches(&self, r: &Record) -> bool {
        self.container.as_ref().is_none_or(|prefix| {
            r.container
                .as_ref()
                .is_some_and(|c| c.id.starts_with(prefix.as_str()))
        })
    }

    /// pool_pressure is an alarm: it passes --failures-only; --pid/--comm when that
    /// process is among the pool's `holders`; the destination, namespace and family
    /// filters when the pool's key matches them (the per-namespace UDP pool has no
    /// destination: it passes the family filter, not --daddr/--dport); --container when
    /// `trigger`, the record that made the pool cross the threshold, is that container's.
    pub(crate) fn accepts_pressure<'a>(
        &self,
        key: &PoolKey,
        holders: impl Iterator<Item = &'a Owner> + Clone,
        trigger: &Record,
    ) -> bool {
        let mut owners = holders;
        if self
            .pid
            .is_some_and(|pid| !owners.clone().any(|o| o.pid == pid))
        {
            return false;
        }
        if let Some(c) = &self.comm
            && !owners.any(|o| &o.name == c)
        {
            return false;
        }
        let udp = key.is_udp_pool();
        if !self.daddr.is_empty() && (udp || !self.daddr.iter().any(|m| m.contains(key.daddr))) {
            return false;
        }
        if !self.dport.is_empty() && (udp || !self.dport.iter().any(|p| p.contains(key.dport))) {
            return false;
        }
        if !udp && self.family.is_some_and(|f| f != Family::of(key.daddr)) {
            return false;
        }
        if self.netns.is_some_and(|n| n != key.netns) {
            return false;
        }
        self.container_matches(trigger)
    }

    /// A NAT pool's pool_pressure: no process holds its ports here (they belong to
    /// other namespaces' sources), so --pid, --comm and --container leave it out; the
    /// destination, family and namespace filters apply to its key (the NAT's namespace).
    pub(crate) fn accepts_nat_pressure(&self, key: &NatPoolKey) -> bool {
        self.pid.is_none()
            && self.comm.is_none()
            && self.container.is_none()
            && (self.daddr.is_empty() || self.daddr.iter().any(|m| m.contains(key.daddr)))
            && (self.dport.is_empty() || self.dport.iter().any(|p| p.contains(key.dport)))
            && self.family.is_none_or(|f| f == Family::of(key.daddr))
            && self.netns.is_none_or(|n| n == key.netns)
    }
}

//! The NAT scanner of watch, agent and top: a thread ("portex-nat") that reads every
//! namespace's conntrack table now and then (sys::snapshot::scan_nat), counts its NAT
//! pools (logic::nat) and publishes the latest view behind an Arc. A dump of 100,000
//! entries takes tens of ms: it never runs on the output thread, and the next scan waits
//! at least SCAN_COST_FACTOR times the last one's duration (logic::nat_view).
//!
//! The rules' port range comes from a dump of the whole nf_tables ruleset (sys::nft),
//! costly on a large ruleset: it is cached per namespace and read again after a minute
//! or when the namespace's NAT addresses change.
use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use crate::{
    logic::{
        nat::nat_pools,
        nat_view::{ConntrackTable, NatView, SCAN_COST_FACTOR, next_scan_in_ns, rule_range_fresh},
    },
    sys::{
        clock::{boot_now_ns, monotonic_ns},
        netns,
        snapshot::scan_nat,
    },
};

#[derive(Default)]
struct Wake {
    stop: bool,
    scan_now: bool,
}

#[derive(Default)]
struct Shared {
    latest: Mutex<Option<Arc<NatView>>>,
    wake: Mutex<Wake>,
    cond: Condvar,
}

/// A reader's end of the scanner: the latest view, and asking for a scan now.
#[derive(Clone)]
pub(crate) struct NatFeed(Arc<Shared>);

impl NatFeed {
    /// The last scan's view; None before the first scan ends.
    pub(crate) fn latest(&self) -> Option<Arc<NatView>> {
        self.0.latest.lock().unwrap().clone()
    }

    /// Asks for a scan as soon as the cost limit allows (a handshake just failed: the
    /// NAT may be full).
    pub(crate) fn request(&self) {
        let mut w = self.0.wake.lock().unwrap();
        if !w.scan_now {
            w.scan_now = true;
            self.0.cond.notify_one();
        }
    }
}

/// The running scanner; dropping it stops the thread.
pub(crate) struct NatScanner {
    feed: NatFeed,
    thread: Option<JoinHandle<()>>,
}

impl NatScanner {
    /// Starts scanning every `period_ns` (or less often: see the module's comment).
    pub(crate) fn start(period_ns: u64) -> std::io::Result<NatScanner> {
        let feed = NatFeed(Arc::default());
        let shared = feed.0.clone();
        let thread = std::thread::Builder::new()
            .name("portex-nat".into())
            .spawn(move || run(&shared, period_ns))?;
        Ok(NatScanner {
            feed,
            thread: Some(thread),
        })
    }

    pub(crate) fn feed(&self) -> NatFeed {
        self.feed.clone()
    }
}

impl Drop for NatScanner {
    fn drop(&mut self) {
        self.feed.0.wake.lock().unwrap().stop = true;
        self.feed.0.cond.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A namespace's rule range, and for which NAT addresses and when it was read.
struct CachedRange {
    read_at: u64,
    addrs: BTreeSet<IpAddr>,
    range: Option<(u16, u16)>,
}

fn run(shared: &Shared, period_ns: u64) {
    let mut ranges: HashMap<u64, CachedRange> = HashMap::new();
    let mut scans = 0u64;
    let mut told = false;
    loop {
        let start = monotonic_ns();
        let mut view = scan(&mut ranges, start, &mut told);
        let took = monotonic_ns().saturating_sub(start);
        scans += 1;
        view.at_ns = boot_now_ns();
        view.duration_ns = took;
        view.scans = scans;
        *shared.latest.lock().unwrap() = Some(Arc::new(view));
        // A request is honoured once the scan has rested half its cost budget.
        let next = start + took + next_scan_in_ns(period_ns, took);
        let soonest = start + took + took.saturating_mul(SCAN_COST_FACTOR / 2);
        let mut w = shared.wake.lock().unwrap();
        loop {
            if w.stop {
                return;
            }
            let now = monotonic_ns();
            if now >= next || (w.scan_now && now >= soonest) {
                break;
            }
            let until = if w.scan_now { soonest } else { next };
            w = shared
                .cond
                .wait_timeout(w, Duration::from_nanos(until - now))
                .unwrap()
                .0;
        }
        w.scan_now = false;
    }
}

/// One pass over every namespace. Namespaces without conntrack, with an empty table or
/// without SNAT entries cost a setns and a sysctl read (and a dump for the last).
fn scan(ranges: &mut HashMap<u64, CachedRange>, now: u64, told: &mut bool) -> NatView {
    let mut view = NatView::default();
    let all = netns::all();
    for ns in &all {
        let cached = ranges.get(&ns.inode);
        let mut addrs_now = BTreeSet::new();
        let res = scan_nat(ns, |entries| {
            addrs_now = entries.iter().map(|e| e.reply_dst.ip()).collect();
            !cached.is_some_and(|c| rule_range_fresh(c.read_at, &c.addrs, now, &addrs_now))
        });
        let s = match res {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                // Without CAP_NET_ADMIN (or CAP_SYS_ADMIN for setns) the views go on
                // without NAT pools: said once.
                if !*told {
                    *told = true;
                    tracing::info!("NAT pools left out of the live views: {e:#}");
                }
                continue;
            }
        };
        if let Some(range) = s.range {
            ranges.insert(
                ns.inode,
                CachedRange {
                    read_at: now,
                    addrs: addrs_now,
                    range,
                },
            );
        }
        let range = ranges.get(&ns.inode).and_then(|c| c.range);
        view.pools.extend(nat_pools(ns.inode, &s.entries, range));
        view.tables.push(ConntrackTable {
            netns: ns.inode,
            count: s.table.0,
            max: s.table.1,
            tw_timeout_s: s.tw_timeout_s,
            insert_failed: s.stats.map(|c| c.insert_failed),
        });
    }
    ranges.retain(|inode, _| all.iter().any(|n| n.inode == *inode));
    view.pools
        .sort_by(|a, b| b.utilisation().total_cmp(&a.utilisation()));
    view
}

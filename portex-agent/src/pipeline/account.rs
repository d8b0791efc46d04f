//! The account stage: the ledger (through the tracker), the metrics the output thread
//! counts, the gauges it publishes every second, and auto mode's arming decision.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::{hooks::HookSwitch, metrics::Metrics, nat_scan::NatFeed, tracker::Tracker};
use crate::{
    logic::{
        arming::{ARM_AT, Arming},
        diagnose::Thresholds,
        errno,
        ledger::{PoolView, Pressure, ProcStats},
        limits,
        model::{Action, Cause, Record},
        nat::proto_name,
        nat_view::{NatAlerts, NatPressure, NatView, PRESSURE_SOURCES},
        pool::TwOwners,
        top_holders::{HolderGroup, top_groups},
    },
    render::{
        prometheus::{PoolGauge, Snapshot},
        prometheus_nat::{ConntrackGauge, NatPoolGauge, NatSnapshot},
    },
    sys::tw_owners_file::TwOwnersWriter,
};

/// Which pools and processes become metrics (bounded cardinality).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolMetricOptions {
    /// Only pools at or above this utilisation (0..1).
    pub(crate) min_utilisation: f64,
    /// At most this many pools, fullest first.
    pub(crate) max_pools: usize,
    /// At most this many processes, biggest holders first.
    pub(crate) top_processes: usize,
}

impl Default for PoolMetricOptions {
    fn default() -> Self {
        PoolMetricOptions {
            min_utilisation: limits::METRICS_POOL_MIN_PERCENT / 100.0,
            max_pools: limits::METRICS_SERIES.default as usize,
            top_processes: limits::METRICS_TOP_PROCESSES.default as usize,
        }
    }
}

pub(crate) struct Account {
    pub(crate) metrics: Option<Arc<Metrics>>,
    pub(crate) pool_metrics: PoolMetricOptions,
    /// `--syscall-hooks auto`: the decision, and where to send it.
    pub(crate) arming: Option<(Arming, Arc<HookSwitch>)>,
    /// Where `status` learns who holds TIME_WAIT ports (rewritten every second).
    pub(crate) tw_owners: Option<TwOwnersWriter>,
    /// The NAT scanner's latest view (None: scanning is off), the thresholds of its
    /// pools' pool_pressure events, their standing alerts, and the last scan seen.
    pub(crate) nat: Option<NatFeed>,
    pub(crate) nat_thresholds: Thresholds,
    nat_alerts: NatAlerts,
    nat_seen: u64,
    /// Container id of each process holding ports, by pid, with the process's start
    /// time (a reused pid is read again): read once per process, not every second.
    containers: HashMap<u32, (u64, Option<String>)>,
    last_publish: u64,
    port_failure_seen: bool,
    last_arming_check: u64,
}

impl Account {
    pub(crate) fn new() -> Account {
        Account {
            metrics: None,
            pool_metrics: PoolMetricOptions::default(),
            arming: None,
            tw_owners: None,
            nat: None,
            nat_thresholds: Thresholds::default(),
            nat_alerts: NatAlerts::default(),
            nat_seen: 0,
            containers: HashMap::new(),
            last_publish: 0,
            port_failure_seen: false,
            last_arming_check: 0,
        }
    }

    /// Between batches: TIME_WAIT expiry and reconciliation, and the gauges once a
    /// second.
    pub(crate) fn tick(&mut self, tracker: Option<&mut Tracker>, now: u64) {
        let mut tracker = tracker;
        if let Some(t) = tracker.as_deref_mut() {
            t.tick(now);
        }
        if now.saturating_sub(self.last_publish) >= 1_000_000_000 {
            self.last_publish = now;
            let Some(t) = tracker else {
                return;
            };
            if self.metrics.is_none() && self.tw_owners.is_none() {
                return;
            }
            // Built once a second for both: the tally walks every tracked socket.
            let views = t.ledger.pool_views(now);
            if let Some(w) = &self.tw_owners {
                let mut owners = TwOwners::from_pools(views.iter().map(|v| &v.pool));
                if let Err(e) = w.write(&mut owners) {
                    tracing::warn!("status will not name TIME_WAIT owners: {e:#}");
                    self.tw_owners = None;
                }
            }
            self.publish(t, views);
        }
    }

    /// Applies one record to the ledger; fills in its pool (failures) and namespace;
    /// returns a pressure crossing.
    pub(crate) fn record(
        &mut self,
        tracker: Option<&mut Tracker>,
        r: &mut Record,
        start: u64,
        name: &str,
        now: u64,
    ) -> Option<Pressure> {
        let mut pressure = None;
        if let Some(t) = tracker {
            let touch = t.on_record(r, start, name, now);
            if r.action.is_failure() {
                r.pool = touch.pool;
            }
            r.netns = touch.netns;
            pressure = touch.pressure;
        }
        if r.action.is_failure()
            && matches!(
                r.cause,
                Some(Cause::PortRangeExhausted | Cause::TupleCollision)
            )
        {
            self.port_failure_seen = true;
        }
        if let Some(m) = &self.metrics {
            count(m, r, pressure.as_ref());
        }
        pressure
    }

    /// Counts a record the pipeline made itself (a NAT failure), outside the ledger.
    pub(crate) fn count(&self, r: &Record) {
        if let Some(m) = &self.metrics {
            count(m, r, None);
        }
    }

    /// The NAT pools that crossed a threshold in a scan not seen yet, counted in the
    /// pool_pressure metric (once per scan: the scanner publishes every few seconds).
    /// The ledger names the processes behind the pools' sources where it can.
    pub(crate) fn nat_pressures(&mut self, tracker: Option<&Tracker>) -> Vec<NatPressure> {
        let Some(v) = self.nat.as_ref().and_then(|f| f.latest()) else {
            return Vec::new();
        };
        if v.scans == self.nat_seen {
            return Vec::new();
        }
        self.nat_seen = v.scans;
        let mut out = self.nat_alerts.observe(&v.pools, &self.nat_thresholds);
        if let Some(t) = tracker
            && !out.is_empty()
        {
            for p in &mut out {
                let k = &p.pool.key;
                let q: Vec<_> = p
                    .pool
                    .sources
                    .iter()
                    .take(PRESSURE_SOURCES)
                    .map(|(ip, _)| (*ip, k.daddr, k.dport))
                    .collect();
                p.processes = t.ledger.owners_from(&q);
                // The pod or container behind the source (read once per process).
                let cache = &mut self.containers;
                p.containers = p
                    .processes
                    .iter()
                    .map(|o| o.as_ref().and_then(|o| container_of(cache, o.pid, o.start)))
                    .collect();
            }
        }
        if let Some(m) = &self.metrics {
            let mut c = m.pool_pressure.lock().unwrap();
            for p in &out {
                *c.entry(p.severity.as_str()).or_default() += 1;
            }
        }
        out
    }

    /// Auto mode: asks for the syscall hooks while a pool fills up or ports fail (at
    /// once after a failure, otherwise every 250 ms: the scan covers every pool).
    pub(crate) fn check_arming(&mut self, tracker: Option<&Tracker>, now: u64) {
        let Some((arming, switch)) = self.arming.as_mut() else {
            return;
        };
        let failure = self.port_failure_seen;
        if !failure && now.saturating_sub(self.last_arming_check) < 250_000_000 {
            return;
        }
        self.port_failure_seen = false;
        self.last_arming_check = now;
        // The label only matters when it is about to be printed.
        let fullest = tracker.and_then(|t| t.fullest(ARM_AT));
        let fullest = fullest.as_ref().map(|(u, l)| (*u, l.as_str()));
        if let Some(c) = arming.observe(now, fullest, failure) {
            switch.request(c);
        }
    }

    /// Publishes pool and process gauges for the next scrape.
    fn publish(&mut self, t: &mut Tracker, views: Vec<PoolView>) {
        let Some(m) = self.metrics.clone() else {
            return;
        };
        let mut snap = Snapshot::default();
        {
            let o = self.pool_metrics;
            snap.tracked_sockets = t.ledger.tracked_sockets() as u64;
            snap.pools = views
                .into_iter()
                .filter(|v| v.pool.utilisation() >= o.min_utilisation)
                .take(o.max_pools)
                .map(|v| {
                    let k = &v.pool.key;
                    PoolGauge {
                        netns: k.netns,
                        transport: k.transport.as_str(),
                        source_address: k.saddr.to_string(),
                        destination_address: k.daddr.to_string(),
                        destination_port: k.dport,
                        size: v.pool.size,
                        used: v.pool.used,
                        time_wait: v.pool.time_wait,
                        reusable: v.pool.reusable,
                        seconds_to_full: v.forecast.seconds_to_full,
                    }
                })
                .collect();
            snap.holders = self.holders(t, o.top_processes);
            if let Some(v) = self.nat.as_ref().and_then(|f| f.latest()) {
                snap.nat = nat_gauges(&v, &o);
            }
        }
        *m.snapshot.lock().unwrap() = snap;
    }

    /// The top `n` groups of processes holding ports (logic::top_holders).
    fn holders(&mut self, t: &Tracker, n: usize) -> Vec<HolderGroup> {
        if n == 0 {
            self.containers.clear();
            return Vec::new();
        }
        // pid 0: TIME_WAIT sockets whose owner is not known.
        let procs: Vec<(u32, &ProcStats)> = t
            .ledger
            .processes()
            .iter()
            .filter(|(pid, p)| **pid != 0 && p.held > 0)
            .map(|(pid, p)| (*pid, p))
            .collect();
        let live: HashSet<u32> = procs.iter().map(|(pid, _)| *pid).collect();
        self.containers.retain(|pid, _| live.contains(pid));
        let cache = &mut self.containers;
        let rows = procs.into_iter().map(|(pid, p)| HolderGroup {
            name: p.name.clone(),
            container_id: container_of(cache, pid, p.start),
            held: p.held,
            time_wait: p.time_wait,
        });
        top_groups(rows, n)
    }
}

/// The NAT pools and conntrack tables as gauges, bounded like the host's pools: pools
/// at or above the utilisation floor, at most `max_pools` of each, fullest first.
fn nat_gauges(v: &NatView, o: &PoolMetricOptions) -> NatSnapshot {
    let mut tables: Vec<&crate::logic::nat_view::ConntrackTable> = v.tables.iter().collect();
    let fill = |t: &crate::logic::nat_view::ConntrackTable| t.count as f64 / t.max.max(1) as f64;
    tables.sort_by(|a, b| fill(b).total_cmp(&fill(a)));
    NatSnapshot {
        pools: v
            .pools
            .iter()
            .filter(|p| p.utilisation() >= o.min_utilisation)
            .take(o.max_pools)
            .map(|p| NatPoolGauge {
                netns: p.key.netns,
                protocol: proto_name(p.key.proto),
                nat_address: p.key.nat_ip.to_string(),
                destination_address: p.key.daddr.to_string(),
                destination_port: p.key.dport,
                size: p.size,
                size_from: p.size_from.as_str(),
                used: p.used,
                time_wait: p.time_wait,
            })
            .collect(),
        tables: tables
            .into_iter()
            .take(o.max_pools)
            .map(|t| ConntrackGauge {
                netns: t.netns,
                entries: t.count,
                max: t.max,
            })
            .collect(),
        scan_seconds: Some(v.duration_ns as f64 / 1e9),
        scans: v.scans,
    }
}

/// The container of `pid`, read once per process (by start time).
fn container_of(
    cache: &mut HashMap<u32, (u64, Option<String>)>,
    pid: u32,
    start: u64,
) -> Option<String> {
    match cache.get(&pid) {
        Some((s, c)) if *s == start => c.clone(),
        _ => {
            let c = crate::sys::containers::of_pid(pid).map(|c| c.id);
            cache.insert(pid, (start, c.clone()));
            c
        }
    }
}

fn count(m: &Metrics, r: &Record, pressure: Option<&Pressure>) {
    *m.events
        .lock()
        .unwrap()
        .entry(r.action.as_str())
        .or_default() += 1;
    if r.action == Action::ConnectStalled {
        let cause = r.cause.map_or("unknown", |c| c.as_str());
        *m.stalls.lock().unwrap().entry(cause).or_default() += 1;
    }
    if let (Some(e), Some(c)) = (r.errno, r.cause) {
        let key = (errno::name(e), c.as_str(), r.transport.as_str());
        *m.failures.lock().unwrap().entry(key).or_default() += 1;
    }
    if let Some(p) = pressure {
        *m.pool_pressure
            .lock()
            .unwrap()
            .entry(p.severity.as_str())
            .or_default() += 1;
    }
}

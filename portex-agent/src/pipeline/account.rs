//! The account stage: the ledger (through the tracker), the metrics the output thread
//! counts, the gauges it publishes every second, and auto mode's arming decision.
use std::sync::Arc;

use super::{hooks::HookSwitch, metrics::Metrics, tracker::Tracker};
use crate::{
    logic::{
        arming::{ARM_AT, Arming},
        errno,
        ledger::Pressure,
        limits,
        model::{Cause, Record},
        rate::Rate,
    },
    render::prometheus::{HolderGauge, PoolGauge, Snapshot},
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
    kernel_rate: Rate,
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
            kernel_rate: Rate::default(),
            last_publish: 0,
            port_failure_seen: false,
            last_arming_check: 0,
        }
    }

    /// Between batches: TIME_WAIT expiry and reconciliation, the event rate, and the
    /// gauges once a second.
    pub(crate) fn tick(&mut self, tracker: Option<&mut Tracker>, now: u64, events: usize) {
        let mut tracker = tracker;
        if let Some(t) = tracker.as_deref_mut() {
            t.tick(now);
        }
        if events > 0 {
            self.kernel_rate.add(now, events as u32);
        }
        if now.saturating_sub(self.last_publish) >= 1_000_000_000 {
            self.publish(tracker, now);
            self.last_publish = now;
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
    fn publish(&mut self, tracker: Option<&mut Tracker>, now: u64) {
        let Some(m) = self.metrics.clone() else {
            return;
        };
        let mut snap = Snapshot {
            events_per_second: self.kernel_rate.per_sec(now),
            ..Snapshot::default()
        };
        if let Some(t) = tracker {
            let o = self.pool_metrics;
            snap.tracked_sockets = t.ledger.tracked_sockets() as u64;
            snap.pools = t
                .ledger
                .pool_views(now)
                .into_iter()
                .filter(|v| v.pool.utilisation() >= o.min_utilisation)
                .take(o.max_pools)
                .map(|v| {
                    let k = &v.pool.key;
                    PoolGauge {
                        netns: k.netns,
                        transport: k.transport.as_str(),
                        source: k.saddr.to_string(),
                        destination: std::net::SocketAddr::new(k.daddr, k.dport).to_string(),
                        size: v.pool.size,
                        used: v.pool.used,
                        time_wait: v.pool.time_wait,
                        reusable: v.pool.reusable,
                        seconds_to_full: v.forecast.seconds_to_full,
                    }
                })
                .collect();
            let mut procs: Vec<(u32, String, u32, u32)> = t
                .ledger
                .processes()
                .iter()
                .filter(|(pid, p)| **pid != 0 && p.held > 0)
                .map(|(pid, p)| (*pid, p.name.clone(), p.held, p.time_wait))
                .collect();
            procs.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            procs.truncate(o.top_processes);
            snap.holders = procs
                .into_iter()
                .map(|(pid, comm, held, time_wait)| HolderGauge {
                    pid,
                    comm,
                    container_id: crate::sys::containers::of_pid(pid).map(|c| c.id),
                    held,
                    time_wait,
                })
                .collect();
        }
        *m.snapshot.lock().unwrap() = snap;
    }
}

fn count(m: &Metrics, r: &Record, pressure: Option<&Pressure>) {
    *m.events
        .lock()
        .unwrap()
        .entry(r.action.as_str())
        .or_default() += 1;
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

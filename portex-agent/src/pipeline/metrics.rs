//! The agent's metrics state. Counters are read where they live (the kernel's per-CPU
//! array, the reader, the sink) at scrape time; what only the output thread knows
//! (events by action, failures, pressure) it counts here, and the pool and process
//! gauges are a snapshot it publishes every second. The agent's own process figures are
//! read from /proc at scrape time, and the health check reads the threads' heartbeats.
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    logic::health::{Health, judge},
    render::prometheus::{self, Page, Snapshot},
    sys::{clock::monotonic_ns, ebpf::Probe, reader::Counts, self_stats, sink::SinkCounts},
};

/// Where the counters live, attached once the programs are loaded.
pub(crate) struct Sources {
    pub(crate) probe: Arc<Probe>,
    pub(crate) counts: Arc<Counts>,
    pub(crate) sink: Option<Arc<SinkCounts>>,
    /// The output thread's heartbeat (the reader's is in `counts`).
    pub(crate) output_beat: Arc<AtomicU64>,
}

#[derive(Default)]
pub(crate) struct Metrics {
    /// Metrics connections closed unanswered: more than http::MAX_CLIENTS at once.
    pub(crate) http_rejected: AtomicU64,
    /// accept() failures on the metrics socket (EMFILE when out of file descriptors).
    pub(crate) http_accept_errors: AtomicU64,
    pub(crate) events: Mutex<BTreeMap<&'static str, u64>>,
    /// (errno, cause, transport) -> count
    pub(crate) failures: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    pub(crate) pool_pressure: Mutex<BTreeMap<&'static str, u64>>,
    /// connect_stalled by cause ("unknown" when none was found).
    pub(crate) stalls: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) snapshot: Mutex<Snapshot>,
    /// None before the programs are loaded and after they are detached.
    pub(crate) sources: Mutex<Option<Sources>>,
}

impl Metrics {
    /// The page of one scrape.
    pub(crate) fn render(&self) -> String {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut page = Page {
            http_rejected: ld(&self.http_rejected),
            http_accept_errors: ld(&self.http_accept_errors),
            events: self.events.lock().unwrap().clone(),
            failures: self.failures.lock().unwrap().clone(),
            pool_pressure: self.pool_pressure.lock().unwrap().clone(),
            stalls: self.stalls.lock().unwrap().clone(),
            snapshot: self.snapshot.lock().unwrap().clone(),
            own: self_stats::read(),
            ..Page::default()
        };
        if let Some(s) = self.sources.lock().unwrap().as_ref() {
            page.kernel_events = ld(&s.counts.events);
            page.user_dropped = ld(&s.counts.user_dropped);
            page.decode_errors = ld(&s.counts.decode_errors);
            page.ringbuf_dropped = s.probe.ringbuf_drops();
            page.kernel_skipped = s.probe.recursion_misses();
            page.map_full = s.probe.map_full();
            page.syscall_hooks = s.probe.syscall_hooks_attached() as u64;
            page.programs = s.probe.programs();
            if let Some(k) = &s.sink {
                page.sink_written = ld(&k.lines_written);
                page.sink_dropped = ld(&k.lines_dropped);
                page.sink_errors = ld(&k.write_errors);
            }
        }
        prometheus::render(&page)
    }

    /// Whether the pipeline's threads still come round (logic::health).
    pub(crate) fn health(&self) -> Health {
        let beats = self.sources.lock().unwrap().as_ref().map(|s| {
            [
                ("reader", s.counts.reader_beat_ns.load(Ordering::Relaxed)),
                ("output", s.output_beat.load(Ordering::Relaxed)),
            ]
        });
        judge(monotonic_ns(), beats.as_ref().map_or(&[][..], |b| &b[..]))
    }
}

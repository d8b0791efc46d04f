//! The one event pipeline, run by `watch`, `agent` and `top`:
//!
//! ```text
//! kernel programs -> ring buffer -> reader thread (AsyncFd; also carries out auto
//! mode's hook switches) -> bounded channel -> output thread: interpret -> enrich ->
//! account (ledger, metrics, arming) -> render -> output (stdout, sink)
//! ```
//!
//! `run` drives it for `watch` and `agent` until a signal, the end of the output,
//! `--count` lines or `--duration`;
//! `top` starts it without a render stage and reads its ledger.
mod account;
mod consumer;
mod emit;
mod enrich;
mod hooks;
pub(crate) mod metrics;
mod nat_scan;
mod nat_watch;
mod run;
pub(crate) mod tracker;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::sync_channel,
    },
    thread::JoinHandle,
};

use anyhow::{Context, Result};
use tokio::sync::{oneshot, watch};

pub(crate) use account::PoolMetricOptions;
pub(crate) use emit::{Emit, Format, Output, Stop, WriteOutput};
pub(crate) use run::{Setup, run};

use self::{
    account::Account,
    consumer::Consumer,
    enrich::Enrich,
    hooks::HookSwitch,
    metrics::Metrics,
    nat_scan::{NatFeed, NatScanner},
    nat_watch::NatWatch,
    tracker::Tracker,
};
use crate::{
    logic::{
        arming::{Arming, HookMode},
        diagnose::Thresholds,
    },
    sys::{
        clock::monotonic_ns,
        ebpf::{LoadOptions, Probe},
        reader::{self, Counts},
    },
};

/// Batches waiting for the output thread; the reader also bounds the events in flight
/// (reader::MAX_IN_FLIGHT). Beyond either, batches are dropped and counted.
const QUEUE_BATCHES: usize = 1024;

pub(crate) struct Options {
    pub(crate) load: LoadOptions,
    /// None: no pool ledger.
    pub(crate) thresholds: Option<Thresholds>,
    /// Auto mode: how long the syscall hooks stay attached after the last reason.
    pub(crate) hooks_linger_ns: u64,
    pub(crate) metrics: Option<Arc<Metrics>>,
    pub(crate) pool_metrics: PoolMetricOptions,
    /// Seconds between NAT scans (pipeline::nat_scan); 0: no NAT scanner.
    pub(crate) nat_scan_s: u64,
}

/// A running pipeline. Dropping it stops the reader and detaches the programs.
pub(crate) struct Pipeline {
    pub(crate) probe: Arc<Probe>,
    pub(crate) counts: Arc<Counts>,
    ledger: Option<Arc<Mutex<Tracker>>>,
    /// The NAT scanner's thread; None when off (or it could not start).
    nat: Option<NatScanner>,
    /// Lines rendered (0 without a render stage).
    pub(crate) written: Arc<AtomicU64>,
    /// When the output thread last came round (clock::monotonic_ns).
    pub(crate) output_beat: Arc<AtomicU64>,
    consumer: Option<JoinHandle<Result<(), Stop>>>,
    reader: Option<JoinHandle<()>>,
    reader_done: Option<oneshot::Receiver<Result<()>>>,
    /// Resolves when the output thread ends by itself (`--count` reached, output gone).
    consumer_done: Option<oneshot::Receiver<()>>,
    stop: watch::Sender<bool>,
}

impl Pipeline {
    /// Loads and attaches the programs, seeds the ledger and starts both threads.
    pub(crate) fn start(opts: Options, emit: Option<Emit>) -> Result<Pipeline> {
        let (probe, ring) = Probe::load(&opts.load)?;
        let probe = Arc::new(probe);
        let counts = Arc::new(Counts::default());
        // Both threads start with a fresh heartbeat; each stamps its own from then on.
        let output_beat = Arc::new(AtomicU64::new(monotonic_ns()));
        counts
            .reader_beat_ns
            .store(monotonic_ns(), Ordering::Relaxed);
        let switch = Arc::new(HookSwitch::default());
        let (tx, rx) = sync_channel(QUEUE_BATCHES);
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, reader_done) = oneshot::channel();
        let reader = {
            let (probe, counts, switch) = (probe.clone(), counts.clone(), switch.clone());
            std::thread::Builder::new()
                .name("portex-ring".into())
                .spawn(move || {
                    let res = read(ring, tx, counts, stop_rx, &switch, &probe);
                    let _ = done_tx.send(res);
                })
                .context("starting the ring-buffer reader")?
        };
        // Seeded after the programs are attached, so nothing falls between the two.
        let ledger = opts
            .thresholds
            .map(|th| Arc::new(Mutex::new(Tracker::new(th))));
        let written = emit.as_ref().map(|e| e.written()).unwrap_or_default();
        let mut account = Account::new();
        account.metrics = opts.metrics;
        account.pool_metrics = opts.pool_metrics;
        account.arming = (opts.load.syscall_hooks == HookMode::Auto)
            .then(|| (Arming::new(opts.hooks_linger_ns), switch));
        // With a ledger, tell `status` who holds TIME_WAIT ports; without the file, it
        // says who could.
        if ledger.is_some() {
            let not_loaded = probe.skipped().iter().map(|s| s.handed_over()).collect();
            account.tw_owners = crate::sys::tw_owners_file::TwOwnersWriter::new(not_loaded)
                .inspect_err(|e| tracing::warn!("status will not name TIME_WAIT owners: {e:#}"))
                .ok();
        }
        let nat = (opts.nat_scan_s > 0)
            .then(|| NatScanner::start(opts.nat_scan_s.saturating_mul(1_000_000_000)))
            .and_then(|r| {
                r.inspect_err(|e| tracing::warn!("no NAT pools in the live views: {e}"))
                    .ok()
            });
        account.nat = nat.as_ref().map(|n| n.feed());
        account.nat_thresholds = opts.thresholds.unwrap_or_default();
        let mut consumer = Consumer {
            enrich: Enrich::new(),
            nat: NatWatch::new(nat.as_ref().map(|n| n.feed())),
            account,
            emit,
            ledger: ledger.clone(),
            beat: output_beat.clone(),
        };
        let (consumer_tx, consumer_done) = oneshot::channel();
        let consumer = std::thread::Builder::new()
            .name("portex-emit".into())
            .spawn(move || {
                let res = consumer.run(rx);
                let _ = consumer_tx.send(());
                res
            })
            .context("starting the output thread")?;
        Ok(Pipeline {
            probe,
            counts,
            ledger,
            nat,
            written,
            output_beat,
            consumer: Some(consumer),
            reader: Some(reader),
            reader_done: Some(reader_done),
            consumer_done: Some(consumer_done),
            stop,
        })
    }

    /// The ledger the output thread keeps (lock it briefly: the thread waits).
    pub(crate) fn ledger(&self) -> Option<&Arc<Mutex<Tracker>>> {
        self.ledger.as_ref()
    }

    /// The NAT scanner's latest view (None when scanning is off).
    pub(crate) fn nat(&self) -> Option<NatFeed> {
        self.nat.as_ref().map(|n| n.feed())
    }

    /// Resolves when the reader ends by itself (an error, or the output thread gone).
    pub(crate) fn reader_done(&mut self) -> Option<oneshot::Receiver<Result<()>>> {
        self.reader_done.take()
    }

    /// Resolves when the output thread ends by itself.
    pub(crate) fn consumer_done(&mut self) -> Option<oneshot::Receiver<()>> {
        self.consumer_done.take()
    }

    /// The reader's error, once it has stopped by itself (for a view that polls).
    pub(crate) fn reader_error(&mut self) -> Option<anyhow::Error> {
        match self.reader_done.as_mut()?.try_recv() {
            Ok(Err(e)) => Some(e),
            Ok(Ok(())) => Some(anyhow::anyhow!("the ring-buffer reader stopped")),
            Err(_) => None,
        }
    }

    /// Events lost: ring buffer full, consumer behind, and runs the kernel skipped.
    pub(crate) fn drops(&self) -> u64 {
        self.probe.ringbuf_drops()
            + self.probe.recursion_misses()
            + self.counts.user_dropped.load(Ordering::Relaxed)
    }

    /// Stops the reader after a last drain; the output thread then finishes the queue.
    pub(crate) fn stop_reader(&mut self) {
        let _ = self.stop.send(true);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    pub(crate) fn consumer_finished(&self) -> bool {
        self.consumer.as_ref().is_none_or(|c| c.is_finished())
    }

    /// The output thread's result, if it has finished (None: left behind, stuck).
    pub(crate) fn join_consumer(&mut self) -> Option<Result<(), Stop>> {
        let c = self.consumer.take()?;
        if !c.is_finished() {
            self.consumer = Some(c);
            return None;
        }
        Some(c.join().unwrap_or_else(|_| {
            Err(Stop::Io(std::io::Error::other(
                "the output thread panicked",
            )))
        }))
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop_reader();
    }
}

/// The reader thread: drains the ring until stopped, and carries out hook switches
/// (it owns nothing else, so a blocked output thread never delays them).
fn read(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    tx: std::sync::mpsc::SyncSender<reader::Batch>,
    counts: Arc<Counts>,
    stop: watch::Receiver<bool>,
    switch: &HookSwitch,
    probe: &Probe,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the reader's async runtime")?;
    rt.block_on(async {
        if let Some(log) = probe.take_kernel_log() {
            tokio::spawn(crate::sys::kernel_log::drain(log));
        }
        let reader = reader::run(ring, tx, counts, stop);
        tokio::pin!(reader);
        loop {
            tokio::select! {
                res = &mut reader => return res,
                _ = switch.notify.notified() => switch.apply(probe),
            }
        }
    })
}

/// Set on SIGHUP for an output that reopens its file.
pub(crate) type Reopen = Arc<AtomicBool>;

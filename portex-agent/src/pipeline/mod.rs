//! The event pipeline shared by `portex watch` and `portex agent`: kernel programs ->
//! ring-buffer reader (tokio, AsyncFd) -> bounded channel -> output thread (interpret,
//! ledger, render) -> writer. Runs until SIGINT/SIGTERM or the writer goes away, then
//! detaches everything and reports what was seen and lost.
pub(crate) mod emitter;
pub(crate) mod metrics;
pub(crate) mod tracker;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::sync_channel,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{Notify, watch},
};

use crate::{
    logic::arming::{Arming, Change, HookMode},
    logic::diagnose::Thresholds,
    logic::filter::Filter,
    pipeline::emitter::{Emitter, Format, Output, Stop},
    pipeline::metrics::Metrics,
    pipeline::tracker::Tracker,
    sys::ebpf::{LoadOptions, Probe},
    sys::reader::{self, Counts},
};

/// Batches waiting for the output thread; the reader also bounds the events in flight
/// (reader::MAX_IN_FLIGHT). Beyond either, batches are dropped and counted.
const QUEUE_BATCHES: usize = 1024;

/// After SIGINT/SIGTERM the output thread finishes what it holds while it makes
/// progress; an output that stays blocked (a pipe nobody reads) must not keep the
/// programs attached. It is left behind after SHUTDOWN_STALL without progress (lines
/// rendered, events taken from the queue), or after SHUTDOWN_MAX in all.
const SHUTDOWN_STALL: Duration = Duration::from_secs(2);
const SHUTDOWN_MAX: Duration = Duration::from_secs(10);

pub(crate) struct Setup {
    pub load: LoadOptions,
    pub format: Format,
    pub filter: Filter,
    /// None: no pool ledger.
    pub thresholds: Option<Thresholds>,
    pub out: Box<dyn Output>,
    pub metrics: Option<(Arc<Metrics>, SocketAddr)>,
    /// Set on SIGHUP (the file sink reopens its file).
    pub on_hup: Option<Arc<AtomicBool>>,
    /// Copied into the metrics before each scrape and at exit: (written, dropped, errors).
    pub sink_counts: Option<Arc<crate::sys::sink::SinkCounts>>,
    pub pool_metrics: crate::pipeline::emitter::PoolMetricOptions,
    /// Auto mode: how long the syscall hooks stay attached after the last reason.
    pub hooks_linger_ns: u64,
}

/// Requests from the output thread, which sees the pools, to attach or detach the
/// syscall hooks (auto mode); the async loop, which owns the probe, carries them out.
#[derive(Default)]
pub(crate) struct HookSwitch {
    want: AtomicBool,
    reason: Mutex<String>,
    notify: Notify,
}

impl HookSwitch {
    pub(crate) fn request(&self, c: Change) {
        *self.reason.lock().unwrap() = c.reason;
        self.want.store(c.armed, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Carries out the latest request, and says so on stderr (the agent's log).
    fn apply(&self, probe: &Probe, metrics: Option<&Metrics>) {
        let want = self.want.load(Ordering::Relaxed);
        let reason = self.reason.lock().unwrap().clone();
        match probe.set_syscall_hooks(want) {
            Ok(()) => eprintln!(
                "portex: syscall hooks {}: {reason}",
                if want { "attached" } else { "detached" }
            ),
            Err(e) => eprintln!("portex: error: cannot change the syscall hooks: {e:#}"),
        }
        if let Some(m) = metrics {
            m.syscall_hooks
                .store(probe.syscall_hooks_attached() as u64, Ordering::Relaxed);
        }
    }
}

pub(crate) fn run(setup: Setup) -> Result<()> {
    let (probe, ring) = Probe::load(&setup.load)?;
    let switch = Arc::new(HookSwitch::default());
    let arming = (setup.load.syscall_hooks == HookMode::Auto)
        .then(|| (Arming::new(setup.hooks_linger_ns), switch.clone()));
    if let Some((m, _)) = &setup.metrics {
        m.syscall_hooks
            .store(probe.syscall_hooks_attached() as u64, Ordering::Relaxed);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = match &setup.metrics {
        Some((_, addr)) => Some(
            rt.block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("cannot serve metrics on {addr}"))?,
        ),
        None => None,
    };

    let counts = Arc::new(Counts::default());
    let (tx, rx) = sync_channel(QUEUE_BATCHES);
    // Seeded after the programs are attached, so nothing falls between the two.
    let tracker = setup.thresholds.map(Tracker::new);
    let (format, filter, out) = (setup.format, setup.filter, setup.out);
    let metrics = setup.metrics.as_ref().map(|(m, _)| m.clone());
    let em_metrics = metrics.clone();
    let pool_metrics = setup.pool_metrics;
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let em_written = written.clone();
    let consumer = std::thread::Builder::new()
        .name("portex-emit".into())
        .spawn(move || {
            let mut em = Emitter::new(format, filter, out, tracker);
            em.metrics = em_metrics;
            em.pool_metrics = pool_metrics;
            em.arming = arming;
            em.written = em_written;
            em.run(rx)
        })
        .context("starting the output thread")?;

    eprintln!(
        "portex: watching TCP connect/bind/close on this host ({} programs attached, syscall hooks {}){}; stop with Ctrl-C",
        probe.attached(),
        setup.load.syscall_hooks,
        listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| format!(", metrics on http://{a}/metrics"))
            .unwrap_or_default()
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader_counts = counts.clone();
    let probe = Arc::new(probe);
    let sync = Sync {
        probe: probe.clone(),
        counts: counts.clone(),
        metrics: metrics.clone(),
        sink: setup.sink_counts.clone(),
    };
    let on_hup = setup.on_hup.clone();
    let hook_probe = probe.clone();
    rt.block_on(async move {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let reader = tokio::spawn(reader::run(ring, tx, reader_counts, stop_rx));
        tokio::pin!(reader);
        if let (Some(l), Some(m)) = (listener, metrics.clone()) {
            tokio::spawn(crate::sys::http::serve(l, m));
        }
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                // SIGHUP reopens the output file; without one (watch), it means the
                // terminal went away.
                _ = hup.recv() => match &on_hup {
                    Some(h) => h.store(true, Ordering::Relaxed),
                    None => break,
                },
                _ = every_second.tick() => sync.copy(),
                _ = switch.notify.notified() => switch.apply(&hook_probe, metrics.as_deref()),
                res = &mut reader => return res?,
            }
        }
        let _ = stop_tx.send(true);
        reader.await?
    })?;

    let progress = || {
        (
            written.load(Ordering::Relaxed),
            counts.in_flight.load(Ordering::Relaxed),
        )
    };
    let start = std::time::Instant::now();
    let (mut last, mut moved_at) = (progress(), start);
    while !consumer.is_finished() && start.elapsed() < SHUTDOWN_MAX {
        std::thread::sleep(Duration::from_millis(10));
        let now = progress();
        if now != last {
            (last, moved_at) = (now, std::time::Instant::now());
        } else if moved_at.elapsed() > SHUTDOWN_STALL {
            break;
        }
    }
    let res = if consumer.is_finished() {
        consumer
            .join()
            .map_err(|_| anyhow::anyhow!("the output thread panicked"))?
    } else {
        // What the output thread had not taken yet is lost: count it.
        let left = counts.in_flight.swap(0, Ordering::Relaxed);
        counts.user_dropped.fetch_add(left, Ordering::Relaxed);
        eprintln!(
            "portex: warning: the output thread is stuck (blocked output or a long \
             reconciliation); exiting without it, {left} queued events counted as dropped"
        );
        Ok(())
    };
    let written = written.load(Ordering::Relaxed);
    let ringbuf = probe.ringbuf_drops();
    let skipped = probe.recursion_misses();
    let map_full = probe.map_full();
    drop(probe); // detaches every program
    let user = counts.user_dropped.load(Ordering::Relaxed);
    let decode = counts.decode_errors.load(Ordering::Relaxed);
    let sink = setup
        .sink_counts
        .as_ref()
        .map(|s| {
            format!(
                "; output: {} lines written, {} dropped, {} write errors",
                s.lines_written.load(Ordering::Relaxed),
                s.lines_dropped.load(Ordering::Relaxed),
                s.write_errors.load(Ordering::Relaxed)
            )
        })
        .unwrap_or_default();
    // A run the kernel skipped (recursion) is an event that may be missing: it is
    // part of the headline loss, not a footnote.
    eprintln!(
        "portex: {} kernel events, {written} lines rendered; dropped: {} (ring buffer full {ringbuf}, \
         user space {user}, undecodable {decode}, kernel runs skipped {skipped}); \
         socket map full {map_full}{sink}",
        counts.events.load(Ordering::Relaxed),
        ringbuf + user + decode + skipped,
    );
    match res {
        Ok(()) | Err(Stop::BrokenPipe) => Ok(()),
        Err(Stop::Io(e)) => Err(e).context("writing events"),
    }
}

/// Copies loss counters from the kernel, the reader and the sink into the metrics.
struct Sync {
    probe: Arc<Probe>,
    counts: Arc<Counts>,
    metrics: Option<Arc<Metrics>>,
    sink: Option<Arc<crate::sys::sink::SinkCounts>>,
}

impl Sync {
    fn copy(&self) {
        let Some(m) = &self.metrics else { return };
        let set = |a: &std::sync::atomic::AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&m.ringbuf_dropped, self.probe.ringbuf_drops());
        set(&m.kernel_skipped, self.probe.recursion_misses());
        set(&m.map_full, self.probe.map_full());
        set(&m.kernel_events, self.counts.events.load(Ordering::Relaxed));
        set(
            &m.user_dropped,
            self.counts.user_dropped.load(Ordering::Relaxed),
        );
        set(
            &m.decode_errors,
            self.counts.decode_errors.load(Ordering::Relaxed),
        );
        if let Some(s) = &self.sink {
            set(&m.sink_written, s.lines_written.load(Ordering::Relaxed));
            set(&m.sink_dropped, s.lines_dropped.load(Ordering::Relaxed));
            set(&m.sink_errors, s.write_errors.load(Ordering::Relaxed));
        }
    }
}

//! `portex top`: the live view. One row per process (connects/s, closes/s, ports held,
//! TIME_WAIT, failures, fullest pool), a second tab per pool with its forecast.

mod ui;

pub(crate) use crate::render::top::{SortBy, pool_rows, process_rows, text_frame};

use std::{
    io::IsTerminal,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    cmd::cli::TopArgs,
    logic::diagnose::Thresholds,
    logic::lifecycle::interpret,
    pipeline::tracker::Tracker,
    sys::clock::boot_now_ns,
    sys::ebpf::{LoadOptions, Probe},
    sys::procinfo::ProcNames,
    sys::reader::{self, Batch, Counts},
};

/// The ledger fed by the ring buffer, for a view that polls it.
pub(crate) struct Feed {
    pub tracker: Tracker,
    names: ProcNames,
    rx: mpsc::Receiver<Batch>,
    pub counts: Arc<Counts>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    reader: Option<std::thread::JoinHandle<()>>,
    probe: Probe,
}

impl Feed {
    pub(crate) fn start(thresholds: Thresholds) -> Result<Feed> {
        let (probe, ring) = Probe::load(&LoadOptions::default())?;
        let tracker = Tracker::new(thresholds);
        let counts = Arc::new(Counts::default());
        let (tx, rx) = mpsc::sync_channel(1024);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let c = counts.clone();
        let reader = std::thread::Builder::new()
            .name("portex-ring".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    let _ = rt.block_on(reader::run(ring, tx, c, stop_rx));
                }
            })
            .context("starting the ring-buffer reader")?;
        Ok(Feed {
            tracker,
            names: ProcNames::new(5_000_000_000),
            rx,
            counts,
            stop: Some(stop_tx),
            reader: Some(reader),
            probe,
        })
    }

    /// Applies everything that arrived; expires and reconciles when due.
    pub(crate) fn pump(&mut self) {
        let mut recs = Vec::new();
        while let Ok(batch) = self.rx.try_recv() {
            for ev in batch.iter() {
                interpret(ev, |r| recs.push(r));
            }
        }
        let now = boot_now_ns();
        for r in &recs {
            let (name, start) =
                self.names
                    .lookup(r.process.pid, now, &r.process.thread_name.name());
            self.tracker.on_record(r, start, &name, now);
        }
        self.tracker.tick(now);
    }

    /// Events lost: ring buffer full, consumer behind, and runs the kernel skipped.
    pub(crate) fn drops(&self) -> u64 {
        self.probe.ringbuf_drops()
            + self.probe.recursion_misses()
            + self
                .counts
                .user_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

pub(crate) fn run(args: TopArgs) -> Result<()> {
    let interactive = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if !args.once && !interactive {
        bail!("portex top needs a terminal; use `portex top --once` to print one frame as text");
    }
    let th = Thresholds::default();
    let mut feed = Feed::start(th)?;
    if args.once {
        let deadline = Instant::now() + Duration::from_secs_f64(args.interval);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            feed.pump();
        }
        let now = boot_now_ns();
        let procs = process_rows(&mut feed.tracker.ledger, now, SortBy::default(), "");
        let pools = pool_rows(&mut feed.tracker.ledger, now, "");
        print!("{}", text_frame(&procs, &pools, args.rows));
        return Ok(());
    }
    ui::run(&mut feed, &args)
}

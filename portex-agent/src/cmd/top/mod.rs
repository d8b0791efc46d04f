//! `portex top`: the live view. One row per process (connects/s, closes/s, ports held,
//! TIME_WAIT, failures, fullest pool), a second tab per pool with its forecast, and under
//! either table the detail of the selected row: its pool's occupancy over the last
//! minutes, its holders, and the diagnoses with their fixes. It runs the one pipeline
//! without a render stage and reads the ledger it keeps.
mod detail;
mod ui;

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{
    cmd::cli::TopArgs,
    logic::diagnose::Thresholds,
    pipeline::{Options, Pipeline, PoolMetricOptions, tracker::Tracker},
    render::top::{SortBy, frame_rows, text_frame},
    sys::{clock::boot_now_ns, ebpf::LoadOptions},
};

/// The pipeline behind the view.
pub(crate) struct Feed {
    pipeline: Pipeline,
}

impl Feed {
    fn start() -> Result<Feed> {
        let pipeline = Pipeline::start(
            Options {
                load: LoadOptions::default(),
                thresholds: Some(Thresholds::default()),
                hooks_linger_ns: crate::logic::arming::LINGER_NS,
                metrics: None,
                pool_metrics: PoolMetricOptions::default(),
                nat_scan_s: crate::logic::limits::NAT_SCAN_S.default,
            },
            None,
        )?;
        Ok(Feed { pipeline })
    }

    /// Runs `f` on the ledger; fails once the reader has stopped (its error).
    pub(crate) fn with_ledger<T>(&mut self, f: impl FnOnce(&mut Tracker) -> T) -> Result<T> {
        if let Some(e) = self.pipeline.reader_error() {
            return Err(e.context("reading kernel events"));
        }
        let ledger = self.pipeline.ledger().expect("top always keeps a ledger");
        Ok(f(&mut ledger.lock().unwrap()))
    }

    /// The NAT scanner's last view (its thread reads conntrack, never this one).
    pub(crate) fn nat(&self) -> Option<std::sync::Arc<crate::logic::nat_view::NatView>> {
        self.pipeline.nat().and_then(|f| f.latest())
    }

    /// Events lost: ring buffer full, consumer behind, and runs the kernel skipped.
    pub(crate) fn drops(&self) -> u64 {
        self.pipeline.drops()
    }
}

pub(crate) fn run(args: TopArgs) -> Result<()> {
    let interactive = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if !args.once && !interactive {
        bail!("portex top needs a terminal; use `portex top --once` to print one frame as text");
    }
    let mut feed = Feed::start()?;
    if args.once {
        let deadline = Instant::now() + Duration::from_secs_f64(args.interval);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let nat = feed.nat();
        let frame = feed.with_ledger(|t| {
            let now = boot_now_ns();
            let frame = frame_rows(
                &mut t.ledger,
                now,
                SortBy::default(),
                &Thresholds::default(),
                nat.as_deref(),
            );
            text_frame(&frame, args.rows)
        })?;
        print!("{frame}");
        return Ok(());
    }
    ui::run(&mut feed, &args)
}

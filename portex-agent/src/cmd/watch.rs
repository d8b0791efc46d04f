//! `portex watch`: the event stream on stdout, until SIGINT/SIGTERM, SIGHUP (the
//! terminal closed) or the reader of stdout leaves.
use anyhow::Result;

use crate::{
    cmd::cli::WatchArgs,
    logic::filter::Filter,
    pipeline::emitter::{Format, PoolMetricOptions, WriteOutput},
    pipeline::{self, Setup},
    sys::ebpf::LoadOptions,
};

pub(crate) fn run(args: WatchArgs) -> Result<()> {
    let thresholds = args.thresholds.thresholds()?;
    if let Some(pid) = args.pid
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        eprintln!(
            "portex: warning: no process {pid} is running now; its events are shown if it appears"
        );
    }
    let stdout = std::io::stdout();
    pipeline::run(Setup {
        load: LoadOptions {
            ring_bytes: args.ring_kib * 1024,
            syscall_hooks: args.hook_mode(),
            ..LoadOptions::default()
        },
        format: if args.json {
            Format::Json
        } else {
            Format::Text
        },
        filter: Filter {
            pid: args.pid,
            comm: args.comm.clone(),
            failures_only: args.failures_only,
        },
        thresholds: (!args.no_pools).then_some(thresholds),
        out: Box::new(WriteOutput(std::io::BufWriter::with_capacity(
            1 << 16,
            stdout,
        ))),
        metrics: None,
        on_hup: None,
        sink_counts: None,
        pool_metrics: PoolMetricOptions::default(),
        hooks_linger_ns: crate::logic::arming::LINGER_NS,
    })
}

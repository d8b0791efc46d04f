//! `portex watch`: the event stream on stdout, until SIGINT/SIGTERM, SIGHUP (the
//! terminal closed) or the reader of stdout leaves.
use anyhow::Result;

use crate::{
    cmd::cli::WatchArgs,
    logic::filter::Filter,
    pipeline::{self, Emit, Format, Options, PoolMetricOptions, Setup, WriteOutput},
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
    let out = WriteOutput(std::io::BufWriter::with_capacity(1 << 16, stdout));
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let filter = Filter {
        pid: args.pid,
        comm: args.comm.clone(),
        failures_only: args.failures_only,
    };
    pipeline::run(Setup {
        pipeline: Options {
            load: LoadOptions {
                ring_bytes: args.ring_kib * 1024,
                syscall_hooks: args.hook_mode(),
                ..LoadOptions::default()
            },
            thresholds: (!args.no_pools).then_some(thresholds),
            hooks_linger_ns: crate::logic::arming::LINGER_NS,
            metrics: None,
            pool_metrics: PoolMetricOptions::default(),
        },
        emit: Emit::new(format, filter, Box::new(out)),
        metrics_addr: None,
        on_hup: None,
        sink_counts: None,
    })
}

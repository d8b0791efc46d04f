//! `portex watch`: the event stream on stdout, until SIGINT/SIGTERM, SIGHUP (the
//! terminal closed) or the reader of stdout leaves.
use anyhow::Result;

use crate::{
    cmd::{cli::WatchArgs, config::resolve_filter},
    pipeline::{self, Emit, Format, Options, PoolMetricOptions, Setup, WriteOutput},
    sys::ebpf::LoadOptions,
};

pub(crate) fn run(args: WatchArgs) -> Result<()> {
    let thresholds = args.thresholds.thresholds()?;
    let select = resolve_filter(&args.filter)?;
    if select.netns.is_some() && args.no_pools {
        anyhow::bail!(
            "--netns needs the pool ledger, which names each event's namespace: drop --no-pools"
        );
    }
    let filter = super::event_filter(&select)?;
    if let Some(pid) = filter.pid
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        tracing::warn!("no process {pid} is running now; its events are shown if it appears");
    }
    let stdout = std::io::stdout();
    let out = WriteOutput(std::io::BufWriter::with_capacity(1 << 16, stdout));
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
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
            nat_scan_s: args.nat_scan,
        },
        emit: Emit::new(format, filter, Box::new(out)).with_count(select.count),
        metrics_addr: None,
        on_hup: None,
        sink_counts: None,
        duration: select.duration,
    })
}

//! `portex agent`: the long-running service. NDJSON to a file or stdout for log
//! shippers, Prometheus metrics for a fleet.
use std::{path::PathBuf, sync::Arc};

use anyhow::Result;

use crate::{
    cmd::cli::AgentArgs,
    cmd::config,
    logic::diagnose::Thresholds,
    pipeline::{self, Emit, Format, Options, Output, PoolMetricOptions, Setup, metrics::Metrics},
    sys::ebpf::LoadOptions,
    sys::sink::{Chunk, Sink, SinkOptions, Target},
};

pub(crate) fn run(args: AgentArgs) -> Result<()> {
    let file = match &args.config {
        Some(p) => config::load_file(p)?,
        None => AgentArgs::default(),
    };
    let c = config::resolve(&args, file)?;
    let filter = super::event_filter(&c.filter)?;
    let target = if c.output == "-" {
        Target::Stdout
    } else {
        Target::File(PathBuf::from(&c.output))
    };
    let sink = Sink::start(SinkOptions {
        target,
        rotate_size: c.rotate_size,
        rotate_keep: c.rotate_keep,
        queue_bytes: c.queue_bytes,
    })?;
    let on_hup = sink.reopen.clone();
    let sink_counts = sink.counts.clone();
    pipeline::run(Setup {
        pipeline: Options {
            load: LoadOptions {
                ring_bytes: c.ring_kib * 1024,
                syscall_hooks: c.syscall_hooks,
                accepted: c.accepted,
                ..LoadOptions::default()
            },
            thresholds: Some(Thresholds {
                warning: c.warn / 100.0,
                critical: c.critical / 100.0,
            }),
            hooks_linger_ns: c.syscall_hooks_linger.saturating_mul(1_000_000_000),
            metrics: c.metrics.map(|_| Arc::new(Metrics::default())),
            pool_metrics: PoolMetricOptions {
                min_utilisation: c.metrics_pool_min / 100.0,
                max_pools: c.metrics_max_pools,
                top_processes: c.metrics_top_processes,
            },
            nat_scan_s: c.nat_scan,
        },
        emit: Emit::new(Format::Json, filter, Box::new(SinkWriter { sink }))
            .with_count(c.filter.count),
        metrics_addr: c.metrics,
        on_hup: Some(on_hup),
        sink_counts: Some(sink_counts),
        duration: c.filter.duration,
    })
}

/// The output thread's writer: hands each batch of lines to the sink as one chunk.
/// Never blocks: the sink queue drops and counts.
struct SinkWriter {
    sink: Sink,
}

impl Output for SinkWriter {
    fn write_batch(&mut self, buf: &mut String, lines: u64) -> std::io::Result<()> {
        // Hand the buffer over instead of copying it; the next batch gets a new one.
        let next = self
            .sink
            .spare_buffer()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| String::with_capacity(buf.len()));
        let bytes = std::mem::replace(buf, next).into_bytes();
        self.sink.send(Chunk { bytes, lines });
        Ok(())
    }
}

//! `portex watch`: the event stream, until SIGINT/SIGTERM or the reader of stdout leaves.
use std::sync::{Arc, atomic::Ordering, mpsc::sync_channel};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    cli::WatchArgs,
    ebpf::{LoadOptions, Probe},
    emitter::{Emitter, Format, Stop},
    filter::Filter,
    reader::{self, Counts},
    tracker::Tracker,
};

/// Batches waiting for the consumer; beyond this, batches are dropped and counted.
const QUEUE_BATCHES: usize = 1024;

pub fn run(args: WatchArgs) -> Result<()> {
    let opts = LoadOptions {
        ring_bytes: args.ring_kib * 1024,
        syscall_hooks: !args.no_syscall_hooks,
        ..LoadOptions::default()
    };
    let (probe, ring) = Probe::load(&opts)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let counts = Arc::new(Counts::default());
    let (tx, rx) = sync_channel(QUEUE_BATCHES);
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
    // Seeded after the programs are attached, so nothing falls between the two.
    let tracker = (!args.no_pools).then(|| Tracker::new(args.thresholds.thresholds()));
    let consumer = std::thread::Builder::new()
        .name("portex-emit".into())
        .spawn(move || {
            let stdout = std::io::stdout().lock();
            let mut em = Emitter::new(
                format,
                filter,
                std::io::BufWriter::with_capacity(1 << 16, stdout),
                tracker,
            );
            let res = em.run(rx);
            (em.written, res)
        })
        .context("starting the output thread")?;

    eprintln!(
        "portex: watching TCP connect/bind/close on this host ({} programs attached); stop with Ctrl-C",
        probe.attached().len()
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader_counts = counts.clone();
    rt.block_on(async move {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let reader = tokio::spawn(reader::run(ring, tx, reader_counts, stop_rx));
        tokio::pin!(reader);
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            res = &mut reader => return res?,
        }
        let _ = stop_tx.send(true);
        reader.await?
    })?;

    let (written, res) = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("the output thread panicked"))?;
    let ringbuf = probe.ringbuf_drops();
    let skipped = probe.recursion_misses();
    let map_full = probe.map_full();
    drop(probe); // detaches every program
    let user = counts.user_dropped.load(Ordering::Relaxed);
    let decode = counts.decode_errors.load(Ordering::Relaxed);
    eprintln!(
        "portex: {} kernel events, {written} lines written; dropped: {} (ring buffer full {ringbuf}, \
         user space {user}, undecodable {decode}); kernel runs skipped (recursion) {skipped}; \
         socket map full {map_full}",
        counts.events.load(Ordering::Relaxed),
        ringbuf + user + decode,
    );
    match res {
        Ok(()) | Err(Stop::BrokenPipe) => Ok(()),
        Err(Stop::Io(e)) => Err(e).context("writing events to stdout"),
    }
}

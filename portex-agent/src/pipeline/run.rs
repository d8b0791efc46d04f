//! `watch` and `agent`: the pipeline until SIGINT/SIGTERM (or SIGHUP without a file to
//! reopen) or the end of the output, then a bounded shutdown and the summary of what
//! was seen and lost.
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use super::{Emit, Options, Pipeline, Reopen, Stop, metrics::Sources};
use crate::sys::sink::SinkCounts;

/// After SIGINT/SIGTERM the output thread finishes what it holds while it makes
/// progress; an output that stays blocked (a pipe nobody reads) must not keep the
/// programs attached. It is left behind after SHUTDOWN_STALL without progress (lines
/// rendered, events taken from the queue), or after SHUTDOWN_MAX in all.
const SHUTDOWN_STALL: Duration = Duration::from_secs(2);
const SHUTDOWN_MAX: Duration = Duration::from_secs(10);

pub(crate) struct Setup {
    pub(crate) pipeline: Options,
    pub(crate) emit: Emit,
    /// Where to serve the metrics (Options::metrics says what).
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Set on SIGHUP (the file sink reopens its file).
    pub(crate) on_hup: Option<Reopen>,
    /// The sink's counters, for the metrics and the summary.
    pub(crate) sink_counts: Option<Arc<SinkCounts>>,
    /// Stop after this long (`--duration`), as on SIGINT.
    pub(crate) duration: Option<Duration>,
}

pub(crate) fn run(setup: Setup) -> Result<()> {
    let metrics = setup.pipeline.metrics.clone();
    let hooks = setup.pipeline.load.syscall_hooks;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Signals are caught from here on: a SIGHUP or SIGTERM right after the "watching"
    // line (a supervisor, a test) must stop portex cleanly, not kill it.
    let (mut int, mut term, mut hup) = {
        let _rt = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        )
    };
    let mut p = Pipeline::start(setup.pipeline, Some(setup.emit))?;
    let listener = match setup.metrics_addr {
        Some(addr) => Some(
            rt.block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("cannot serve metrics on {addr}"))?,
        ),
        None => None,
    };
    if let Some(m) = &metrics {
        *m.sources.lock().unwrap() = Some(Sources {
            probe: p.probe.clone(),
            counts: p.counts.clone(),
            sink: setup.sink_counts.clone(),
            output_beat: p.output_beat.clone(),
        });
    }
    tracing::info!(
        "watching TCP connect/bind/close on this host ({} programs attached, syscall hooks {hooks}){}; stop with Ctrl-C",
        p.probe.attached(),
        listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| format!(", metrics on http://{a}/metrics"))
            .unwrap_or_default()
    );
    let reader_done = p.reader_done();
    let consumer_done = p.consumer_done();
    let on_hup = setup.on_hup.clone();
    let duration = setup.duration;
    let reader_res = rt.block_on(async {
        if let (Some(l), Some(m)) = (listener, metrics.clone()) {
            tokio::spawn(crate::sys::http::serve(l, m));
        }
        let (Some(mut done), Some(mut output_done)) = (reader_done, consumer_done) else {
            return Ok(());
        };
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = int.recv() => return Ok(()),
                _ = term.recv() => return Ok(()),
                // SIGHUP reopens the output file; without one (watch), it means the
                // terminal went away.
                _ = hup.recv() => match &on_hup {
                    Some(h) => h.store(true, Ordering::Relaxed),
                    None => return Ok(()),
                },
                res = &mut done => return res.unwrap_or(Ok(())),
                // --count reached, or the output went away: the reader would only
                // notice at its next batch.
                _ = &mut output_done => return Ok(()),
                _ = &mut deadline => return Ok(()),
            }
        }
    });
    p.stop_reader();
    let consumer = wait_for_output(&mut p);
    if let Some(m) = &metrics {
        *m.sources.lock().unwrap() = None;
    }
    summary(&p, setup.sink_counts.as_deref());
    drop(p); // detaches every program
    reader_res?;
    match consumer {
        Ok(()) | Err(Stop::BrokenPipe | Stop::CountReached) => Ok(()),
        Err(Stop::Io(e)) => Err(e).context("writing events"),
    }
}

/// Lets the output thread finish while it makes progress; a stuck one is left behind
/// and what it had not taken is counted as dropped.
fn wait_for_output(p: &mut Pipeline) -> Result<(), Stop> {
    let progress = |p: &Pipeline| {
        (
            p.written.load(Ordering::Relaxed),
            p.counts.in_flight.load(Ordering::Relaxed),
        )
    };
    let start = Instant::now();
    let (mut last, mut moved_at) = (progress(p), start);
    while !p.consumer_finished() && start.elapsed() < SHUTDOWN_MAX {
        std::thread::sleep(Duration::from_millis(10));
        let now = progress(p);
        if now != last {
            (last, moved_at) = (now, Instant::now());
        } else if moved_at.elapsed() > SHUTDOWN_STALL {
            break;
        }
    }
    if let Some(res) = p.join_consumer() {
        return res;
    }
    let left = p.counts.in_flight.swap(0, Ordering::Relaxed);
    p.counts.user_dropped.fetch_add(left, Ordering::Relaxed);
    tracing::warn!(
        "the output thread is stuck (blocked output or a long reconciliation); exiting \
         without it, {left} queued events counted as dropped"
    );
    Ok(())
}

/// One line on stderr: what was seen, rendered and lost, and where. Its text is read
/// by scripts and tests; in JSON log format the figures are fields too.
fn summary(p: &Pipeline, sink: Option<&SinkCounts>) {
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let events = n(&p.counts.events);
    let written = n(&p.written);
    let ringbuf = p.probe.ringbuf_drops();
    let skipped = p.probe.recursion_misses();
    let map_full = p.probe.map_full();
    let user = n(&p.counts.user_dropped);
    let decode = n(&p.counts.decode_errors);
    let dropped = ringbuf + user + decode + skipped;
    let mut fields = serde_json::Map::new();
    let mut field = |k: &str, v: u64| {
        fields.insert(k.into(), v.into());
    };
    field("kernel_events", events);
    field("lines_rendered", written);
    field("dropped", dropped);
    field("dropped_ring_buffer_full", ringbuf);
    field("dropped_user_space", user);
    field("dropped_undecodable", decode);
    field("dropped_kernel_runs_skipped", skipped);
    field("socket_map_full", map_full);
    let sink = sink
        .map(|s| {
            let (w, d, e) = (n(&s.lines_written), n(&s.lines_dropped), n(&s.write_errors));
            field("output_lines_written", w);
            field("output_lines_dropped", d);
            field("output_write_errors", e);
            format!("; output: {w} lines written, {d} dropped, {e} write errors")
        })
        .unwrap_or_default();
    // A run the kernel skipped (recursion) is an event that may be missing: it is
    // part of the headline loss, not a footnote.
    crate::sys::logging::always(
        &format!(
            "{events} kernel events, {written} lines rendered; dropped: {dropped} (ring buffer \
             full {ringbuf}, user space {user}, undecodable {decode}, kernel runs skipped \
             {skipped}); socket map full {map_full}{sink}"
        ),
        fields,
    );
}

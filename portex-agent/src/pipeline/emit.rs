//! The render stage: filters records, renders lines (NDJSON or text) into a buffer
//! handed to the output once per batch, and warns on stderr (the logger) about
//! EADDRNOTAVAIL: the first failures of a pool at once, the rest summed up
//! (logic::warn_limit).
use std::{
    io::{ErrorKind, Write},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    logic::{
        clock::WallClock,
        errno::EADDRNOTAVAIL,
        filter::Filter,
        ledger::Pressure,
        model::{Record, Transport},
        nat_view::NatPressure,
        warn_limit::{LIMITS, Summary, Verdict, WarnLimit},
    },
    render::{View, json, text},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

/// Where the output thread's lines go: one call per batch, with its line count. The
/// output may take the buffer (leaving an empty one) instead of copying it.
pub(crate) trait Output: Send {
    fn write_batch(&mut self, buf: &mut String, lines: u64) -> std::io::Result<()>;
}

/// Any `Write` (stdout) as an Output.
pub(crate) struct WriteOutput<W>(pub(crate) W);

impl<W: Write + Send> Output for WriteOutput<W> {
    fn write_batch(&mut self, buf: &mut String, _lines: u64) -> std::io::Result<()> {
        self.0.write_all(buf.as_bytes())?;
        self.0.flush()
    }
}

impl Output for Box<dyn Output> {
    fn write_batch(&mut self, buf: &mut String, lines: u64) -> std::io::Result<()> {
        (**self).write_batch(buf, lines)
    }
}

/// Why the consumer stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The reader of our output went away (`portex watch | head`): a normal end.
    BrokenPipe,
    /// `--count` lines were written: a normal end.
    CountReached,
    Io(std::io::Error),
}

pub(crate) struct Emit {
    format: Format,
    /// `ecs.version` and `host.*`, the same on every JSON line.
    header: json::Header,
    filter: Filter,
    clock: WallClock,
    out: Box<dyn Output>,
    line: String,
    lines_in_buffer: u64,
    /// Lines still to write before stopping (`--count`); None: no limit.
    left: Option<u64>,
    /// Lines rendered, for the summary; published per line so that the summary can be
    /// printed while this thread is stuck on a blocked output.
    written: Arc<AtomicU64>,
    /// Which EADDRNOTAVAIL warnings are written one by one.
    warnings: WarnLimit<PoolId>,
    /// The output thread's clock (boot ns), set by `tick`.
    now: u64,
}

/// A pool as far as a failed connect tells it: namespace, destination, transport.
type PoolId = (Option<u64>, Option<SocketAddr>, Transport);

impl Emit {
    pub(crate) fn new(format: Format, filter: Filter, out: Box<dyn Output>) -> Emit {
        let host = crate::sys::host::identity();
        Emit {
            format,
            header: json::Header::new(&host.name, host.id.as_deref()),
            filter,
            clock: crate::sys::clock::wall_clock(),
            out,
            line: String::with_capacity(4096),
            lines_in_buffer: 0,
            left: None,
            written: Arc::default(),
            warnings: WarnLimit::new(LIMITS),
            now: 0,
        }
    }

    /// Once per round of the output thread: the time, and the summaries of the warnings
    /// that were not written one by one.
    pub(crate) fn tick(&mut self, now: u64) {
        self.now = now;
        for s in self.warnings.tick(now) {
            warn_summary(&s);
        }
    }

    /// At the end of the run: the summaries of what is still counted.
    pub(crate) fn finish(&mut self, now: u64) {
        for s in self.warnings.finish(now) {
            warn_summary(&s);
        }
    }

    /// Stops after `count` lines (events and pool_pressure alarms that pass the filter).
    pub(crate) fn with_count(mut self, count: Option<u64>) -> Emit {
        self.left = count;
        self
    }

    pub(crate) fn written(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    /// Renders one record (when the filter takes it) and its pressure crossing.
    pub(crate) fn record(&mut self, r: &Record, name: &str, pressure: Option<&Pressure>) {
        if self.left == Some(0) {
            return;
        }
        let action = self.filter.lines.action_of(r);
        if let Some(action) = action
            && self.filter.accepts(r, name)
        {
            if r.errno == Some(EADDRNOTAVAIL) {
                let pool = (r.netns, r.destination, r.transport);
                if self.warnings.failure(&pool, r.process.pid, name, self.now) == Verdict::Show {
                    warn_addrnotavail(r, name);
                }
            }
            // A connection's line is its close's record under another action.
            let as_connection;
            let r = if action == r.action {
                r
            } else {
                as_connection = Record {
                    action,
                    ..r.clone()
                };
                &as_connection
            };
            let view = View {
                rec: r,
                unix_ns: self.clock.to_unix_ns(r.ts_ns),
                process_name: name,
            };
            match self.format {
                Format::Json => json::write_line(&view, &self.header, &mut self.line),
                Format::Text => text::write_line(&view, &mut self.line),
            }
            self.count_line();
        }
        if let Some(p) = pressure
            && self.left != Some(0)
            && self.filter.accepts_pressure(
                &p.view.pool.key,
                p.view.pool.holders.iter().filter_map(|h| h.owner.as_ref()),
                r,
            )
        {
            let unix = self.clock.to_unix_ns(r.ts_ns);
            match self.format {
                Format::Json => json::write_pressure(p, unix, &self.header, &mut self.line),
                Format::Text => text::write_pressure(p, unix, &mut self.line),
            }
            self.count_line();
        }
    }

    /// A NAT pool's threshold crossing (found by the NAT scanner), when the filter
    /// takes it; stamped with the output thread's clock.
    pub(crate) fn nat_pressure(&mut self, p: &NatPressure) {
        if self.left == Some(0) || !self.filter.accepts_nat_pressure(&p.pool.key) {
            return;
        }
        let unix = self.clock.to_unix_ns(self.now);
        match self.format {
            Format::Json => json::write_nat_pressure(p, unix, &self.header, &mut self.line),
            Format::Text => text::write_nat_pressure(p, unix, &mut self.line),
        }
        self.count_line();
    }

    fn count_line(&mut self) {
        self.written.fetch_add(1, Ordering::Relaxed);
        self.lines_in_buffer += 1;
        if let Some(n) = self.left.as_mut() {
            *n = n.saturating_sub(1);
        }
    }

    /// Hands the batch's lines to the output; ends the run once `--count` lines are out.
    pub(crate) fn flush(&mut self) -> Result<(), Stop> {
        if !self.line.is_empty() {
            let res = self.out.write_batch(&mut self.line, self.lines_in_buffer);
            self.line.clear();
            self.lines_in_buffer = 0;
            res.map_err(|e| {
                if e.kind() == ErrorKind::BrokenPipe {
                    Stop::BrokenPipe
                } else {
                    Stop::Io(e)
                }
            })?;
        }
        if self.left == Some(0) {
            return Err(Stop::CountReached);
        }
        Ok(())
    }
}

/// An EADDRNOTAVAIL goes to stderr the moment it is seen, whatever the output format:
/// it is the incident the user is hunting (the first ones of a pool; the rest are
/// summed up by `warn_summary`).
fn warn_addrnotavail(r: &Record, name: &str) {
    let mut safe = String::new();
    text::sanitize(name, &mut safe);
    let cause = r.cause.map(|c| c.describe()).unwrap_or("unknown cause");
    tracing::warn!(
        pid = r.process.pid,
        process = %safe,
        destination = %Dest(r.destination),
        transport = %r.transport.as_str(),
        netns = r.netns,
        pool.used = r.pool.map(|p| p.used),
        pool.size = r.pool.map(|p| p.size),
        pool.time_wait = r.pool.map(|p| p.time_wait),
        "EADDRNOTAVAIL: connect failed: {cause}"
    );
}

/// The failures of a pool that were not written one by one in the last interval.
fn warn_summary(s: &Summary<PoolId>) {
    let (netns, dest, transport) = match &s.pool {
        Some((n, d, t)) => (*n, Dest(*d).to_string(), Some(t.as_str())),
        // Pools beyond the ones followed one by one, together.
        None => (None, "(other pools)".to_string(), None),
    };
    let mut top = String::new();
    if let Some((_, name, _)) = &s.top {
        text::sanitize(name, &mut top);
    }
    tracing::warn!(
        destination = %dest,
        transport = transport.map(tracing::field::display),
        netns,
        not_shown = s.not_shown,
        seconds = s.seconds,
        top.pid = s.top.as_ref().map(|t| t.0),
        top.process = s.top.is_some().then_some(tracing::field::display(&top)),
        top.failures = s.top.as_ref().map(|t| t.2),
        "EADDRNOTAVAIL: {} more in the last {} s, not shown one by one",
        s.not_shown,
        s.seconds
    );
}

/// A destination for the log: "?" when unknown.
struct Dest(Option<SocketAddr>);

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => d.fmt(f),
            None => f.write_str("?"),
        }
    }
}

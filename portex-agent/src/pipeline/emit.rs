//! The render stage: filters records, renders lines (NDJSON or text) into a buffer
//! handed to the output once per batch, and warns on stderr about every
//! EADDRNOTAVAIL.
use std::{
    io::{ErrorKind, Write},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    logic::{
        clock::WallClock, errno::EADDRNOTAVAIL, filter::Filter, ledger::Pressure, model::Record,
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
}

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
                warn_addrnotavail(r, name);
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

/// Every EADDRNOTAVAIL goes to stderr the moment it is seen, whatever the output format:
/// it is the incident the user is hunting.
fn warn_addrnotavail(r: &Record, name: &str) {
    let mut safe = String::new();
    text::sanitize(name, &mut safe);
    let dest = r
        .destination
        .map(|d| d.to_string())
        .unwrap_or_else(|| "?".into());
    let cause = r.cause.map(|c| c.describe()).unwrap_or("unknown cause");
    let pool = r
        .pool
        .map(|p| {
            format!(
                "; pool {}/{} used, {} in TIME_WAIT",
                p.used, p.size, p.time_wait
            )
        })
        .unwrap_or_default();
    eprintln!(
        "portex: warning: EADDRNOTAVAIL: pid {} ({safe}) could not connect to {dest} over {}: {cause}{pool}",
        r.process.pid,
        r.transport.as_str()
    );
}

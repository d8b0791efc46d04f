//! The consumer thread of `portex watch`: interprets kernel events, keeps the pool ledger,
//! filters, adds what user space knows (process name, socket of a bind, pool state),
//! renders and writes lines.
use std::{
    io::{ErrorKind, Write},
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::Duration,
};

use crate::{
    clock::{WallClock, boot_now_ns},
    errno::EADDRNOTAVAIL,
    filter::Filter,
    format::{View, json, text},
    ledger::Pressure,
    lifecycle::interpret,
    model::{Action, Record, Transport},
    procinfo::{ProcNames, socket_of},
    reader::Batch,
    tracker::Tracker,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub struct Emitter<W: Write> {
    pub format: Format,
    pub filter: Filter,
    pub clock: WallClock,
    pub out: W,
    names: ProcNames,
    line: String,
    /// Pool accounting; None when the user turned it off.
    pub tracker: Option<Tracker>,
    /// Records written, for the summary.
    pub written: u64,
}

/// Why the consumer stopped early.
#[derive(Debug)]
pub enum Stop {
    /// The reader of our output went away (`portex watch | head`): a normal end.
    BrokenPipe,
    Io(std::io::Error),
}

impl<W: Write> Emitter<W> {
    pub fn new(format: Format, filter: Filter, out: W, tracker: Option<Tracker>) -> Self {
        Emitter {
            format,
            filter,
            clock: WallClock::measure(),
            out,
            names: ProcNames::new(5_000_000_000),
            line: String::with_capacity(4096),
            tracker,
            written: 0,
        }
    }

    /// Consumes batches until the channel closes; expires TIME_WAIT and reconciles the
    /// ledger between batches.
    pub fn run(&mut self, rx: Receiver<Batch>) -> Result<(), Stop> {
        let mut pending = Vec::new();
        loop {
            let batch = match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(b) => Some(b),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            if let Some(t) = self.tracker.as_mut() {
                t.tick(boot_now_ns());
            }
            let Some(batch) = batch else { continue };
            for ev in &batch {
                interpret(ev, |r| pending.push(r));
            }
            for mut r in pending.drain(..) {
                self.render(&mut r);
            }
            self.flush()?;
        }
    }

    fn render(&mut self, r: &mut Record) {
        let now = boot_now_ns();
        let (name, start) = self
            .names
            .lookup(r.process.pid, now, &r.process.thread_name);
        resolve_socket(r);
        let mut pressure = None;
        if let Some(t) = self.tracker.as_mut() {
            let touch = t.on_record(r, start, &name);
            if r.action.is_failure() {
                r.pool = touch.pool;
            }
            pressure = touch.pressure;
        }
        if self.filter.accepts(r, &name) {
            if r.errno == Some(EADDRNOTAVAIL) {
                warn_addrnotavail(r, &name);
            }
            let view = View {
                rec: r,
                unix_ns: self.clock.to_unix_ns(r.ts_ns),
                process_name: &name,
            };
            match self.format {
                Format::Json => json::write_line(&view, &mut self.line),
                Format::Text => text::write_line(&view, &mut self.line),
            }
            self.written += 1;
        }
        if let Some(p) = pressure
            && self.pressure_accepted(&p)
        {
            let unix = self.clock.to_unix_ns(r.ts_ns);
            match self.format {
                Format::Json => json::write_pressure(&p, unix, &mut self.line),
                Format::Text => text::write_pressure(&p, unix, &mut self.line),
            }
            self.written += 1;
        }
    }

    /// pool_pressure is an alarm: it passes --failures-only, and --pid/--comm when that
    /// process is among the pool's holders.
    fn pressure_accepted(&self, p: &Pressure) -> bool {
        let owners = || p.view.pool.holders.iter().filter_map(|h| h.owner.as_ref());
        self.filter
            .pid
            .is_none_or(|pid| owners().any(|o| o.pid == pid))
            && self
                .filter
                .comm
                .as_ref()
                .is_none_or(|c| owners().any(|o| &o.name == c))
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if self.line.is_empty() {
            return Ok(());
        }
        let res = self
            .out
            .write_all(self.line.as_bytes())
            .and_then(|_| self.out.flush());
        self.line.clear();
        res.map_err(|e| {
            if e.kind() == ErrorKind::BrokenPipe {
                Stop::BrokenPipe
            } else {
                Stop::Io(e)
            }
        })
    }
}

/// bind() results carry only the port asked for (0), and a failed connect() on a socket
/// that never reached TCP's state machine carries no protocol: ask the socket itself.
fn resolve_socket(r: &mut Record) {
    let needs = match r.action {
        Action::Bind | Action::BindFailed => true,
        Action::ConnectFailed => r.transport == Transport::Unknown,
        _ => false,
    };
    if !needs {
        return;
    }
    let Some((transport, local)) = r.fd.and_then(|fd| socket_of(r.process.pid, fd)) else {
        return;
    };
    r.transport = transport;
    if r.action == Action::Bind {
        r.source = local;
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

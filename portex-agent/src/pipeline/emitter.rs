//! The consumer thread of `portex watch`: interprets kernel events, keeps the pool ledger,
//! filters, adds what user space knows (process name, socket of a bind, pool state),
//! renders and writes lines.
use std::{
    io::{ErrorKind, Write},
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::Duration,
};

use std::sync::Arc;

use crate::{
    logic::arming::Arming,
    logic::errno::EADDRNOTAVAIL,
    logic::filter::Filter,
    logic::ledger::Pressure,
    logic::lifecycle::interpret,
    logic::model::{Action, Cause, Record, Transport},
    logic::rate::Rate,
    pipeline::HookSwitch,
    pipeline::metrics::{HolderGauge, Metrics, PoolGauge, Snapshot},
    pipeline::tracker::Tracker,
    render::{View, json, text},
    sys::containers::Resolver,
    sys::procinfo::{ProcNames, socket_of},
    sys::reader::Batch,
    {logic::clock::WallClock, sys::clock::boot_now_ns},
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
pub(crate) struct WriteOutput<W>(pub W);

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

pub(crate) struct Emitter<W: Output> {
    pub format: Format,
    pub filter: Filter,
    pub clock: WallClock,
    pub out: W,
    names: ProcNames,
    line: String,
    lines_in_buffer: u64,
    /// Pool accounting; None when the user turned it off.
    pub tracker: Option<Tracker>,
    /// Lines rendered, for the summary; published at each flush so that the summary
    /// can be printed while this thread is stuck on a blocked output.
    pub written: Arc<std::sync::atomic::AtomicU64>,
    pub metrics: Option<Arc<Metrics>>,
    pub pool_metrics: PoolMetricOptions,
    containers: Resolver,
    kernel_rate: Rate,
    last_publish: u64,
    /// `--syscall-hooks auto`: the decision, and where to send it.
    pub arming: Option<(Arming, Arc<HookSwitch>)>,
    port_failure_seen: bool,
    last_arming_check: u64,
}

/// Which pools and processes become metrics (bounded cardinality).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolMetricOptions {
    /// Only pools at or above this utilisation (0..1).
    pub min_utilisation: f64,
    /// At most this many pools, fullest first.
    pub max_pools: usize,
    /// At most this many processes, biggest holders first.
    pub top_processes: usize,
}

impl Default for PoolMetricOptions {
    fn default() -> Self {
        PoolMetricOptions {
            min_utilisation: 0.5,
            max_pools: 20,
            top_processes: 10,
        }
    }
}

/// Why the consumer stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The reader of our output went away (`portex watch | head`): a normal end.
    BrokenPipe,
    Io(std::io::Error),
}

impl<W: Output> Emitter<W> {
    pub(crate) fn new(format: Format, filter: Filter, out: W, tracker: Option<Tracker>) -> Self {
        Emitter {
            format,
            filter,
            clock: crate::sys::clock::wall_clock(),
            out,
            names: ProcNames::new(5_000_000_000),
            line: String::with_capacity(4096),
            lines_in_buffer: 0,
            tracker,
            written: Arc::default(),
            metrics: None,
            pool_metrics: PoolMetricOptions::default(),
            containers: Resolver::new(),
            kernel_rate: Rate::default(),
            last_publish: 0,
            arming: None,
            port_failure_seen: false,
            last_arming_check: 0,
        }
    }

    /// Consumes batches until the channel closes; expires TIME_WAIT and reconciles the
    /// ledger between batches.
    pub(crate) fn run(&mut self, rx: Receiver<Batch>) -> Result<(), Stop> {
        loop {
            let batch = match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(b) => Some(b),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            let now = boot_now_ns();
            if let Some(t) = self.tracker.as_mut() {
                t.tick(now);
            }
            if let Some(b) = &batch {
                self.kernel_rate.add(now, b.len() as u32);
            }
            if now.saturating_sub(self.last_publish) >= 1_000_000_000 {
                self.publish(now);
                self.last_publish = now;
            }
            if let Some(batch) = batch {
                for ev in batch.iter() {
                    interpret(ev, |mut r| self.render(&mut r, now));
                }
                self.flush()?;
            }
            self.check_arming(now);
        }
    }

    fn render(&mut self, r: &mut Record, now: u64) {
        let (name, start) = self
            .names
            .lookup(r.process.pid, now, &r.process.thread_name.name());
        if !resolve_socket(r) {
            return;
        }
        let mut pressure = None;
        if let Some(t) = self.tracker.as_mut() {
            let touch = t.on_record(r, start, &name, now);
            if r.action.is_failure() {
                r.pool = touch.pool;
            }
            r.netns = touch.netns;
            pressure = touch.pressure;
        }
        if r.action.is_failure()
            && matches!(
                r.cause,
                Some(Cause::PortRangeExhausted | Cause::TupleCollision)
            )
        {
            self.port_failure_seen = true;
        }
        r.container = self.containers.container(r.process.cgroup_id, now);
        if let Some(m) = &self.metrics {
            count_metrics(m, r, pressure.as_ref());
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
            self.written
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.lines_in_buffer += 1;
        }
        if let Some(p) = pressure
            && self.pressure_accepted(&p)
        {
            let unix = self.clock.to_unix_ns(r.ts_ns);
            match self.format {
                Format::Json => json::write_pressure(&p, unix, &mut self.line),
                Format::Text => text::write_pressure(&p, unix, &mut self.line),
            }
            self.written
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.lines_in_buffer += 1;
        }
    }

    /// Auto mode: asks for the syscall hooks while a pool fills up or ports fail (at
    /// once after a failure, otherwise every 250 ms: the scan covers every pool).
    fn check_arming(&mut self, now: u64) {
        let Some((arming, switch)) = self.arming.as_mut() else {
            return;
        };
        let failure = self.port_failure_seen;
        if !failure && now.saturating_sub(self.last_arming_check) < 250_000_000 {
            return;
        }
        self.port_failure_seen = false;
        self.last_arming_check = now;
        // The label only matters when it is about to be printed.
        let fullest = self
            .tracker
            .as_ref()
            .and_then(|t| t.fullest(crate::logic::arming::ARM_AT));
        let fullest = fullest.as_ref().map(|(u, l)| (*u, l.as_str()));
        if let Some(c) = arming.observe(now, fullest, failure) {
            switch.request(c);
        }
    }

    /// Publishes pool and process gauges for the next scrape.
    fn publish(&mut self, now: u64) {
        let Some(m) = self.metrics.clone() else {
            return;
        };
        let mut snap = Snapshot {
            events_per_second: self.kernel_rate.per_sec(now),
            ..Snapshot::default()
        };
        if let Some(t) = self.tracker.as_mut() {
            let o = self.pool_metrics;
            snap.tracked_sockets = t.ledger.tracked_sockets() as u64;
            snap.pools = t
                .ledger
                .pool_views(now)
                .into_iter()
                .filter(|v| v.pool.utilisation() >= o.min_utilisation)
                .take(o.max_pools)
                .map(|v| {
                    let k = &v.pool.key;
                    PoolGauge {
                        netns: k.netns,
                        transport: k.transport.as_str(),
                        source: k.saddr.to_string(),
                        destination: std::net::SocketAddr::new(k.daddr, k.dport).to_string(),
                        size: v.pool.size,
                        used: v.pool.used,
                        time_wait: v.pool.time_wait,
                        seconds_to_full: v.forecast.seconds_to_full,
                    }
                })
                .collect();
            let mut procs: Vec<(u32, String, u32, u32)> = t
                .ledger
                .processes()
                .iter()
                .filter(|(pid, p)| **pid != 0 && p.held > 0)
                .map(|(pid, p)| (*pid, p.name.clone(), p.held, p.time_wait))
                .collect();
            procs.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            procs.truncate(o.top_processes);
            snap.holders = procs
                .into_iter()
                .map(|(pid, comm, held, time_wait)| HolderGauge {
                    pid,
                    comm,
                    container_id: crate::sys::containers::of_pid(pid).map(|c| c.id),
                    held,
                    time_wait,
                })
                .collect();
        }
        *m.snapshot.lock().unwrap() = snap;
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
        let res = self.out.write_batch(&mut self.line, self.lines_in_buffer);
        self.line.clear();
        self.lines_in_buffer = 0;
        res.map_err(|e| {
            if e.kind() == ErrorKind::BrokenPipe {
                Stop::BrokenPipe
            } else {
                Stop::Io(e)
            }
        })
    }
}

fn count_metrics(m: &Metrics, r: &Record, pressure: Option<&Pressure>) {
    *m.events
        .lock()
        .unwrap()
        .entry(r.action.as_str())
        .or_default() += 1;
    if let (Some(e), Some(c)) = (r.errno, r.cause) {
        let key = (
            crate::logic::errno::name(e),
            c.as_str(),
            r.transport.as_str(),
        );
        *m.failures.lock().unwrap().entry(key).or_default() += 1;
    }
    if let Some(p) = pressure {
        *m.pool_pressure
            .lock()
            .unwrap()
            .entry(p.severity.as_str())
            .or_default() += 1;
    }
}

/// bind() results carry only the port asked for (0), and a failed connect() on a socket
/// that never reached TCP's state machine carries no protocol: ask the socket itself.
///
/// Returns false when the record is not worth showing: a bind() with
/// IP_BIND_ADDRESS_NO_PORT took no port (connect() picks it). The socket says port 0
/// until connect(), and the port connect() chose after it, so the option is asked.
fn resolve_socket(r: &mut Record) -> bool {
    let needs = match r.action {
        Action::Bind | Action::BindFailed => true,
        Action::ConnectFailed => r.transport == Transport::Unknown,
        _ => false,
    };
    if !needs {
        return true;
    }
    let Some(s) = r.fd.and_then(|fd| socket_of(r.process.pid, fd)) else {
        return true;
    };
    r.transport = s.transport;
    if r.action == Action::Bind {
        if s.local.port() == 0 || s.bind_no_port {
            return false;
        }
        r.source = s.local;
    }
    true
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

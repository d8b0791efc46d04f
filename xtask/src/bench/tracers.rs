//! The tracers that run beside a workload: starting one and waiting until it watches,
//! stopping it with SIGINT, and what it said on the way out (exit status, portex's exit
//! summary, tcplife's connection lines), checked the same way in every section.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use portex_e2e::{signal, wait_exit};
use serde_json::{Value, json};

/// What runs beside the workload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Tracer {
    None,
    /// Default settings: syscall hooks auto (detached while no pool is under pressure),
    /// accepted sockets dropped in the kernel.
    Agent,
    /// What the agent costs once a pool is under pressure (hooks attached), with
    /// accepted sockets as well.
    AgentFull,
    /// Default settings with the metrics served (on a port the kernel picks).
    AgentMetrics,
    WatchJson,
    /// `watch --json --lines connections`: a line per connection, as tcplife.
    WatchConnections,
    Tcplife,
}

impl Tracer {
    pub(super) fn name(self) -> &'static str {
        match self {
            Tracer::None => "untraced",
            Tracer::Agent => "portex agent",
            Tracer::AgentFull => "portex agent --syscall-hooks on --accepted",
            Tracer::AgentMetrics => "portex agent --metrics 127.0.0.1:0",
            Tracer::WatchJson => "portex watch --json",
            Tracer::WatchConnections => "portex watch --json --lines connections",
            Tracer::Tcplife => "tcplife (libbpf-tools)",
        }
    }

    /// portex prints its exit summary (`portex: N kernel events, ...`) on stderr.
    pub(super) fn is_portex(self) -> bool {
        matches!(
            self,
            Tracer::Agent
                | Tracer::AgentFull
                | Tracer::AgentMetrics
                | Tracer::WatchJson
                | Tracer::WatchConnections
        )
    }

    /// Its stdout is counted (lines and bytes per connection), so it goes to a file.
    fn counts_output(self) -> bool {
        matches!(
            self,
            Tracer::WatchJson | Tracer::WatchConnections | Tracer::Tcplife
        )
    }
}

pub(super) struct Running {
    tracer: Tracer,
    pub(super) child: Child,
    stderr: mpsc::Receiver<String>,
    /// Where tcplife's stdout goes, so that its lines can be counted afterwards.
    out_file: Option<PathBuf>,
    /// Where portex serves its metrics (ADDR:PORT), from its "watching" line.
    pub(super) metrics_addr: Option<String>,
}

/// Starts a tracer with its stdout to /dev/null (tcplife's and watch's to a file,
/// counted at the end).
pub(super) fn start(tracer: Tracer, portex: &Path) -> Result<Option<Running>> {
    if tracer == Tracer::None {
        return Ok(None);
    }
    if tracer.counts_output() {
        let f =
            std::env::temp_dir().join(format!("portex-bench-{}-tracer.out", std::process::id()));
        let out = std::fs::File::create(&f).with_context(|| format!("creating {}", f.display()))?;
        return launch(tracer, portex, out.into(), Some(f), |_| {}).map(Some);
    }
    launch(tracer, portex, Stdio::null(), None, |_| {}).map(Some)
}

/// Starts a tracer and waits until it is watching; `spawned` sees the child first (to take
/// a piped stdout before anything can fill the pipe).
pub(super) fn launch(
    tracer: Tracer,
    portex: &Path,
    stdout: Stdio,
    out_file: Option<PathBuf>,
    spawned: impl FnOnce(&mut Child),
) -> Result<Running> {
    let mut cmd = match tracer {
        Tracer::None => bail!("nothing to launch"),
        Tracer::Agent => {
            let mut c = Command::new(portex);
            c.arg("agent");
            c
        }
        Tracer::AgentFull => {
            let mut c = Command::new(portex);
            c.args(["agent", "--syscall-hooks", "on", "--accepted"]);
            c
        }
        Tracer::AgentMetrics => {
            let mut c = Command::new(portex);
            c.args(["agent", "--metrics", "127.0.0.1:0"]);
            c
        }
        Tracer::WatchJson => {
            let mut c = Command::new(portex);
            c.args(["watch", "--json"]);
            c
        }
        Tracer::WatchConnections => {
            let mut c = Command::new(portex);
            c.args(["watch", "--json", "--lines", "connections"]);
            c
        }
        Tracer::Tcplife => Command::new("tcplife"),
    };
    let mut child = cmd
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tracer.name()))?;
    spawned(&mut child);
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut metrics_addr = None;
    if tracer == Tracer::Tcplife {
        thread::sleep(Duration::from_secs(2));
    } else {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.contains("watching") => {
                    // `..., metrics on http://ADDR/metrics; stop with Ctrl-C`
                    metrics_addr = l
                        .split_once("metrics on http://")
                        .and_then(|(_, rest)| rest.split_once("/metrics"))
                        .map(|(a, _)| a.to_string());
                    break;
                }
                Ok(l) if l.contains("error") => bail!("{}: {l}", tracer.name()),
                _ if Instant::now() > end => bail!("{} did not start", tracer.name()),
                _ => {}
            }
        }
    }
    Ok(Running {
        tracer,
        child,
        stderr: rx,
        out_file,
        metrics_addr,
    })
}

/// How long a tracer has to exit after SIGINT (portex takes ~3 s at most, README
/// "Limits and failure behaviour"); past that it is killed and reported.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// How a tracer ended: its exit status and, for portex, its exit summary.
pub(super) struct Stopped {
    pub(super) tracer: Tracer,
    /// `exit 0`, `signal 9`, or that it did not exit.
    pub(super) exit: String,
    exited_ok: bool,
    /// The last line on stderr other than the summary (what an error says).
    last_line: Option<String>,
    /// From portex's summary line; None when it printed none.
    pub(super) events: Option<u64>,
    dropped: Option<u64>,
    /// Tracepoint runs the kernel skipped (recursion_misses), part of `dropped`.
    pub(super) skipped: Option<u64>,
    /// Lines the tracer printed (tcplife: connection lines, its header left out) and
    /// their bytes, for tracers whose output is counted.
    pub(super) lines: Option<u64>,
    pub(super) bytes: Option<u64>,
}

impl Stopped {
    /// What every run must show, whatever the section: a clean exit after SIGINT (portex:
    /// status 0) and, for portex, its exit summary.
    pub(super) fn check(&self, section: &str, broken: &mut Vec<String>) {
        let name = self.tracer.name();
        if !self.exited_ok {
            broken.push(format!(
                "{name} in {section}: {} after SIGINT, expected exit 0{}",
                self.exit,
                self.last_line
                    .as_ref()
                    .map(|l| format!(" (last line on stderr: {l})"))
                    .unwrap_or_default()
            ));
        }
        if self.tracer.is_portex() && self.events.is_none() {
            broken.push(format!(
                "{name} in {section}: no exit summary (`portex: N kernel events, ...`) on stderr"
            ));
        }
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.unwrap_or(0)
    }

    pub(super) fn json(&self) -> Value {
        json!({"exit": self.exit, "kernel_events": self.events, "dropped": self.dropped,
            "kernel_runs_skipped": self.skipped, "output_lines": self.lines,
            "output_bytes": self.bytes})
    }
}

/// `portex: N kernel events, M lines rendered; dropped: D (..., kernel runs skipped S)`:
/// (N, D, S).
fn parse_summary(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.strip_prefix("portex: ")?;
    let (n, rest) = rest.split_once(" kernel events, ")?;
    let number_after = |marker: &str| -> Option<u64> {
        rest.split_once(marker)?
            .1
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let dropped = number_after("dropped: ")?;
    let skipped = number_after("kernel runs skipped ").unwrap_or(0);
    Some((n.trim().parse().ok()?, dropped, skipped))
}

/// SIGINT, wait (killed after EXIT_WITHIN), then read what it said on the way out.
pub(super) fn stop(r: Running) -> Result<Stopped> {
    let Running {
        tracer,
        mut child,
        stderr,
        out_file,
        ..
    } = r;
    signal(child.id(), libc::SIGINT);
    let status = wait_exit(&mut child, EXIT_WITHIN);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (exit, exited_ok) = match status {
        None => (
            format!("did not exit within {} s (killed)", EXIT_WITHIN.as_secs()),
            false,
        ),
        Some(s) => match s.code() {
            // tcplife exits on SIGINT with 0 or 130 depending on version.
            Some(c) => (
                format!("exit {c}"),
                c == 0 || (tracer == Tracer::Tcplife && c == 130),
            ),
            None => {
                use std::os::unix::process::ExitStatusExt;
                (
                    format!("killed by signal {}", s.signal().unwrap_or(0)),
                    false,
                )
            }
        },
    };
    // The stderr thread ends at EOF (the process is gone): this reads all of it.
    let (mut events, mut dropped, mut skipped, mut last_line) = (None, None, None, None);
    while let Ok(l) = stderr.recv_timeout(Duration::from_secs(5)) {
        match parse_summary(&l) {
            Some((n, d, s)) => (events, dropped, skipped) = (Some(n), Some(d), Some(s)),
            None if !l.trim().is_empty() => last_line = Some(l),
            None => {}
        }
    }
    let counted = out_file.map(|f| {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let _ = std::fs::remove_file(&f);
        // tcplife: a connection line starts with the pid; the header with "PID".
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                tracer != Tracer::Tcplife
                    || l.split_whitespace()
                        .next()
                        .is_some_and(|p| p.parse::<u32>().is_ok())
            })
            .collect();
        let bytes: usize = kept.iter().map(|l| l.len() + 1).sum();
        (kept.len() as u64, bytes as u64)
    });
    let (lines, bytes) = (counted.map(|c| c.0), counted.map(|c| c.1));
    Ok(Stopped {
        tracer,
        exit,
        exited_ok,
        last_line,
        events,
        dropped,
        skipped,
        lines,
        bytes,
    })
}

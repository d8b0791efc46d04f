//! Command-line interface.
use clap::{Args, Parser, Subcommand};

use serde::Deserialize;

use crate::{
    cmd::config::SizeValue,
    logic::{arming::HookMode, limits},
};

#[derive(Parser, Debug)]
#[command(
    name = "portex",
    version,
    about = "Who is burning the ephemeral ports, towards which destination, and how close each pool is to empty"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print connection lifecycle and port-failure events as they happen (needs root).
    Watch(WatchArgs),
    /// One-shot report of every port pool (no eBPF): exit 0 when none is over the
    /// warning threshold, 1 when one is.
    Status(StatusArgs),
    /// Live full-screen view: per-process churn and per-pool pressure (needs root).
    Top(TopArgs),
    /// Run as a service: NDJSON events to a file or stdout, metrics for Prometheus (needs
    /// root or CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH).
    Agent(AgentArgs),
}

/// The agent's settings, declared once: each is a flag and a key of the TOML file
/// (`--config`; the key is the flag's name with '_' for '-'). Flags override the file;
/// defaults and bounds live in logic::limits and apply to both (cmd::config::resolve).
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentArgs {
    /// TOML file with any of the settings below (flags override it).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<std::path::PathBuf>,
    /// Where events go: a file (appended, created 0640), or - for stdout. [default: -]
    #[arg(long, value_name = "PATH")]
    pub output: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics and a health check at /healthz,
    /// e.g. 127.0.0.1:9633 (a bare port binds to 127.0.0.1); off by default.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// Rotate the output file at this size (e.g. 64M). [default: never]
    #[arg(long, value_name = "SIZE")]
    pub rotate_size: Option<SizeValue>,
    /// Rotated files to keep (at most 1000). [default: 5]
    #[arg(long, value_name = "N")]
    pub rotate_keep: Option<u64>,
    /// Bytes of lines queued for the output (e.g. 16M; 64K to 1G) before new ones are
    /// dropped (and counted). [default: 16M]
    #[arg(long, value_name = "SIZE")]
    pub queue: Option<SizeValue>,
    /// Pool utilisation (percent) for a warning pool_pressure event. [default: 80]
    #[arg(long, value_name = "PERCENT")]
    pub warn: Option<f64>,
    /// Pool utilisation (percent) for a critical pool_pressure event. [default: 95]
    #[arg(long, value_name = "PERCENT")]
    pub critical: Option<f64>,
    /// Export per-pool gauges only for pools at least this full (percent). [default: 50]
    #[arg(long, value_name = "PERCENT")]
    pub metrics_pool_min: Option<f64>,
    /// Export at most this many pools (at most 10000). [default: 20]
    #[arg(long, value_name = "N")]
    pub metrics_max_pools: Option<u64>,
    /// Name at most this many process groups (name and container) in the metrics, the
    /// rest summed as "other" (at most 10000). [default: 10]
    #[arg(long, value_name = "N")]
    pub metrics_top_processes: Option<u64>,
    /// The connect/bind syscall tracepoints: on, off, or auto (attached while a pool is
    /// at least 50 % full or ports failed in the last 5 minutes; they slow every system
    /// call of the host while attached). [default: auto]
    #[arg(long, value_name = "MODE", conflicts_with = "no_syscall_hooks")]
    pub syscall_hooks: Option<HookMode>,
    /// Same as --syscall-hooks off.
    #[arg(long)]
    #[serde(default)]
    pub no_syscall_hooks: bool,
    /// With --syscall-hooks auto: seconds the hooks stay attached after the last pool
    /// above 40 % or port failure. [default: 300]
    #[arg(long, value_name = "SECONDS")]
    pub syscall_hooks_linger: Option<u64>,
    /// Also report connections this host accepted (the server side). They hold the
    /// listening port, not an ephemeral one, so by default the kernel drops them at its
    /// first check: the agent then costs servers nothing for them.
    #[arg(long)]
    #[serde(default)]
    pub accepted: bool,
    /// Ring buffer size in KiB (a power of two, 4 to 262144). [default: 4096]
    #[arg(long, value_name = "KIB")]
    pub ring_kib: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// Print one frame as text after one interval and exit (no terminal needed).
    #[arg(long)]
    pub once: bool,
    /// Seconds between refreshes (and how long --once watches).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
    pub interval: f64,
    /// Rows per table with --once.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub rows: usize,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if !(0.1..=3600.0).contains(&v) {
        return Err("must be between 0.1 and 3600".into());
    }
    Ok(v)
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Every network namespace on the host, not only this one.
    #[arg(long)]
    pub all_netns: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// At most this many pools and processes per namespace.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct ThresholdArgs {
    /// Utilisation (percent) at which a pool is a warning (pool_pressure, exit status).
    #[arg(long, value_name = "PERCENT", default_value_t = limits::WARN_PERCENT, value_parser = parse_percent)]
    pub warn: f64,
    /// Utilisation (percent) at which a pool is critical.
    #[arg(long, value_name = "PERCENT", default_value_t = limits::CRITICAL_PERCENT, value_parser = parse_percent)]
    pub critical: f64,
}

impl WatchArgs {
    pub fn hook_mode(&self) -> HookMode {
        if self.no_syscall_hooks {
            HookMode::Off
        } else {
            self.syscall_hooks
        }
    }
}

impl ThresholdArgs {
    /// The thresholds as fractions; critical below warn is refused (a pool would be
    /// critical without being a warning).
    pub fn thresholds(&self) -> anyhow::Result<crate::logic::diagnose::Thresholds> {
        if self.critical < self.warn {
            anyhow::bail!(
                "--critical ({}) must not be below --warn ({})",
                self.critical,
                self.warn
            );
        }
        Ok(crate::logic::diagnose::Thresholds {
            warning: self.warn / 100.0,
            critical: self.critical / 100.0,
        })
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("not a number: {s}"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err("must be between 0 and 100".into());
    }
    Ok(v)
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// One JSON object per line (NDJSON, Elastic Common Schema field names).
    #[arg(long)]
    pub json: bool,
    /// Only events of this process id (thread-group id).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Only events of processes (or threads) with this name.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Only connect_failed and bind_failed.
    #[arg(long)]
    pub failures_only: bool,
    /// The connect/bind syscall tracepoints: on, off, or auto (attached while a pool is
    /// at least 50 % full or ports failed in the last 5 minutes). Without them every TCP
    /// lifecycle and the exhaustion signature are still seen, but not other errnos,
    /// bind() nor UDP.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "on",
        conflicts_with = "no_syscall_hooks"
    )]
    pub syscall_hooks: HookMode,
    /// Same as --syscall-hooks off.
    #[arg(long)]
    pub no_syscall_hooks: bool,
    /// Do not track port pools (no pool state on failures, no pool_pressure events).
    #[arg(long)]
    pub no_pools: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Ring buffer size in KiB (a power of two, 4 to 262144).
    #[arg(long, value_name = "KIB", default_value_t = limits::RING_KIB.default as u32, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let v: u64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    limits::ring_kib(v)
}

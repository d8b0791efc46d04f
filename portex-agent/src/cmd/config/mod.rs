//! `portex agent` settings: defaults, then a TOML file (`--config`, file.rs), then the
//! environment (`PORTEX_*`), then flags. Flags and variables are parsed apart
//! (cmd::cli::parse); `AgentArgs::over` layers them key by key, and `resolve` puts the
//! result over the file and the defaults, within bounds.
mod file;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, str::FromStr, time::Duration};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub use file::parse_file;
pub(crate) use file::{list, load_file, one};

use crate::{
    cmd::cli::{AgentArgs, FilterArgs},
    logic::arming::HookMode,
    logic::filter::{AddrMatch, Family, Filter, Lines, PortRange},
    logic::limits::{self, Bound},
    sys::sink::parse_size,
};

/// A size: a number of bytes (in the file) or a string with a unit ("16M", both).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeValue::Bytes(n) => Ok(*n),
            SizeValue::Text(s) => parse_size(s),
        }
    }
}

impl FromStr for SizeValue {
    type Err = std::convert::Infallible;

    /// Checked by `resolve`, with the same words for the flag and the file.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SizeValue::Text(s.to_string()))
    }
}

/// Everything resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// "-" for stdout.
    pub output: String,
    pub metrics: Option<SocketAddr>,
    pub rotate_size: u64,
    pub rotate_keep: u32,
    /// Bytes of lines queued for the output writer.
    pub queue_bytes: u64,
    pub warn: f64,
    pub critical: f64,
    pub metrics_pool_min: f64,
    pub metrics_max_pools: usize,
    pub metrics_top_processes: usize,
    pub syscall_hooks: HookMode,
    pub syscall_hooks_linger: u64,
    pub accepted: bool,
    pub ring_kib: u32,
    /// Seconds between NAT scans; 0: off.
    pub nat_scan: u64,
    pub filter: FilterConfig,
}

/// `watch`'s and `agent`'s filters and stop conditions, resolved.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FilterConfig {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub failures_only: bool,
    pub daddr: Vec<AddrMatch>,
    pub dport: Vec<PortRange>,
    /// As given: a name, an inode or a path (the caller looks it up: IO).
    pub netns: Option<String>,
    pub container: Option<String>,
    pub family: Option<Family>,
    pub lines: Lines,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

impl FilterConfig {
    /// The filter, with `--netns` looked up to its inode.
    pub(crate) fn filter(&self, netns: Option<u64>) -> Filter {
        Filter {
            pid: self.pid,
            comm: self.comm.clone(),
            failures_only: self.failures_only,
            daddr: self.daddr.clone(),
            dport: self.dport.clone(),
            netns,
            container: self.container.clone(),
            family: self.family,
            lines: self.lines,
        }
    }
}

/// One layer of settings over the next (flags over the environment, both over the
/// file), key by key. Lists are replaced, not merged. `-4`/`-6` are one setting, and so
/// are `syscall_hooks`/`no_syscall_hooks`: the upper layer's choice replaces the lower's.
impl AgentArgs {
    pub(crate) fn over(&self, lower: AgentArgs) -> AgentArgs {
        let u = self.clone();
        let (syscall_hooks, no_syscall_hooks) =
            if u.syscall_hooks.is_some() || u.no_syscall_hooks == Some(true) {
                (u.syscall_hooks, u.no_syscall_hooks)
            } else if u.no_syscall_hooks == Some(false) {
                // `--no-syscall-hooks=false` cancels only the lower `no_syscall_hooks`.
                (lower.syscall_hooks, Some(false))
            } else {
                (lower.syscall_hooks, lower.no_syscall_hooks)
            };
        AgentArgs {
            config: u.config.or(lower.config),
            output: u.output.or(lower.output),
            metrics: u.metrics.or(lower.metrics),
            rotate_size: u.rotate_size.or(lower.rotate_size),
            rotate_keep: u.rotate_keep.or(lower.rotate_keep),
            queue: u.queue.or(lower.queue),
            warn: u.warn.or(lower.warn),
            critical: u.critical.or(lower.critical),
            metrics_pool_min: u.metrics_pool_min.or(lower.metrics_pool_min),
            metrics_max_pools: u.metrics_max_pools.or(lower.metrics_max_pools),
            metrics_top_processes: u.metrics_top_processes.or(lower.metrics_top_processes),
            syscall_hooks,
            no_syscall_hooks,
            syscall_hooks_linger: u.syscall_hooks_linger.or(lower.syscall_hooks_linger),
            accepted: u.accepted.or(lower.accepted),
            ring_kib: u.ring_kib.or(lower.ring_kib),
            nat_scan: u.nat_scan.or(lower.nat_scan),
            filter: u.filter.over(lower.filter),
        }
    }
}

impl FilterArgs {
    pub(crate) fn over(self, lower: FilterArgs) -> FilterArgs {
        let (ipv4, ipv6) = if self.ipv4.is_some() || self.ipv6.is_some() {
            (self.ipv4, self.ipv6)
        } else {
            (lower.ipv4, lower.ipv6)
        };
        FilterArgs {
            pid: self.pid.or(lower.pid),
            comm: self.comm.or(lower.comm),
            failures_only: self.failures_only.or(lower.failures_only),
            daddr: replace(self.daddr, lower.daddr),
            dport: replace(self.dport, lower.dport),
            netns: self.netns.or(lower.netns),
            container: self.container.or(lower.container),
            ipv4,
            ipv6,
            lines: self.lines.or(lower.lines),
            count: self.count.or(lower.count),
            duration: self.duration.or(lower.duration),
        }
    }
}

/// A list from an upper layer replaces the lower one's.
fn replace<T>(upper: Vec<T>, lower: Vec<T>) -> Vec<T> {
    if upper.is_empty() { lower } else { upper }
}

/// The filters of one merged layer (`watch`'s flags, or the agent's layers over each
/// other).
pub(crate) fn resolve_filter(f: &FilterArgs) -> Result<FilterConfig> {
    let family = match (f.ipv4, f.ipv6) {
        (Some(true), Some(true)) => {
            bail!("ipv4 and ipv6 exclude each other (set neither for both families)")
        }
        (Some(true), _) => Some(Family::V4),
        (_, Some(true)) => Some(Family::V6),
        _ => None,
    };
    if f.count == Some(0) {
        bail!("count must be at least 1, got 0");
    }
    Ok(FilterConfig {
        pid: f.pid,
        comm: f.comm.clone(),
        failures_only: f.failures_only.unwrap_or(false),
        daddr: f.daddr.clone(),
        dport: f.dport.clone(),
        netns: f.netns.clone(),
        container: f.container.clone().map(|c| c.0),
        family,
        lines: f.lines.unwrap_or_default(),
        count: f.count,
        duration: f.duration.map(|d| d.0),
    })
}

/// `syscall_hooks = "auto"`, or the older `no_syscall_hooks = true`; auto by default: an
/// always-on agent should not slow every system call of the host while no pool is
/// under pressure.
fn hook_mode(a: &AgentArgs) -> HookMode {
    match (a.syscall_hooks, a.no_syscall_hooks) {
        (Some(m), _) => m,
        (None, Some(true)) => HookMode::Off,
        (None, _) => HookMode::Auto,
    }
}

/// Flags (and the environment) override the file, which overrides the defaults.
pub fn resolve(args: &AgentArgs, file: AgentArgs) -> Result<AgentConfig> {
    let a = args.over(file);
    let filter = resolve_filter(&a.filter)?;
    let metrics = match a.metrics.as_deref() {
        None | Some("off") => None,
        Some(s) if s.trim().is_empty() => {
            bail!(
                "--metrics wants ADDR:PORT or PORT (e.g. 127.0.0.1:9633), or off; got an empty value"
            )
        }
        // A bare port binds to loopback: exposing metrics beyond the host is a choice.
        Some(s) => match s.parse::<u16>() {
            Ok(port) => Some(SocketAddr::from(([127, 0, 0, 1], port))),
            Err(_) => Some(s.parse::<SocketAddr>().with_context(|| {
                format!("--metrics wants ADDR:PORT or PORT (e.g. 127.0.0.1:9633), got {s}")
            })?),
        },
    };
    let size = |v: &Option<SizeValue>, default: u64| match v {
        Some(v) => v.bytes(),
        None => Ok(default),
    };
    let rotate_size = size(&a.rotate_size, limits::ROTATE_SIZE.default)
        .and_then(limits::rotate_size)
        .map_err(anyhow::Error::msg)?;
    let queue_bytes = size(&a.queue, limits::QUEUE_BYTES.default)
        .and_then(|v| limits::QUEUE_BYTES.check(v))
        .map_err(anyhow::Error::msg)?;
    let bounded =
        |b: Bound, v: Option<u64>| b.check(v.unwrap_or(b.default)).map_err(anyhow::Error::msg);
    let ring_kib = limits::ring_kib(a.ring_kib.unwrap_or(limits::RING_KIB.default))
        .map_err(anyhow::Error::msg)?;
    let c = AgentConfig {
        output: a
            .output
            .clone()
            .unwrap_or_else(|| limits::OUTPUT_STDOUT.into()),
        metrics,
        rotate_size,
        rotate_keep: bounded(limits::ROTATE_KEEP, a.rotate_keep)? as u32,
        queue_bytes,
        warn: a.warn.unwrap_or(limits::WARN_PERCENT),
        critical: a.critical.unwrap_or(limits::CRITICAL_PERCENT),
        metrics_pool_min: a
            .metrics_pool_min
            .unwrap_or(limits::METRICS_POOL_MIN_PERCENT),
        metrics_max_pools: bounded(limits::METRICS_SERIES, a.metrics_max_pools)? as usize,
        metrics_top_processes: bounded(limits::METRICS_TOP_PROCESSES, a.metrics_top_processes)?
            as usize,
        syscall_hooks: hook_mode(&a),
        syscall_hooks_linger: bounded(limits::LINGER_S, a.syscall_hooks_linger)?,
        accepted: a.accepted.unwrap_or(false),
        ring_kib,
        nat_scan: bounded(limits::NAT_SCAN_S, a.nat_scan)?,
        filter,
    };
    for (name, v) in [
        ("warn", c.warn),
        ("critical", c.critical),
        ("metrics-pool-min", c.metrics_pool_min),
    ] {
        if !(0.0..=100.0).contains(&v) {
            bail!("{name} must be a percentage between 0 and 100, got {v}");
        }
    }
    if c.critical < c.warn {
        bail!(
            "critical ({}) must not be below warn ({})",
            c.critical,
            c.warn
        );
    }
    Ok(c)
}

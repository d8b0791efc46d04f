//! `portex agent` settings: defaults, then a TOML file (`--config`), then flags.
use std::{io::Read, net::SocketAddr, path::Path};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::{
    cmd::cli::AgentArgs,
    logic::arming::HookMode,
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

impl std::str::FromStr for SizeValue {
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
}

/// Flags first, then the file (`syscall_hooks = "auto"`, or the older
/// `no_syscall_hooks = true`); auto by default: an always-on agent should not slow every
/// system call of the host while no pool is under pressure.
fn hook_mode(args: &AgentArgs, file: &AgentArgs) -> HookMode {
    if args.no_syscall_hooks {
        return HookMode::Off;
    }
    match (
        args.syscall_hooks.or(file.syscall_hooks),
        file.no_syscall_hooks,
    ) {
        (Some(m), _) => m,
        (None, true) => HookMode::Off,
        (None, false) => HookMode::Auto,
    }
}

/// Reads a regular file of at most CONFIG_FILE_BYTES (never /dev/zero or a FIFO).
pub(crate) fn load_file(path: &Path) -> Result<AgentArgs> {
    let ctx = || format!("reading config {}", path.display());
    let f = std::fs::File::open(path).with_context(ctx)?;
    if !f.metadata().with_context(ctx)?.file_type().is_file() {
        bail!("config {} is not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    f.take(limits::CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(ctx)?;
    if bytes.len() as u64 > limits::CONFIG_FILE_BYTES {
        bail!(
            "config {} is larger than {}",
            path.display(),
            limits::human(limits::CONFIG_FILE_BYTES)
        );
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("config {} is not UTF-8 text", path.display()))?;
    parse_file(path, &text)
}

/// The TOML text of a config file.
pub fn parse_file(path: &Path, text: &str) -> Result<AgentArgs> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        anyhow::anyhow!("config {}: {line}{}", path.display(), e.message())
    })
}

/// Flags override the file, which overrides the defaults.
pub fn resolve(args: &AgentArgs, file: AgentArgs) -> Result<AgentConfig> {
    let syscall_hooks = hook_mode(args, &file);
    let metrics = match args.metrics.clone().or(file.metrics) {
        None => None,
        Some(s) if s == "off" => None,
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
    let rotate_size = match args.rotate_size.as_ref().or(file.rotate_size.as_ref()) {
        Some(v) => v.bytes(),
        None => Ok(limits::ROTATE_SIZE.default),
    }
    .and_then(limits::rotate_size)
    .map_err(anyhow::Error::msg)?;
    let queue_bytes = match args.queue.as_ref().or(file.queue.as_ref()) {
        Some(v) => v.bytes(),
        None => Ok(limits::QUEUE_BYTES.default),
    }
    .and_then(|v| limits::QUEUE_BYTES.check(v))
    .map_err(anyhow::Error::msg)?;
    let bounded = |b: Bound, flag: Option<u64>, file: Option<u64>| {
        b.check(flag.or(file).unwrap_or(b.default))
            .map_err(anyhow::Error::msg)
    };
    let ring_kib = limits::ring_kib(
        args.ring_kib
            .or(file.ring_kib)
            .unwrap_or(limits::RING_KIB.default),
    )
    .map_err(anyhow::Error::msg)?;
    let c = AgentConfig {
        output: args
            .output
            .clone()
            .or(file.output)
            .unwrap_or_else(|| limits::OUTPUT_STDOUT.into()),
        metrics,
        rotate_size,
        rotate_keep: bounded(limits::ROTATE_KEEP, args.rotate_keep, file.rotate_keep)? as u32,
        queue_bytes,
        warn: args.warn.or(file.warn).unwrap_or(limits::WARN_PERCENT),
        critical: args
            .critical
            .or(file.critical)
            .unwrap_or(limits::CRITICAL_PERCENT),
        metrics_pool_min: args
            .metrics_pool_min
            .or(file.metrics_pool_min)
            .unwrap_or(limits::METRICS_POOL_MIN_PERCENT),
        metrics_max_pools: bounded(
            limits::METRICS_SERIES,
            args.metrics_max_pools,
            file.metrics_max_pools,
        )? as usize,
        metrics_top_processes: bounded(
            limits::METRICS_TOP_PROCESSES,
            args.metrics_top_processes,
            file.metrics_top_processes,
        )? as usize,
        syscall_hooks,
        syscall_hooks_linger: bounded(
            limits::LINGER_S,
            args.syscall_hooks_linger,
            file.syscall_hooks_linger,
        )?,
        accepted: args.accepted || file.accepted,
        ring_kib,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cmd::cli::{Cli, Command};

    fn args(v: &[&str]) -> AgentArgs {
        let mut all = vec!["portex", "agent"];
        all.extend_from_slice(v);
        match Cli::parse_from(all).command {
            Command::Agent(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file: AgentArgs = toml::from_str("output = \"/var/log/portex/events.ndjson\"\nmetrics = \"127.0.0.1:9633\"\nrotate_size = \"64M\"\nwarn = 70.0\n").unwrap();
        let c = resolve(&args(&["--warn", "60"]), file).unwrap();
        assert_eq!(c.output, "/var/log/portex/events.ndjson");
        assert_eq!(c.metrics, Some("127.0.0.1:9633".parse().unwrap()));
        assert_eq!(c.rotate_size, 64 << 20);
        assert_eq!(c.warn, 60.0);
        assert_eq!(c.critical, 95.0);
        let c = resolve(&args(&["--metrics", "9633"]), AgentArgs::default()).unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9633".parse().unwrap()));
        let d = resolve(&args(&[]), AgentArgs::default()).unwrap();
        assert_eq!((d.output.as_str(), d.metrics), ("-", None));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<AgentArgs>("outptu = \"x\"").is_err());
        let file: AgentArgs = toml::from_str("metrics = \"nowhere\"").unwrap();
        assert!(resolve(&args(&[]), file).is_err());
    }

    #[test]
    fn syscall_hooks_default_to_auto_and_follow_flags_then_file() {
        let mode = |a: &[&str], f: &str| {
            resolve(&args(a), parse_file(Path::new("t.toml"), f)?).map(|c| c.syscall_hooks)
        };
        assert_eq!(mode(&[], "").unwrap(), HookMode::Auto);
        assert_eq!(mode(&["--no-syscall-hooks"], "").unwrap(), HookMode::Off);
        assert_eq!(
            mode(&["--syscall-hooks", "on"], "syscall_hooks = \"off\"").unwrap(),
            HookMode::On
        );
        assert_eq!(mode(&[], "syscall_hooks = \"off\"").unwrap(), HookMode::Off);
        assert_eq!(mode(&[], "no_syscall_hooks = true").unwrap(), HookMode::Off);
        let e = mode(&[], "syscall_hooks = \"sometimes\"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config t.toml: line 1: expected on, off or auto, got sometimes"
        );
    }

    #[test]
    fn every_bound_applies_to_the_flag_and_the_key_alike() {
        for (flag, key) in [
            (vec!["--ring-kib", "3"], "ring_kib = 3"),
            (vec!["--queue", "1K"], "queue = \"1K\""),
            (vec!["--rotate-size", "1"], "rotate_size = 1"),
            (vec!["--rotate-keep", "1001"], "rotate_keep = 1001"),
            (
                vec!["--metrics-max-pools", "10001"],
                "metrics_max_pools = 10001",
            ),
            (
                vec!["--metrics-top-processes", "10001"],
                "metrics_top_processes = 10001",
            ),
            (
                vec!["--syscall-hooks-linger", "999999999"],
                "syscall_hooks_linger = 999999999",
            ),
            (vec!["--warn", "101"], "warn = 101.0"),
        ] {
            let by_flag = resolve(&args(&flag), AgentArgs::default()).unwrap_err();
            let by_key = resolve(&args(&[]), parse_file(Path::new("t"), key).unwrap()).unwrap_err();
            assert_eq!(by_flag.to_string(), by_key.to_string(), "{key}");
        }
    }

    #[test]
    fn the_packaged_config_file_is_valid() {
        let text = include_str!("../../../packaging/systemd/agent.toml");
        let c = resolve(&args(&[]), toml::from_str(text).unwrap()).unwrap();
        assert_eq!(c.syscall_hooks, HookMode::Auto);
        assert_eq!(c.syscall_hooks_linger, 300);
        assert!(!c.accepted);
        assert_eq!(c.metrics, Some("127.0.0.1:9633".parse().unwrap()));
    }
}

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

/// A size in the file: a number of bytes or a string with a unit ("16M").
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

/// The TOML file: every key optional, named as the long flag with '_' for '-'.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub output: Option<String>,
    pub metrics: Option<String>,
    pub rotate_size: Option<SizeValue>,
    pub rotate_keep: Option<u64>,
    pub queue: Option<SizeValue>,
    pub warn: Option<f64>,
    pub critical: Option<f64>,
    pub metrics_pool_min: Option<f64>,
    pub metrics_max_pools: Option<u64>,
    pub metrics_top_processes: Option<u64>,
    pub syscall_hooks: Option<String>,
    pub no_syscall_hooks: Option<bool>,
    pub syscall_hooks_linger: Option<u64>,
    pub accepted: Option<bool>,
    pub ring_kib: Option<u64>,
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
fn hook_mode(args: &AgentArgs, file: &FileConfig) -> Result<HookMode> {
    if args.no_syscall_hooks {
        return Ok(HookMode::Off);
    }
    if let Some(m) = args.syscall_hooks {
        return Ok(m);
    }
    match (&file.syscall_hooks, file.no_syscall_hooks) {
        (Some(s), _) => s.parse().map_err(|e| anyhow::anyhow!("syscall_hooks: {e}")),
        (None, Some(true)) => Ok(HookMode::Off),
        _ => Ok(HookMode::Auto),
    }
}

/// Reads a regular file of at most CONFIG_FILE_BYTES (never /dev/zero or a FIFO).
pub(crate) fn load_file(path: &Path) -> Result<FileConfig> {
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
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.message()))
}

/// Flags override the file, which overrides the defaults.
pub fn resolve(args: &AgentArgs, file: FileConfig) -> Result<AgentConfig> {
    let syscall_hooks = hook_mode(args, &file)?;
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
    let rotate_size = match (&args.rotate_size, &file.rotate_size) {
        (Some(s), _) => parse_size(s),
        (None, Some(v)) => v.bytes(),
        (None, None) => Ok(0),
    }
    .and_then(limits::rotate_size)
    .map_err(anyhow::Error::msg)?;
    let queue_bytes = match (&args.queue, &file.queue) {
        (Some(s), _) => parse_size(s),
        (None, Some(v)) => v.bytes(),
        (None, None) => Ok(limits::QUEUE_BYTES.default),
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
            .unwrap_or_else(|| "-".into()),
        metrics,
        rotate_size,
        rotate_keep: bounded(limits::ROTATE_KEEP, args.rotate_keep, file.rotate_keep)? as u32,
        queue_bytes,
        warn: args.warn.or(file.warn).unwrap_or(80.0),
        critical: args.critical.or(file.critical).unwrap_or(95.0),
        metrics_pool_min: args
            .metrics_pool_min
            .or(file.metrics_pool_min)
            .unwrap_or(50.0),
        metrics_max_pools: bounded(
            limits::METRICS_SERIES,
            args.metrics_max_pools,
            file.metrics_max_pools,
        )? as usize,
        metrics_top_processes: bounded(
            limits::METRICS_SERIES
                .named("metrics-top-processes")
                .with_default(10),
            args.metrics_top_processes,
            file.metrics_top_processes,
        )? as usize,
        syscall_hooks,
        syscall_hooks_linger: bounded(
            limits::LINGER_S.with_default(crate::logic::arming::LINGER_NS / 1_000_000_000),
            args.syscall_hooks_linger,
            file.syscall_hooks_linger,
        )?,
        accepted: args.accepted || file.accepted.unwrap_or(false),
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
        let file: FileConfig = toml::from_str("output = \"/var/log/portex/events.ndjson\"\nmetrics = \"127.0.0.1:9633\"\nrotate_size = \"64M\"\nwarn = 70.0\n").unwrap();
        let c = resolve(&args(&["--warn", "60"]), file).unwrap();
        assert_eq!(c.output, "/var/log/portex/events.ndjson");
        assert_eq!(c.metrics, Some("127.0.0.1:9633".parse().unwrap()));
        assert_eq!(c.rotate_size, 64 << 20);
        assert_eq!(c.warn, 60.0);
        assert_eq!(c.critical, 95.0);
        let c = resolve(&args(&["--metrics", "9633"]), FileConfig::default()).unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9633".parse().unwrap()));
        let d = resolve(&args(&[]), FileConfig::default()).unwrap();
        assert_eq!((d.output.as_str(), d.metrics), ("-", None));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<FileConfig>("outptu = \"x\"").is_err());
        let file: FileConfig = toml::from_str("metrics = \"nowhere\"").unwrap();
        assert!(resolve(&args(&[]), file).is_err());
    }

    #[test]
    fn syscall_hooks_default_to_auto_and_follow_flags_then_file() {
        let mode = |a: &[&str], f: &str| {
            resolve(&args(a), toml::from_str(f).unwrap()).map(|c| c.syscall_hooks)
        };
        assert_eq!(mode(&[], "").unwrap(), HookMode::Auto);
        assert_eq!(mode(&["--no-syscall-hooks"], "").unwrap(), HookMode::Off);
        assert_eq!(
            mode(&["--syscall-hooks", "on"], "syscall_hooks = \"off\"").unwrap(),
            HookMode::On
        );
        assert_eq!(mode(&[], "syscall_hooks = \"off\"").unwrap(), HookMode::Off);
        assert_eq!(mode(&[], "no_syscall_hooks = true").unwrap(), HookMode::Off);
        assert!(mode(&[], "syscall_hooks = \"sometimes\"").is_err());
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

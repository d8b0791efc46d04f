//! The command line, declared once with clap: the help, the man pages
//! (`cargo xtask man`) and the completion scripts (`portex completions`) are generated
//! from it. The agent's settings are also the keys of its config file and `PORTEX_*`
//! environment variables (`cli_command`).
use std::ffi::OsString;

use clap::{
    ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand,
    builder::BoolishValueParser, error::ErrorKind,
};
use serde::Deserialize;

use crate::{
    cmd::{
        config::{SizeValue, list, one},
        help,
    },
    logic::{
        arming::HookMode,
        filter::{AddrMatch, ContainerPrefix, Lines, PortRange},
        limits::{self, Seconds},
    },
};

/// Prefix of the environment variable of each agent setting: `--rotate-size` is
/// PORTEX_ROTATE_SIZE.
pub(crate) const ENV_PREFIX: &str = "PORTEX_";

#[derive(Parser, Debug)]
#[command(
    name = "portex",
    version,
    about = "Who is burning the ephemeral ports, towards which destination, and how close each pool is to empty",
    after_help = help::PORTEX
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// --log-level, --log-format, --kernel-log: before or after the subcommand.
    #[command(flatten)]
    pub log: crate::cmd::logging::LogArgs,
}

#[derive(Subcommand, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start; boxing would change the fuzz targets' matching for nothing"
)]
pub enum Command {
    /// Print connection lifecycle and port-failure events as they happen (needs root).
    #[command(after_help = help::WATCH)]
    Watch(WatchArgs),
    /// One-shot report of every port pool (no eBPF); the exit status is the verdict:
    /// 0 ok, 1 warning, 2 critical, 3 could not check.
    #[command(after_help = help::STATUS)]
    Status(StatusArgs),
    /// Live full-screen view: per-process churn and per-pool pressure, the selected pool's
    /// last minutes and what to change (needs root).
    #[command(after_help = help::TOP)]
    Top(TopArgs),
    /// Run as a service: NDJSON events to a file or stdout, metrics for Prometheus (needs
    /// root or CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH).
    #[command(after_help = help::AGENT)]
    Agent(AgentArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = help::COMPLETIONS)]
    Completions(CompletionsArgs),
}

/// The whole command line as documented: with the environment variable of every agent
/// setting (help, man pages, completion scripts).
pub fn cli_command() -> clap::Command {
    command(true)
}

/// Halves of one setting, which exclude each other on the command line.
const PAIRS: [(&str, &str); 2] = [("ipv4", "ipv6"), ("syscall_hooks", "no_syscall_hooks")];

/// `env`: the agent's settings read their `PORTEX_*` variables, and the halves of a pair
/// do not conflict (a flag must beat a variable of the other half: AgentArgs::over
/// decides). Without: the agent's flags alone, pairs in conflict as in `watch`.
fn command(env: bool) -> clap::Command {
    let conflicts = |mut c: clap::Command| {
        for (a, b) in PAIRS {
            if c.get_arguments().any(|x| x.get_id() == a) {
                c = c.mut_arg(a, |x| x.conflicts_with(b));
            }
        }
        c
    };
    Cli::command()
        .mut_subcommand("watch", conflicts)
        .mut_subcommand("agent", |agent| {
            if env {
                agent.mut_args(|a| {
                    let var = format!("{ENV_PREFIX}{}", a.get_id().as_str().to_ascii_uppercase());
                    a.env(var)
                })
            } else {
                conflicts(agent)
            }
        })
}

/// Parses `argv`. The agent's flags and its environment are parsed apart, then layered
/// (flags over variables), so that a flag beats a variable even where the two would
/// conflict (`-6` over PORTEX_IPV4=true).
pub(crate) fn parse(argv: &[OsString]) -> Result<Cli, clap::Error> {
    // Help, version, every usage error and every bad variable, as documented.
    let mut cli = Cli::from_arg_matches(&command(true).try_get_matches_from(argv)?)?;
    if let Command::Agent(args) = &mut cli.command {
        let flags = agent_args(command(false).try_get_matches_from(argv)?)?;
        let env = agent_args(command(true).try_get_matches_from(["portex", "agent"])?)?;
        *args = flags.over(env);
    }
    Ok(cli)
}

fn agent_args(m: ArgMatches) -> Result<AgentArgs, clap::Error> {
    match Cli::from_arg_matches(&m)?.command {
        Command::Agent(a) => Ok(a),
        _ => Err(clap::Error::raw(
            ErrorKind::InvalidSubcommand,
            "not `agent`",
        )),
    }
}

/// The agent's settings, declared once: each is a flag, a key of the TOML file
/// (`--config`; the key is the flag's name with '_' for '-') and an environment variable
/// (`cli_command`). Flags override the environment (`parse`), which overrides the file;
/// defaults and bounds live in logic::limits and apply to all (cmd::config::resolve).
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentArgs {
    /// TOML file with any of the settings below (flags and the environment override it).
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
    #[arg(long, value_name = "MODE")]
    pub syscall_hooks: Option<HookMode>,
    /// Same as --syscall-hooks off.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub no_syscall_hooks: Option<bool>,
    /// With --syscall-hooks auto: seconds the hooks stay attached after the last pool
    /// above 40 % or port failure. [default: 300]
    #[arg(long, value_name = "SECONDS")]
    pub syscall_hooks_linger: Option<u64>,
    /// Also report connections this host accepted (the server side). They hold the
    /// listening port, not an ephemeral one, so by default the kernel drops them at its
    /// first check: the agent then costs servers nothing for them. [default: false]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub accepted: Option<bool>,
    /// Ring buffer size in KiB (a power of two, 4 to 262144). [default: 4096]
    #[arg(long, value_name = "KIB")]
    pub ring_kib: Option<u64>,
    /// Seconds between scans of every namespace's conntrack table for NAT pools (their
    /// metrics and pool_pressure events); longer when a scan is slow (at most ~2.5 % of
    /// a core); 0: off (at most 3600). [default: 5]
    #[arg(long, value_name = "SECONDS")]
    pub nat_scan: Option<u64>,
    /// Read from the same table by cmd::config::parse_file (serde's flatten would lose
    /// the line of a bad key).
    #[command(flatten)]
    #[serde(skip)]
    pub filter: FilterArgs,
}

/// Which events `watch` and `agent` write, and when they stop: the filters users of
/// tcplife and tcpconnect know. Only the lines written are filtered: the pool ledger,
/// pool_pressure detection and the metrics still see every event. Options, so that the
/// agent can tell a flag from a key of its file (cmd::config::resolve).
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterArgs {
    /// Only events of this process id (thread-group id).
    #[arg(short = 'p', long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Only events of processes (or threads) with this name.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Only connect_failed, bind_failed and connect_stalled (and pool_pressure alarms).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub failures_only: Option<bool>,
    /// Only connections to these destination addresses or networks, comma-separated
    /// (10.0.0.9,10.1.0.0/16,fd00::/8).
    #[arg(long, value_name = "ADDR[/BITS]", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list")]
    pub daddr: Vec<AddrMatch>,
    /// Only connections to these destination ports or ranges, comma-separated
    /// (443,8000-8100).
    #[arg(long, value_name = "PORT[-PORT]", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list")]
    pub dport: Vec<PortRange>,
    /// Only events of processes in this network namespace: a name (`ip netns list`), an
    /// inode (`lsns -t net`) or a path (/proc/PID/ns/net).
    #[arg(long, value_name = "NS")]
    pub netns: Option<String>,
    /// Only events of processes in this container: its id or a prefix of it (as `docker
    /// ps` or `crictl ps` shows it).
    #[arg(long, value_name = "ID")]
    #[serde(default, deserialize_with = "one")]
    pub container: Option<ContainerPrefix>,
    /// Only IPv4 connections (an IPv4-mapped IPv6 address is IPv6 here, as
    /// network.type shows it).
    #[arg(short = '4', long, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_name = "BOOL",
          value_parser = BoolishValueParser::new())]
    pub ipv4: Option<bool>,
    /// Only IPv6 connections.
    #[arg(short = '6', long, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_name = "BOOL",
          value_parser = BoolishValueParser::new())]
    pub ipv6: Option<bool>,
    /// One line per event (events), or one `connection` line per connection at its
    /// close, with its start, duration, close kind and TIME_WAIT, plus every failure and
    /// pool_pressure alarm (connections: ~4x fewer lines, for pipelines that pay per line).
    #[arg(long, value_name = "events|connections")]
    pub lines: Option<Lines>,
    /// Exit after this many lines (events and pool_pressure alarms that pass the
    /// filters).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Exit after this long: seconds, or with a unit (90s, 10m, 2h, 1d).
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "one")]
    pub duration: Option<Seconds>,
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
    #[arg(long, conflicts_with = "netns")]
    pub all_netns: bool,
    /// Only this network namespace: a name (`ip netns list`), an inode (`lsns -t net`)
    /// or a path (/proc/PID/ns/net); entering another namespace needs CAP_SYS_ADMIN.
    #[arg(long, value_name = "NS")]
    pub netns: Option<String>,
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
    #[command(flatten)]
    pub filter: FilterArgs,
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
    /// Do not track port pools (no pool state on failures, no pool_pressure events, no
    /// --netns: the ledger names each event's namespace).
    #[arg(long)]
    pub no_pools: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Ring buffer size in KiB (a power of two, 4 to 262144).
    #[arg(long, value_name = "KIB", default_value_t = limits::RING_KIB.default as u32, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
    /// Seconds between scans of every namespace's conntrack table for NAT pools
    /// (pool_pressure events of NAT pools); longer when a scan is slow (at most ~2.5 %
    /// of a core); 0: off.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::NAT_SCAN_S.default, value_parser = parse_nat_scan)]
    pub nat_scan: u64,
}

fn parse_nat_scan(s: &str) -> Result<u64, String> {
    let v: u64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    limits::NAT_SCAN_S.check(v)
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let v: u64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    limits::ring_kib(v)
}

#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        // clap's own checks (conflicts naming real arguments, no duplicate flags...).
        cli_command().debug_assert();
        command(false).debug_assert();
    }

    #[test]
    fn every_agent_setting_has_its_environment_variable_and_no_other_command_does() {
        let cmd = cli_command();
        let agent = cmd.find_subcommand("agent").unwrap();
        let mut n = 0;
        for a in agent.get_arguments() {
            let id = a.get_id().as_str();
            let want = format!("PORTEX_{}", id.to_ascii_uppercase());
            assert_eq!(a.get_env().and_then(|e| e.to_str()), Some(want.as_str()));
            n += 1;
        }
        assert!(n >= 25, "{n} agent settings");
        for sub in ["watch", "status", "top", "completions"] {
            let c = cmd.find_subcommand(sub).unwrap();
            assert!(c.get_arguments().all(|a| a.get_env().is_none()), "{sub}");
        }
    }
}

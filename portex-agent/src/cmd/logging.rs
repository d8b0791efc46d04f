//! The logging flags every subcommand takes (`portex --log-level debug status`, or
//! after the subcommand), and which filter wins: --log-level, then PORTEX_LOG_LEVEL,
//! then RUST_LOG, then the subcommand's default. Their variables follow the agent's
//! rule (PORTEX_ and the flag's name).
use clap::{ArgAction, Args, ValueEnum, builder::BoolishValueParser};

use crate::sys::logging;

/// The logging flags that take a value (cmd::subcommand skips it).
pub(crate) const FLAGS_WITH_VALUE: [&str; 2] = ["--log-level", "--log-format"];

/// One of the logging flags (`--kernel-log` too).
pub(crate) fn is_flag(flag: &str) -> bool {
    FLAGS_WITH_VALUE.contains(&flag) || flag == "--kernel-log"
}

#[derive(Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Diagnostics shown on stderr: a level (error, warn, info, debug, trace, off) or
    /// RUST_LOG-style directives, e.g. warn,portex_agent::pipeline=debug,aya=debug.
    /// [default: RUST_LOG, else info]
    #[arg(long, global = true, value_name = "FILTER", env = "PORTEX_LOG_LEVEL", value_parser = check_filter)]
    pub log_level: Option<String>,
    /// Format of the diagnostics on stderr: text, or json (one object per line with
    /// timestamp, level, target, message and fields, for journald or Kubernetes). The
    /// events themselves are not affected.
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        env = "PORTEX_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// The kernel programs' own diagnostics (a map or the ring buffer full, a socket
    /// whose start was missed), logged with target portex_ebpf. Off by default: the
    /// loader then leaves them out of the programs, which cost nothing more.
    #[arg(long, global = true, env = "PORTEX_KERNEL_LOG", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "false", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub kernel_log: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn check_filter(s: &str) -> Result<String, String> {
    logging::parse_filter(s)?;
    Ok(s.to_string())
}

/// Installs the logger; `default` is the filter when neither the flag, PORTEX_LOG_LEVEL nor
/// RUST_LOG sets one.
pub(crate) fn init(args: &LogArgs, default: &str) -> Result<(), String> {
    let json = args.log_format == LogFormat::Json;
    let (filter, from) = match (&args.log_level, std::env::var("RUST_LOG")) {
        (Some(f), _) => (f.clone(), ""),
        // The flag and PORTEX_LOG_LEVEL were checked by clap; RUST_LOG is checked by init,
        // once the format of the fatal error is known.
        (None, Ok(f)) if !f.trim().is_empty() => (f, "RUST_LOG: "),
        _ => (default.to_string(), ""),
    };
    logging::init(&filter, json, args.kernel_log).map_err(|e| format!("{from}{e}"))
}

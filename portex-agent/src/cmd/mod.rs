//! The command line: arguments and settings, and one thin file per subcommand on top
//! of the pipeline (watch, agent, top) or the sys snapshot (status).
pub(crate) mod agent;
pub(crate) mod cli;
pub(crate) mod completions;
pub(crate) mod config;
mod help;
pub(crate) mod logging;
pub(crate) mod status;
pub(crate) mod top;
pub(crate) mod watch;

use std::ffi::OsString;

use anyhow::Result;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use cli::Command;

use crate::{cmd::config::FilterConfig, logic::filter::Filter};

/// Runs the command line and exits. Every command: 0 done, 1 an error (one line on
/// stderr), 2 bad usage. `status` speaks the monitoring plugins' language instead: 0 ok,
/// 1 warning, 2 critical, 3 could not check (an error or bad usage alike).
pub fn main() -> ! {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let is_status = subcommand(&argv) == Some("status");
    let (error_code, usage_code) = if is_status {
        (status::UNKNOWN, status::UNKNOWN)
    } else {
        (1, 2)
    };
    let cli = cli::parse(&argv).unwrap_or_else(|e| bad_usage(e, &argv, usage_code));
    if let Err(e) = logging::init(&cli.log, default_filter(&cli.command)) {
        crate::sys::logging::fatal(&e);
        std::process::exit(usage_code);
    }
    let res = match cli.command {
        Command::Watch(args) => watch::run(args).map(|_| 0),
        Command::Status(args) => status::run(args),
        Command::Top(args) => top::run(args).map(|_| 0),
        Command::Agent(args) => agent::run(args).map(|_| 0),
        Command::Completions(args) => completions::run(args).map(|_| 0),
    };
    let code = match res {
        Ok(code) => code,
        Err(e) => {
            report(e);
            error_code
        }
    };
    std::process::exit(code);
}

/// The subcommand's name: the first argument that is neither a flag nor the value of a
/// logging flag before it (`portex --log-level debug status`).
fn subcommand(argv: &[OsString]) -> Option<&str> {
    let mut args = argv.iter().skip(1).filter_map(|a| a.to_str());
    while let Some(a) = args.next() {
        if logging::FLAGS_WITH_VALUE.contains(&a) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Diagnostics at info and above, except over `top`'s full-screen view: lines on the
/// terminal it draws on would tear it (its stderr redirected elsewhere gets them all).
fn default_filter(command: &Command) -> &'static str {
    use std::io::IsTerminal;
    match command {
        Command::Top(a) if !a.once && std::io::stderr().is_terminal() => "error",
        _ => "info",
    }
}

/// One line, no backtrace: the outermost context and its causes.
fn report(e: anyhow::Error) {
    let mut msg = format!("{e}");
    for cause in e.chain().skip(1) {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
    }
    crate::sys::logging::fatal(&msg);
}

/// A wrong flag or value is one line too (clap adds usage and a hint on more lines),
/// exit status `code`; --help and --version print as clap does (exit 0).
fn bad_usage(e: clap::Error, argv: &[OsString], code: i32) -> ! {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!(
        "portex: error: {first}{} (see portex --help)",
        from_variable(&e, argv)
    );
    std::process::exit(code)
}

/// " (from PORTEX_RING_KIB)" when the value clap refused came from the agent's
/// environment, not from a flag the user can see on the command line.
fn from_variable(e: &clap::Error, argv: &[OsString]) -> String {
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return String::new();
    };
    // "--ring-kib <KIB>", "--accepted[=<BOOL>]"
    let Some(long) = arg.strip_prefix("--") else {
        return String::new();
    };
    let long = long.split([' ', '[', '=']).next().unwrap_or_default();
    let flag = format!("--{long}");
    let on_command_line = argv.iter().filter_map(|a| a.to_str()).any(|a| {
        a == flag
            || a.strip_prefix(flag.as_str())
                .is_some_and(|r| r.starts_with('='))
    });
    let var = format!(
        "{}{}",
        cli::ENV_PREFIX,
        long.replace('-', "_").to_ascii_uppercase()
    );
    let has_variable = subcommand(argv) == Some("agent") || logging::is_flag(&flag);
    if has_variable && !on_command_line && std::env::var_os(&var).is_some() {
        format!(" (from {var})")
    } else {
        String::new()
    }
}

/// `watch`'s and `agent`'s filter, with `--netns` looked up (a name or a path becomes
/// the namespace's inode, which events carry).
fn event_filter(c: &FilterConfig) -> Result<Filter> {
    let netns = match &c.netns {
        Some(spec) => Some(crate::sys::netns::find(spec)?.inode),
        None => None,
    };
    Ok(c.filter(netns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subcommand_is_the_first_argument_that_is_not_a_flag() {
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            subcommand(&argv(&["portex", "status", "--json"])),
            Some("status")
        );
        assert_eq!(
            subcommand(&argv(&["portex", "--help", "status"])),
            Some("status")
        );
        assert_eq!(subcommand(&argv(&["portex", "--version"])), None);
        assert_eq!(subcommand(&argv(&["portex"])), None);
    }
}

//! The command line: arguments and settings, and one thin file per subcommand on top
//! of the pipeline (watch, agent, top) or the sys snapshot (status).
pub(crate) mod agent;
pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod status;
pub(crate) mod top;
pub(crate) mod watch;

use clap::{Parser, error::ErrorKind};

use cli::{Cli, Command};

/// Runs the command line and exits: 0 done, 1 an error (one line on stderr), 2 bad
/// usage; `status` also says whether a pool is over the warning threshold.
pub fn main() -> ! {
    let cli = Cli::try_parse().unwrap_or_else(|e| bad_usage(e));
    let res = match cli.command {
        Command::Watch(args) => watch::run(args).map(|_| 0),
        Command::Status(args) => status::run(args),
        Command::Top(args) => top::run(args).map(|_| 0),
        Command::Agent(args) => agent::run(args).map(|_| 0),
    };
    let code = match res {
        Ok(code) => code,
        Err(e) => report(e),
    };
    std::process::exit(code);
}

/// One line, no backtrace: the outermost context and its causes. Exit status 1.
fn report(e: anyhow::Error) -> i32 {
    let mut msg = format!("{e}");
    for cause in e.chain().skip(1) {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
    }
    eprintln!("portex: error: {msg}");
    1
}

/// A wrong flag or value is one line too (clap adds usage and a hint on more lines),
/// exit status 2; --help and --version print as clap does.
fn bad_usage(e: clap::Error) -> ! {
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
    eprintln!("portex: error: {first} (see portex --help)");
    std::process::exit(2)
}

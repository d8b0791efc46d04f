//! The `portex` binary: parses the command line and reports any error as one line.
use clap::Parser;
use portex_agent::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Watch(args) => portex_agent::watch::run(args),
    };
    if let Err(e) = res {
        // One line, no backtrace: the outermost context and its causes.
        let mut msg = format!("{e}");
        for cause in e.chain().skip(1) {
            msg.push_str(": ");
            msg.push_str(&cause.to_string());
        }
        eprintln!("portex: error: {msg}");
        std::process::exit(1);
    }
}

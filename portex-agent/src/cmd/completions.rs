//! `portex completions SHELL`: a completion script generated from the clap definition
//! (the agent's environment variables included), so it never lags behind the flags.
use std::io::Write;

use anyhow::{Context, Result};

use crate::cmd::cli::{CompletionsArgs, cli_command};

pub(crate) fn run(args: CompletionsArgs) -> Result<()> {
    let script = script(args.shell);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the completion script")
        }
        _ => Ok(()),
    }
}

/// Generated into memory: clap_complete panics on a failed write.
fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cli_command(), "portex", &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use clap::ValueEnum;
    use clap_complete::Shell;

    use super::*;

    /// Runs `shell -n` (parse only) on `script`; None when the shell is not installed.
    fn syntax_check(shell: &str, check: &[&str], script: &[u8]) -> Option<(bool, String)> {
        let path =
            std::env::temp_dir().join(format!("portex-completion-{}-{shell}", std::process::id()));
        std::fs::write(&path, script).unwrap();
        let out = Command::new(shell).args(check).arg(&path).output();
        let _ = std::fs::remove_file(&path);
        let out = out.ok()?;
        Some((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    #[test]
    fn every_shell_gets_a_script_that_names_every_command() {
        for shell in Shell::value_variants() {
            let s = String::from_utf8(script(*shell)).unwrap();
            for word in ["watch", "status", "top", "agent", "completions", "daddr"] {
                assert!(s.contains(word), "{shell}: no {word}");
            }
        }
    }

    #[test]
    fn the_bash_script_parses() {
        let s = script(Shell::Bash);
        let (ok, err) = syntax_check("bash", &["-n"], &s).expect("bash is installed");
        assert!(ok && err.is_empty(), "bash -n: {err}");
        // zsh and fish check their own scripts where they are installed.
        for (shell, check, kind) in [
            ("zsh", &["-n"][..], Shell::Zsh),
            ("fish", &["--no-execute"][..], Shell::Fish),
        ] {
            if let Some((ok, err)) = syntax_check(shell, check, &script(kind)) {
                assert!(ok, "{shell}: {err}");
            }
        }
    }
}

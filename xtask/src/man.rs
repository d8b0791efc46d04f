//! `cargo xtask man [--out DIR]`: the man pages, generated from the clap definition by
//! portex-agent's `man` example (clap_mangen stays out of the shipped binary, and xtask
//! does not link the agent: `cargo xtask setup` must build on a machine without the
//! eBPF tool chain). Default DIR: target/man.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub(crate) fn run(out: Option<PathBuf>) -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"));
    let out = out.unwrap_or_else(|| target.join("man"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = std::process::Command::new(cargo)
        .current_dir(crate::root())
        .args(["run", "-q", "-p", "portex-agent", "--example", "man", "--"])
        .arg(absolute(&out)?)
        .status()
        .context("running cargo")?
        .success();
    if !ok {
        bail!("generating the man pages failed");
    }
    eprintln!(
        "man pages in {} (read one with: man -l {}/portex.1)",
        out.display(),
        out.display()
    );
    Ok(())
}

/// The example runs in the workspace root: a relative DIR is the caller's.
fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(std::env::current_dir()?.join(p))
}

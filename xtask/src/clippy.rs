//! `cargo xtask clippy`: clippy with `-D warnings` over every crate, the kernel one too.
//!
//! Two passes, because no single invocation can build both sides: portex-ebpf is no_std
//! and builds only for the bpf target (it is not a default member), and the host crates
//! cannot build for bpf. The kernel pass uses the tool chain aya-build uses for the real
//! object (`rustup run nightly`, `-Z build-std=core`, bpfel or bpfeb after the host's
//! endianness), so it sees the code exactly as it is compiled; it checks portex-common
//! as the kernel sees it too (no_std, without the "user" feature).
use std::process::Command;

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut host = Command::new(cargo);
    host.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    // Both passes run, so that one run shows every problem.
    let host_ok = pass("host crates", host)?;

    let target = if cfg!(target_endian = "big") {
        "bpfeb-unknown-none"
    } else {
        "bpfel-unknown-none"
    };
    let mut bpf = Command::new("rustup");
    bpf.args(["run", "nightly", "cargo", "clippy", "-p", "portex-ebpf"])
        .args(["--target", target, "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        // As aya-build does: a RUSTC from the outer cargo would be the stable compiler.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    let bpf_ok = pass("kernel crate", bpf)?;
    match (host_ok, bpf_ok) {
        (true, true) => Ok(()),
        (false, true) => bail!("clippy found problems in the host crates"),
        (true, false) => bail!("clippy found problems in the kernel crate"),
        (false, false) => bail!("clippy found problems in the host crates and the kernel crate"),
    }
}

/// Runs one pass; Ok(false) when clippy found problems.
fn pass(what: &str, mut cmd: Command) -> Result<bool> {
    cmd.current_dir(crate::root());
    let shown: Vec<_> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect();
    eprintln!("xtask: clippy, {what}: {}", shown.join(" "));
    Ok(cmd.status()?.success())
}

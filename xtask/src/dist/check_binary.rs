//! The binary runs where nothing else is: copied alone into an empty directory and run
//! from there with an empty environment (PATH=/nonexistent: no cargo, rustc, clang or
//! bpf-linker to be found), `status` reports and `watch` loads, attaches and stops.
use std::{fs, process::Command, time::Duration};

use anyhow::{Result, bail};

use super::{Dist, VERSION, run_bounded, run_cmd, status_ran, watch_ran};

pub(super) fn run(d: &Dist) -> Result<()> {
    // The checksums match what is there.
    run_cmd(
        Command::new("sha256sum")
            .args(["--check", "--quiet", "SHA256SUMS"])
            .current_dir(&d.out),
    )?;
    let empty = portex_e2e::TmpDir::new("dist-empty");
    let logs = portex_e2e::TmpDir::new("dist-logs");
    let name = d.binary().file_name().map(|n| n.to_owned());
    let bin = empty.join(name.unwrap_or_default());
    fs::copy(d.binary(), &bin)?;
    let portex = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .current_dir(&empty)
            .env_clear()
            .env("PATH", "/nonexistent");
        cmd
    };
    let version = run_bounded(&mut portex(&["--version"]), Duration::from_secs(10), &logs)?;
    if version.stdout.trim() != format!("portex {VERSION}") {
        bail!("--version: {}", version.describe());
    }
    status_ran(&run_bounded(
        &mut portex(&["status"]),
        Duration::from_secs(60),
        &logs,
    )?)?;
    watch_ran(&run_bounded(
        &mut portex(&["watch", "--duration", "2"]),
        Duration::from_secs(60),
        &logs,
    )?)?;
    // It wrote nothing where it ran.
    let left: Vec<_> = fs::read_dir(&empty)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    if left.len() != 1 {
        bail!("the directory it ran in now holds {left:?}");
    }
    eprintln!(
        "dist: the binary alone in an empty directory, empty environment: --version, status and watch --duration 2 ran"
    );
    Ok(())
}

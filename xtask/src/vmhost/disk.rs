//! The guest's disk: the cached tree staged as hard links (`cp -al`: seconds, no data
//! copied, and the cache untouched since guest.rs only adds or replaces files), the
//! guest's files added, then `mkfs.ext4 -d` writes it all into a raw image (no loop
//! device, no mount).
use std::{fs, path::Path, process::Command};

use anyhow::Result;

use super::{
    daemonset::PodSpec,
    guest::{self, Artifacts},
};
use crate::dist::run_cmd;

/// Room for the guest's writes (the image loaded into podman's storage, logs), sparse.
const SIZE: &str = "3G";

pub(super) fn make(cache_tree: &Path, work: &Path, a: &Artifacts, pod: &PodSpec) -> Result<()> {
    let staged = work.join("tree");
    run_cmd(Command::new("cp").arg("-al").arg(cache_tree).arg(&staged))?;
    guest::install(&staged, a, pod)?;
    let image = work.join("rootfs.img");
    let made = run_cmd(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&staged)
            .arg(&image)
            .arg(SIZE),
    );
    fs::remove_dir_all(&staged)?;
    made
}

//! The guest's Debian bookworm, from debootstrap (~160 s on an idle machine, ~500 s
//! measured on the shared 2-core build machine), cached in target/vmhost/rootfs and
//! reused while the recipe (suite, mirror, package list) is the one it was built with:
//! the recipe is written into the tree last, so a tree without it (interrupted) or with
//! another is built again. A run never writes into it (the disk is made from a staged
//! copy: disk.rs); only kernel.rs adds bookworm-backports' kernel, once, when asked.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::dist::run_cmd;

const SUITE: &str = "bookworm";
/// The host's own mirror (/etc/apt/sources.list.d/debian.sources on the CI machines).
pub(super) const MIRROR: &str = "http://deb.debian.org/debian";

/// What the guest needs beyond minbase, and why.
const PACKAGES: &[&str] = &[
    // systemd as PID 1, with what it needs to bring a machine up.
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    // The container runtime (netavark named: debootstrap does not resolve the virtual
    // container-network-stack).
    "podman",
    "crun",
    "netavark",
    // ip (namespaces, veth, the node's address) and ss; the kernel and initrd the host
    // boots, from the guest's own packages; sysctl.
    "iproute2",
    "linux-image-amd64",
    "procps",
    // The checks: the agent's programs, the masquerade rule, /metrics, JSON, listeners.
    "bpftool",
    "nftables",
    "curl",
    "jq",
    "socat",
];

/// The recipe the cache is keyed by: what debootstrap is given.
fn recipe() -> String {
    format!(
        "debootstrap --variant=minbase --include={} {SUITE} DIR {MIRROR}\n",
        PACKAGES.join(",")
    )
}

/// Where the recipe is kept in the tree (outside anything the guest reads).
const RECIPE_FILE: &str = "var/lib/portex-vmhost-recipe";

/// The cached tree (built now if it is missing or of another recipe) and whether it
/// was built by this call.
pub(super) fn ensure(cache: &Path) -> Result<(PathBuf, bool)> {
    let tree = cache.join("rootfs");
    let want = recipe();
    if fs::read_to_string(tree.join(RECIPE_FILE)).ok().as_deref() == Some(want.as_str()) {
        return Ok((tree, false));
    }
    let partial = cache.join("rootfs.partial");
    for dir in [&tree, &partial] {
        remove_tree(dir)?;
    }
    fs::create_dir_all(cache)?;
    eprintln!(
        "vmhost: debootstrap {SUITE} into {} (3-8 minutes)",
        partial.display()
    );
    let log = cache.join("debootstrap.log");
    let status = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={}", PACKAGES.join(",")),
        ])
        .arg(SUITE)
        .arg(&partial)
        .arg(MIRROR)
        .stdout(fs::File::create(&log)?)
        .stderr(fs::File::create(cache.join("debootstrap.err"))?)
        .status()
        .context("running debootstrap")?;
    if !status.success() {
        let said = fs::read_to_string(partial.join("debootstrap/debootstrap.log"))
            .or_else(|_| fs::read_to_string(cache.join("debootstrap.err")))
            .unwrap_or_default();
        let tail: Vec<&str> = said.lines().rev().take(5).collect();
        bail!(
            "debootstrap failed ({status}); its log ends:\n  {}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
        );
    }
    super::kernel::record_debootstrapped(&partial)?;
    fs::write(partial.join(RECIPE_FILE), &want)?;
    fs::rename(&partial, &tree)?;
    Ok((tree, true))
}

/// Removes a tree that an interrupted debootstrap may have left with /proc or /sys
/// mounted in it: those are unmounted first (rm would otherwise walk into them).
fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let prefix = format!("{}/", dir.display());
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    // Deepest first.
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in under {
        run_cmd(Command::new("umount").args(["--lazy", m]))?;
    }
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

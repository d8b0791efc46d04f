//! The kernel the guest boots. Debian 12's own (6.1, from the tree's linux-image-amd64)
//! by default: the kernel a bookworm host runs. bookworm-backports' (6.12) on request,
//! installed into the cached tree once, beside the other, the first time it is asked for
//! (kernel-facts.md, "Other kernels": 6.1's verifier rejects a program that 6.12 loads,
//! so the unit and the image can be proven on 6.12 while 6.1 is being fixed).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::rootfs::MIRROR;
use crate::dist::run_cmd;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kernel {
    Bookworm,
    Backports,
}

impl Kernel {
    pub(crate) fn parse(s: &str) -> Result<Kernel> {
        match s {
            "bookworm" => Ok(Kernel::Bookworm),
            "bookworm-backports" | "backports" => Ok(Kernel::Backports),
            _ => bail!("--kernel {s}: bookworm (6.1, the default) or bookworm-backports (6.12)"),
        }
    }

    /// Where the tree records the release this kernel installed (`uname -r`).
    fn stamp(self) -> &'static str {
        match self {
            Kernel::Bookworm => "var/lib/portex-vmhost-kernel-bookworm",
            Kernel::Backports => "var/lib/portex-vmhost-kernel-backports",
        }
    }
}

/// Records the release of the kernel debootstrap installed (the tree's only one).
pub(super) fn record_debootstrapped(tree: &Path) -> Result<()> {
    let releases = releases(tree)?;
    let [release] = &releases[..] else {
        bail!(
            "debootstrap installed {} kernels: {releases:?}",
            releases.len()
        );
    };
    fs::write(tree.join(Kernel::Bookworm.stamp()), release)?;
    Ok(())
}

/// The kernel and initrd of `kernel` in the tree, installing it first if it is the
/// backports' and not there yet.
pub(super) fn ensure(tree: &Path, kernel: Kernel) -> Result<(PathBuf, PathBuf)> {
    let stamp = tree.join(kernel.stamp());
    if !stamp.is_file() {
        if kernel == Kernel::Bookworm {
            bail!(
                "{} is missing: the cached tree is incomplete",
                stamp.display()
            );
        }
        install_backports(tree)?;
    }
    let release = fs::read_to_string(&stamp)?.trim().to_owned();
    let boot = tree.join("boot");
    let (vmlinuz, initrd) = (
        boot.join(format!("vmlinuz-{release}")),
        boot.join(format!("initrd.img-{release}")),
    );
    for f in [&vmlinuz, &initrd] {
        if !f.is_file() {
            bail!("{} is missing from the cached tree", f.display());
        }
    }
    Ok((vmlinuz, initrd))
}

/// The kernels in the tree's /boot, by release.
fn releases(tree: &Path) -> Result<Vec<String>> {
    let boot = tree.join("boot");
    let mut out: Vec<String> = fs::read_dir(&boot)
        .with_context(|| boot.display().to_string())?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// apt-get in the tree (chrooted, in a mount namespace of its own so that its /proc,
/// /sys and /dev go away with it): bookworm-backports' linux-image-amd64, its initrd
/// made by the tree's initramfs-tools. ~1-2 minutes.
fn install_backports(tree: &Path) -> Result<()> {
    eprintln!("vmhost: installing bookworm-backports' kernel into the cached tree (once)");
    let before = releases(tree)?;
    let sources = tree.join("etc/apt/sources.list.d/vmhost-backports.list");
    fs::write(&sources, format!("deb {MIRROR} bookworm-backports main\n"))?;
    let script = r#"set -e
root=$1
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
export DEBIAN_FRONTEND=noninteractive
chroot "$root" apt-get update -qq
chroot "$root" apt-get install -y -qq --no-install-recommends -t bookworm-backports linux-image-amd64
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/*"#;
    let installed = run_cmd(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(tree),
    );
    fs::remove_file(&sources)?;
    installed?;
    let new: Vec<String> = releases(tree)?
        .into_iter()
        .filter(|r| !before.contains(r))
        .collect();
    let [release] = &new[..] else {
        bail!(
            "bookworm-backports' linux-image-amd64 added {} kernels: {new:?}",
            new.len()
        );
    };
    fs::write(tree.join(Kernel::Backports.stamp()), release)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_by_name() {
        assert_eq!(Kernel::parse("bookworm").unwrap(), Kernel::Bookworm);
        assert_eq!(
            Kernel::parse("bookworm-backports").unwrap(),
            Kernel::Backports
        );
        assert!(Kernel::parse("6.12").is_err());
    }
}

//! `cargo xtask vmhost [--timeout SECS]`: the packaged systemd unit and the OCI image
//! proven on a real host, which the CI machines are not (systemd is not PID 1 there,
//! and no container runs): a Debian bookworm VM with systemd and podman, booted under
//! QEMU's TCG with the artifacts of `cargo xtask dist` in it, whose checks (guest/*.sh)
//! install and start the unit, run the image as the DaemonSet runs it, and report one
//! line per check on the serial port before the VM powers off.
//!
//! - rootfs.rs: the Debian tree from debootstrap, cached in /opt/portex/vmhost/rootfs
//!   (PORTEX_VMHOST_CACHE): outside the checkout, so that a fresh clone on the same
//!   machine (CI's) finds it;
//!   kernel.rs: which of its kernels boots (Debian 12's 6.1, or bookworm-backports' 6.12);
//! - daemonset.rs: the manifest as podman options; guest.rs: what goes into the VM;
//! - disk.rs: the disk image; qemu.rs: the boot; results.rs: the result lines.
//!
//! Temporary files (the staged tree, the 3 GB disk image) live in target/vmhost/run and
//! are removed on every path; the serial log stays in target/vmhost/serial.log.
mod daemonset;
mod disk;
mod guest;
mod kernel;
mod qemu;
mod results;
mod rootfs;

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::dist;

pub(crate) use kernel::Kernel;

pub(crate) struct Opts {
    pub kernel: Kernel,
    /// The VM's hard limit, from its start to its power-off.
    pub timeout: Duration,
    /// Keep the disk image (target/vmhost/run/rootfs.img) after the run, for its journal:
    /// `debugfs -R 'rdump /var/log/journal DIR' rootfs.img; journalctl -D DIR/journal`.
    pub keep_disk: bool,
}

/// Removes the run's temporary directory however the run ends (unless asked to keep it).
struct WorkDir(PathBuf, bool);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.1 {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

pub(crate) fn run(opts: Opts) -> Result<()> {
    if !portex_e2e::is_root() {
        bail!(
            "vmhost runs debootstrap and writes a root filesystem's files as root: run it as root"
        );
    }
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("python3", "python3"),
    ] {
        if dist::which(tool).is_none() {
            bail!(
                "{tool} not found: install it (apt-get install {package}; scripts/setup.sh does)"
            );
        }
    }
    let artifacts = dist::artifacts_dir();
    let (deb, image_archive) = (
        artifacts.join(dist::deb_file_name()),
        artifacts.join(dist::image_archive_file_name()),
    );
    for f in [&deb, &image_archive] {
        if !f.is_file() {
            bail!("{} is missing: run `cargo xtask dist` first", f.display());
        }
    }
    let pod = daemonset::pod_spec(&daemonset::read(
        &crate::root().join("packaging/kubernetes/daemonset.yaml"),
    )?)
    .context("packaging/kubernetes/daemonset.yaml")?;

    let cache = std::env::var_os("PORTEX_VMHOST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/portex/vmhost".into());
    let out = dist::target_dir().join("vmhost");
    let work = WorkDir(out.join("run"), opts.keep_disk);
    // What a killed run left (its qemu died with it: qemu.rs).
    let _ = fs::remove_dir_all(&work.0);
    fs::create_dir_all(&work.0)?;
    let started = Instant::now();

    let (tree, built) = step("root filesystem", || rootfs::ensure(&cache))?;
    if !built {
        eprintln!(
            "vmhost: root filesystem: the cached {} (same package list)",
            tree.display()
        );
    }
    let (vmlinuz, initrd) = step("kernel", || kernel::ensure(&tree, opts.kernel))?;
    let a = guest::Artifacts {
        deb: &deb,
        image_archive: &image_archive,
    };
    step("disk image", || disk::make(&tree, &work.0, &a, &pod))?;

    let serial = out.join("serial.log");
    eprintln!(
        "vmhost: booting {} under TCG (~1.5 min to the first check), at most {} s; serial log {}",
        vmlinuz.file_name().unwrap_or_default().to_string_lossy(),
        opts.timeout.as_secs(),
        serial.display()
    );
    let machine = qemu::Machine {
        kernel: &vmlinuz,
        initrd: &initrd,
        disk: &work.0.join("rootfs.img"),
    };
    let boot = qemu::boot(&machine, &serial, &work.0.join("qemu.err"), opts.timeout)?;
    drop(work);

    let log = fs::read_to_string(&serial).unwrap_or_default();
    let r = results::parse(&log);
    let times: Vec<String> = r.times.iter().map(|(p, s)| format!("{p} {s} s")).collect();
    eprintln!(
        "vmhost: VM {:.0} s (boot to the first check {}; in the guest: {}); {} checks, {} failed; whole run {:.0} s",
        boot.total,
        boot.to_first_line
            .map_or("never".to_owned(), |s| format!("{s:.0} s")),
        if times.is_empty() {
            "-".to_owned()
        } else {
            times.join(", ")
        },
        r.checks.len(),
        r.failed().len(),
        started.elapsed().as_secs_f64()
    );
    let mut problems = Vec::new();
    if !boot.powered_off {
        problems.push(format!(
            "the VM did not power off within {} s",
            opts.timeout.as_secs()
        ));
    }
    if !r.done {
        problems.push("the checks did not run to their end".to_owned());
    }
    for c in r.failed() {
        problems.push(format!("{} failed: {}", c.name, c.detail));
    }
    if problems.is_empty() {
        eprintln!("vmhost: every check passed");
        return Ok(());
    }
    bail!(
        "{}\nthe serial log ({}) ends:\n  {}",
        problems.join("\n"),
        serial.display(),
        results::tail(&log, 40)
    )
}

/// Runs one step, saying how long it took (CI's budget is counted in these).
fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let out = f().with_context(|| format!("vmhost: {name}"))?;
    eprintln!("vmhost: {name}: {:.1} s", t.elapsed().as_secs_f64());
    Ok(out)
}

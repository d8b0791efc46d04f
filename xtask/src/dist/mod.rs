//! `cargo xtask dist [--check] [--no-deb] [--no-image]`: the release artifacts in
//! target/dist (README "Install"):
//!
//! - `portex-VERSION-x86_64-linux`: the static binary, eBPF object embedded (build.rs);
//! - `portex-VERSION-x86_64-linux.tar.gz`: it with the man pages, completions, the
//!   systemd unit and its config, README and copyright;
//! - `portex_VERSION_amd64.deb` (deb.rs), `portex-VERSION-oci.tar` (image.rs);
//! - `SHA256SUMS` of those; `man/` and `completions/` as installed.
//!
//! `--check` (root) then runs what each promises on this machine: the binary from an
//! empty directory with an empty environment, the package installed, inspected and
//! purged, the image's root filesystem exported and its entrypoint run from it.
mod build;
mod check_binary;
mod check_deb;
mod check_image;
mod deb;
mod elf;
mod image;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Rust target of the static build (glibc, `+crt-static`: build.rs says why).
const TARGET: &str = "x86_64-unknown-linux-gnu";

pub(crate) struct Opts {
    pub check: bool,
    pub deb: bool,
    pub image: bool,
}

/// Where things are: the checkout, cargo's target directory, the artifacts.
struct Dist {
    root: PathBuf,
    target: PathBuf,
    out: PathBuf,
}

impl Dist {
    fn binary(&self) -> PathBuf {
        self.out.join(format!("portex-{VERSION}-x86_64-linux"))
    }
    fn tarball(&self) -> PathBuf {
        self.out
            .join(format!("portex-{VERSION}-x86_64-linux.tar.gz"))
    }
    fn deb(&self) -> PathBuf {
        self.out.join(deb_file_name())
    }
    fn image_archive(&self) -> PathBuf {
        self.out.join(image_archive_file_name())
    }
    fn man_dir(&self) -> PathBuf {
        self.out.join("man")
    }
    fn completions_dir(&self) -> PathBuf {
        self.out.join("completions")
    }
}

/// The image's name in local container storage (`podman images`).
pub(crate) fn image_tag() -> String {
    format!("localhost/portex:{VERSION}")
}

/// The Debian package's file name in the artifacts directory.
pub(crate) fn deb_file_name() -> String {
    format!("portex_{VERSION}_amd64.deb")
}

/// The OCI archive's file name in the artifacts directory.
pub(crate) fn image_archive_file_name() -> String {
    format!("portex-{VERSION}-oci.tar")
}

/// Cargo's target directory (CARGO_TARGET_DIR, else the checkout's target/).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"))
}

/// Where `cargo xtask dist` writes the artifacts.
pub(crate) fn artifacts_dir() -> PathBuf {
    target_dir().join("dist")
}

pub(crate) fn run(opts: Opts) -> Result<()> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        bail!("dist builds the x86_64 Linux artifacts: run it on x86_64 Linux");
    }
    // Refused before minutes of building, not after.
    if opts.check && !portex_e2e::is_root() {
        bail!("dist --check installs the package and loads the eBPF programs: run it as root");
    }
    for (wanted, tool, package, flag) in [
        (true, "sha256sum", "coreutils", ""),
        (true, "tar", "tar", ""),
        (true, "gzip", "gzip", ""),
        (opts.deb, "dpkg-deb", "dpkg", " or pass --no-deb"),
        (opts.deb, "md5sum", "coreutils", " or pass --no-deb"),
        (opts.image, "podman", "podman", " or pass --no-image"),
        (
            opts.check && opts.image,
            "unshare",
            "util-linux",
            " or pass --no-image",
        ),
        (opts.check && opts.deb, "dpkg", "dpkg", " or pass --no-deb"),
    ] {
        if wanted && which(tool).is_none() {
            bail!("{tool} not found: install it (apt-get install {package}){flag}");
        }
    }
    let d = Dist {
        root: crate::root(),
        out: artifacts_dir(),
        target: target_dir(),
    };
    // No artifact of an earlier run may pass for one of this run.
    if d.out.exists() {
        fs::remove_dir_all(&d.out).with_context(|| format!("removing {}", d.out.display()))?;
    }
    fs::create_dir_all(&d.out)?;
    let started = Instant::now();
    step("static binary", || build::binary(&d))?;
    step("man pages", || build::man_pages(&d))?;
    step("completions", || build::completions(&d))?;
    step("tarball", || build::tarball(&d))?;
    if opts.deb {
        step("Debian package", || deb::build(&d))?;
    }
    if opts.image {
        step("OCI image", || image::build(&d))?;
    }
    build::checksums(&d)?;
    eprintln!(
        "dist: artifacts in {} ({:.0} s)",
        d.out.display(),
        started.elapsed().as_secs_f64()
    );
    if opts.check {
        step("check: binary", || check_binary::run(&d))?;
        if opts.deb {
            step("check: Debian package", || check_deb::run(&d))?;
        }
        if opts.image {
            step("check: OCI image", || check_image::run(&d))?;
        }
        eprintln!("dist: every check passed");
    }
    Ok(())
}

/// Runs one step, saying how long it took (CI's budget is counted in these).
fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let out = f().with_context(|| format!("dist: {name}"))?;
    eprintln!("dist: {name}: {:.1} s", t.elapsed().as_secs_f64());
    Ok(out)
}

/// The executable `name` on PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs `cmd` with inherited output; an error unless it succeeds.
pub(crate) fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `cmd`, returns its stdout; an error (with its stderr) unless it succeeds.
fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a bounded run left.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// For error messages: the status and the end of both streams.
    fn describe(&self) -> String {
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(8)..].join("\n  ")
        };
        format!(
            "{}\n stdout:\n  {}\n stderr:\n  {}",
            self.status,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

/// Runs `cmd` for at most `limit` (killed after), its output captured in files under
/// `logs` (never in the directory it runs in).
fn run_bounded(cmd: &mut Command, limit: Duration, logs: &Path) -> Result<Finished> {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let (out, err) = (logs.join(format!("{n}.out")), logs.join(format!("{n}.err")));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out)?)
        .stderr(fs::File::create(&err)?)
        .spawn()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    let mut child = portex_e2e::KillOnDrop(child);
    let Some(status) = portex_e2e::wait_exit(&mut child.0, limit) else {
        bail!("{cmd:?} still ran after {} s", limit.as_secs());
    };
    Ok(Finished {
        status,
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    })
}

/// `portex status` checked what it should: 0, 1, 2 are ok, warning, critical (pools of
/// the machine the check runs on, which the check does not control), 3 is "could not
/// check"; the first line is the verdict.
fn status_ran(f: &Finished) -> Result<()> {
    let code = f.status.code();
    if !matches!(code, Some(0..=2)) || !f.stdout.starts_with("verdict: ") {
        bail!("portex status did not report: {}", f.describe());
    }
    Ok(())
}

/// `portex watch --duration 2` loaded, attached, watched and stopped by itself.
fn watch_ran(f: &Finished) -> Result<()> {
    if !f.status.success() || !f.stderr.contains("programs attached") {
        bail!("portex watch --duration 2 failed: {}", f.describe());
    }
    Ok(())
}

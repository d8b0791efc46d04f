//! The static binary, the man pages and completions, the tarball and the checksums.
//!
//! Static with glibc, not musl: no musl target can be installed on the machines this is
//! built on (rustup reaches no download server), and glibc's static libc.a comes with
//! libc6-dev, which the eBPF tool chain needs anyway. `-C target-feature=+crt-static`
//! links libc, libgcc's unwinder and every Rust crate into one static-pie executable.
//! The one glibc feature that does not survive static linking is NSS (user, group and
//! host name lookups through /etc/nsswitch.conf modules): std and tokio link
//! getaddrinfo and getpwuid_r, but portex calls neither (addresses are numeric, owners
//! are uids); `strace` shows `status` and `watch` open no NSS file nor library.
use std::{fs, os::unix::fs::PermissionsExt, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use super::{Dist, TARGET, VERSION, cargo, elf, run_cmd, stdout_of};

/// `cargo build --release` of `what` for TARGET with a static C runtime.
fn cargo_static(d: &Dist, what: &[&str]) -> Result<()> {
    run_cmd(
        Command::new(cargo())
            .current_dir(&d.root)
            // With --target, these flags reach only the target's crates: build scripts
            // and proc macros (host crates, which must stay dynamic) build without them.
            // CARGO_ENCODED_RUSTFLAGS wins over RUSTFLAGS and config files, so the caller's
            // environment does not change the binary; the eBPF build (aya-build, from
            // portex-agent's build.rs) sets its own.
            .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
            .env_remove("RUSTFLAGS")
            .args(["build", "--release", "--locked", "--target", TARGET])
            .args(["-p", "portex-agent"])
            .args(what),
    )
}

fn built(d: &Dist, name: &str) -> std::path::PathBuf {
    d.target.join(TARGET).join("release").join(name)
}

pub(super) fn binary(d: &Dist) -> Result<()> {
    cargo_static(d, &["--bin", "portex"])?;
    let dest = d.binary();
    fs::copy(built(d, "portex"), &dest).context("copying the binary")?;
    let bytes = fs::read(&dest)?;
    let linkage = elf::linkage(&bytes).context(dest.display().to_string())?;
    if !linkage.is_static() {
        bail!("{} is not static: {linkage:?}", dest.display());
    }
    eprintln!(
        "dist: {}: {:.1} MiB, {} (no interpreter, no shared library)",
        dest.display(),
        bytes.len() as f64 / (1 << 20) as f64,
        if linkage.pie { "static-pie" } else { "static" }
    );
    Ok(())
}

/// portex.1 and one page per subcommand, by portex-agent's `man` example (built as the
/// binary was, so it reuses every crate of that build).
pub(super) fn man_pages(d: &Dist) -> Result<()> {
    cargo_static(d, &["--example", "man"])?;
    stdout_of(Command::new(built(d, "examples/man")).arg(d.man_dir()))?;
    Ok(())
}

/// The scripts `portex completions SHELL` writes, under the names the tarball uses.
pub(super) const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "portex.bash"),
    ("zsh", "_portex"),
    ("fish", "portex.fish"),
];

pub(super) fn completions(d: &Dist) -> Result<()> {
    fs::create_dir_all(d.completions_dir())?;
    for (shell, file) in COMPLETIONS {
        let script = stdout_of(Command::new(d.binary()).args(["completions", shell]))?;
        fs::write(d.completions_dir().join(file), script)?;
    }
    Ok(())
}

/// portex-VERSION/ with the binary, man/, completions/, systemd/ (the unit as in the
/// repository, for a binary in /usr/local/bin), README.md and copyright.
pub(super) fn tarball(d: &Dist) -> Result<()> {
    let name = format!("portex-{VERSION}");
    let top = d.out.join(&name);
    fs::create_dir_all(top.join("systemd"))?;
    fs::copy(d.binary(), top.join("portex"))?;
    copy_dir(&d.man_dir(), &top.join("man"))?;
    copy_dir(&d.completions_dir(), &top.join("completions"))?;
    for f in ["portex.service", "agent.toml"] {
        fs::copy(
            d.root.join("packaging/systemd").join(f),
            top.join("systemd").join(f),
        )?;
    }
    fs::copy(d.root.join("README.md"), top.join("README.md"))?;
    fs::copy(
        d.root.join("packaging/deb/copyright"),
        top.join("copyright"),
    )?;
    set_modes(&top)?;
    run_cmd(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .arg("-czf")
            .arg(d.tarball())
            .arg("-C")
            .arg(&d.out)
            .arg(&name),
    )?;
    fs::remove_dir_all(&top)?;
    Ok(())
}

/// SHA256SUMS over every artifact there is, in `sha256sum -c` form.
pub(super) fn checksums(d: &Dist) -> Result<()> {
    let names: Vec<String> = [d.binary(), d.tarball(), d.deb(), d.image_archive()]
        .iter()
        .filter(|p| p.exists())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let sums = stdout_of(Command::new("sha256sum").current_dir(&d.out).args(&names))?;
    fs::write(d.out.join("SHA256SUMS"), sums)?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// Directories 0755, files 0644, the binary (a file named portex) 0755, whatever the
/// umask of the machine that builds.
pub(super) fn set_modes(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            set_modes(&path)?;
        } else {
            let mode = if entry.file_name() == "portex" {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

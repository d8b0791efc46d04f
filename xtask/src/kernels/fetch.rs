//! Kernels from Debian's mirror, through an apt configuration of our own (its sources,
//! lists and archives under the cache), so that the host's sources stay as they are.
//! Extracted trees are kept between runs: a machine that keeps its cache fetches a
//! kernel once per version.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The mirror and keyring the host's own sources use.
const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A kernel ready to boot: its image, and the tree its modules are in.
pub struct Fetched {
    pub version: String,
    pub vmlinuz: PathBuf,
}

pub struct Apt {
    dir: PathBuf,
}

impl Apt {
    /// Writes the private configuration for `suites` and reads the mirror's lists.
    pub fn new(cache: &Path, suites: &[&str]) -> Result<Apt> {
        let dir = cache.join("apt");
        for d in ["lists/partial", "archives/partial", "debs"] {
            fs::create_dir_all(dir.join(d))?;
        }
        let sources: String = suites
            .iter()
            .map(|s| format!("deb [signed-by={KEYRING}] {MIRROR} {s} main\n"))
            .collect();
        fs::write(dir.join("sources.list"), sources)?;
        let apt = Apt { dir };
        apt.run("apt-get", &["update"])
            .context("reading the kernel lists from Debian's mirror")?;
        Ok(apt)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<String> {
        // apt-get download writes into the current directory.
        fs::create_dir_all(self.dir.join("debs"))?;
        let d = self.dir.display();
        let out = Command::new(tool)
            .args([
                "-q",
                "-o",
                &format!("Dir::Etc::SourceList={d}/sources.list"),
                "-o",
                "Dir::Etc::SourceParts=/dev/null",
                "-o",
                &format!("Dir::State::Lists={d}/lists"),
                "-o",
                &format!("Dir::Cache::Archives={d}/archives"),
                "-o",
                "Dir::State::Status=/dev/null",
                "-o",
                "APT::Sandbox::User=root",
                // Only the package lists: no translations, no AppStream metadata.
                "-o",
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
                "-o",
                "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
                "-o",
                "Acquire::Languages=none",
            ])
            .args(args)
            .current_dir(self.dir.join("debs"))
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `linux-image-amd64` of `suite`: the concrete packages it depends on
    /// (image; for sid also the split binary and modules packages) and their version,
    /// read from the lists (nothing is downloaded to learn them).
    fn resolve(&self, suite: &str) -> Result<(String, Vec<String>)> {
        let meta = self.run(
            "apt-cache",
            &["show", &format!("linux-image-amd64/{suite}")],
        )?;
        let image = depends(&meta)
            .into_iter()
            .find(|(n, _)| n.starts_with("linux-image-"))
            .context("linux-image-amd64 names no linux-image package")?;
        let spec = format!("{}={}", image.0, image.1);
        let mut pkgs = vec![spec.clone()];
        for (n, v) in depends(&self.run("apt-cache", &["show", &spec])?) {
            if n.starts_with("linux-binary-") || n.starts_with("linux-modules-") {
                pkgs.push(format!("{n}={v}"));
            }
        }
        Ok((image.1, pkgs))
    }

    /// Downloads one package alone into an empty folder; the .deb's path.
    fn download(&self, spec: &str) -> Result<PathBuf> {
        let debs = self.dir.join("debs");
        let _ = fs::remove_dir_all(&debs);
        fs::create_dir_all(&debs)?;
        self.run("apt-get", &["download", spec])?;
        let got = list(&debs)?;
        match got.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!("apt-get download {spec} left {} files", got.len()),
        }
    }

    /// The kernel of `suite`, extracted under `cache` (once per version).
    pub fn fetch(&self, cache: &Path, suite: &str) -> Result<Fetched> {
        let (version, pkgs) = self.resolve(suite)?;
        let tree = cache.join("trees").join(format!("{suite}-{version}"));
        if !tree.join(".complete").exists() {
            let _ = fs::remove_dir_all(&tree);
            fs::create_dir_all(&tree)?;
            for p in &pkgs {
                let deb = self.download(p)?;
                let ok = Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(&deb)
                    .arg(&tree)
                    .status()?
                    .success();
                if !ok {
                    bail!("dpkg-deb -x {} failed", deb.display());
                }
            }
            // Merged-/usr packages keep modules in usr/lib; vng looks in lib/modules.
            if !tree.join("lib").exists() && tree.join("usr/lib").exists() {
                std::os::unix::fs::symlink("usr/lib", tree.join("lib"))?;
            }
            fs::write(tree.join(".complete"), &version)?;
            // Only the extracted tree is kept.
            let _ = fs::remove_dir_all(self.dir.join("debs"));
        }
        depmod(&tree)?;
        let vmlinuz =
            find_vmlinuz(&tree).with_context(|| format!("no vmlinuz in {suite}'s packages"))?;
        Ok(Fetched { version, vmlinuz })
    }
}

/// The module index dpkg's postinst would have made: without modules.dep the guest's
/// modprobe finds nothing, and every module the kernel asks for (tcp_diag for
/// sock_diag, nf_tables, nf_conntrack_netlink) fails after a slow usermode-helper call.
fn depmod(tree: &Path) -> Result<()> {
    for entry in fs::read_dir(tree.join("lib/modules"))?.flatten() {
        let Some(release) = entry.file_name().to_str().map(String::from) else {
            continue;
        };
        if entry.path().join("modules.dep").exists() || !entry.path().join("kernel").is_dir() {
            continue;
        }
        let ok = Command::new("depmod")
            .arg("-b")
            .arg(tree)
            .arg(&release)
            .status()
            .context("running depmod (package kmod)")?
            .success();
        if !ok {
            bail!("depmod -b {} {release} failed", tree.display());
        }
    }
    Ok(())
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(fs::read_dir(dir)?.flatten().map(|e| e.path()).collect())
}

/// (name, version) of each `name (= version)` in the first Depends of an
/// `apt-cache show` record.
fn depends(record: &str) -> Vec<(String, String)> {
    let Some(line) = record.lines().find_map(|l| l.strip_prefix("Depends:")) else {
        return Vec::new();
    };
    line.split([',', '|'])
        .filter_map(|d| {
            let (name, rest) = d.trim().split_once(" (= ")?;
            Some((name.to_string(), rest.trim_end_matches(')').to_string()))
        })
        .collect()
}

/// boot/vmlinuz-* (most suites) or usr/lib/modules/*/vmlinuz (sid's split packages).
fn find_vmlinuz(tree: &Path) -> Option<PathBuf> {
    let boot = fs::read_dir(tree.join("boot")).ok().into_iter().flatten();
    let modules = fs::read_dir(tree.join("usr/lib/modules"))
        .ok()
        .into_iter()
        .flatten()
        .map(|e| e.map(|e| e.path().join("vmlinuz")));
    boot.map(|e| e.map(|e| e.path()))
        .chain(modules)
        .flatten()
        .find(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with("vmlinuz"))
        })
}

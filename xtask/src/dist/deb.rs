//! The Debian package, built with dpkg-deb from a tree this file lays out (no cargo-deb:
//! nothing to compile on a fresh machine, and the list of files is here, in one place,
//! for the build and for check_deb alike). Maintainer scripts and the copyright file are
//! in packaging/deb/; the package never enables or starts the unit.
use std::{fs, os::unix::fs::PermissionsExt, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use super::{Dist, VERSION, build::COMPLETIONS, run_cmd, stdout_of};

pub(super) const BIN: &str = "/usr/bin/portex";
pub(super) const UNIT: &str = "/usr/lib/systemd/system/portex.service";
pub(super) const CONFIG: &str = "/etc/portex/agent.toml";
/// Where the agent writes (LogsDirectory=portex): removed on purge.
pub(super) const LOGS: &str = "/var/log/portex";
/// Where packaging/systemd/portex.service starts the binary: a hand install's path.
const HAND_INSTALLED_BIN: &str = "/usr/local/bin/portex";

/// One file of the package.
pub(super) struct Entry {
    pub path: String,
    pub mode: u32,
    pub bytes: Vec<u8>,
    pub conffile: bool,
}

/// Every file the package installs, with its mode and content.
pub(super) fn payload(d: &Dist) -> Result<Vec<Entry>> {
    let file = |path: &str, mode: u32, bytes: Vec<u8>| Entry {
        path: path.to_owned(),
        mode,
        bytes,
        conffile: false,
    };
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let unit = fs::read_to_string(d.root.join("packaging/systemd/portex.service"))?;
    let mut out = vec![
        file(BIN, 0o755, read(&d.binary())?),
        file(UNIT, 0o644, unit_for_deb(&unit)?.into_bytes()),
        Entry {
            conffile: true,
            ..file(
                CONFIG,
                0o644,
                read(&d.root.join("packaging/systemd/agent.toml"))?,
            )
        },
        // Uncompressed: the unit's Documentation= names this path.
        file(
            "/usr/share/doc/portex/README.md",
            0o644,
            read(&d.root.join("README.md"))?,
        ),
        file(
            "/usr/share/doc/portex/copyright",
            0o644,
            read(&d.root.join("packaging/deb/copyright"))?,
        ),
    ];
    let mut pages: Vec<_> = fs::read_dir(d.man_dir())?.collect::<Result<_, _>>()?;
    pages.sort_by_key(|e| e.file_name());
    for page in pages {
        let gz = Command::new("gzip")
            .args(["-9n", "-c"])
            .arg(page.path())
            .output()?;
        if !gz.status.success() {
            bail!("gzip {}: {}", page.path().display(), gz.status);
        }
        let name = page.file_name().to_string_lossy().into_owned();
        out.push(file(
            &format!("/usr/share/man/man1/{name}.gz"),
            0o644,
            gz.stdout,
        ));
    }
    for (shell, name) in COMPLETIONS {
        // Where each shell's own package looks for the completions of other packages.
        let dest = match shell {
            "bash" => "/usr/share/bash-completion/completions/portex",
            "zsh" => "/usr/share/zsh/vendor-completions/_portex",
            _ => "/usr/share/fish/vendor_completions.d/portex.fish",
        };
        out.push(file(dest, 0o644, read(&d.completions_dir().join(name))?));
    }
    Ok(out)
}

/// What ExecStart= runs: the binary and the value of --config.
pub(super) fn exec_start(unit: &str) -> Result<(String, Option<String>)> {
    let lines: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ExecStart="))
        .collect();
    let [line] = lines[..] else {
        bail!("the unit has {} ExecStart= lines, not one", lines.len());
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let bin = words.first().context("ExecStart= is empty")?.to_string();
    let config = words.iter().enumerate().find_map(|(i, w)| match *w {
        "--config" => words.get(i + 1).map(|v| v.to_string()),
        w => w.strip_prefix("--config=").map(str::to_owned),
    });
    Ok((bin, config))
}

/// The unit as packaging/systemd has it, but starting /usr/bin/portex: a package puts
/// its binary in /usr/bin (/usr/local is the administrator's), while the unit in the
/// repository and the tarball is for a binary installed by hand in /usr/local/bin.
/// Fails when the unit no longer starts that binary or no longer reads the conffile.
pub(super) fn unit_for_deb(unit: &str) -> Result<String> {
    let context = "packaging/systemd/portex.service";
    let (bin, config) = exec_start(unit).context(context)?;
    if bin != HAND_INSTALLED_BIN {
        bail!("{context}: ExecStart= starts {bin}, expected {HAND_INSTALLED_BIN}");
    }
    if config.as_deref() != Some(CONFIG) {
        bail!("{context}: ExecStart= reads the config {config:?}, not the conffile {CONFIG}");
    }
    let mut out = String::new();
    for line in unit.lines() {
        match line.trim_start().strip_prefix("ExecStart=") {
            Some(rest) => {
                out.push_str("ExecStart=");
                out.push_str(&rest.replacen(HAND_INSTALLED_BIN, BIN, 1));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

pub(super) fn build(d: &Dist) -> Result<()> {
    let tree = d.out.join("deb-root");
    let files = payload(d)?;
    for e in &files {
        let dest = tree.join(e.path.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().context("a file at /")?)?;
        fs::write(&dest, &e.bytes)?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(e.mode))?;
    }
    let control = tree.join("DEBIAN");
    fs::create_dir_all(&control)?;
    // Installed-Size in KiB, as dpkg-gencontrol counts it: each file rounded up.
    let kib: usize = files.iter().map(|e| e.bytes.len().div_ceil(1024)).sum();
    let template = fs::read_to_string(d.root.join("packaging/deb/control"))?;
    fs::write(
        control.join("control"),
        template
            .replace("@VERSION@", VERSION)
            .replace("@INSTALLED_SIZE@", &kib.to_string()),
    )?;
    let conffiles: String = files
        .iter()
        .filter(|e| e.conffile)
        .map(|e| format!("{}\n", e.path))
        .collect();
    fs::write(control.join("conffiles"), conffiles)?;
    // md5sums of every file but the conffiles (dpkg keeps theirs in its status file).
    let plain: Vec<&str> = files
        .iter()
        .filter(|e| !e.conffile)
        .map(|e| e.path.trim_start_matches('/'))
        .collect();
    let sums = stdout_of(Command::new("md5sum").current_dir(&tree).args(&plain))?;
    fs::write(control.join("md5sums"), sums)?;
    for script in ["postinst", "prerm", "postrm"] {
        let dest = control.join(script);
        fs::copy(d.root.join("packaging/deb").join(script), &dest)?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
    }
    for f in ["control", "conffiles", "md5sums"] {
        fs::set_permissions(control.join(f), fs::Permissions::from_mode(0o644))?;
    }
    dirs_0755(&tree)?;
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&tree)
            .arg(d.deb()),
    )?;
    fs::remove_dir_all(&tree)?;
    Ok(())
}

/// Every directory of the tree 0755, whatever the umask.
fn dirs_0755(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs_0755(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_unit_starts_the_packaged_binary_with_the_conffile() {
        let unit = include_str!("../../../packaging/systemd/portex.service");
        let deb = unit_for_deb(unit).unwrap();
        assert_eq!(
            exec_start(&deb).unwrap(),
            (BIN.to_owned(), Some(CONFIG.to_owned()))
        );
        // Nothing else changes.
        assert_eq!(
            deb.replace(BIN, HAND_INSTALLED_BIN),
            format!("{}\n", unit.trim_end())
        );
    }

    #[test]
    fn a_unit_that_does_not_start_what_the_package_installs_is_refused() {
        let ok = "ExecStart=/usr/local/bin/portex agent --config=/etc/portex/agent.toml\n";
        assert!(unit_for_deb(ok).is_ok());
        for bad in [
            "ExecStart=/usr/bin/portex agent --config /etc/portex/agent.toml\n",
            "ExecStart=/usr/local/bin/portex agent\n",
            "ExecStart=/usr/local/bin/portex agent --config /etc/agent.toml\n",
            "[Service]\n",
            "ExecStart=/usr/local/bin/portex agent --config /etc/portex/agent.toml\nExecStart=/bin/true\n",
        ] {
            assert!(unit_for_deb(bad).is_err(), "{bad}");
        }
    }
}

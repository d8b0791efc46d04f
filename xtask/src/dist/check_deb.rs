//! The package installed on this machine, without systemctl's manager (systemd need not
//! be PID 1): `dpkg -i`, then what dpkg recorded and what is on disk (files, modes,
//! owners, contents, the conffile and its hash), the unit's command line run as systemd
//! would run it (bounded by --duration), `systemd-analyze verify`, an administrator's
//! edit of the conffile kept when the package is installed again, an administrator's
//! `systemctl enable` (links only), then `dpkg --purge` and nothing of it left.
//!
//! It refuses to run where portex is installed already: it would purge that install.
use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{
    Dist, VERSION,
    deb::{self, BIN, CONFIG, Entry, LOGS, UNIT},
    run_bounded, run_cmd, status_ran, stdout_of, which,
};

/// Where `systemctl enable portex` puts its link (the unit's WantedBy=).
const ENABLED_LINK: &str = "/etc/systemd/system/multi-user.target.wants/portex.service";

/// Systemd's PATH for services, and nothing else of the caller's environment.
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// dpkg's word for the package's state ("installed", "config-files", ...), None when
/// dpkg knows nothing of it.
fn state() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", "portex"])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !s.is_empty() && s != "not-installed").then_some(s)
}

/// Purges the package when dropped, so that a failed check does not leave it installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if state().is_some() {
            let _ = Command::new("dpkg").args(["--purge", "portex"]).status();
        }
    }
}

pub(super) fn run(d: &Dist) -> Result<()> {
    let files = deb::payload(d)?;
    if let Some(s) = state() {
        bail!(
            "dpkg knows portex here ({s}): the check would purge it; run it where portex is not installed"
        );
    }
    for p in files.iter().map(|e| e.path.as_str()).chain(["/etc/portex"]) {
        if Path::new(p).exists() {
            bail!(
                "{p} exists: the check installs and purges portex; run it where portex is not installed"
            );
        }
    }
    // An empty log directory (an agent run elsewhere made it) is the purge's to remove.
    if fs::read_dir(LOGS).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{LOGS} holds files: the purge would remove them; run the check where portex is not installed"
        );
    }
    // Directories the package brings (absent now): the purge must take them away.
    let new_dirs: BTreeSet<PathBuf> = files
        .iter()
        .flat_map(|e| Path::new(&e.path).ancestors().skip(1))
        .filter(|p| !p.exists())
        .map(Path::to_path_buf)
        .collect();

    run_cmd(
        Command::new("dpkg")
            .arg("-i")
            .arg(d.deb())
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let guard = Installed;
    installed(&files)?;
    runs()?;
    reinstall_keeps_config(d)?;
    let enabled = enable_offline()?;

    // What the agent writes under systemd's LogsDirectory=: the purge removes it.
    fs::create_dir_all(LOGS)?;
    fs::write(Path::new(LOGS).join("events.ndjson"), "{}\n")?;

    run_cmd(Command::new("dpkg").args(["--purge", "portex"]))?;
    drop(guard);
    if let Some(s) = state() {
        bail!("after dpkg --purge, dpkg still knows portex ({s})");
    }
    let left: Vec<String> = files
        .iter()
        .map(|e| PathBuf::from(&e.path))
        .chain(new_dirs)
        .chain([LOGS, "/etc/portex"].map(PathBuf::from))
        .chain(dpkg_info()?)
        .chain(enabled.then(|| PathBuf::from(ENABLED_LINK)))
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.display().to_string())
        .collect();
    if !left.is_empty() {
        bail!("dpkg --purge left {}", left.join(", "));
    }
    eprintln!(
        "dist: package: {} files installed as listed, run, the conffile registered and an edit of it kept on reinstall, purged without a trace{}",
        files.len(),
        if enabled {
            " (an enabled unit's link too)"
        } else {
            ""
        }
    );
    Ok(())
}

/// dpkg's own files about the package (list, md5sums, maintainer scripts).
fn dpkg_info() -> Result<Vec<PathBuf>> {
    Ok(fs::read_dir("/var/lib/dpkg/info")?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("portex."))
        .map(|e| e.path())
        .collect())
}

/// What dpkg recorded and what is on disk.
fn installed(files: &[Entry]) -> Result<()> {
    let status = stdout_of(Command::new("dpkg-query").args([
        "-W",
        "-f=${db:Status-Abbrev}${Version}",
        "portex",
    ]))?;
    if status.trim() != format!("ii {VERSION}") {
        bail!("dpkg-query: portex is {status:?}, not installed at {VERSION}");
    }
    // dpkg's list of the package's paths, directories left out.
    let listed: BTreeSet<String> = stdout_of(Command::new("dpkg").args(["-L", "portex"]))?
        .lines()
        .filter(|p| !Path::new(p).is_dir())
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = files.iter().map(|e| e.path.clone()).collect();
    if listed != expected {
        bail!("dpkg -L portex lists {listed:?}, expected {expected:?}");
    }
    for e in files {
        let m = fs::symlink_metadata(&e.path).with_context(|| e.path.clone())?;
        let mode = m.mode() & 0o7777;
        if !m.is_file() || mode != e.mode || m.uid() != 0 || m.gid() != 0 {
            bail!(
                "{}: a file {:o} {}:{}, expected a file {:o} root:root",
                e.path,
                mode,
                m.uid(),
                m.gid(),
                e.mode
            );
        }
        if fs::read(&e.path)? != e.bytes {
            bail!("{}: not the content the package was built with", e.path);
        }
    }
    // The conffile, registered with the hash of what is on disk.
    let conffiles =
        stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "portex"]))?;
    let md5 = stdout_of(Command::new("md5sum").arg(CONFIG))?;
    let md5 = md5.split_whitespace().next().unwrap_or_default();
    let registered: Vec<Vec<&str>> = conffiles
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|w: &Vec<&str>| !w.is_empty())
        .collect();
    if registered != [vec![CONFIG, md5]] {
        bail!("conffiles: {conffiles:?}, expected {CONFIG} {md5}");
    }
    // The unit starts what was installed, with the installed config, and its
    // Documentation= file is there.
    let unit = fs::read_to_string(UNIT)?;
    let (bin, config) = deb::exec_start(&unit)?;
    if bin != BIN || config.as_deref() != Some(CONFIG) {
        bail!("{UNIT}: ExecStart= runs {bin} with {config:?}");
    }
    for doc in unit
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation="))
        .flat_map(str::split_whitespace)
        .filter_map(|u| u.strip_prefix("file://"))
    {
        if !Path::new(doc).is_file() {
            bail!("{UNIT}: Documentation={doc} is not installed");
        }
    }
    Ok(())
}

/// The installed binary, completions, man pages and unit at work.
fn runs() -> Result<()> {
    let logs = portex_e2e::TmpDir::new("dist-deb");
    let limit = Duration::from_secs(60);
    let service = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env_clear().env("PATH", SERVICE_PATH);
        run_bounded(&mut cmd, limit, &logs)
    };
    let version = service(&["--version"])?;
    if version.stdout.trim() != format!("portex {VERSION}") {
        bail!("{BIN} --version: {}", version.describe());
    }
    status_ran(&service(&["status"])?)?;
    // The unit's own command line (ExecStart=, the conffile), bounded, writing to a
    // scratch file instead of /var/log/portex (which systemd would create), metrics on
    // a free port: the settings of the conffile must be accepted by the binary.
    let unit = fs::read_to_string(UNIT)?;
    let line = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))
        .context("ExecStart=")?;
    let events = logs.join("events.ndjson");
    let mut argv: Vec<String> = line.split_whitespace().skip(1).map(String::from).collect();
    argv.extend(["--duration".into(), "2".into(), "--metrics".into()]);
    argv.push("127.0.0.1:0".into());
    argv.push(format!("--output={}", events.display()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let agent = service(&argv)?;
    if !agent.status.success() || !events.is_file() {
        bail!("the unit's ExecStart= (bounded): {}", agent.describe());
    }
    // Completion scripts parse; man finds the pages.
    for (shell, file) in [
        ("bash", "/usr/share/bash-completion/completions/portex"),
        ("zsh", "/usr/share/zsh/vendor-completions/_portex"),
        ("fish", "/usr/share/fish/vendor_completions.d/portex.fish"),
    ] {
        if which(shell).is_some() {
            run_cmd(Command::new(shell).arg("-n").arg(file))?;
        }
    }
    if which("man").is_some() {
        let found = stdout_of(Command::new("man").args(["-w", "portex-agent"]))?;
        if found.trim() != "/usr/share/man/man1/portex-agent.1.gz" {
            bail!("man -w portex-agent: {found:?}");
        }
    }
    // systemd's own reading of the installed unit, offline (no manager needed): an
    // error (a command that is not there, a bad value) fails; warnings are shown.
    if which("systemd-analyze").is_some() {
        let out = Command::new("systemd-analyze")
            .args(["verify", UNIT])
            .output()?;
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !out.status.success() {
            bail!("systemd-analyze verify {UNIT}: {}: {said}", out.status);
        }
        eprintln!(
            "dist: systemd-analyze verify {UNIT}: ok{}",
            if said.is_empty() {
                String::new()
            } else {
                format!(", with: {said}")
            }
        );
    }
    Ok(())
}

/// The conffile at work: an administrator's edit survives the package installed again
/// (dpkg keeps a changed conffile whose packaged version did not change, without asking).
fn reinstall_keeps_config(d: &Dist) -> Result<()> {
    let edited = format!(
        "{}# edited by the administrator\n",
        fs::read_to_string(CONFIG)?
    );
    fs::write(CONFIG, &edited)?;
    run_cmd(
        Command::new("dpkg")
            .arg("-i")
            .arg(d.deb())
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null()),
    )?;
    if fs::read_to_string(CONFIG)? != edited {
        bail!("installing the package again replaced the edited {CONFIG}");
    }
    Ok(())
}

/// An administrator's `systemctl enable portex` (which only makes a link, and works
/// without a running manager): the purge must take the link away too. False where
/// systemctl is not installed.
fn enable_offline() -> Result<bool> {
    if which("systemctl").is_none() {
        return Ok(false);
    }
    run_cmd(Command::new("systemctl").args(["--no-reload", "enable", "portex.service"]))?;
    // The link may name /lib/... where /lib is /usr/lib (merged /usr).
    if fs::canonicalize(ENABLED_LINK).ok() != fs::canonicalize(UNIT).ok() {
        bail!("systemctl enable portex made no link {ENABLED_LINK} -> {UNIT}");
    }
    Ok(true)
}

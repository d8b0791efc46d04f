//! What goes into the guest beside the cached Debian: the artifacts under test, the
//! check scripts (guest/*.sh), the oneshot unit that runs them at boot and powers off,
//! and /opt/vmhost/env: every value the scripts compare against, read here from the
//! packaging (the unit's capabilities, agent.toml's addresses, the DaemonSet as podman
//! options, the eBPF programs' names), so the checks follow the packaging as it changes.
use std::{fs, os::unix::fs::symlink, path::Path};

use anyhow::{Context, Result, bail};

use super::daemonset::{NODE_IP, PodSpec};

/// Where the scripts and artifacts live in the guest.
const DIR: &str = "opt/vmhost";

const SCRIPTS: &[(&str, &str)] = &[
    ("main.sh", include_str!("guest/main.sh")),
    ("lib.sh", include_str!("guest/lib.sh")),
    ("unit.sh", include_str!("guest/unit.sh")),
    ("nat.sh", include_str!("guest/nat.sh")),
    ("image.sh", include_str!("guest/image.sh")),
];
const CHECK_UNIT: &str = include_str!("guest/vmhost-check.service");

/// The artifacts of `cargo xtask dist` the guest installs.
pub(super) struct Artifacts<'a> {
    pub deb: &'a Path,
    pub image_archive: &'a Path,
}

/// Adds the guest's files to `tree` (a staged copy of the cached root filesystem:
/// only new files are written, never into a file shared with the cache).
pub(super) fn install(tree: &Path, a: &Artifacts, pod: &PodSpec) -> Result<()> {
    let dir = tree.join(DIR);
    fs::create_dir_all(&dir)?;
    for (name, text) in SCRIPTS {
        fs::write(dir.join(name), text)?;
    }
    for file in [a.deb, a.image_archive] {
        let name = file.file_name().context("an artifact without a name")?;
        fs::copy(file, dir.join(name))
            .with_context(|| format!("{}: run `cargo xtask dist` first", file.display()))?;
    }
    fs::write(dir.join("env"), env_file(a, pod)?)?;

    let system = tree.join("etc/systemd/system");
    replace_with(&system.join("vmhost-check.service"), |p| {
        fs::write(p, CHECK_UNIT)
    })?;
    let wants = system.join("multi-user.target.wants");
    fs::create_dir_all(&wants)?;
    replace_with(&wants.join("vmhost-check.service"), |p| {
        symlink("/etc/systemd/system/vmhost-check.service", p)
    })?;
    // The serial port carries the results: no login prompt on it.
    replace_with(&system.join("serial-getty@ttyS0.service"), |p| {
        symlink("/dev/null", p)
    })?;
    replace_with(&tree.join("etc/hostname"), |p| fs::write(p, "vmhost\n"))?;
    Ok(())
}

/// Writes `path` anew: a hard link to the cache is unlinked first, never written through.
fn replace_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        fs::remove_file(path)?;
    }
    write(path).with_context(|| path.display().to_string())
}

fn env_file(a: &Artifacts, pod: &PodSpec) -> Result<String> {
    let root = crate::root();
    let name = |p: &Path| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let toml = fs::read_to_string(root.join("packaging/systemd/agent.toml"))?;
    let vars = [
        ("DEB", name(a.deb)),
        ("OCI", name(a.image_archive)),
        ("UNIT_METRICS", toml_string(&toml, "metrics")?),
        ("UNIT_OUTPUT", toml_string(&toml, "output")?),
        ("EXPECTED_CAPEFF", cap_mask(&portex_e2e::unit_caps())?),
        ("PORTEX_PROGRAM_NAMES", program_names()?.join(" ")),
        ("NODE_IP", NODE_IP.to_owned()),
        ("IMAGE", pod.image.clone()),
        ("DS_METRICS", pod.metrics.clone()),
        ("DS_OUTPUT", pod.output_on_node.clone()),
    ];
    let mut out = String::from("# Written by `cargo xtask vmhost` (xtask/src/vmhost/guest.rs).\n");
    for (k, v) in vars {
        out.push_str(&format!("{k}={}\n", quote(&v)));
    }
    for (k, list) in [
        ("PODMAN_RUN", &pod.options),
        ("AGENT_ARGS", &pod.args),
        ("DS_DIRS", &pod.create_dirs),
    ] {
        let words: Vec<String> = list.iter().map(|w| quote(w)).collect();
        out.push_str(&format!("{k}=({})\n", words.join(" ")));
    }
    Ok(out)
}

/// A word for bash, single-quoted.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The string value of `key` in agent.toml (`key = "value"`).
fn toml_string(toml: &str, key: &str) -> Result<String> {
    toml.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .and_then(|(_, v)| {
            v.trim()
                .strip_prefix('"')?
                .strip_suffix('"')
                .map(str::to_owned)
        })
        .with_context(|| format!("packaging/systemd/agent.toml: no {key} = \"...\""))
}

/// The capability set as /proc/PID/status prints CapEff (16 hex digits).
fn cap_mask(caps: &[String]) -> Result<String> {
    // capability.h; only the ones a unit of portex's might name.
    const BITS: &[(&str, u32)] = &[
        ("chown", 0),
        ("dac_override", 1),
        ("dac_read_search", 2),
        ("fowner", 3),
        ("kill", 5),
        ("setgid", 6),
        ("setuid", 7),
        ("net_bind_service", 10),
        ("net_raw", 13),
        ("net_admin", 12),
        ("ipc_lock", 14),
        ("sys_chroot", 18),
        ("sys_ptrace", 19),
        ("sys_admin", 21),
        ("sys_resource", 24),
        ("syslog", 34),
        ("perfmon", 38),
        ("bpf", 39),
    ];
    let mut mask = 0u64;
    for cap in caps {
        let Some((_, bit)) = BITS.iter().find(|(n, _)| n == cap) else {
            bail!(
                "the unit names CAP_{}, which vmhost cannot number",
                cap.to_uppercase()
            );
        };
        mask |= 1 << bit;
    }
    Ok(format!("{mask:016x}"))
}

/// The eBPF programs' names (their functions'): bpftool lists them so, and none may
/// outlive the agent.
fn program_names() -> Result<Vec<String>> {
    let src = crate::root().join("portex-ebpf/src");
    let mut names = Vec::new();
    let mut files: Vec<_> = fs::read_dir(&src)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        let text = fs::read_to_string(file)?;
        let mut attributed = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with("#[tracepoint") {
                attributed = true;
            } else if attributed && let Some(rest) = line.strip_prefix("pub fn ") {
                let name: String = rest.chars().take_while(|c| *c != '(').collect();
                names.push(name);
                attributed = false;
            }
        }
    }
    if names.is_empty() {
        bail!("no #[tracepoint] program found in {}", src.display());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_s_capabilities_as_cap_eff() {
        let caps = ["sys_admin", "sys_ptrace", "dac_read_search", "net_admin"].map(String::from);
        assert_eq!(cap_mask(&caps).unwrap(), "0000000000281004");
        assert!(cap_mask(&["mac_admin".to_owned()]).is_err());
    }

    #[test]
    fn words_and_settings() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        let toml = "# x\nmetrics = \"127.0.0.1:9633\"\nwarn = 80.0\n";
        assert_eq!(toml_string(toml, "metrics").unwrap(), "127.0.0.1:9633");
        assert!(toml_string(toml, "warn").is_err());
    }

    #[test]
    fn the_programs_are_found_by_their_functions() {
        let names = program_names().unwrap();
        assert!(
            names.iter().any(|n| n == "inet_sock_set_state"),
            "{names:?}"
        );
    }
}

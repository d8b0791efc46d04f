//! The packaged systemd unit (packaging/systemd/portex.service) as the tests read it:
//! its directives, its capability set, and its syscall filter expanded into syscall
//! numbers the way systemd expands it (`systemd-analyze syscall-filter` names the
//! members of each @group; the kernel headers number them). systemd is not PID 1 on the
//! test machines, so the unit cannot be started: the tests run the agent under an
//! emulation of its sandbox instead (the driver's `unit-sandbox`).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
};

pub fn unit_path() -> PathBuf {
    crate::workspace_root().join("packaging/systemd/portex.service")
}

/// The [Service] section's assignments, in order: (key, value). A key may repeat.
pub fn unit_service_lines() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(unit_path()).expect("reading the packaged unit");
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[Service]"
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Every value of `key`, in order.
pub fn unit_values(key: &str) -> Vec<String> {
    unit_service_lines()
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// The unit's CapabilityBoundingSet, as setpriv and capabilities(7) name them without
/// the prefix, in lower case ("sys_admin", ...).
pub fn unit_caps() -> Vec<String> {
    unit_values("CapabilityBoundingSet")
        .last()
        .expect("the unit names its capabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// systemd's syscall groups, from `systemd-analyze syscall-filter`: group -> members
/// (syscall names and nested @groups). None when systemd-analyze is not installed.
pub fn syscall_groups() -> Option<BTreeMap<String, Vec<String>>> {
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter failed"
    );
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
            groups.entry(line.trim().to_string()).or_default();
        } else if line.starts_with('#') {
            // "# Unlisted System Calls ...": the end of the groups.
            current = None;
        } else if let Some(g) = &current {
            let member = line.trim();
            if !member.is_empty() && !member.starts_with('#') {
                groups.get_mut(g).unwrap().push(member.to_string());
            }
        }
    }
    Some(groups)
}

fn expand(item: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
    match groups.get(item) {
        Some(members) => {
            for m in members {
                expand(m, groups, out);
            }
        }
        None if item.starts_with('@') => panic!("the unit names an unknown group {item}"),
        None => {
            out.insert(item.to_string());
        }
    }
}

/// The syscall names the unit's SystemCallFilter= lines allow, as systemd merges them:
/// the first line sets an allow list, each later `~` line removes from it, each later
/// plain line adds to it. None without systemd-analyze.
pub fn unit_allowed_syscalls() -> Option<BTreeSet<String>> {
    let groups = syscall_groups()?;
    let lines = unit_values("SystemCallFilter");
    assert!(
        lines.first().is_some_and(|l| !l.starts_with('~')),
        "the unit's first SystemCallFilter= is an allow list: {lines:?}"
    );
    let mut allowed = BTreeSet::new();
    for line in &lines {
        let (deny, list) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line.as_str()),
        };
        let mut named = BTreeSet::new();
        for item in list.split_whitespace() {
            expand(item, &groups, &mut named);
        }
        if deny {
            allowed.retain(|s| !named.contains(s));
        } else {
            allowed.extend(named);
        }
    }
    Some(allowed)
}

/// Syscall name -> number on this machine, from the kernel's uapi header.
pub fn syscall_numbers() -> BTreeMap<String, u32> {
    let header = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|t| format!("/usr/include/{t}/asm/unistd_64.h"))
        .chain(["/usr/include/asm/unistd_64.h".to_string()])
        .find(|p| std::path::Path::new(p).exists())
        .expect("the kernel's syscall header (linux-libc-dev) is installed");
    let text = std::fs::read_to_string(header).unwrap();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "#define").then_some(())?;
            let name = w.next()?.strip_prefix("__NR_")?;
            Some((name.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// The address families of RestrictAddressFamilies=, as numbers.
pub fn unit_address_families() -> Vec<i32> {
    let line = unit_values("RestrictAddressFamilies")
        .last()
        .cloned()
        .expect("the unit restricts address families");
    line.split_whitespace()
        .map(|f| match f {
            "AF_UNIX" => libc::AF_UNIX,
            "AF_NETLINK" => libc::AF_NETLINK,
            "AF_INET" => libc::AF_INET,
            "AF_INET6" => libc::AF_INET6,
            other => panic!("the tests do not know {other}"),
        })
        .collect()
}

/// The wrapper that runs a program under the emulated sandbox of the unit with the
/// capability bounding set `caps` (see the driver's `unit-sandbox`), or None (with the
/// reason printed) where the emulation cannot be built: no systemd-analyze, or not
/// x86_64 (the filter is written for its syscall numbers).
pub fn unit_sandbox(caps: &[String]) -> Option<Vec<String>> {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("the unit's sandbox is emulated on x86_64 only: running without it");
        return None;
    }
    let Some(allowed) = unit_allowed_syscalls() else {
        eprintln!("systemd-analyze is not installed (scripts/setup.sh installs it)");
        return None;
    };
    let numbers = syscall_numbers();
    // Names of other architectures (arm_fadvise64_64, ...) have no number here.
    let nrs: Vec<String> = allowed
        .iter()
        .filter_map(|s| numbers.get(s))
        .map(u32::to_string)
        .collect();
    let families: Vec<String> = unit_address_families().iter().map(i32::to_string).collect();
    let writable: Vec<String> = unit_values("RuntimeDirectory")
        .iter()
        .map(|d| format!("/run/{d}"))
        .chain(
            unit_values("LogsDirectory")
                .iter()
                .map(|d| format!("/var/log/{d}")),
        )
        .collect();
    for w in &writable {
        std::fs::create_dir_all(w).unwrap();
    }
    Some(vec![
        crate::driver_bin().display().to_string(),
        "unit-sandbox".into(),
        caps.join(","),
        nrs.join(","),
        families.join(","),
        writable.join(","),
        unit_values("UMask")
            .last()
            .cloned()
            .unwrap_or_else(|| "0022".into()),
        // What a filtered call gets: an errno, or (systemd's default) the process killed.
        match unit_values("SystemCallErrorNumber")
            .last()
            .map(String::as_str)
        {
            None | Some("kill") => "kill".into(),
            Some("EPERM") => libc::EPERM.to_string(),
            Some(other) => panic!("the tests do not know SystemCallErrorNumber={other}"),
        },
        "--".into(),
    ])
}

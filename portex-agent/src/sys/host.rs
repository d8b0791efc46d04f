//! What the host must offer before programs load: privileges, tracefs, memlock.
use std::path::Path;

use anyhow::{Result, bail};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process, from /proc/self/status.
pub(crate) fn effective_caps() -> u64 {
    parse_cap_eff(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}

/// The CapEff mask of a /proc/<pid>/status text; 0 when absent. Pure.
pub fn parse_cap_eff(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Checks privileges, mounts tracefs when needed, and lifts the memlock limit where
/// allowed. Each failure is one sentence a user can act on.
pub(crate) fn preflight() -> Result<()> {
    let caps = effective_caps();
    let can_load = has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON));
    if !can_load {
        bail!(
            "portex needs root (or CAP_BPF and CAP_PERFMON) to load its eBPF programs; \
             run it with sudo"
        );
    }
    ensure_tracefs()?;
    raise_memlock();
    raise_nofile();
    Ok(())
}

const TRACEFS_EVENTS: [&str; 2] = [
    "/sys/kernel/tracing/events",
    "/sys/kernel/debug/tracing/events",
];

/// tracefs's events folder, where it is mounted.
pub(crate) fn tracefs_events() -> Option<&'static Path> {
    TRACEFS_EVENTS.iter().map(Path::new).find(|p| p.is_dir())
}

/// aya finds tracepoint ids through tracefs, which is not always mounted.
fn ensure_tracefs() -> Result<()> {
    if tracefs_events().is_some() {
        return Ok(());
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: constant NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 || !Path::new("/sys/kernel/tracing/events").is_dir() {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({err}); \
             mount it with: mount -t tracefs nodev /sys/kernel/tracing"
        );
    }
    Ok(())
}

/// Kernels since 5.11 charge BPF memory to the memory cgroup and ignore RLIMIT_MEMLOCK;
/// raising it fails without CAP_SYS_RESOURCE, which is harmless there.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a rlimit.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// The soft open-file limit is often 1024 while the hard one is far higher: a host agent
/// that serves metrics and walks /proc should not be the first to hit EMFILE. Raising
/// the soft limit up to the hard one needs no privilege.
pub(crate) fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to a rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The host's identity for every event line: ECS `host.name` and `host.id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostIdentity {
    /// `NODE_NAME` when set (the packaged DaemonSet sets it to the Kubernetes node's
    /// name), else the kernel's nodename (`uname -n`) in lower case, as ECS recommends.
    pub name: String,
    /// /etc/machine-id, when it holds one.
    pub id: Option<String>,
}

/// Reads NODE_NAME, the nodename and /etc/machine-id once, at start.
pub(crate) fn identity() -> HostIdentity {
    let node = std::env::var("NODE_NAME").ok();
    let uts = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    host_identity(node.as_deref(), &uts, &machine_id)
}

/// The identity from NODE_NAME (or None), the nodename file and the machine-id file.
/// Pure. A NODE_NAME that is empty or not one line is ignored.
pub(crate) fn host_identity(node_name: Option<&str>, uts: &str, machine_id: &str) -> HostIdentity {
    let node = node_name
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 253 && !n.chars().any(char::is_control));
    let name = match node {
        Some(n) => n.to_string(),
        None => uts.trim().to_ascii_lowercase(),
    };
    HostIdentity {
        name,
        id: parse_machine_id(machine_id),
    }
}

/// machine-id(5): 32 lower-case hex digits and a newline. Anything else (empty before
/// the first boot, "uninitialized") is no id.
pub(crate) fn parse_machine_id(text: &str) -> Option<String> {
    let id = text.trim_end_matches('\n');
    (id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_wins_else_the_nodename_in_lower_case() {
        let id = "0123456789abcdef0123456789abcdef\n";
        let h = host_identity(Some("node-7.cluster"), "Web-1\n", id);
        assert_eq!(h.name, "node-7.cluster");
        assert_eq!(h.id.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        for ignored in [Some(""), Some("a\nb"), None] {
            assert_eq!(host_identity(ignored, "Web-1\n", "").name, "web-1");
        }
    }

    #[test]
    fn only_a_real_machine_id_is_an_id() {
        for bad in [
            "",
            "uninitialized\n",
            "0123456789ABCDEF0123456789ABCDEF\n",
            "0123456789abcdef0123456789abcde\n",
            "0123456789abcdef0123456789abcdef0\n",
        ] {
            assert_eq!(parse_machine_id(bad), None, "{bad:?}");
        }
    }
}

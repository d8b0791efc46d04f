//! The packaged unit's hardening (packaging/systemd/portex.service) stays in place and
//! keeps what the agent needs: each hardening line is there with its value,
//! `systemd-analyze security --offline` rates it 3.5 or below, `systemd-analyze
//! verify` accepts it, and its syscall filter, address families and capabilities allow
//! every call the agent makes. (capabilities.rs runs the agent under an emulation of
//! the same sandbox; systemd is not PID 1 on the test machines, so the unit itself
//! cannot be started.) Needs no root.
use std::process::Command;

use portex_e2e::*;

/// Each line, as it must read. A change here is a change of the agent's sandbox: say
/// why in the unit.
const HARDENING: &[(&str, &str)] = &[
    (
        "CapabilityBoundingSet",
        "CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_NET_ADMIN",
    ),
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("LogsDirectory", "portex"),
    ("LogsDirectoryMode", "0750"),
    ("RuntimeDirectory", "portex"),
    ("RuntimeDirectoryMode", "0755"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateMounts", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectProc", "invisible"),
    (
        "RestrictAddressFamilies",
        "AF_UNIX AF_NETLINK AF_INET AF_INET6",
    ),
    ("RestrictNamespaces", "net"),
    ("SystemCallErrorNumber", "EPERM"),
    ("SystemCallArchitectures", "native"),
    ("UMask", "0027"),
    ("MemoryDenyWriteExecute", "yes"),
    ("LockPersonality", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("IPAddressDeny", "any"),
    ("IPAddressAllow", "localhost"),
    ("DevicePolicy", "closed"),
    ("KeyringMode", "private"),
];

/// What the agent calls that a service does not usually: loading and attaching the
/// programs, entering network namespaces, duplicating a bind()er's socket; and the
/// everyday calls of its threads, sockets and files.
const NEEDED_SYSCALLS: &[&str] = &[
    "bpf",
    "perf_event_open",
    "ioctl",
    "setns",
    "pidfd_open",
    "pidfd_getfd",
    "socket",
    "bind",
    "sendmsg",
    "recvmsg",
    "getsockname",
    "accept4",
    "epoll_wait",
    "epoll_ctl",
    "eventfd2",
    "clone",
    "prlimit64",
    "openat",
    "getdents64",
    "readlinkat",
    "renameat",
    "rename",
    "statx",
];

fn analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze {args:?}: {e} (scripts/setup.sh installs systemd)")
        })
}

#[test]
fn every_hardening_line_is_in_the_unit() {
    let lines = unit_service_lines();
    let missing: Vec<String> = HARDENING
        .iter()
        .filter(|(k, v)| !lines.iter().any(|(lk, lv)| lk == k && lv == v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert!(missing.is_empty(), "the unit lost: {missing:?}");
    // One filter line that allows, then only lines that take away.
    let filters = unit_values("SystemCallFilter");
    assert!(filters[0].starts_with("@system-service"), "{filters:?}");
    assert!(
        filters[1..].iter().all(|f| f.starts_with('~')),
        "{filters:?}"
    );
}

#[test]
fn the_filter_allows_what_the_agent_calls_and_not_mount() {
    let allowed =
        unit_allowed_syscalls().expect("systemd-analyze (scripts/setup.sh installs systemd)");
    let blocked: Vec<&&str> = NEEDED_SYSCALLS
        .iter()
        .filter(|s| !allowed.contains(**s))
        .collect();
    assert!(
        blocked.is_empty(),
        "the unit's SystemCallFilter blocks {blocked:?}"
    );
    // tracefs comes from sys-kernel-tracing.mount (the unit wants it), so the agent's
    // own mount (sys::host::ensure_tracefs) is not needed; and no module loading,
    // reboot, swap, or ptrace() itself.
    for denied in [
        "mount",
        "umount2",
        "init_module",
        "reboot",
        "swapon",
        "ptrace",
        "setrlimit",
    ] {
        assert!(!allowed.contains(denied), "{denied} is allowed");
    }
    let text = std::fs::read_to_string(unit_path()).unwrap();
    assert!(text.contains("\nWants=sys-kernel-tracing.mount\n"));
    assert!(text.contains("\nAfter=sys-kernel-tracing.mount\n"));
    // Every needed syscall has a number here, so the emulation filters it as the unit.
    let numbers = syscall_numbers();
    for s in NEEDED_SYSCALLS {
        if cfg!(target_arch = "x86_64") {
            assert!(numbers.contains_key(*s), "{s} has no number");
        }
    }
}

#[test]
fn the_unit_keeps_the_capabilities_and_families_the_agent_needs() {
    assert_eq!(
        unit_caps(),
        ["sys_admin", "sys_ptrace", "dac_read_search", "net_admin"]
    );
    let families = unit_address_families();
    for f in [
        libc::AF_NETLINK,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_UNIX,
    ] {
        assert!(families.contains(&f), "{f} is not allowed");
    }
}

#[test]
fn systemd_analyze_rates_the_unit_at_most_3_5() {
    let path = unit_path().display().to_string();
    let out = analyze(&["security", "--offline=true", "--no-pager", &path]);
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for portex.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in: {text}"));
    eprintln!("systemd-analyze security --offline: {score}");
    assert!(score <= 3.5, "exposure {score} > 3.5:\n{text}");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    // The binary is not installed here: verify a copy whose ExecStart names one that is.
    let dir = std::env::temp_dir().join(format!("portex-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(unit_path())
        .unwrap()
        .replace("ExecStart=/usr/local/bin/portex ", "ExecStart=/bin/true ")
        .replace("ExecStart=/usr/bin/portex ", "ExecStart=/bin/true ");
    assert!(
        text.contains("ExecStart=/bin/true "),
        "the unit's ExecStart moved"
    );
    let copy = dir.join("portex.service");
    std::fs::write(&copy, text).unwrap();
    let out = analyze(&["verify", "--man=no", &copy.display().to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

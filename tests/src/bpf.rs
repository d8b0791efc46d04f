//! BPF objects: those a process holds (its descriptors and their /proc fdinfo, so no
//! pinning or bpftool is needed), and every program loaded on the host (bpftool).
use std::{io, process::Command};

use crate::Value;

/// A BPF object whose descriptor a process holds.
pub struct BpfFd {
    /// "prog", "map", "link", ... (from the descriptor's `anon_inode:bpf-KIND`).
    pub kind: String,
    /// /proc/PID/fdinfo/FD.
    pub fdinfo: String,
}

impl BpfFd {
    /// A numeric field of the fdinfo: "prog_id", "map_id", "map_type", "key_size", ...
    pub fn field(&self, name: &str) -> Option<u64> {
        self.fdinfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// The BPF objects whose descriptors process `pid` holds (one per descriptor).
pub fn bpf_fds(pid: u32) -> io::Result<Vec<BpfFd>> {
    let mut out = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let link = std::fs::read_link(fd.path()).unwrap_or_default();
        let link = link.to_string_lossy();
        let Some(kind) = link.strip_prefix("anon_inode:bpf-") else {
            continue;
        };
        let fdinfo = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        out.push(BpfFd {
            kind: kind.to_string(),
            fdinfo,
        });
    }
    Ok(out)
}

/// Ids of the BPF programs process `pid` holds open (the `prog_id` of each descriptor
/// that is a bpf-prog), sorted.
pub fn bpf_programs_of(pid: u32) -> Vec<u64> {
    let mut ids: Vec<u64> = bpf_fds(pid)
        .unwrap_or_default()
        .iter()
        .filter(|f| f.kind == "prog")
        .filter_map(|f| f.field("prog_id"))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Ids of every BPF program loaded now, from `bpftool -j prog show`.
pub fn all_bpf_programs() -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool -j prints JSON");
    v.as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
        .unwrap_or_default()
}

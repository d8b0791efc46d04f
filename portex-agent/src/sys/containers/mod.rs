//! Container attribution: cgroup v2 id (the inode of the cgroup's directory, what
//! bpf_get_current_cgroup_id returns) -> cgroup path -> container id and Kubernetes pod
//! uid, for docker, containerd, cri-o and podman layouts (systemd and cgroupfs drivers);
//! then container id -> the name, image and pod its runtime recorded (runtime_files).
mod runtime_files;

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

pub use crate::logic::model::Container;
use crate::logic::model::Workload;

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A Kubernetes pod uid as a cgroup path carries it (systemd escapes its `-` as `_`):
/// a UUID, 8-4-4-4-12 hex digits. Anything else is not taken: a cgroup's name is chosen
/// by whoever may create it, and the uid ends up in every event line.
fn pod_uid(s: &str) -> Option<String> {
    let uid = s.replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    ok.then_some(uid)
}

/// Reads a container out of a cgroup path. Pure.
pub fn parse_cgroup_path(path: &str) -> Option<Container> {
    let mut found: Option<(String, &'static str)> = None;
    let mut pod = None;
    let mut kube = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if seg.starts_with("kubepods") {
            kube = true;
        }
        // kubepods-burstable-pod<uid_with_underscores>.slice, or pod<uid> (cgroupfs)
        if let Some(i) = seg.rfind("pod")
            && kube
            && let Some(uid) = pod_uid(seg[i + 3..].trim_end_matches(".slice"))
        {
            pod = Some(uid);
        }
        let s = seg.trim_end_matches(".scope");
        for (prefix, runtime) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("libpod-", "podman"),
        ] {
            if let Some(id) = s.strip_prefix(prefix)
                && is_id(id)
            {
                found = Some((id.to_string(), runtime));
            }
        }
        if found.is_none() && is_id(s) {
            // cgroupfs driver: /docker/<id>, /kubepods/burstable/pod<uid>/<id>
            found = Some((s.to_string(), if kube { "containerd" } else { "docker" }));
        }
    }
    found.map(|(id, runtime)| Container {
        id,
        runtime,
        pod_uid: pod,
        workload: Workload::default(),
    })
}

/// The container of a process, from its cgroup v2 path in /proc/<pid>/cgroup ("0::/...").
pub(crate) fn of_pid(pid: u32) -> Option<Container> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_proc_cgroup(&text)
}

/// The container named by the cgroup v2 line ("0::/...") of a /proc/<pid>/cgroup file.
/// Pure.
pub fn parse_proc_cgroup(text: &str) -> Option<Container> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    parse_cgroup_path(path)
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub(crate) fn cgroup2_root() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo_cgroup2(&info)
}

/// The mount point of the first cgroup2 line of a mountinfo text. Pure.
pub fn parse_mountinfo_cgroup2(info: &str) -> Option<PathBuf> {
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// At most this many containers' workloads are kept (those of containers still in the
/// cgroup tree at the last walk; beyond it the cache starts afresh).
const MAX_WORKLOADS: usize = 8192;

/// A cgroup as the last walk found it.
enum Slot {
    NotAContainer,
    /// A container whose runtime files were not looked at yet.
    Pending(Container),
    Ready(Arc<Container>),
}

/// cgroup id -> container, cached; the tree is walked again on a miss, at most once a
/// second (new containers appear while the agent runs). A container's workload (name,
/// image, pod) is read from its runtime's files at its first event and kept per
/// container id, so a walk reads no file again.
pub(crate) struct Resolver {
    root: Option<PathBuf>,
    /// Every cgroup seen at the last walk (this is looked up for every event).
    by_id: HashMap<u64, Slot>,
    last_walk_ns: u64,
    finder: runtime_files::Finder,
    /// Container id -> workload (empty when no runtime file named it).
    workloads: HashMap<String, Workload>,
}

impl Resolver {
    pub(crate) fn new() -> Resolver {
        Resolver {
            root: cgroup2_root(),
            by_id: HashMap::new(),
            last_walk_ns: 0,
            finder: runtime_files::Finder::host(),
            workloads: HashMap::new(),
        }
    }

    pub(crate) fn container(&mut self, cgroup_id: u64, now_ns: u64) -> Option<Arc<Container>> {
        if cgroup_id <= 1 {
            return None;
        }
        if !self.by_id.contains_key(&cgroup_id)
            && now_ns.saturating_sub(self.last_walk_ns) >= 1_000_000_000
        {
            self.walk();
            self.last_walk_ns = now_ns;
        }
        let slot = self.by_id.get_mut(&cgroup_id)?;
        match slot {
            Slot::NotAContainer => None,
            Slot::Ready(c) => Some(c.clone()),
            Slot::Pending(c) => {
                if self.workloads.len() >= MAX_WORKLOADS {
                    self.workloads.clear();
                }
                let w = self
                    .workloads
                    .entry(c.id.clone())
                    .or_insert_with(|| self.finder.lookup(&c.id, c.runtime));
                let ready = Arc::new(Container {
                    workload: w.clone(),
                    ..c.clone()
                });
                *slot = Slot::Ready(ready.clone());
                Some(ready)
            }
        }
    }

    fn walk(&mut self) {
        let Some(root) = self.root.clone() else {
            return;
        };
        self.by_id.clear();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let p = e.path();
                if let Ok(md) = fs::metadata(&p) {
                    let rel = p
                        .strip_prefix(&root)
                        .unwrap_or(Path::new(""))
                        .to_string_lossy()
                        .into_owned();
                    let slot = match parse_cgroup_path(&format!("/{rel}")) {
                        Some(c) => Slot::Pending(c),
                        None => Slot::NotAContainer,
                    };
                    self.by_id.insert(md.ino(), slot);
                }
                stack.push(p);
            }
        }
        // Workloads of containers that are gone are dropped.
        let live: HashSet<&str> = self
            .by_id
            .values()
            .filter_map(|s| match s {
                Slot::Pending(c) => Some(c.id.as_str()),
                _ => None,
            })
            .collect();
        self.workloads.retain(|id, _| live.contains(id.as_str()));
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4a5b6c7d8e9f00112233445566778899aabbccddeeff00112233445566aabb";

    #[test]
    fn recognises_the_common_layouts() {
        let docker = format!("/system.slice/docker-{ID}.scope");
        assert_eq!(
            parse_cgroup_path(&docker),
            Some(Container {
                id: ID.into(),
                runtime: "docker",
                pod_uid: None,
                workload: Workload::default(),
            })
        );
        let k8s = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_1111_2222_3333_444455556666.slice/cri-containerd-{ID}.scope"
        );
        let c = parse_cgroup_path(&k8s).unwrap();
        assert_eq!(
            (c.runtime, c.pod_uid.as_deref()),
            ("containerd", Some("1a2b3c4d-1111-2222-3333-444455556666"))
        );
        let crio = format!(
            "/kubepods.slice/kubepods-pod1a2b3c4d_1111_2222_3333_444455556666.slice/crio-{ID}.scope"
        );
        assert_eq!(parse_cgroup_path(&crio).unwrap().runtime, "cri-o");
        let podman = format!("/machine.slice/libpod-{ID}.scope/container");
        assert_eq!(parse_cgroup_path(&podman).unwrap().runtime, "podman");
        let cgroupfs = format!("/kubepods/burstable/pod1a2b3c4d-1111-2222-3333-444455556666/{ID}");
        let c = parse_cgroup_path(&cgroupfs).unwrap();
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("1a2b3c4d-1111-2222-3333-444455556666")
        );
        assert_eq!(
            parse_cgroup_path(&format!("/docker/{ID}")).unwrap().runtime,
            "docker"
        );
    }

    #[test]
    fn reads_the_v2_line_of_proc_cgroup_and_the_cgroup2_mount() {
        let text = format!(
            "12:pids:/system.slice/docker-{ID}.scope\n0::/system.slice/docker-{ID}.scope\n"
        );
        assert_eq!(parse_proc_cgroup(&text).unwrap().id, ID);
        assert_eq!(parse_proc_cgroup("1:name=systemd:/init.scope\n"), None);
        let info = "24 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_mountinfo_cgroup2(info),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(parse_mountinfo_cgroup2("garbage - cgroup2"), None);
    }

    #[test]
    fn a_pod_uid_is_taken_only_when_it_is_a_uuid() {
        for bad in [
            "1a2b3c4d_1111_2222_3333_44445555666\"",
            "1a2b3c4d_1111_2222_3333_4444555566\\",
            "1a2b3c4d-1111-2222-3333-4444555566\n6",
            "zzzzzzzz-1111-2222-3333-444455556666",
            "1a2b3c4d11111-2222-3333-444455556666",
        ] {
            let path = format!("/kubepods.slice/kubepods-pod{bad}.slice/cri-containerd-{ID}.scope");
            let c = parse_cgroup_path(&path).unwrap();
            assert_eq!(c.pod_uid, None, "{bad:?}");
        }
    }

    #[test]
    fn ordinary_cgroups_are_not_containers() {
        assert_eq!(
            parse_cgroup_path("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(parse_cgroup_path("/"), None);
        assert_eq!(
            parse_cgroup_path("/system.slice/docker-notanid.scope"),
            None
        );
    }
}

//! Finding and reading the file in which a container's runtime recorded its name, image
//! and pod (what each file holds, and the parsers: logic::workload).
use std::{
    fs::{self, File},
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::logic::workload::{
    Workload, parse_docker_config, parse_oci_config, parse_storage_containers,
};

/// containerd's task bundles: `<namespace>/<id>/config.json` (Kubernetes: `k8s.io`).
const CONTAINERD_TASKS: &str = "run/containerd/io.containerd.runtime.v2.task";
/// containers/storage's run directory (CRI-O saves config.json there too).
const STORAGE_RUN: &str = "run/containers/storage/overlay-containers";
/// containers/storage's static directory (podman's config.json, containers.json).
const STORAGE_STATIC: &str = "var/lib/containers/storage/overlay-containers";
const DOCKER: &str = "var/lib/docker/containers";

/// A runtime's config of one container: tens of KiB. More is not a runtime's file.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// containers.json lists every container of the store: ~1 KiB each.
const MAX_LIST_BYTES: u64 = 32 << 20;
/// containerd namespaces looked into (k8s.io, moby, default, ...: a handful).
const MAX_NAMESPACES: usize = 32;

/// Looks for a container's runtime files under one or more host roots.
pub(crate) struct Finder {
    roots: Vec<PathBuf>,
}

impl Finder {
    /// This host: `/`, and the host's root through /proc/1/root when portex runs in a
    /// container of its own with the host's pid namespace (the packaged DaemonSet): the
    /// runtimes' directories are then not in its own file system.
    pub(crate) fn host() -> Finder {
        let mut roots = vec![PathBuf::from("/")];
        let id = |p: &str| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let (own, init) = (id("/"), id("/proc/1/root"));
        if init.is_some() && own != init {
            roots.push(PathBuf::from("/proc/1/root"));
        }
        Finder { roots }
    }

    /// A fixed root (tests: a host's layout in a directory).
    #[cfg(test)]
    pub(crate) fn at(root: &Path) -> Finder {
        Finder {
            roots: vec![root.to_path_buf()],
        }
    }

    /// What the runtime recorded about container `id`; empty when no file names it.
    /// `runtime` (from the cgroup path) says where to look first; the others follow,
    /// as the cgroupfs layout of Kubernetes does not tell containerd from CRI-O.
    pub(crate) fn lookup(&self, id: &str, runtime: &str) -> Workload {
        let mut order: [Source; 4] = [
            Source::Containerd,
            Source::CriO,
            Source::Podman,
            Source::Docker,
        ];
        let first = match runtime {
            "cri-o" => 1,
            "podman" => 2,
            "docker" => 3,
            _ => 0,
        };
        order.swap(0, first);
        for root in &self.roots {
            for s in order {
                let w = s.read(root, id);
                if !w.is_empty() {
                    return w;
                }
            }
        }
        Workload::default()
    }
}

#[derive(Clone, Copy)]
enum Source {
    Containerd,
    CriO,
    Podman,
    Docker,
}

impl Source {
    fn read(self, root: &Path, id: &str) -> Workload {
        match self {
            Source::Containerd => containerd(root, id),
            Source::CriO => read(&root.join(STORAGE_RUN).join(id).join("userdata/config.json"))
                .map(|b| parse_oci_config(&b))
                .unwrap_or_default(),
            Source::Podman => {
                let dir = root.join(STORAGE_STATIC);
                let from_config = read(&dir.join(id).join("userdata/config.json"))
                    .map(|b| parse_oci_config(&b))
                    .unwrap_or_default();
                if !from_config.is_empty() {
                    return from_config;
                }
                read_bounded(&dir.join("containers.json"), MAX_LIST_BYTES)
                    .and_then(|b| parse_storage_containers(&b, id))
                    .unwrap_or_default()
            }
            Source::Docker => read(&root.join(DOCKER).join(id).join("config.v2.json"))
                .map(|b| parse_docker_config(&b))
                .unwrap_or_default(),
        }
    }
}

/// The task bundle of `id` in containerd's namespaces, Kubernetes' first.
fn containerd(root: &Path, id: &str) -> Workload {
    let tasks = root.join(CONTAINERD_TASKS);
    let in_ns = |ns: &Path| {
        read(&ns.join(id).join("config.json"))
            .map(|b| parse_oci_config(&b))
            .unwrap_or_default()
    };
    let k8s = in_ns(&tasks.join("k8s.io"));
    if !k8s.is_empty() {
        return k8s;
    }
    let Ok(dir) = fs::read_dir(&tasks) else {
        return Workload::default();
    };
    dir.flatten()
        .take(MAX_NAMESPACES)
        .filter(|e| e.file_name() != "k8s.io")
        .map(|e| in_ns(&e.path()))
        .find(|w| !w.is_empty())
        .unwrap_or_default()
}

fn read(path: &Path) -> Option<Vec<u8>> {
    read_bounded(path, MAX_CONFIG_BYTES)
}

/// A regular file's bytes, at most `max` (a larger file is not read: None).
fn read_bounded(path: &Path, max: u64) -> Option<Vec<u8>> {
    let f = File::open(path).ok()?;
    let md = f.metadata().ok()?;
    if !md.is_file() || md.len() > max {
        return None;
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    f.take(max).read_to_end(&mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> Finder {
        Finder::at(&PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/runtimes/hostroot"
        )))
    }

    #[test]
    fn each_runtime_is_found_where_it_keeps_its_files() {
        let f = fixtures();
        let cases = [
            ("aa11", "containerd", "web", "docker.io/library/nginx:1.27"),
            ("bb11", "cri-o", "api", "quay.io/acme/api:v3"),
            ("cc11", "docker", "shop-web", "nginx:1.27"),
        ];
        for (id4, runtime, name, image) in cases {
            let w = f.lookup(&id4.repeat(16), runtime);
            assert_eq!(
                (w.name.as_deref(), w.image.as_deref()),
                (Some(name), Some(image)),
                "{runtime}"
            );
        }
        let podman = f.lookup(
            "103510498ac0012ff99feda4d2bed2f5522f5575a4ef160bd23c5e5d0b23814f",
            "podman",
        );
        assert_eq!(podman.name.as_deref(), Some("web-1"));
    }

    #[test]
    fn a_wrong_runtime_guess_still_finds_the_file_and_an_unknown_id_finds_nothing() {
        let f = fixtures();
        // Kubernetes' cgroupfs layout names no runtime: the parser guesses containerd.
        let w = f.lookup(&"bb11".repeat(16), "containerd");
        assert_eq!(w.pod_namespace.as_deref(), Some("billing"));
        assert!(f.lookup(&"ee11".repeat(16), "containerd").is_empty());
        assert!(
            Finder::at(Path::new("/nonexistent"))
                .lookup("x", "docker")
                .is_empty()
        );
    }
}

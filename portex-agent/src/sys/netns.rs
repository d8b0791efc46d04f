//! Network namespaces: which exist (every process's, and the named ones under
//! /var/run/netns, which may hold TIME_WAIT sockets with no process left), and running
//! code inside one. setns() is per thread, so work runs on a short-lived thread; sockets
//! and /proc/sys/net files opened there stay bound to that namespace.
use std::{
    collections::BTreeMap,
    fs,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Netns {
    /// The namespace's inode number: its identity (`ip netns identify`, `lsns`).
    pub inode: u64,
    /// A path that opens it: /var/run/netns/NAME or /proc/PID/ns/net.
    pub path: PathBuf,
    /// The name `ip netns` knows it by, if any.
    pub name: Option<String>,
}

/// The namespace this thread runs in.
pub(crate) fn current() -> Result<Netns> {
    let path = PathBuf::from("/proc/thread-self/ns/net");
    let inode = fs::metadata(&path)
        .context("reading /proc/thread-self/ns/net")?
        .ino();
    let name = named().remove(&inode);
    Ok(Netns { inode, path, name })
}

/// Named namespaces (ip netns add), by inode.
fn named() -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for dir in ["/var/run/netns", "/run/netns"] {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            if let (Ok(md), Some(n)) = (fs::metadata(e.path()), e.file_name().to_str()) {
                out.entry(md.ino()).or_insert_with(|| n.to_string());
            }
        }
    }
    out
}

/// ioctl(NS_GET_NSTYPE) = _IO(0xb7, 0x3): the CLONE_NEW* type of a namespace file
/// (Linux 4.11), ENOTTY for any other file.
const NS_GET_NSTYPE: u32 = 0xb703;

/// The namespace `spec` names (`--netns`): an inode (`lsns -t net`), a name (`ip netns
/// list`), or a path to a namespace file (/proc/PID/ns/net, /run/netns/NAME).
pub(crate) fn find(spec: &str) -> Result<Netns> {
    if let Ok(inode) = spec.parse::<u64>() {
        let here = current()?;
        if here.inode == inode {
            return Ok(here);
        }
        return all()
            .into_iter()
            .find(|n| n.inode == inode)
            .with_context(|| {
                format!("no network namespace with inode {inode} (`lsns -t net` lists them)")
            });
    }
    let path = if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        ["/run/netns", "/var/run/netns"]
            .iter()
            .map(|d| Path::new(d).join(spec))
            .find(|p| !spec.is_empty() && spec != "." && spec != ".." && p.exists())
            .with_context(|| {
                format!("no network namespace named {spec:?} (`ip netns list` names them)")
            })?
    };
    let file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: an ioctl without argument on a file we hold open.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind != libc::CLONE_NEWNET {
        bail!("{} is not a network namespace", path.display());
    }
    let inode = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .ino();
    Ok(Netns {
        inode,
        path,
        name: named().remove(&inode),
    })
}

/// Every network namespace on the host that this process can see.
pub(crate) fn all() -> Vec<Netns> {
    let mut by_inode: BTreeMap<u64, Netns> = BTreeMap::new();
    let names = named();
    for dir in ["/var/run/netns", "/run/netns"] {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            if let Ok(md) = fs::metadata(e.path()) {
                by_inode.entry(md.ino()).or_insert(Netns {
                    inode: md.ino(),
                    path: e.path(),
                    name: names.get(&md.ino()).cloned(),
                });
            }
        }
    }
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if let Ok(md) = fs::metadata(&path) {
                by_inode.entry(md.ino()).or_insert(Netns {
                    inode: md.ino(),
                    path,
                    name: names.get(&md.ino()).cloned(),
                });
            }
        }
    }
    by_inode.into_values().collect()
}

/// Runs `f` on a thread that has entered `ns`; in place when this thread is already in
/// it (setns needs CAP_SYS_ADMIN even then, and `portex status` works without it).
pub(crate) fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> Result<T> {
    if current().is_ok_and(|here| here.inode == ns.inode) {
        return Ok(f());
    }
    let file =
        fs::File::open(&ns.path).with_context(|| format!("opening {}", ns.path.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a valid namespace fd; affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!(
                    "entering network namespace {}: {}",
                    ns.path.display(),
                    std::io::Error::last_os_error()
                );
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a namespace worker thread panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_takes_a_path_an_inode_or_a_name_and_refuses_other_files() {
        let here = current().unwrap();
        assert_eq!(find("/proc/self/ns/net").unwrap().inode, here.inode);
        assert_eq!(find(&here.inode.to_string()).unwrap().inode, here.inode);
        let e = |s: &str| format!("{:#}", find(s).unwrap_err());
        assert!(e("/proc/self/ns/mnt").ends_with("is not a network namespace"));
        assert!(e("/proc/self/stat").ends_with("is not a network namespace"));
        assert!(e("portex-no-such-namespace").starts_with("no network namespace named"));
        assert!(e("..").starts_with("no network namespace named"));
        assert!(e("1").starts_with("no network namespace with inode 1"));
    }
}

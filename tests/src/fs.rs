//! Files, mounts and cgroups that remove themselves: a temporary directory, a small tmpfs
//! (a disk that fills up), a cgroup path for a driver to join.
use std::{
    ops::Deref,
    path::{Path, PathBuf},
    process::Command,
};

/// A fresh directory under the temporary directory, unique to this test process;
/// removed on drop.
pub struct TmpDir(PathBuf);

impl TmpDir {
    pub fn new(tag: &str) -> TmpDir {
        let d = std::env::temp_dir().join(format!("portex-e2e-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TmpDir(d)
    }
}

impl Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TmpDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tmpfs of `size` (e.g. "64k") mounted on a fresh temporary directory; unmounted and
/// removed on drop.
pub struct Tmpfs(TmpDir);

impl Tmpfs {
    pub fn mount(tag: &str, size: &str) -> Tmpfs {
        let dir = TmpDir::new(tag);
        let size = format!("size={size}");
        assert!(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &size, "tmpfs", dir.to_str().unwrap()])
                .status()
                .unwrap()
                .success()
        );
        Tmpfs(dir)
    }

    /// Gives it a new size (space running out, or coming back).
    pub fn resize(&self, size: &str) {
        assert!(
            Command::new("mount")
                .args([
                    "-o",
                    &format!("remount,size={size}"),
                    self.to_str().unwrap()
                ])
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Deref for Tmpfs {
    type Target = TmpDir;
    fn deref(&self) -> &TmpDir {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&*self.0).status();
    }
}

/// A cgroup (v2) path under the root for a driver to join (`--cgroup`), each of its
/// directories created; removed on drop.
pub struct Cgroup(Vec<PathBuf>);

impl Cgroup {
    pub fn new(relative: &str) -> Cgroup {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = info
            .lines()
            .find(|l| {
                l.split(" - ")
                    .nth(1)
                    .is_some_and(|r| r.starts_with("cgroup2 "))
            })
            .and_then(|l| l.split_whitespace().nth(4))
            .expect("a cgroup v2 mount");
        let mut dirs = Vec::new();
        let mut p = PathBuf::from(root);
        for seg in relative.split('/') {
            p = p.join(seg);
            dirs.push(p.clone());
        }
        std::fs::create_dir_all(&p).expect("creating a test cgroup");
        Cgroup(dirs)
    }

    pub fn path(&self) -> &str {
        self.0.last().unwrap().to_str().unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The lines of a file (none when it is missing).
pub fn lines_of(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// How many lines of the file contain `needle` (none when it is missing).
pub fn count_lines_with(p: &Path, needle: &str) -> usize {
    lines_of(p).iter().filter(|l| l.contains(needle)).count()
}

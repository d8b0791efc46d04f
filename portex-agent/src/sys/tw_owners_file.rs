//! The file through which a running portex tells `status` who holds TIME_WAIT ports
//! (logic::pool::tw_owners): /run/portex/tw-owners/<pid>.json, one per running agent,
//! watch or top, rewritten every second (write to a temporary name, then rename) and
//! removed on exit.
//!
//! Only root may write there: the directories must be root's, not writable by group or
//! others, and not symlinks, or nothing is written (and status reads nothing): a local
//! user must not be able to plant owners for status to print, nor redirect the writes.
use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Result, bail};

use crate::logic::{kernel::NotLoaded, pool::TwOwners};

const DIR: &str = "/run/portex/tw-owners";

/// A file older than this is a writer that stopped without removing it.
pub(crate) const FRESH: Duration = Duration::from_secs(5);

/// Files larger than this are not read (MAX_POOLS x MAX_HOLDERS lines fit many times).
const MAX_BYTES: u64 = 32 << 20;

/// A directory we may trust: root's, not writable by others, not a symlink.
fn trusted_dir(path: &Path) -> Result<()> {
    let m = fs::symlink_metadata(path)?;
    if !m.file_type().is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        bail!(
            "{} is not a directory of root's writable only by root",
            path.display()
        );
    }
    Ok(())
}

/// Creates (if needed) and checks /run/portex and its tw-owners directory.
fn prepare_dir() -> Result<PathBuf> {
    let dir = PathBuf::from(DIR);
    for d in [dir.parent().unwrap_or(&dir), dir.as_path()] {
        match fs::DirBuilder::new().mode(0o755).create(d) {
            // Readable by all whatever the umask (the unit's is 0027): `status` is run
            // by any user.
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(0o755))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => bail!("creating {}: {e}", d.display()),
        }
        trusted_dir(d)?;
    }
    Ok(dir)
}

/// This process's file; removed when dropped.
pub(crate) struct TwOwnersWriter {
    path: PathBuf,
    tmp: PathBuf,
    /// This agent's programs the kernel refused, written with every update.
    not_loaded: Vec<NotLoaded>,
}

impl TwOwnersWriter {
    pub(crate) fn new(not_loaded: Vec<NotLoaded>) -> Result<TwOwnersWriter> {
        let dir = prepare_dir()?;
        let pid = std::process::id();
        // Files of writers killed before they could remove theirs.
        for entry in fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name();
            let writer = name
                .to_str()
                .map(|n| n.trim_start_matches('.'))
                .and_then(|n| n.split('.').next())
                .and_then(|p| p.parse::<u32>().ok());
            if writer.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(TwOwnersWriter {
            path: dir.join(format!("{pid}.json")),
            tmp: dir.join(format!(".{pid}.tmp")),
            not_loaded,
        })
    }

    pub(crate) fn write(&self, owners: &mut TwOwners) -> Result<()> {
        owners.programs_not_loaded.clone_from(&self.not_loaded);
        let body = serde_json::to_vec(owners)?;
        let _ = fs::remove_file(&self.tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.write_all(&body)?;
        drop(f);
        fs::rename(&self.tmp, &self.path)?;
        Ok(())
    }
}

impl Drop for TwOwnersWriter {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(&self.tmp);
    }
}

/// What the running writers know, merged, with their pids; None when none is running
/// (or their directory cannot be trusted).
pub(crate) fn read_running() -> Option<(TwOwners, Vec<u32>)> {
    let dir = Path::new(DIR);
    trusted_dir(dir.parent()?).ok()?;
    trusted_dir(dir).ok()?;
    let mut all = TwOwners::default();
    let mut writers = Vec::new();
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(m) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let age = m
            .modified()
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(Duration::MAX);
        let trusted = m.file_type().is_file() && m.uid() == 0 && m.mode() & 0o022 == 0;
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if !trusted || !alive || age > FRESH || m.len() > MAX_BYTES {
            continue;
        }
        let Ok(body) = fs::read(entry.path()) else {
            continue;
        };
        if let Ok(o) = serde_json::from_slice::<TwOwners>(&body) {
            all.merge(o);
            writers.push(pid);
        }
    }
    (!writers.is_empty()).then_some((all, writers))
}

//! Opening the output file as a root agent safely can (the path may sit in a directory
//! other users can write to).
use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Opens `p` for appending as a root agent safely can: never through a symlink, never
/// a FIFO or device (which could block start-up forever), never a file with other
/// links or owned by another user; permissions are tightened to 0640 at most.
pub(crate) fn open_output(p: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        // Read too: the last byte tells whether a partial line was left behind.
        .read(true)
        .mode(0o640)
        // O_NONBLOCK: opening a FIFO for writing would otherwise wait for a reader.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse("is a symbolic link"),
            Some(libc::ENXIO) => refuse("is not a regular file (a FIFO or socket)"),
            _ => e,
        })?;
    let md = f.metadata()?;
    if is_dev_null(&md) {
        // Discarding the events (metrics only) is a legitimate choice.
        clear_nonblock(&f);
        return Ok(f);
    }
    if !md.file_type().is_file() {
        return Err(refuse("is not a regular file (a FIFO, socket or device)"));
    }
    if md.nlink() > 1 {
        return Err(refuse("has other hard links"));
    }
    // SAFETY: no arguments.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me {
        return Err(refuse(&format!(
            "is owned by uid {}, not by this agent (uid {me})",
            md.uid()
        )));
    }
    let mode = md.permissions().mode() & 0o7777;
    if mode & !0o640 != 0 {
        f.set_permissions(fs::Permissions::from_mode(mode & 0o640))?;
    }
    clear_nonblock(&f);
    Ok(f)
}

/// The null device (character device 1:3), whatever its path.
pub(super) fn is_dev_null(md: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    md.file_type().is_char_device() && libc::major(md.rdev()) == 1 && libc::minor(md.rdev()) == 3
}

fn refuse(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{why}; portex writes only to a regular file of its own"),
    )
}

fn clear_nonblock(f: &File) {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// (device, inode) of the open file, to tell whether the path still names it.
pub(super) fn identity(md: &fs::Metadata) -> (u64, u64) {
    (md.dev(), md.ino())
}

//! Where `portex agent` writes its NDJSON: a file (appended, created 0640, rotated by
//! size, reopened on SIGHUP for logrotate) or stdout. Writing happens on a thread of its
//! own behind a queue bounded in bytes, so a slow or blocked sink never stalls the kernel
//! reader nor grows the agent's memory: what does not fit is dropped and counted, and so
//! is what a failing disk refuses.
//!
//! The agent runs as root and the path may sit in a directory others can write to, so a
//! file is only ever opened without following a symlink, must be a regular file with one
//! link owned by the agent's user, and is made 0640 at most. Before each write the path
//! is checked to still name the open file: a deleted or replaced file is noticed at once.
//! A write cut short (a full disk) is truncated back to its last complete line, so a
//! line in the file is always whole, and only the lines that really reached the file are
//! counted as written.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct SinkOptions {
    pub target: Target,
    /// Rotate when the file reaches this many bytes; 0 never.
    pub rotate_size: u64,
    /// Rotated files kept (events.ndjson.1 .. .N).
    pub rotate_keep: u32,
    /// Bytes of lines waiting for the writer; beyond this, new chunks are dropped.
    pub queue_bytes: u64,
}

/// Counters the agent exports.
#[derive(Default, Debug)]
pub struct SinkCounts {
    pub lines_written: AtomicU64,
    /// Lines lost: queue full, or the sink refused them (ENOSPC, EACCES ...).
    pub lines_dropped: AtomicU64,
    pub write_errors: AtomicU64,
    pub rotations: AtomicU64,
    /// Bytes queued for the writer now.
    pub queued_bytes: AtomicU64,
    /// Lines queued for the writer now (counted as dropped if it never gets to them).
    pub queued_lines: AtomicU64,
}

/// A chunk of complete lines and how many lines it holds.
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub lines: u64,
}

/// Chunks the channel can hold; the real bound is `queue_bytes`.
const CHANNEL_CHUNKS: usize = 4096;
/// How long closing waits for the writer to flush what is queued: a writer stuck on a
/// blocked pipe must not keep the agent (and its programs) alive after SIGTERM.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub struct Sink {
    tx: Option<SyncSender<Chunk>>,
    queue_bytes: u64,
    /// Emptied buffers coming back from the writer: a fresh multi-100 KiB buffer per
    /// batch costs page faults on every batch.
    spare: Receiver<Vec<u8>>,
    pub counts: Arc<SinkCounts>,
    pub reopen: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Opens the target once up front, so a path that can never work is reported at
    /// start; later failures are retried.
    pub fn start(opts: SinkOptions) -> Result<Sink> {
        let file = match &opts.target {
            Target::File(p) => Some(
                open_output(p)
                    .with_context(|| format!("cannot write events to {}", p.display()))?,
            ),
            Target::Stdout => None,
        };
        let (tx, rx) = sync_channel(CHANNEL_CHUNKS);
        let counts = Arc::new(SinkCounts::default());
        let reopen = Arc::new(AtomicBool::new(false));
        let (c, r) = (counts.clone(), reopen.clone());
        let (spare_tx, spare) = sync_channel(4);
        let queue_bytes = opts.queue_bytes;
        let mut writer = Writer::new(opts, c, r, spare_tx);
        if let Some(f) = file {
            writer.adopt(f);
        }
        let thread = std::thread::Builder::new()
            .name("portex-sink".into())
            .spawn(move || writer.run(rx))
            .context("starting the sink thread")?;
        Ok(Sink {
            tx: Some(tx),
            queue_bytes,
            spare,
            counts,
            reopen,
            thread: Some(thread),
        })
    }

    /// Queues a chunk; drops and counts it when the writer is more than `queue_bytes`
    /// behind.
    pub fn send(&self, chunk: Chunk) {
        let Some(tx) = &self.tx else { return };
        let (lines, len) = (chunk.lines, chunk.bytes.len() as u64);
        let queued = self.counts.queued_bytes.load(Ordering::Relaxed);
        if queued.saturating_add(len) > self.queue_bytes {
            self.counts
                .lines_dropped
                .fetch_add(lines, Ordering::Relaxed);
            return;
        }
        self.counts.queued_bytes.fetch_add(len, Ordering::Relaxed);
        self.counts.queued_lines.fetch_add(lines, Ordering::Relaxed);
        match tx.try_send(chunk) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counts.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                self.counts.queued_lines.fetch_sub(lines, Ordering::Relaxed);
                self.counts
                    .lines_dropped
                    .fetch_add(lines, Ordering::Relaxed);
            }
        }
    }

    /// An empty buffer the writer is done with, if one is back.
    pub fn spare_buffer(&self) -> Option<Vec<u8>> {
        self.spare.try_recv().ok()
    }

    /// Flushes what is queued and stops the writer, waiting at most CLOSE_GRACE. A
    /// writer still blocked then is left behind (the process is about to exit); what
    /// it still held is counted as dropped. Returns false in that case.
    pub fn close(&mut self) -> bool {
        self.tx.take();
        let Some(t) = self.thread.take() else {
            return true;
        };
        let end = Instant::now() + CLOSE_GRACE;
        while !t.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
            return true;
        }
        let stuck = self.counts.queued_lines.swap(0, Ordering::Relaxed);
        self.counts
            .lines_dropped
            .fetch_add(stuck, Ordering::Relaxed);
        false
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens `p` for appending as a root agent safely can: never through a symlink, never
/// a FIFO or device (which could block start-up forever), never a file with other
/// links or owned by another user; permissions are tightened to 0640 at most.
pub fn open_output(p: &Path) -> io::Result<File> {
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
fn identity(md: &fs::Metadata) -> (u64, u64) {
    (md.dev(), md.ino())
}

struct Writer {
    opts: SinkOptions,
    counts: Arc<SinkCounts>,
    reopen: Arc<AtomicBool>,
    file: Option<File>,
    /// (dev, ino) of `file`.
    id: (u64, u64),
    size: u64,
    /// The file does not end in a newline (an earlier write was cut short and could not
    /// be truncated, or another writer crashed): the next write starts a new line.
    dangling: bool,
    /// The last error reported, so a failing disk prints one line, not one per chunk.
    last_error: Option<String>,
    retry_at: Instant,
    spare: SyncSender<Vec<u8>>,
}

impl Writer {
    fn new(
        opts: SinkOptions,
        counts: Arc<SinkCounts>,
        reopen: Arc<AtomicBool>,
        spare: SyncSender<Vec<u8>>,
    ) -> Writer {
        Writer {
            spare,
            opts,
            counts,
            reopen,
            file: None,
            id: (0, 0),
            size: 0,
            dangling: false,
            last_error: None,
            retry_at: Instant::now(),
        }
    }

    /// Takes a freshly opened output file.
    fn adopt(&mut self, f: File) {
        let md = f.metadata().ok();
        self.size = md.as_ref().map_or(0, |m| m.len());
        self.id = md.as_ref().map_or((0, 0), identity);
        let mut last = [0u8; 1];
        self.dangling = self.size > 0
            && std::os::unix::fs::FileExt::read_at(&f, &mut last, self.size - 1).is_ok()
            && last[0] != b'\n';
        self.file = Some(f);
    }

    fn run(mut self, rx: Receiver<Chunk>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(chunk) => {
                    let (len, lines) = (chunk.bytes.len() as u64, chunk.lines);
                    let mut bytes = self.write(chunk);
                    self.counts.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                    self.counts.queued_lines.fetch_sub(lines, Ordering::Relaxed);
                    bytes.clear();
                    let _ = self.spare.try_send(bytes);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
    }

    /// Writes a chunk; hands its buffer back for reuse.
    fn write(&mut self, chunk: Chunk) -> Vec<u8> {
        if self.reopen.swap(false, Ordering::Relaxed) {
            self.file = None;
        }
        let (written, res) = match &self.opts.target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                match out.write_all(&chunk.bytes).and_then(|_| out.flush()) {
                    Ok(()) => (chunk.lines, Ok(())),
                    Err(e) => (0, Err(e)),
                }
            }
            Target::File(path) => {
                let path = path.clone();
                let mut written = 0;
                let res = self.write_file(&path, &chunk.bytes, &mut written);
                (written, res)
            }
        };
        let written = written.min(chunk.lines);
        self.counts
            .lines_written
            .fetch_add(written, Ordering::Relaxed);
        match res {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    eprintln!("portex: events are being written again");
                }
            }
            Err(e) => {
                self.counts
                    .lines_dropped
                    .fetch_add(chunk.lines - written, Ordering::Relaxed);
                self.counts.write_errors.fetch_add(1, Ordering::Relaxed);
                self.file = None;
                self.retry_at = Instant::now() + Duration::from_secs(1);
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(&msg) {
                    eprintln!(
                        "portex: error: writing events failed ({msg}); dropping and counting them, retrying every second"
                    );
                    self.last_error = Some(msg);
                }
            }
        }
        chunk.bytes
    }

    /// Opens the file when there is none, or when the path no longer names the open
    /// file (deleted, or moved away and replaced).
    fn ensure_open(&mut self, path: &Path) -> io::Result<()> {
        if self.file.is_some() {
            match fs::symlink_metadata(path) {
                Ok(md) if identity(&md) == self.id => return Ok(()),
                Ok(_) => eprintln!(
                    "portex: warning: {} was replaced; writing to the file now at that path",
                    path.display()
                ),
                Err(_) => eprintln!(
                    "portex: warning: {} was removed; creating it again",
                    path.display()
                ),
            }
            self.file = None;
        } else if Instant::now() < self.retry_at {
            return Err(io::Error::other(
                self.last_error
                    .clone()
                    .unwrap_or_else(|| "sink unavailable".into()),
            ));
        }
        let f = open_output(path)?;
        self.adopt(f);
        Ok(())
    }

    /// Writes `bytes` (whole lines), rotating as needed; `written` counts the lines
    /// that reached the file, also when an error stops it half-way.
    fn write_file(&mut self, path: &Path, bytes: &[u8], written: &mut u64) -> io::Result<()> {
        self.ensure_open(path)?;
        // A chunk can be larger than what is left before rotation: split it at line
        // boundaries so that no file grows past --rotate-size (unless one line does).
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = match self.opts.rotate_size {
                0 => u64::MAX,
                limit => limit.saturating_sub(self.size),
            };
            let take = if rest.len() as u64 <= room {
                rest.len()
            } else {
                let window = &rest[..room as usize];
                match window.iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if self.size == 0 => rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |i| i + 1),
                    None => 0,
                }
            };
            if take > 0 {
                self.append_lines(&rest[..take], written)?;
                rest = &rest[take..];
            }
            if !rest.is_empty() {
                self.rotate(path)?;
            }
        }
        Ok(())
    }

    /// Appends whole lines. A short write (ENOSPC) is cut back to its last complete
    /// line, so the next line never glues onto a partial one.
    fn append_lines(&mut self, part: &[u8], written: &mut u64) -> io::Result<()> {
        let f = self.file.as_mut().expect("opened by ensure_open");
        if self.dangling {
            f.write_all(b"\n")?;
            self.size += 1;
            self.dangling = false;
        }
        let mut done = 0;
        let err = loop {
            if done == part.len() {
                break None;
            }
            match f.write(&part[done..]) {
                Ok(0) => break Some(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        let whole = part[..done]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        *written += count_lines(&part[..whole]);
        match err {
            None => {
                self.size += done as u64;
                Ok(())
            }
            Some(e) => {
                self.size += whole as u64;
                if whole < done {
                    // A file that cannot be truncated keeps the partial line; the next
                    // write starts on a new line.
                    if f.set_len(self.size).is_err() {
                        self.dangling = true;
                    }
                }
                Err(e)
            }
        }
    }

    /// events.ndjson -> .1 -> .2 ... (.N is removed), then a fresh file.
    fn rotate(&mut self, path: &Path) -> io::Result<()> {
        self.file = None;
        let name = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
        if self.opts.rotate_keep == 0 {
            fs::remove_file(path)?;
        } else {
            let _ = fs::remove_file(name(self.opts.rotate_keep));
            for i in (1..self.opts.rotate_keep).rev() {
                let _ = fs::rename(name(i), name(i + 1));
            }
            fs::rename(path, name(1))?;
        }
        self.counts.rotations.fetch_add(1, Ordering::Relaxed);
        let f = open_output(path)?;
        self.adopt(f);
        Ok(())
    }
}

fn count_lines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// "64M", "1G", "500k", "1048576".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("not a size: {s} (e.g. 64M)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("portex-sink-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("10k"), Ok(10 << 10));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let d = tmpdir("rot");
        let p = d.join("events.ndjson");
        let mut s = Sink::start(SinkOptions {
            target: Target::File(p.clone()),
            rotate_size: 100,
            rotate_keep: 2,
            queue_bytes: 1 << 20,
        })
        .unwrap();
        for _ in 0..10 {
            s.send(Chunk {
                bytes: vec![b'x'; 59].into_iter().chain([b'\n']).collect(),
                lines: 1,
            });
        }
        s.close();
        assert!(
            p.exists() && d.join("events.ndjson.1").exists() && d.join("events.ndjson.2").exists()
        );
        assert!(!d.join("events.ndjson.3").exists());
        assert_eq!(s.counts.lines_written.load(Ordering::Relaxed), 10);
        // 60-byte lines, 100-byte files: one line a file, so 10 lines rotate 9 times.
        assert_eq!(s.counts.rotations.load(Ordering::Relaxed), 9);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn one_big_chunk_is_split_at_lines_across_rotations() {
        let d = tmpdir("split");
        let p = d.join("events.ndjson");
        let mut s = Sink::start(SinkOptions {
            target: Target::File(p.clone()),
            rotate_size: 130,
            rotate_keep: 9,
            queue_bytes: 1 << 20,
        })
        .unwrap();
        let line: Vec<u8> = vec![b'y'; 59].into_iter().chain([b'\n']).collect();
        s.send(Chunk {
            bytes: line.repeat(10),
            lines: 10,
        });
        s.close();
        let mut total = 0;
        for f in
            std::iter::once(p.clone()).chain((1..=9).map(|i| d.join(format!("events.ndjson.{i}"))))
        {
            if let Ok(b) = fs::read(&f) {
                assert!(
                    b.len() <= 130 && b.ends_with(b"\n"),
                    "{} has {} bytes",
                    f.display(),
                    b.len()
                );
                total += b.len();
            }
        }
        assert_eq!(total, 600);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unwritable_path_is_refused_at_start() {
        let r = Sink::start(SinkOptions {
            target: Target::File("/nonexistent-dir/x.ndjson".into()),
            rotate_size: 0,
            rotate_keep: 0,
            queue_bytes: 1 << 20,
        });
        assert!(r.is_err());
    }

    fn file_sink(p: &Path, queue_bytes: u64) -> Sink {
        Sink::start(SinkOptions {
            target: Target::File(p.to_path_buf()),
            rotate_size: 0,
            rotate_keep: 0,
            queue_bytes,
        })
        .unwrap()
    }

    fn lines(n: usize) -> Chunk {
        Chunk {
            bytes: b"{\"a\":1}\n".repeat(n),
            lines: n as u64,
        }
    }

    #[test]
    fn symlinks_fifos_hard_links_and_foreign_files_are_refused() {
        let d = tmpdir("refuse");
        let secret = d.join("secret");
        fs::write(&secret, "x").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.join("link.ndjson");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let e = open_output(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(fs::read(&secret).unwrap(), b"x");

        let fifo = d.join("fifo.ndjson");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Must return at once (no reader), not block start-up.
        let e = open_output(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");

        let hard = d.join("hard.ndjson");
        fs::hard_link(&secret, &hard).unwrap();
        let e = open_output(&hard).unwrap_err().to_string();
        assert!(e.contains("hard links"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_world_writable_file_is_tightened_to_0640() {
        let d = tmpdir("mode");
        let p = d.join("events.ndjson");
        fs::write(&p, "").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        drop(open_output(&p).unwrap());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_deleted_file_is_noticed_and_created_again() {
        let d = tmpdir("deleted");
        let p = d.join("events.ndjson");
        let mut s = file_sink(&p, 1 << 20);
        s.send(lines(3));
        // Wait until the writer has the first chunk out.
        let end = Instant::now() + Duration::from_secs(5);
        while s.counts.lines_written.load(Ordering::Relaxed) < 3 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::remove_file(&p).unwrap();
        s.send(lines(2));
        assert!(s.close());
        assert_eq!(fs::read(&p).unwrap(), b"{\"a\":1}\n".repeat(2));
        assert_eq!(s.counts.lines_written.load(Ordering::Relaxed), 5);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_partial_line_left_behind_is_never_glued_to_the_next() {
        let d = tmpdir("dangling");
        let p = d.join("events.ndjson");
        fs::write(&p, "{\"cut\":").unwrap();
        let mut s = file_sink(&p, 1 << 20);
        s.send(lines(1));
        assert!(s.close());
        assert_eq!(fs::read_to_string(&p).unwrap(), "{\"cut\":\n{\"a\":1}\n");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let d = tmpdir("bytes");
        let p = d.join("events.ndjson");
        let mut s = file_sink(&p, 64);
        // 8 bytes a line: 10 lines do not fit in 64 bytes, 5 do.
        s.send(lines(10));
        s.send(lines(5));
        assert!(s.close());
        assert_eq!(s.counts.lines_dropped.load(Ordering::Relaxed), 10);
        assert_eq!(s.counts.lines_written.load(Ordering::Relaxed), 5);
        assert_eq!(s.counts.queued_bytes.load(Ordering::Relaxed), 0);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn sizes_that_overflow_are_refused() {
        assert!(parse_size("18446744073709551615G").is_err());
        assert!(parse_size("17179869184G").is_err());
        assert_eq!(parse_size("16G"), Ok(16 << 30));
    }
}

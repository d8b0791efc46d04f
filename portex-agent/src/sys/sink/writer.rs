//! The writer thread: appends whole lines, rotates, notices a deleted or replaced file,
//! and counts every line it could not write.
use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender},
    },
    time::{Duration, Instant},
};

use super::{
    Chunk, SinkCounts, SinkOptions, Target,
    open::{identity, is_dev_null, open_output},
};

pub(super) struct Writer {
    opts: SinkOptions,
    counts: Arc<SinkCounts>,
    reopen: Arc<AtomicBool>,
    file: Option<File>,
    /// (dev, ino) of `file`.
    id: (u64, u64),
    size: u64,
    /// The output is the null device: never rotated (renaming /dev/null would be a
    /// disaster).
    discard: bool,
    /// The file does not end in a newline (an earlier write was cut short and could not
    /// be truncated, or another writer crashed): the next write starts a new line.
    dangling: bool,
    /// The last error reported, so a failing disk prints one line, not one per chunk.
    last_error: Option<String>,
    retry_at: Instant,
    spare: SyncSender<Vec<u8>>,
}

impl Writer {
    pub(super) fn new(
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
            discard: false,
            dangling: false,
            last_error: None,
            retry_at: Instant::now(),
        }
    }

    /// Takes a freshly opened output file.
    pub(super) fn adopt(&mut self, f: File) {
        let md = f.metadata().ok();
        self.size = md.as_ref().map_or(0, |m| m.len());
        self.id = md.as_ref().map_or((0, 0), identity);
        self.discard = md.as_ref().is_some_and(is_dev_null);
        let mut last = [0u8; 1];
        self.dangling = self.size > 0
            && std::os::unix::fs::FileExt::read_at(&f, &mut last, self.size - 1).is_ok()
            && last[0] != b'\n';
        self.file = Some(f);
    }

    pub(super) fn run(mut self, rx: Receiver<Chunk>) {
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
        if matches!(self.opts.target, Target::File(_))
            && self.file.is_none()
            && Instant::now() < self.retry_at
        {
            // A second has not passed since the last failure: drop and count, and do
            // not push the next attempt further (steady traffic would postpone it
            // forever).
            self.counts
                .lines_dropped
                .fetch_add(chunk.lines, Ordering::Relaxed);
            return chunk.bytes;
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
                    tracing::info!("events are being written again");
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
                    tracing::error!(
                        "writing events failed ({msg}); dropping and counting them, retrying every second"
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
                Ok(_) => tracing::warn!(
                    "{} was replaced; writing to the file now at that path",
                    path.display()
                ),
                Err(_) => tracing::warn!("{} was removed; creating it again", path.display()),
            }
            self.file = None;
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
                _ if self.discard => u64::MAX,
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

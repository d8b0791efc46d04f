//! Where `portex agent` writes its NDJSON: a file (appended, created 0640, rotated by
//! size, reopened on SIGHUP for logrotate) or stdout. Writing happens on a thread of its
//! own behind a bounded queue, so a slow or blocked sink never stalls the kernel reader:
//! what does not fit is dropped and counted, and so is what a failing disk refuses.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
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
    /// Chunks (one per batch of lines) waiting for the writer.
    pub queue: usize,
}

/// Counters the agent exports.
#[derive(Default, Debug)]
pub struct SinkCounts {
    pub lines_written: AtomicU64,
    /// Lines lost: queue full, or the sink refused them (ENOSPC, EACCES ...).
    pub lines_dropped: AtomicU64,
    pub write_errors: AtomicU64,
    pub rotations: AtomicU64,
}

/// A chunk of complete lines and how many lines it holds.
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub lines: u64,
}

pub struct Sink {
    tx: Option<SyncSender<Chunk>>,
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
        if let Target::File(p) = &opts.target {
            open_append(p).with_context(|| format!("cannot write events to {}", p.display()))?;
        }
        let (tx, rx) = sync_channel(opts.queue.max(1));
        let counts = Arc::new(SinkCounts::default());
        let reopen = Arc::new(AtomicBool::new(false));
        let (c, r) = (counts.clone(), reopen.clone());
        let (spare_tx, spare) = sync_channel(4);
        let thread = std::thread::Builder::new()
            .name("portex-sink".into())
            .spawn(move || Writer::new(opts, c, r, spare_tx).run(rx))
            .context("starting the sink thread")?;
        Ok(Sink {
            tx: Some(tx),
            spare,
            counts,
            reopen,
            thread: Some(thread),
        })
    }

    /// Queues a chunk; drops and counts it when the writer is behind.
    pub fn send(&self, chunk: Chunk) {
        let Some(tx) = &self.tx else { return };
        let lines = chunk.lines;
        match tx.try_send(chunk) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
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

    /// Flushes what is queued and stops the writer.
    pub fn close(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.close();
    }
}

fn open_append(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(p)
}

struct Writer {
    opts: SinkOptions,
    counts: Arc<SinkCounts>,
    reopen: Arc<AtomicBool>,
    file: Option<File>,
    size: u64,
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
            size: 0,
            last_error: None,
            retry_at: Instant::now(),
        }
    }

    fn run(mut self, rx: Receiver<Chunk>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(chunk) => {
                    let mut bytes = self.write(chunk);
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
        let res = match &self.opts.target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&chunk.bytes).and_then(|_| out.flush())
            }
            Target::File(path) => {
                let path = path.clone();
                self.write_file(&path, &chunk.bytes)
            }
        };
        match res {
            Ok(()) => {
                self.counts
                    .lines_written
                    .fetch_add(chunk.lines, Ordering::Relaxed);
                if self.last_error.take().is_some() {
                    eprintln!("portex: events are being written again");
                }
            }
            Err(e) => {
                self.counts
                    .lines_dropped
                    .fetch_add(chunk.lines, Ordering::Relaxed);
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

    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            if Instant::now() < self.retry_at {
                return Err(io::Error::other(
                    self.last_error
                        .clone()
                        .unwrap_or_else(|| "sink unavailable".into()),
                ));
            }
            let f = open_append(path)?;
            self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(f);
        }
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
                let f = self.file.as_mut().expect("opened above");
                f.write_all(&rest[..take])?;
                self.size += take as u64;
                rest = &rest[take..];
            }
            if !rest.is_empty() {
                self.rotate(path)?;
            }
        }
        Ok(())
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
        let f = open_append(path)?;
        self.size = 0;
        self.file = Some(f);
        Ok(())
    }
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
        .map(|n| n * mult)
        .map_err(|_| format!("not a size: {s} (e.g. 64M)"))
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
            queue: 64,
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
        assert!(s.counts.rotations.load(Ordering::Relaxed) >= 4);
        use std::os::unix::fs::PermissionsExt;
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
            queue: 4,
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
            queue: 1,
        });
        assert!(r.is_err());
    }
}

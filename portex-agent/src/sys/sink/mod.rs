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
mod open;
#[cfg(test)]
mod tests;
mod writer;

pub(crate) use open::open_output;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use writer::Writer;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub(crate) struct SinkOptions {
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
pub(crate) struct SinkCounts {
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

/// A chunk of complete lines and how many lines it holds. A plain Vec, not `bytes::Bytes`:
/// one writer consumes each chunk whole and hands the buffer back (`spare`) to be filled
/// again, so nothing is shared or sliced, and a reference count would only add an atomic
/// per chunk and stop the buffer's reuse.
pub(crate) struct Chunk {
    pub bytes: Vec<u8>,
    pub lines: u64,
}

/// Chunks the channel can hold; the real bound is `queue_bytes`.
const CHANNEL_CHUNKS: usize = 4096;
/// How long closing waits for the writer to flush what is queued: a writer stuck on a
/// blocked pipe must not keep the agent (and its programs) alive after SIGTERM.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct Sink {
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
    pub(crate) fn start(opts: SinkOptions) -> Result<Sink> {
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
    pub(crate) fn send(&self, chunk: Chunk) {
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
    pub(crate) fn spare_buffer(&self) -> Option<Vec<u8>> {
        self.spare.try_recv().ok()
    }

    /// Flushes what is queued and stops the writer, waiting at most CLOSE_GRACE. A
    /// writer still blocked then is left behind (the process is about to exit); what
    /// it still held is counted as dropped. Returns false in that case.
    pub(crate) fn close(&mut self) -> bool {
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

/// "64M", "1G", "500k", "1048576".
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
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

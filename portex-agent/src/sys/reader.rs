//! Reads the ring buffer through AsyncFd readiness and hands batches of decoded events
//! to the consumer over a bounded channel. A slow consumer never blocks this loop:
//! when the channel is full the batch is dropped and counted.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{SyncSender, TrySendError},
    },
    time::Duration,
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use portex_common::Event;
use tokio::{io::unix::AsyncFd, sync::watch};

use crate::logic::decode::{DecodeError, decode};

/// Counters shared between the reader, the consumer and the summary.
#[derive(Default, Debug)]
pub(crate) struct Counts {
    pub events: AtomicU64,
    /// Dropped in user space: the consumer could not keep up.
    pub user_dropped: AtomicU64,
    /// Records too short, or of a kind this agent does not know.
    pub decode_errors: AtomicU64,
    /// Events handed to the consumer and not yet consumed.
    pub in_flight: AtomicU64,
    /// When the reader last came round (clock::monotonic_ns), for the health check.
    pub reader_beat_ns: AtomicU64,
}

/// Events waiting for the consumer, at most: the bound is in events (112 bytes each,
/// ~7 MiB), not in batches, so that a stalled consumer cannot grow the agent's memory
/// by the size of whatever batches the ring happens to yield.
pub(crate) const MAX_IN_FLIGHT: u64 = 65_536;

/// Decoded events on their way to the consumer; they leave `in_flight` when dropped.
pub(crate) struct Batch {
    events: Vec<Event>,
    counts: Arc<Counts>,
}

impl std::ops::Deref for Batch {
    type Target = [Event];
    fn deref(&self) -> &[Event] {
        &self.events
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.counts
            .in_flight
            .fetch_sub(self.events.len() as u64, Ordering::Relaxed);
    }
}

/// How often the ring is drained even without a wake-up: events submitted with
/// BPF_RB_NO_WAKEUP (batching) wait at most this long.
pub(crate) const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// Runs until `stop` flips to true or the consumer goes away; drains once more at the end.
pub(crate) async fn run(
    ring: RingBuf<MapData>,
    tx: SyncSender<Batch>,
    counts: Arc<Counts>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as
    // the AsyncFd owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let alive = drain(guard.get_inner_mut(), &tx, &counts);
                guard.clear_ready();
                if !alive { return Ok(()); }
            }
            _ = tick.tick() => {
                if !drain(fd.get_mut(), &tx, &counts) { return Ok(()); }
            }
            _ = stop.changed() => {
                drain(fd.get_mut(), &tx, &counts);
                return Ok(());
            }
        }
    }
}

/// Moves everything in the ring into batches. Returns false when the consumer is gone.
fn drain(ring: &mut RingBuf<MapData>, tx: &SyncSender<Batch>, counts: &Arc<Counts>) -> bool {
    // Every round drains (at least every DRAIN_EVERY): a heartbeat.
    counts
        .reader_beat_ns
        .store(crate::sys::clock::monotonic_ns(), Ordering::Relaxed);
    const BATCH: usize = 1024;
    let mut batch = Vec::with_capacity(64);
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(ev) => batch.push(ev),
            Err(DecodeError::Short(_) | DecodeError::UnknownKind(_)) => {
                counts.decode_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if batch.len() >= BATCH && !send(tx, std::mem::take(&mut batch), counts) {
            return false;
        }
    }
    batch.is_empty() || send(tx, batch, counts)
}

fn send(tx: &SyncSender<Batch>, events: Vec<Event>, counts: &Arc<Counts>) -> bool {
    let n = events.len() as u64;
    counts.events.fetch_add(n, Ordering::Relaxed);
    if counts.in_flight.load(Ordering::Relaxed) + n > MAX_IN_FLIGHT {
        counts.user_dropped.fetch_add(n, Ordering::Relaxed);
        return true;
    }
    counts.in_flight.fetch_add(n, Ordering::Relaxed);
    let batch = Batch {
        events,
        counts: counts.clone(),
    };
    match tx.try_send(batch) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            counts.user_dropped.fetch_add(n, Ordering::Relaxed);
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

//! The output thread: takes batches from the reader and runs each event through the
//! stages: interpret -> enrich -> account -> render. `top` runs it without a render
//! stage and reads the ledger it keeps.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::Duration,
};

use super::{
    account::Account,
    emit::{Emit, Stop},
    enrich::{Enrich, resolve_socket},
    nat_watch::NatWatch,
    tracker::Tracker,
};
use crate::{
    logic::{
        lifecycle::interpret,
        model::{Action, Record},
        nat_hold::Offer,
    },
    sys::clock::{boot_now_ns, monotonic_ns},
    sys::reader::Batch,
};

pub(crate) struct Consumer {
    pub(crate) enrich: Enrich,
    pub(crate) account: Account,
    /// None: nothing is rendered (`top`).
    pub(crate) emit: Option<Emit>,
    /// Handshakes that died towards a full NAT pool.
    pub(crate) nat: NatWatch,
    /// The pool ledger; None when the user turned it off.
    pub(crate) ledger: Option<Arc<Mutex<Tracker>>>,
    /// When this loop last came round (clock::monotonic_ns), for the health check.
    pub(crate) beat: Arc<AtomicU64>,
}

impl Consumer {
    /// Consumes batches until the channel closes; expires TIME_WAIT and reconciles the
    /// ledger between batches.
    pub(crate) fn run(&mut self, rx: Receiver<Batch>) -> Result<(), Stop> {
        loop {
            // At least every 250 ms (the timeout below) when all is well.
            self.beat.store(monotonic_ns(), Ordering::Relaxed);
            let batch = match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(b) => Some(b),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    // The connects still waiting for the NAT's verdict get the latest.
                    let ledger = self.ledger.clone();
                    let mut tracker = ledger.as_ref().map(|l| l.lock().unwrap());
                    self.release_nat(tracker.as_deref_mut(), boot_now_ns(), true);
                    drop(tracker);
                    if let Some(e) = self.emit.as_mut() {
                        e.finish(boot_now_ns());
                    }
                    return Ok(());
                }
            };
            let now = boot_now_ns();
            let ledger = self.ledger.clone();
            // Held for one batch: `top` reads the ledger between batches.
            let mut tracker = ledger.as_ref().map(|l| l.lock().unwrap());
            self.account.tick(tracker.as_deref_mut(), now);
            if let Some(e) = self.emit.as_mut() {
                e.tick(now);
            }
            // The NAT scanner's thread read the tables; here only its view is compared.
            for p in self.account.nat_pressures(tracker.as_deref()) {
                if let Some(e) = self.emit.as_mut() {
                    e.nat_pressure(&p);
                }
            }
            if let Some(batch) = batch {
                for ev in batch.iter() {
                    interpret(ev, |mut r| {
                        let (name, start) = self.enrich.process(&r, now);
                        if !resolve_socket(&mut r) {
                            return;
                        }
                        // A stall waits for the NAT's verdict before it is written; a
                        // close is written now and a failure may follow it.
                        let stall = r.action == Action::ConnectStalled;
                        let mut failure = None;
                        if stall {
                            match self.nat.offer(&mut r, &name, start) {
                                Offer::Held => return,
                                Offer::Judged(f) => failure = f.map(|f| *f),
                                Offer::Pass => {}
                            }
                        }
                        self.write(tracker.as_deref_mut(), &mut r, &name, start, now);
                        if !stall && let Offer::Judged(f) = self.nat.offer(&mut r, &name, start) {
                            failure = f.map(|f| *f);
                        }
                        if let Some(f) = failure {
                            self.write_failure(&f, &name);
                        }
                    });
                }
            }
            self.release_nat(tracker.as_deref_mut(), now, false);
            self.account.check_arming(tracker.as_deref(), now);
            // The output may block (a pipe nobody reads): never with the ledger held.
            drop(tracker);
            if let Some(e) = self.emit.as_mut() {
                e.flush()?;
            }
        }
    }

    /// Writes what the NAT scanner's latest view decided of the held connects.
    fn release_nat(&mut self, mut tracker: Option<&mut Tracker>, now: u64, flush: bool) {
        for (mut r, held) in self.nat.release(now, flush) {
            if r.action == Action::ConnectStalled {
                let t = tracker.as_deref_mut();
                self.write(t, &mut r, &held.name, held.start, now);
            } else {
                self.write_failure(&r, &held.name);
            }
        }
    }

    /// Accounts, enriches and writes one record.
    fn write(
        &mut self,
        tracker: Option<&mut Tracker>,
        r: &mut Record,
        name: &str,
        start: u64,
        now: u64,
    ) {
        let pressure = self.account.record(tracker, r, start, name, now);
        self.enrich.container(r, now);
        if let Some(e) = self.emit.as_mut() {
            e.record(r, name, pressure.as_ref());
        }
    }

    /// Writes the `connect_failed` the NAT explains, made from a close already written
    /// (and enriched): counted outside the ledger.
    fn write_failure(&mut self, f: &Record, name: &str) {
        self.account.count(f);
        if let Some(e) = self.emit.as_mut() {
            e.record(f, name, None);
        }
    }
}

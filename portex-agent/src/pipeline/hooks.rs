//! Auto mode's switch: the output thread, which sees the pools, asks for the syscall
//! hooks; the reader thread, which owns the probe, attaches or detaches them.
use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::Notify;

use crate::{logic::arming::Change, sys::ebpf::Probe};

#[derive(Default)]
pub(crate) struct HookSwitch {
    want: AtomicBool,
    reason: Mutex<String>,
    pub(super) notify: Notify,
}

impl HookSwitch {
    pub(crate) fn request(&self, c: Change) {
        *self.reason.lock().unwrap() = c.reason;
        self.want.store(c.armed, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Carries out the latest request, and says so in the log.
    pub(super) fn apply(&self, probe: &Probe) {
        let want = self.want.load(Ordering::Relaxed);
        let reason = self.reason.lock().unwrap().clone();
        match probe.set_syscall_hooks(want) {
            Ok(()) => tracing::info!(
                "syscall hooks {}: {reason}",
                if want { "attached" } else { "detached" }
            ),
            Err(e) => tracing::error!("cannot change the syscall hooks: {e:#}"),
        }
    }
}

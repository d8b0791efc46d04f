//! The kernel programs' own diagnostics (aya-log): a map or the ring buffer full, a
//! socket whose start was missed. The programs write them to their AYA_LOGS ring buffer
//! only when the loader set AYA_LOG_LEVEL (sys::logging decides: `--kernel-log`, or a
//! filter naming portex_ebpf); at 0 the verifier sees a constant and drops the calls.
//! Read here and handed to the `log` crate, whose records the logger shows with target
//! portex_ebpf.
use anyhow::{Context, Result};
use aya::Ebpf;
use tokio::io::{Interest, unix::AsyncFd};

pub(crate) type KernelLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Takes the programs' log ring buffer (after the programs are loaded: they refer to it).
pub(crate) fn open(ebpf: &mut Ebpf) -> Result<KernelLog> {
    aya_log::EbpfLogger::init(ebpf).context("reading the kernel programs' log")
}

/// Drains the ring buffer whenever the kernel writes to it, until the runtime stops.
pub(crate) async fn drain(log: KernelLog) {
    // SAFETY: the logger owns its ring buffer's map fd and keeps it open, unchanged, for
    // as long as the AsyncFd owns the logger.
    let mut fd = match unsafe { AsyncFd::register_with_interest(log, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("the kernel programs' diagnostics cannot be read: {e}");
            return;
        }
    };
    loop {
        let Ok(mut ready) = fd.readable_mut().await else {
            return;
        };
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}

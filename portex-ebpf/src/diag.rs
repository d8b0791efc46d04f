//! Diagnostics for the operator through aya-log (`portex --kernel-log`): a map or the
//! ring buffer full, a socket whose start was missed. Off unless asked for: the loader
//! sets AYA_LOG_LEVEL (a .rodata global, like WAKEUP_BYTES) to 0, the verifier then
//! sees every log call's level check as a constant and removes the call. Each helper is
//! a function of its own (not inlined), called only on its rare path, so that nothing
//! of it (not even its arguments) runs on the hot paths; the ones that can repeat at
//! line rate (a full map fails every insert) log at powers of two of their per-CPU
//! count: a handful of lines, not one per event.
use aya_log_ebpf::{debug, macro_support::Level, warn};
use portex_common::counter;

use crate::maps::count;

/// The target every record carries: `--log-level portex_ebpf=debug` selects them.
const TARGET: &str = "portex_ebpf";

/// Whether the loader turned on records of `level` (the check the aya-log macros make
/// first), before work that only a record needs.
#[inline(always)]
fn enabled(level: Level) -> bool {
    aya_log_ebpf::macro_support::level_enabled(level)
}

#[inline(always)]
fn cpu() -> u32 {
    // SAFETY: helper without arguments.
    unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() }
}

#[inline(always)]
fn worth_a_line(n: u64) -> bool {
    n & n.wrapping_sub(1) == 0
}

/// An insert into `map` failed: counted (MAP_FULL), and logged at this CPU's 1st, 2nd,
/// 4th, 8th ... failure.
#[inline(never)]
pub fn map_full(map: &'static str) {
    let n = count(counter::MAP_FULL);
    if enabled(Level::Warn) && worth_a_line(n) {
        warn!(
            &(),
            target: TARGET,
            "map {} full: an insert failed, a socket or call may lose its owner ({} on CPU {})",
            map,
            n,
            cpu()
        );
    }
}

/// The ring buffer had no room: the event is lost. Counted (RINGBUF_FULL), and logged
/// at powers of two of this CPU's count.
#[inline(never)]
pub fn ring_full() {
    let n = count(counter::RINGBUF_FULL);
    if enabled(Level::Warn) && worth_a_line(n) {
        warn!(
            &(),
            target: TARGET,
            "ring buffer full: an event was lost ({} on CPU {}); a larger --ring-kib helps",
            n,
            cpu()
        );
    }
}

/// SYN_SENT -> ESTABLISHED of a socket never seen entering SYN_SENT: its owner is
/// unknown (a connect() begun before portex, a run the kernel skipped, an evicted
/// entry).
#[inline(never)]
pub fn missed_start(skaddr: u64, sport: u16, dport: u16) {
    debug!(
        &(),
        target: TARGET,
        "socket {:x} (port {} to {}) reached ESTABLISHED without being seen in SYN_SENT: owner unknown",
        skaddr,
        sport,
        dport
    );
}

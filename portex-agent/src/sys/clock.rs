//! The kernel's clocks: CLOCK_BOOTTIME (what the programs stamp events with) and the
//! offset to wall-clock time.
use crate::logic::clock::WallClock;

pub(crate) fn read_clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Now on the clock the kernel programs stamp events with.
pub(crate) fn boot_now_ns() -> u64 {
    read_clock(libc::CLOCK_BOOTTIME)
}

/// Now on CLOCK_MONOTONIC, which does not run while the host is suspended: the clock
/// of heartbeats (a resumed host has not stalled).
pub(crate) fn monotonic_ns() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC)
}

/// Measures realtime - boottime now.
pub(crate) fn wall_clock() -> WallClock {
    let boot = read_clock(libc::CLOCK_BOOTTIME);
    let real = read_clock(libc::CLOCK_REALTIME);
    WallClock::with_offset(real as i128 - boot as i128)
}

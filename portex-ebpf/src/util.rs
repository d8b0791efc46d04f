//! Helpers shared by the programs: the current task, and sending an event.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_boot_ns,
    },
};
use portex_common::{Event, SockInfo, TASK_COMM_LEN};

use crate::maps::{EVENTS, LAST_URGENT_WAKE, URGENT_WAKE_GAP_NS, WAKEUP_BYTES};

pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// The calling task as a socket owner.
pub fn current_owner(birth_ns: u64, flags: u32) -> SockInfo {
    let pid_tgid = bpf_get_current_pid_tgid();
    SockInfo {
        birth_ns,
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        flags,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0u8; TASK_COMM_LEN]),
    }
}

pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Reserves a record, lets `fill` write it, and submits it. `urgent` events (failures)
/// wake the reader at once unless one did less than URGENT_WAKE_GAP_NS ago on this CPU;
/// others wake it when the unread data reaches WAKEUP_BYTES.
#[inline(always)]
pub fn emit(urgent: bool, fill: impl FnOnce(&mut Event)) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        crate::diag::ring_full();
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: the reservation is EVENT_SIZE bytes; write a whole value before use.
    unsafe {
        ev.write(Event::zeroed());
        fill(&mut *ev);
    }
    // SAFETY: reading a global the loader may have set.
    let batch = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    let flags = if (urgent && urgent_wake_due()) || crosses(batch) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

/// Whether this record brings the unread data to `batch` bytes: the one record of a
/// batch that wakes the reader. Every record past the mark forcing a wake-up too (what
/// "at or above" did) sent a wake-up per record while the reader was slow, each an IPI
/// whose softirqs made the kernel skip program runs. Two CPUs crossing at once may both
/// miss the mark: the reader's timer drains the ring within 20 ms anyway.
#[inline(always)]
fn crosses(batch: u64) -> bool {
    // The reserved record (with its 8-byte header) is already counted.
    const RECORD: u64 = (size_of::<Event>() as u64 + 8 + 7) & !7;
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    avail >= batch && avail < batch + RECORD
}

/// Whether this CPU's last forced wake-up is URGENT_WAKE_GAP_NS old (and records now).
#[inline(always)]
fn urgent_wake_due() -> bool {
    // SAFETY: reading a global the loader may have set.
    let gap = unsafe { core::ptr::read_volatile(&URGENT_WAKE_GAP_NS) };
    let Some(last) = LAST_URGENT_WAKE.get_ptr_mut(0) else {
        return true;
    };
    let now = now_ns();
    // SAFETY: this CPU's slot; programs on one CPU do not run concurrently.
    unsafe {
        if now.wrapping_sub(*last) < gap {
            return false;
        }
        *last = now;
    }
    true
}

/// The calling task into an event's process fields (syscall events).
#[inline(always)]
pub fn set_caller(ev: &mut Event, me: &SockInfo) {
    ev.tgid = me.tgid;
    ev.tid = me.tid;
    ev.cgroup_id = me.cgroup_id;
    ev.comm = me.comm;
}

/// Copies an owner into an event's process fields.
#[inline(always)]
pub fn set_owner(ev: &mut Event, owner: &SockInfo) {
    set_caller(ev, owner);
    ev.birth_ns = owner.birth_ns;
    ev.flags = owner.flags;
}

//! What the `syscalls:sys_enter_*` / `sys_exit_*` programs (connect, bind) share: the
//! layout of their tracepoint records, the user sockaddr they read, and the range of
//! exit values that are results.
use aya_ebpf::{EbpfContext, helpers::bpf_probe_read_user, programs::TracePointContext};
use portex_common::{AF_INET, AF_INET6};

// /sys/kernel/tracing/events/syscalls/sys_enter_connect/format:
//   int fd @16 (8 bytes); struct sockaddr * uservaddr @24; int addrlen @32
// sys_enter_bind: int fd @16; struct sockaddr * umyaddr @24; int addrlen @32 (the same).
// sys_exit_connect, sys_exit_bind: long ret @16
pub const ARG_FD: usize = 16;
pub const ARG_ADDR: usize = 24;
pub const RET: usize = 16;

/// The largest errno a syscall returns to user space. Kernel-internal restart codes
/// (ERESTARTSYS = 512 ...) can show at the exit tracepoint before the signal code turns
/// them into EINTR or a restart: such an exit is not a result.
pub const MAX_USER_ERRNO: i32 = 511;

#[inline(always)]
pub fn arg<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: offsets from the format above, inside the record, naturally aligned.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(off) as *const T) }
}

/// A user sockaddr_in / sockaddr_in6, read from user memory: (family, port, address).
/// Only AF_INET and AF_INET6 are of interest; anything else returns None.
#[inline(always)]
pub fn read_sockaddr(uaddr: u64) -> Option<(u16, u16, [u8; 16])> {
    // SAFETY: bpf_probe_read_user copes with any user pointer, faulting ones included.
    let head: [u8; 4] = unsafe { bpf_probe_read_user(uaddr as *const [u8; 4]) }.ok()?;
    let family = u16::from_ne_bytes([head[0], head[1]]);
    let port = u16::from_be_bytes([head[2], head[3]]);
    let mut addr = [0u8; 16];
    match family {
        // sockaddr_in: family, port, addr @4
        AF_INET => {
            // SAFETY: as above.
            let a: [u8; 4] = unsafe { bpf_probe_read_user((uaddr + 4) as *const [u8; 4]) }.ok()?;
            addr[..4].copy_from_slice(&a);
        }
        // sockaddr_in6: family, port, flowinfo (4), addr @8
        AF_INET6 => {
            // SAFETY: as above.
            addr = unsafe { bpf_probe_read_user((uaddr + 8) as *const [u8; 16]) }.ok()?;
        }
        _ => return None,
    }
    Some((family, port, addr))
}

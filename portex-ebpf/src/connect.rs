//! `syscalls:sys_enter_connect` / `sys_exit_connect`: the errno of a failed connect(),
//! which no socket state carries, and the source port of a successful one.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use portex_common::{AF_INET, AF_INET6, IPPROTO_TCP, connflag, counter, kind};

use crate::{
    maps::{CONNECTS, ConnectCtx, count},
    util::{current_owner, current_tid, emit, now_ns, set_caller},
};

// /sys/kernel/tracing/events/syscalls/sys_enter_connect/format:
//   int fd @16 (8 bytes); struct sockaddr * uservaddr @24; int addrlen @32
// sys_exit_connect: long ret @16
pub const ARG_FD: usize = 16;
pub const ARG_ADDR: usize = 24;
pub const RET: usize = 16;

const EINPROGRESS: i32 = 115;
const EALREADY: i32 = 114;
const EISCONN: i32 = 106;
/// Kernel-internal restart codes (ERESTARTSYS = 512 ...) can show at the exit
/// tracepoint before the signal code turns them into EINTR or a restart.
const MAX_USER_ERRNO: i32 = 511;

/// `struct sock_common.skc_num`: the local port in host order. The layout of the start
/// of sock_common (skc_daddr, skc_rcv_saddr, skc_hash, skc_dport, skc_num) has been the
/// same since Linux 2.6; the end-to-end tests check the value against `ss`.
const SKC_NUM: u64 = 14;

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
        AF_INET => {
            let a: [u8; 4] = unsafe { bpf_probe_read_user((uaddr + 4) as *const [u8; 4]) }.ok()?;
            addr[..4].copy_from_slice(&a);
        }
        // sockaddr_in6: family, port, flowinfo (4), addr @8
        AF_INET6 => {
            addr = unsafe { bpf_probe_read_user((uaddr + 8) as *const [u8; 16]) }.ok()?;
        }
        _ => return None,
    }
    Some((family, port, addr))
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    try_enter(&ctx);
    0
}

fn try_enter(ctx: &TracePointContext) -> Option<()> {
    let (family, dport, daddr) = read_sockaddr(arg::<u64>(ctx, ARG_ADDR))?;
    let c = ConnectCtx {
        skaddr: 0,
        fd: arg::<u64>(ctx, ARG_FD) as i32,
        flags: 0,
        family,
        dport,
        sport: 0,
        _pad: 0,
        saddr: [0; 16],
        daddr,
    };
    if CONNECTS.insert(current_tid(), c, 0).is_err() {
        count(counter::MAP_FULL);
    }
    None
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Option<()> {
    let tid = current_tid();
    // SAFETY: copied out at once, then the entry is deleted on every path.
    let c = unsafe { CONNECTS.get(tid) }.copied();
    let _ = CONNECTS.remove(tid);
    let c = c?;
    let ret = arg::<i64>(ctx, RET) as i32;
    let tcp = c.flags & connflag::TCP_SEEN != 0;
    let ok = ret == 0 || ret == -EINPROGRESS;
    if ok && (!tcp || c.flags & connflag::REPORTED_BY_STATE != 0) {
        // A successful UDP connect() (the port it auto-bound is not read here), or one
        // the state path already reported.
        return None;
    }
    if !ok && (ret == -EALREADY || ret == -EISCONN || ret < -MAX_USER_ERRNO) {
        // Polling a non-blocking connect and kernel restart codes: not failures.
        return None;
    }
    let sport = if ok {
        // SAFETY: skaddr is a live socket (still referenced by the caller's fd).
        unsafe { bpf_probe_read_kernel((c.skaddr + SKC_NUM) as *const u16) }.unwrap_or(0)
    } else {
        c.sport
    };
    let me = current_owner(0, 0);
    emit(!ok, |ev| {
        ev.kind = kind::CONNECT_RET;
        ev.ts_ns = now_ns();
        ev.skaddr = c.skaddr;
        set_caller(ev, &me);
        ev.ret = ret;
        ev.flags = c.flags;
        ev.fd = c.fd;
        ev.family = c.family;
        ev.protocol = if tcp { IPPROTO_TCP } else { 0 };
        ev.sport = sport;
        ev.dport = c.dport;
        ev.saddr = c.saddr;
        ev.daddr = c.daddr;
    });
    None
}

//! `syscalls:sys_enter_bind` / `sys_exit_bind`: ports taken by bind() and its failures
//! (EADDRINUSE when no ephemeral port is left).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use portex_common::kind;

use crate::{
    diag,
    maps::{BINDS, BindCtx},
    syscall::{ARG_ADDR, ARG_FD, MAX_USER_ERRNO, RET, arg, read_sockaddr},
    util::{current_owner, current_tid, emit, now_ns, set_caller},
};

#[tracepoint(category = "syscalls", name = "sys_enter_bind")]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    try_enter(&ctx);
    0
}

fn try_enter(ctx: &TracePointContext) -> Option<()> {
    let (family, port, addr) = read_sockaddr(arg::<u64>(ctx, ARG_ADDR))?;
    let b = BindCtx {
        fd: arg::<u64>(ctx, ARG_FD) as i32,
        family,
        port,
        addr,
    };
    if BINDS.insert(current_tid(), b, 0).is_err() {
        diag::map_full("BINDS");
    }
    None
}

#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Option<()> {
    let tid = current_tid();
    // SAFETY: copied out at once, then deleted on every path.
    let b = unsafe { BINDS.get(tid) }.copied();
    let _ = BINDS.remove(tid);
    let b = b?;
    let ret = arg::<i64>(ctx, RET) as i32;
    // Anything but 0 or -errno (a kernel-internal restart code) is not a result, and
    // success matters only when the kernel chose the port (port 0 asked).
    if !(-MAX_USER_ERRNO..=0).contains(&ret) || (ret == 0 && b.port != 0) {
        return None;
    }
    let me = current_owner(0, 0);
    // Always wake the reader: user space reads the chosen port from the live socket,
    // which a short-lived process may close within milliseconds.
    emit(true, |ev| {
        ev.kind = kind::BIND_RET;
        ev.ts_ns = now_ns();
        set_caller(ev, &me);
        ev.ret = ret;
        ev.fd = b.fd;
        ev.family = b.family;
        ev.sport = b.port;
        ev.saddr = b.addr;
    });
    None
}

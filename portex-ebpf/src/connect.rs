//! `syscalls:sys_enter_connect` / `sys_exit_connect`: the errno of a failed connect(),
//! which no socket state carries, and the source port of a successful one.
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext};
use portex_common::{IPPROTO_TCP, connflag, kind};

use crate::{
    diag,
    maps::{CONNECTS, ConnectCtx},
    syscall::{ARG_ADDR, ARG_FD, MAX_USER_ERRNO, RET, arg, read_sockaddr},
    util::{current_owner, current_tid, emit, now_ns, set_caller},
};

const EINPROGRESS: i32 = 115;
const EALREADY: i32 = 114;
const EISCONN: i32 = 106;

/// `struct sock_common.skc_num`: the local port in host order. The layout of the start
/// of sock_common (skc_daddr, skc_rcv_saddr, skc_hash, skc_dport, skc_num) has been the
/// same since Linux 2.6; the end-to-end tests check the value against `ss`.
const SKC_NUM: u64 = 14;

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
        diag::map_full("CONNECTS");
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

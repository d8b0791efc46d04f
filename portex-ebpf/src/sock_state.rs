//! `sock:inet_sock_set_state` and `tcp:tcp_receive_reset`: the TCP lifecycle.
//!
//! Only two kinds of transition cross the ring buffer (into ESTABLISHED, into CLOSE);
//! the others update the socket's entry in SOCKS, which every event carries. That keeps
//! the cost per connection near two records per side instead of one per transition.
use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use portex_common::{AF_INET, AF_INET6, IPPROTO_TCP, SockInfo, kind, sockflag, tcpstate};

use crate::{
    diag,
    maps::{LISTENERS, SOCKS, connect_in_flight, report_accepted},
    util::{current_owner, current_tid, emit, now_ns, set_owner},
};

// /sys/kernel/tracing/events/sock/inet_sock_set_state/format:
//   const void * skaddr @8; int oldstate @16; int newstate @20; __u16 sport @24;
//   __u16 dport @26; __u16 family @28; __u16 protocol @30; __u8 saddr[4] @32;
//   __u8 daddr[4] @36; __u8 saddr_v6[16] @40; __u8 daddr_v6[16] @56
const SKADDR: usize = 8;
const OLDSTATE: usize = 16;
const NEWSTATE: usize = 20;
const SPORT: usize = 24;
const DPORT: usize = 26;
const FAMILY: usize = 28;
const PROTOCOL: usize = 30;
const SADDR: usize = 32;
const DADDR: usize = 36;
const SADDR_V6: usize = 40;
const DADDR_V6: usize = 56;

// /sys/kernel/tracing/events/tcp/tcp_receive_reset/format: const void * skaddr @8
const RST_SKADDR: usize = 8;

/// Direct load from the tracepoint record (allowed for tracepoint programs, and much
/// cheaper than a bpf_probe_read_kernel call per field).
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: the offsets above are inside the record and naturally aligned.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(off) as *const T) }
}

/// A 16-byte address as two scalar loads: the verifier rejects the byte-wise memcpy
/// the compiler emits for an array copy out of the context.
#[inline(always)]
fn addr16(ctx: &TracePointContext, off: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&field::<u64>(ctx, off).to_ne_bytes());
    a[8..].copy_from_slice(&field::<u64>(ctx, off + 8).to_ne_bytes());
    a
}

struct Transition {
    skaddr: u64,
    old: u8,
    new: u8,
    sport: u16,
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    try_inet_sock_set_state(&ctx);
    0
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Option<()> {
    // Cheapest filters first: MPTCP and SCTP fire this tracepoint too.
    if field::<u16>(ctx, PROTOCOL) != IPPROTO_TCP {
        return None;
    }
    let t = Transition {
        skaddr: field::<u64>(ctx, SKADDR),
        old: field::<i32>(ctx, OLDSTATE) as u8,
        new: field::<i32>(ctx, NEWSTATE) as u8,
        sport: field::<u16>(ctx, SPORT),
    };
    if !report_accepted() {
        if matches!(t.old, tcpstate::LISTEN | tcpstate::SYN_RECV)
            && (t.new != tcpstate::CLOSE || t.old == tcpstate::SYN_RECV)
        {
            // The handshake of an accepted socket (or its failure): nothing is kept for
            // it, so its close misses SOCKS and stops there too (see on_close).
            return None;
        }
        if matches!(
            t.new,
            tcpstate::FIN_WAIT1 | tcpstate::CLOSE_WAIT | tcpstate::LAST_ACK
        ) {
            // These only set informational flags and replace guessed owners, which
            // only accepted sockets have: not worth a map lookup per connection.
            return None;
        }
    }
    match t.new {
        tcpstate::SYN_SENT if t.old == tcpstate::CLOSE => on_syn_sent(ctx, &t),
        tcpstate::LISTEN => on_listen(&t),
        tcpstate::SYN_RECV if t.old == tcpstate::LISTEN => on_child(&t),
        // SAFETY: value copied out at once.
        tcpstate::ESTABLISHED => report(ctx, &t, false, unsafe { SOCKS.get(t.skaddr) }.copied()),
        tcpstate::FIN_WAIT1 => on_app_close(&t, sockflag::FIN_SENT),
        tcpstate::LAST_ACK => on_app_close(&t, 0),
        tcpstate::CLOSE_WAIT => add_flags(t.skaddr, sockflag::FIN_RCVD),
        tcpstate::CLOSE => on_close(ctx, &t),
        _ => None,
    }
}

/// CLOSE -> SYN_SENT runs in the caller of connect(): record the owner. The source port
/// is still 0 here unless the socket was bound; it is chosen right after.
fn on_syn_sent(ctx: &TracePointContext, t: &Transition) -> Option<()> {
    let tid = current_tid();
    let mut flags = sockflag::ACTIVE;
    if let Some(c) = connect_in_flight(tid) {
        // SAFETY: entry of this thread, only this thread writes it.
        let c = unsafe { &mut *c };
        c.skaddr = t.skaddr;
        c.sport = t.sport;
        c.flags |= portex_common::connflag::TCP_SEEN;
        read_addrs(ctx, &mut c.saddr, &mut c.daddr);
        flags |= sockflag::IN_CONNECT_SYSCALL;
    }
    let owner = current_owner(now_ns(), flags);
    if SOCKS.insert(t.skaddr, owner, 0).is_err() {
        diag::map_full("SOCKS");
    }
    None
}

fn on_listen(t: &Transition) -> Option<()> {
    // The port is 0 here only for listen() on an unbound socket (rare); such a listener's
    // children then start without an owner until the server closes them.
    if t.sport != 0 && LISTENERS.insert(t.sport, current_owner(0, 0), 0).is_err() {
        diag::map_full("LISTENERS");
    }
    None
}

/// LISTEN -> SYN_RECV: a child socket, created in softirq. Its owner is the listener's.
fn on_child(t: &Transition) -> Option<()> {
    // SAFETY: value copied out at once.
    let mut owner: SockInfo = match unsafe { LISTENERS.get(t.sport) } {
        Some(l) => *l,
        None => SockInfo {
            birth_ns: 0,
            cgroup_id: 0,
            tgid: 0,
            tid: 0,
            flags: sockflag::OWNER_UNKNOWN,
            _pad: 0,
            comm: [0; 16],
        },
    };
    owner.birth_ns = now_ns();
    owner.flags |= sockflag::PASSIVE | sockflag::OWNER_GUESSED;
    if SOCKS.insert(t.skaddr, owner, 0).is_err() {
        diag::map_full("SOCKS");
    }
    None
}

/// ESTABLISHED -> FIN_WAIT1 and CLOSE_WAIT -> LAST_ACK are caused by the application
/// (close/shutdown), so they run in the owner's context: a guessed owner is replaced.
fn on_app_close(t: &Transition, flag: u32) -> Option<()> {
    let info = SOCKS.get_ptr_mut(t.skaddr)?;
    // SAFETY: pointer into the map value; races with another CPU only cost accuracy.
    let info = unsafe { &mut *info };
    if info.flags & (sockflag::OWNER_GUESSED | sockflag::OWNER_UNKNOWN) != 0 {
        let me = current_owner(info.birth_ns, 0);
        info.tgid = me.tgid;
        info.tid = me.tid;
        info.cgroup_id = me.cgroup_id;
        info.comm = me.comm;
        info.flags &= !(sockflag::OWNER_GUESSED | sockflag::OWNER_UNKNOWN);
    }
    info.flags |= flag;
    None
}

fn add_flags(skaddr: u64, flag: u32) -> Option<()> {
    let info = SOCKS.get_ptr_mut(skaddr)?;
    // SAFETY: as in on_app_close.
    unsafe { (*info).flags |= flag };
    None
}

fn on_close(ctx: &TracePointContext, t: &Transition) -> Option<()> {
    match t.old {
        tcpstate::LISTEN => {
            let _ = LISTENERS.remove(t.sport);
            let _ = SOCKS.remove(t.skaddr);
            return None;
        }
        tcpstate::SYN_SENT => {
            if let Some(c) = connect_in_flight(current_tid()) {
                // SAFETY: entry of this thread.
                let c = unsafe { &mut *c };
                if c.skaddr == t.skaddr {
                    c.flags |= portex_common::connflag::STATE_FAILED;
                    c.sport = t.sport;
                    let info = SOCKS.get_ptr_mut(t.skaddr);
                    // SAFETY: map value pointer, checked for null by get_ptr_mut.
                    let reset =
                        info.is_some_and(|i| unsafe { (*i).flags } & sockflag::RESET_RCVD != 0);
                    if !reset {
                        // Port allocation failed (sport 0) or the bound 4-tuple is taken:
                        // the syscall exit reports it with the errno; not twice.
                        let _ = SOCKS.remove(t.skaddr);
                        return None;
                    }
                    // Refused within the call (loopback answers at once): a non-blocking
                    // connect() still returns EINPROGRESS, so this path reports the
                    // connect and the failed handshake, and the exit only a real errno.
                    c.flags |= portex_common::connflag::REPORTED_BY_STATE;
                    if let Some(i) = info {
                        // SAFETY: as above.
                        unsafe { (*i).flags &= !sockflag::IN_CONNECT_SYSCALL };
                    }
                }
            }
        }
        _ => {}
    }
    // SAFETY: value copied out at once.
    let info = unsafe { SOCKS.get(t.skaddr) }.copied();
    if info.is_none()
        && !report_accepted()
        // SAFETY: presence check only.
        && unsafe { LISTENERS.get(t.sport) }.is_some()
    {
        // Unknown socket on a listening port: an accepted one (not tracked).
        return None;
    }
    report(ctx, t, true, info);
    if info.is_some() {
        let _ = SOCKS.remove(t.skaddr);
    }
    None
}

/// Sends the transition with the socket's owner and flags.
fn report(
    ctx: &TracePointContext,
    t: &Transition,
    closing: bool,
    mut info: Option<SockInfo>,
) -> Option<()> {
    if t.old == tcpstate::SYN_SENT && !closing {
        claim_connect(t.skaddr, &mut info);
        if info.is_none() {
            diag::missed_start(t.skaddr, t.sport, field::<u16>(ctx, DPORT));
        }
    }
    // A port allocation failure (SYN_SENT -> CLOSE with no port) matters: wake the
    // reader at once, unless a connect() hook is around it (its exit wakes the reader
    // with the errno, a moment later: one wake-up per failure, not two).
    let urgent = closing
        && t.old == tcpstate::SYN_SENT
        && t.sport == 0
        && connect_in_flight(current_tid()).is_none();
    emit(urgent, |ev| {
        ev.kind = kind::STATE;
        ev.ts_ns = now_ns();
        ev.skaddr = t.skaddr;
        ev.protocol = IPPROTO_TCP;
        ev.oldstate = t.old;
        ev.newstate = t.new;
        ev.sport = t.sport;
        ev.dport = field::<u16>(ctx, DPORT);
        ev.family = field::<u16>(ctx, FAMILY);
        read_addrs(ctx, &mut ev.saddr, &mut ev.daddr);
        match info {
            Some(info) => set_owner(ev, &info),
            None => ev.flags = sockflag::OWNER_UNKNOWN,
        }
    });
    None
}

/// SYN_SENT -> ESTABLISHED while the owner is still inside connect() (loopback answers
/// within the call): this event carries the port, so let user space report `connect`
/// from it, before `established`, and tell the syscall exit not to.
#[inline(always)]
fn claim_connect(skaddr: u64, info: &mut Option<SockInfo>) {
    let Some(c) = connect_in_flight(current_tid()) else {
        return;
    };
    // SAFETY: entry of this thread.
    let c = unsafe { &mut *c };
    if c.skaddr == skaddr {
        c.flags |= portex_common::connflag::REPORTED_BY_STATE;
        if let Some(i) = info {
            i.flags &= !sockflag::IN_CONNECT_SYSCALL;
        }
    }
}

#[inline(always)]
fn read_addrs(ctx: &TracePointContext, saddr: &mut [u8; 16], daddr: &mut [u8; 16]) {
    match field::<u16>(ctx, FAMILY) {
        AF_INET => {
            saddr[..4].copy_from_slice(&field::<u32>(ctx, SADDR).to_ne_bytes());
            daddr[..4].copy_from_slice(&field::<u32>(ctx, DADDR).to_ne_bytes());
        }
        AF_INET6 => {
            *saddr = addr16(ctx, SADDR_V6);
            *daddr = addr16(ctx, DADDR_V6);
        }
        _ => {}
    }
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let _ = add_flags(field::<u64>(&ctx, RST_SKADDR), sockflag::RESET_RCVD);
    0
}

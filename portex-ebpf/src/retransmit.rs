//! `tcp:tcp_retransmit_skb` in SYN_SENT: a connect() whose SYN went unanswered for the
//! initial RTO (1 s). Behind a full NAT pool that is all the pod ever sees (conntrack
//! drops the SYN), so the agent reports it as `connect_stalled` while the caller is
//! still waiting, instead of only at the timeout a minute or two later.
//!
//! The tracepoint fires on every retransmission of every TCP segment, so the state is
//! the first check (a plain load); only SYNs go further, and only the first one of a
//! socket is sent (a flag in SOCKS), so a connect costs at most one record here.
use aya_ebpf::{
    EbpfContext, helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext,
};
use portex_common::{AF_INET, AF_INET6, IPPROTO_TCP, kind, sockflag, tcpstate};

use crate::{
    maps::SOCKS,
    util::{emit, now_ns, set_owner},
};

// /sys/kernel/tracing/events/tcp/tcp_retransmit_skb/format (Linux 6.x; the agent
// compares the running kernel's format with these before it attaches the program):
//   const void * skaddr @16; int state @24; __u16 sport @28; __u16 dport @30;
//   __u16 family @32; __u8 saddr[4] @34; __u8 daddr[4] @38; __u8 saddr_v6[16] @42;
//   __u8 daddr_v6[16] @58
const SKADDR: usize = 16;
const STATE: usize = 24;
const SPORT: usize = 28;
const DPORT: usize = 30;
const FAMILY: usize = 32;
const SADDR: usize = 34;
const DADDR: usize = 38;
const SADDR_V6: usize = 42;
const DADDR_V6: usize = 58;

/// Direct load from the record, for the naturally aligned fields.
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: the offsets above are inside the record and naturally aligned.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(off) as *const T) }
}

/// The addresses sit at offsets that are not 4-aligned, which direct context loads
/// must be: copied with the helper instead (once per stalled connect, not hot).
#[inline(always)]
fn copy<const N: usize>(ctx: &TracePointContext, off: usize, to: &mut [u8]) {
    // SAFETY: off + N is inside the record; the helper checks the read anyway.
    let src = unsafe { (ctx.as_ptr() as *const u8).add(off) } as *const [u8; N];
    // SAFETY: the helper copies kernel memory and fails cleanly where it cannot.
    if let Ok(a) = unsafe { bpf_probe_read_kernel(src) } {
        to[..N].copy_from_slice(&a);
    }
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    try_tcp_retransmit_skb(&ctx);
    0
}

fn try_tcp_retransmit_skb(ctx: &TracePointContext) -> Option<()> {
    if field::<i32>(ctx, STATE) != tcpstate::SYN_SENT as i32 {
        return None;
    }
    let skaddr = field::<u64>(ctx, SKADDR);
    let owner = match SOCKS.get_ptr_mut(skaddr) {
        Some(p) => {
            // SAFETY: map value pointer; a race with another CPU costs one duplicate.
            let info = unsafe { &mut *p };
            if info.flags & sockflag::SYN_RETRANSMITTED != 0 {
                return None;
            }
            info.flags |= sockflag::SYN_RETRANSMITTED;
            Some(*info)
        }
        // Older than the agent: reported at every retransmission (a handful).
        None => None,
    };
    emit(false, |ev| {
        ev.kind = kind::SYN_RETRANS;
        ev.ts_ns = now_ns();
        ev.skaddr = skaddr;
        ev.protocol = IPPROTO_TCP;
        ev.oldstate = tcpstate::SYN_SENT;
        ev.newstate = tcpstate::SYN_SENT;
        ev.sport = field::<u16>(ctx, SPORT);
        ev.dport = field::<u16>(ctx, DPORT);
        ev.family = field::<u16>(ctx, FAMILY);
        match ev.family {
            AF_INET => {
                copy::<4>(ctx, SADDR, &mut ev.saddr);
                copy::<4>(ctx, DADDR, &mut ev.daddr);
            }
            AF_INET6 => {
                copy::<16>(ctx, SADDR_V6, &mut ev.saddr);
                copy::<16>(ctx, DADDR_V6, &mut ev.daddr);
            }
            _ => {}
        }
        match owner {
            Some(info) => set_owner(ev, &info),
            None => ev.flags = sockflag::OWNER_UNKNOWN,
        }
    });
    None
}

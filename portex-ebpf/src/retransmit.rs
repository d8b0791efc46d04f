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
use portex_common::{AF_INET, AF_INET6, IPPROTO_TCP, SockInfo, kind, sockflag, tcpstate};

use crate::{
    maps::SOCKS,
    util::{emit, now_ns, set_owner},
};

/// Where the fields sit in the record, as constants: a tracepoint record is the
/// program's context, which the verifier lets it read only at constant offsets (an
/// offset loaded from memory is "dereference of modified ctx ptr"). The tracepoint
/// gained `family` in 5.13, which moved the addresses by two bytes; one program per
/// layout, and the agent attaches the one whose layout the kernel's tracefs shows.
trait Layout {
    const SKADDR: usize = 16;
    const STATE: usize = 24;
    const SPORT: usize = 28;
    const DPORT: usize = 30;
    /// None: the record has no family (5.10-5.12); it is told from the addresses.
    const FAMILY: Option<usize>;
    const SADDR: usize;
    const DADDR: usize;
    const SADDR_V6: usize;
    const DADDR_V6: usize;
}

// /sys/kernel/tracing/events/tcp/tcp_retransmit_skb/format (5.13 to 7.2):
//   const void * skaddr @16; int state @24; __u16 sport @28; __u16 dport @30;
//   __u16 family @32; __u8 saddr[4] @34; __u8 daddr[4] @38; __u8 saddr_v6[16] @42;
//   __u8 daddr_v6[16] @58
struct WithFamily;
impl Layout for WithFamily {
    const FAMILY: Option<usize> = Some(32);
    const SADDR: usize = 34;
    const DADDR: usize = 38;
    const SADDR_V6: usize = 42;
    const DADDR_V6: usize = 58;
}

// The same on 5.10 (Debian 11): no family, so saddr @32, daddr @36, saddr_v6 @40,
// daddr_v6 @56. An IPv4 socket's v6 fields hold its addresses v4-mapped.
struct WithoutFamily;
impl Layout for WithoutFamily {
    const FAMILY: Option<usize> = None;
    const SADDR: usize = 32;
    const DADDR: usize = 36;
    const SADDR_V6: usize = 40;
    const DADDR_V6: usize = 56;
}

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
    try_tcp_retransmit_skb::<WithFamily>(&ctx);
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_no_family(ctx: TracePointContext) -> u32 {
    try_tcp_retransmit_skb::<WithoutFamily>(&ctx);
    0
}

/// Whether a 16-byte address is IPv4-mapped (::ffff:a.b.c.d).
#[inline(always)]
fn v4_mapped(a: &[u8; 16]) -> bool {
    a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff
}

#[inline(always)]
fn try_tcp_retransmit_skb<L: Layout>(ctx: &TracePointContext) -> Option<()> {
    if field::<i32>(ctx, L::STATE) != tcpstate::SYN_SENT as i32 {
        return None;
    }
    let skaddr = field::<u64>(ctx, L::SKADDR);
    // The owner stays a pointer into SOCKS (or null), never a copy held in an
    // Option: LLVM reads such a copy's stack slots on the None path too, and kernels
    // before 6.4 reject every read of an uninitialised stack slot ("invalid read from
    // stack", Debian 12's 6.1). A map value pointer lives in a register the verifier
    // tracks through the null check.
    let owner: *const SockInfo = match SOCKS.get_ptr_mut(skaddr) {
        Some(p) => {
            // SAFETY: map value pointer; a race with another CPU costs one duplicate.
            let info = unsafe { &mut *p };
            if info.flags & sockflag::SYN_RETRANSMITTED != 0 {
                return None;
            }
            info.flags |= sockflag::SYN_RETRANSMITTED;
            p
        }
        // Older than the agent: reported at every retransmission (a handful).
        None => core::ptr::null(),
    };
    emit(false, |ev| {
        ev.kind = kind::SYN_RETRANS;
        ev.ts_ns = now_ns();
        ev.skaddr = skaddr;
        ev.protocol = IPPROTO_TCP;
        ev.oldstate = tcpstate::SYN_SENT;
        ev.newstate = tcpstate::SYN_SENT;
        ev.sport = field::<u16>(ctx, L::SPORT);
        ev.dport = field::<u16>(ctx, L::DPORT);
        ev.family = match L::FAMILY {
            Some(off) => field::<u16>(ctx, off),
            None => {
                copy::<16>(ctx, L::SADDR_V6, &mut ev.saddr);
                let mut s = [0u8; 16];
                s.copy_from_slice(&ev.saddr[..16]);
                if v4_mapped(&s) { AF_INET } else { AF_INET6 }
            }
        };
        match ev.family {
            AF_INET => {
                ev.saddr = [0; 16];
                copy::<4>(ctx, L::SADDR, &mut ev.saddr);
                copy::<4>(ctx, L::DADDR, &mut ev.daddr);
            }
            AF_INET6 => {
                copy::<16>(ctx, L::SADDR_V6, &mut ev.saddr);
                copy::<16>(ctx, L::DADDR_V6, &mut ev.daddr);
            }
            _ => {}
        }
        // SAFETY: null or a SOCKS value; an LRU eviction meanwhile leaves the memory
        // valid until the program ends (RCU), at worst with another socket's owner.
        match unsafe { owner.as_ref() } {
            Some(info) => set_owner(ev, info),
            None => ev.flags = sockflag::OWNER_UNKNOWN,
        }
    });
    None
}

//! Wire types shared by the kernel programs (portex-ebpf) and the agent.
//!
//! Everything here is `#[repr(C)]` with fixed-width integers and byte arrays only: no
//! bool, enum or Option crosses the ring buffer. The agent decodes kinds, states and
//! flags with `TryFrom` on its side. Largest fields first, no implicit padding.
#![no_std]

pub const TASK_COMM_LEN: usize = 16;

/// Event kinds. An id is never reused once released.
pub mod kind {
    /// A TCP state transition worth reporting: into ESTABLISHED, or into CLOSE.
    pub const STATE: u16 = 1;
    /// connect() on an AF_INET/AF_INET6 socket returned (success or failure).
    pub const CONNECT_RET: u16 = 2;
    /// bind() on an AF_INET/AF_INET6 socket returned (failure, or success for port 0).
    pub const BIND_RET: u16 = 3;
    /// A connecting socket retransmitted its SYN (tcp:tcp_retransmit_skb in SYN_SENT):
    /// the first retransmission of each socket the kernel side knows, so at most one
    /// per connect().
    pub const SYN_RETRANS: u16 = 4;
}

/// Per-socket flags, kept in the kernel's socket map and copied into every event.
pub mod sockflag {
    /// Opened by connect() (CLOSE -> SYN_SENT seen).
    pub const ACTIVE: u32 = 1 << 0;
    /// Accepted from a listener (LISTEN -> SYN_RECV seen).
    pub const PASSIVE: u32 = 1 << 1;
    /// This side sent FIN first (ESTABLISHED -> FIN_WAIT1).
    pub const FIN_SENT: u32 = 1 << 2;
    /// The peer sent FIN first (ESTABLISHED -> CLOSE_WAIT).
    pub const FIN_RCVD: u32 = 1 << 3;
    /// A RST was received (tcp:tcp_receive_reset).
    pub const RESET_RCVD: u32 = 1 << 4;
    /// The owner was copied from the listener on the same port, not seen in process
    /// context; it may name the wrong process when two network namespaces listen on one
    /// port. Replaced by the real owner at the first close in process context.
    pub const OWNER_GUESSED: u32 = 1 << 5;
    /// The connect() syscall was in flight when the socket entered SYN_SENT, so the
    /// syscall exit reports the `connect` (the state path must not report it again).
    pub const IN_CONNECT_SYSCALL: u32 = 1 << 6;
    /// The owner is not known: the socket existed before the agent started.
    pub const OWNER_UNKNOWN: u32 = 1 << 7;
    /// The SYN was retransmitted (reported once, at the first retransmission).
    pub const SYN_RETRANSMITTED: u32 = 1 << 8;
}

/// Flags of a CONNECT_RET event.
pub mod connflag {
    /// A TCP socket entered SYN_SENT during this connect() call.
    pub const TCP_SEEN: u32 = 1 << 0;
    /// That socket went SYN_SENT -> CLOSE inside the call (port allocation or collision).
    pub const STATE_FAILED: u32 = 1 << 1;
    /// The handshake completed inside the call (loopback): the state path reported the
    /// `connect`, in order before `established`, so the exit must not report it again.
    pub const REPORTED_BY_STATE: u32 = 1 << 2;
}

/// TCP states, as the kernel numbers them (include/net/tcp_states.h).
pub mod tcpstate {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
    /// Not a state of a socket: the sock_diag request bit for sockets bind() gave a
    /// port that neither listen nor connect (Linux 6.5+; they are reported as CLOSE).
    pub const BOUND_INACTIVE: u8 = 13;
}

/// Sizes of the per-thread in-flight maps' values (portex-ebpf's ConnectCtx and
/// BindCtx), so that user space can empty those maps when the syscall hooks detach.
pub const CONNECT_CTX_SIZE: usize = 56;
pub const BIND_CTX_SIZE: usize = 24;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;

/// One record in the ring buffer. 112 bytes.
///
/// For STATE events the process fields name the socket's owner (recorded in process
/// context), not whatever task the transition ran on; for syscall events they name the
/// caller.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_BOOTTIME, nanoseconds.
    pub ts_ns: u64,
    /// Kernel address of the socket: an opaque id, stable while the socket lives.
    pub skaddr: u64,
    pub cgroup_id: u64,
    /// When the socket entered SYN_SENT or SYN_RECV (CLOCK_BOOTTIME ns); 0 when unknown.
    pub birth_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// Syscall return value (0 or a negative errno); 0 for STATE events.
    pub ret: i32,
    /// `sockflag` bits for STATE events, `connflag` bits for CONNECT_RET.
    pub flags: u32,
    /// The file descriptor of a syscall event; -1 otherwise.
    pub fd: i32,
    pub kind: u16,
    pub family: u16,
    /// IPPROTO_TCP, IPPROTO_UDP, or 0 when the kernel side cannot tell.
    pub protocol: u16,
    pub sport: u16,
    pub dport: u16,
    pub oldstate: u8,
    pub newstate: u8,
    /// IPv4 addresses use the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub comm: [u8; TASK_COMM_LEN],
}

pub const EVENT_SIZE: usize = size_of::<Event>();
const _: () = assert!(EVENT_SIZE == 112);
const _: () = assert!(align_of::<Event>() == 8);

/// What the kernel keeps per live socket (map SOCKS, keyed by skaddr). 48 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockInfo {
    pub birth_ns: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub tid: u32,
    pub flags: u32,
    pub _pad: u32,
    pub comm: [u8; TASK_COMM_LEN],
}
const _: () = assert!(size_of::<SockInfo>() == 48);

/// Indexes into the per-CPU counter array COUNTERS.
pub mod counter {
    /// bpf_ringbuf_reserve failed: the event was lost.
    pub const RINGBUF_FULL: u32 = 0;
    /// A per-socket or per-thread map insert failed: attribution may be missing.
    pub const MAP_FULL: u32 = 1;
    pub const COUNT: u32 = 2;
}

impl Event {
    pub const fn zeroed() -> Self {
        Event {
            ts_ns: 0,
            skaddr: 0,
            cgroup_id: 0,
            birth_ns: 0,
            tgid: 0,
            tid: 0,
            ret: 0,
            flags: 0,
            fd: -1,
            kind: 0,
            family: 0,
            protocol: 0,
            sport: 0,
            dport: 0,
            oldstate: 0,
            newstate: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            comm: [0; TASK_COMM_LEN],
        }
    }

    /// The record as bytes, as the ring buffer carries it.
    pub fn as_bytes(&self) -> &[u8; EVENT_SIZE] {
        // SAFETY: Event is repr(C), has no padding (asserted by its size) and only
        // plain integer fields, so every byte is initialised.
        unsafe { &*(self as *const Event as *const [u8; EVENT_SIZE]) }
    }

    /// Reads a record from bytes; None when the slice is too short.
    pub fn from_bytes(buf: &[u8]) -> Option<Event> {
        if buf.len() < EVENT_SIZE {
            return None;
        }
        // SAFETY: length checked; every bit pattern is a valid Event; read_unaligned
        // copes with any alignment of the source.
        Some(unsafe { core::ptr::read_unaligned(buf.as_ptr() as *const Event) })
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), no padding (asserted by its size).
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as Event: repr(C), integers and a byte array, explicit `_pad` (48 bytes,
    // asserted).
    unsafe impl aya::Pod for super::SockInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trips_through_bytes() {
        let mut e = Event::zeroed();
        e.ts_ns = 0x0102_0304_0506_0708;
        e.kind = kind::CONNECT_RET;
        e.ret = -99;
        e.sport = 40000;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.comm[..4].copy_from_slice(b"curl");
        let bytes = *e.as_bytes();
        assert_eq!(Event::from_bytes(&bytes), Some(e));
        // Trailing bytes are ignored, as the ring buffer pads records to 8 bytes.
        let mut longer = [0u8; EVENT_SIZE + 8];
        longer[..EVENT_SIZE].copy_from_slice(&bytes);
        assert_eq!(Event::from_bytes(&longer), Some(e));
    }

    #[test]
    fn short_record_is_rejected() {
        let e = Event::zeroed();
        assert_eq!(Event::from_bytes(&e.as_bytes()[..EVENT_SIZE - 1]), None);
        assert_eq!(Event::from_bytes(&[]), None);
    }

    #[test]
    fn field_offsets_are_stable() {
        let e = Event::zeroed();
        let base = &e as *const Event as usize;
        assert_eq!(&e.kind as *const u16 as usize - base, 52);
        assert_eq!(&e.saddr as *const [u8; 16] as usize - base, 64);
        assert_eq!(&e.comm as *const [u8; 16] as usize - base, 96);
    }
}

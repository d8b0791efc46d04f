//! Maps shared by the programs, and the tunables the loader sets.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use portex_common::{SockInfo, counter};

/// Every event for user space. The loader may resize it (EbpfLoader::set_max_entries).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Live sockets, keyed by kernel address: owner and flags, so that transitions running in
/// softirq are attributed to the owner rather than to whoever was on the CPU. LRU so
/// that a missed close (a skipped tracepoint run) cannot leak an entry forever.
#[map]
pub static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(131_072, 0);

/// Listening sockets by local port: the owner a passively opened socket starts with.
#[map]
pub static LISTENERS: LruHashMap<u16, SockInfo> = LruHashMap::with_max_entries(16_384, 0);

/// connect() calls in flight, keyed by thread id.
#[map]
pub static CONNECTS: HashMap<u32, ConnectCtx> = HashMap::with_max_entries(16_384, 0);

/// Slot 0 is non-zero while user space has the syscall programs attached: without
/// them CONNECTS is empty, and the state program skips its lookups (an array slot is a
/// plain load; a hash lookup per transition is not free).
#[map]
pub static HOOKS: Array<u32> = Array::with_max_entries(1, 0);

/// The current thread's connect() in flight, when the syscall hooks are attached.
#[inline(always)]
pub fn connect_in_flight(tid: u32) -> Option<*mut ConnectCtx> {
    if HOOKS.get(0).is_none_or(|v| *v == 0) {
        return None;
    }
    CONNECTS.get_ptr_mut(tid)
}

/// bind() calls in flight, keyed by thread id.
#[map]
pub static BINDS: HashMap<u32, BindCtx> = HashMap::with_max_entries(16_384, 0);

/// Loss counters, indexed by `portex_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Ring-buffer wake-up batching: an ordinary event wakes the reader only once this many
/// bytes are waiting (the reader also drains on a short timer). Failures always wake.
/// 1 (the default: non-zero keeps it in .rodata, where the loader can set it) wakes on
/// every event that finds the ring empty.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: u64 = 1;

/// Per CPU, when a failure last forced a wake-up of the reader (boot ns).
#[map]
pub static LAST_URGENT_WAKE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Failures force a wake-up at most this often per CPU (ns); the ones in between wait
/// for the next wake-up or the reader's timer. A forced wake-up queues an irq_work whose
/// self-IPI arrives while the program still runs: the softirqs run on its way out
/// (network receive, with its own inet_sock_set_state) find this CPU's BPF slot taken,
/// and the kernel skips those runs (recursion_misses). During an exhaustion, thousands
/// of failures a second did that. 0 forces every time.
#[unsafe(no_mangle)]
pub static URGENT_WAKE_GAP_NS: u64 = 1_000_000;

/// Non-zero: report sockets this host accepted (server side). They hold the listening
/// port, not an ephemeral one; at 0 (the agent's default) their transitions leave the
/// program at the first check and never reach a map or the ring buffer.
#[unsafe(no_mangle)]
pub static REPORT_ACCEPTED: u64 = 1;

#[inline(always)]
pub fn report_accepted() -> bool {
    // SAFETY: reading a global the loader may have set.
    unsafe { core::ptr::read_volatile(&REPORT_ACCEPTED) != 0 }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectCtx {
    pub skaddr: u64,
    pub fd: i32,
    pub flags: u32,
    pub family: u16,
    pub dport: u16,
    pub sport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct BindCtx {
    pub fd: i32,
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
}

const _: () = assert!(size_of::<ConnectCtx>() == portex_common::CONNECT_CTX_SIZE);
const _: () = assert!(size_of::<BindCtx>() == portex_common::BIND_CTX_SIZE);

/// Adds one to a loss counter; its new value on this CPU (0 if the slot is missing).
pub fn count(index: u32) -> u64 {
    match COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    }
}

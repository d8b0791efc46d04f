//! What portex reports: one `Record` per event a user sees. Pure data.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

pub use crate::logic::workload::Workload;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// An outgoing TCP connection got its source port (SYN sent).
    Connect,
    /// The handshake completed (client or server side).
    Established,
    /// The socket was torn down.
    Close,
    /// The local port entered TIME_WAIT.
    TimeWait,
    ConnectFailed,
    /// bind() took an ephemeral port (port 0 asked).
    Bind,
    BindFailed,
    /// A connect() still waiting: its SYN was retransmitted (no answer within the
    /// initial RTO, 1 s). Once per connect.
    ConnectStalled,
    /// One line for a whole connection, at its close (`--lines connections`, like
    /// tcplife): the close record, with when it started.
    Connection,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Established => "established",
            Action::Close => "close",
            Action::TimeWait => "time_wait",
            Action::ConnectFailed => "connect_failed",
            Action::Bind => "bind",
            Action::BindFailed => "bind_failed",
            Action::Connection => "connection",
            Action::ConnectStalled => "connect_stalled",
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Action::ConnectFailed | Action::BindFailed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
    /// The kernel side could not tell and the socket was gone before user space looked.
    Unknown,
}

impl Transport {
    /// From an IP protocol number (the kernel's, sock_diag's or SO_PROTOCOL's).
    pub(crate) fn of_protocol(protocol: u16) -> Transport {
        match protocol {
            portex_common::IPPROTO_TCP => Transport::Tcp,
            portex_common::IPPROTO_UDP => Transport::Udp,
            _ => Transport::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Unknown => "unknown",
        }
    }
}

/// Why a connect() or bind() failed, as far as ephemeral ports are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// No source port left in ip_local_port_range for this destination (TCP connect
    /// EADDRNOTAVAIL with no port chosen, UDP auto-bind EAGAIN, bind(0) EADDRINUSE).
    PortRangeExhausted,
    /// The socket was bound to a port and that 4-tuple is already in use.
    TupleCollision,
    /// bind() to a specific port that is taken.
    PortInUse,
    /// EADDRNOTAVAIL that is not about ports: a non-local address, IPv6 link-local
    /// without scope, and the like.
    AddressNotAvailable,
    /// The SYN went unanswered while a NAT pool of this host towards the destination
    /// was full: conntrack dropped it (a guess when several NATs reach it: see
    /// docs/events.md).
    NatExhausted,
    /// Any other failure (refused, unreachable, timed out ...).
    Other,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::PortRangeExhausted => "port_range_exhausted",
            Cause::TupleCollision => "tuple_collision",
            Cause::PortInUse => "port_in_use",
            Cause::AddressNotAvailable => "address_not_available",
            Cause::NatExhausted => "nat_exhausted",
            Cause::Other => "other",
        }
    }

    /// A sentence for a human, used in warnings and the text format.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::PortRangeExhausted => "no free source port (ip_local_port_range exhausted)",
            Cause::TupleCollision => "bound source port already used towards this destination",
            Cause::PortInUse => "the requested port is taken",
            Cause::AddressNotAvailable => "address not available (not local, or missing scope)",
            Cause::NatExhausted => {
                "no free port in the host's NAT towards this destination (SYN dropped by conntrack)"
            }
            Cause::Other => "not a port problem",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    /// This side closed first (FIN_WAIT1 -> FIN_WAIT2/CLOSING -> TIME_WAIT).
    Active,
    /// The peer closed first (CLOSE_WAIT -> LAST_ACK).
    Passive,
    /// Torn down by a RST, sent (abort, SO_LINGER 0) or received.
    Reset,
    /// The handshake never completed (refused, timed out, aborted).
    HandshakeFailed,
}

impl CloseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseKind::Active => "active",
            CloseKind::Passive => "passive",
            CloseKind::Reset => "reset",
            CloseKind::HandshakeFailed => "handshake_failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Process {
    /// 0 when the owner is unknown (the socket is older than the agent).
    pub pid: u32,
    pub tid: u32,
    /// The thread's comm as the kernel recorded it (inline: no allocation per event).
    pub thread_name: Comm,
    pub cgroup_id: u64,
}

/// A task's comm: at most 15 bytes, NUL-padded, as the kernel keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    /// The name up to the first NUL; invalid bytes (the kernel copies whatever bytes
    /// the process set) are shown as `\xNN`, never dropped.
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        crate::logic::untrusted::decode(&self.0[..end])
    }
}

impl From<&str> for Comm {
    fn from(s: &str) -> Comm {
        let mut b = [0u8; 16];
        let n = s.len().min(15);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        Comm(b)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    pub kind: CloseKind,
    pub time_wait: bool,
    /// A RST came from the peer (refused, for a handshake that failed).
    pub reset_received: bool,
    /// The TCP state the socket left for CLOSE.
    pub from_state: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// CLOCK_BOOTTIME nanoseconds.
    pub ts_ns: u64,
    pub action: Action,
    pub process: Process,
    pub transport: Transport,
    /// Port 0 when none was assigned (a failed connect), address unspecified when unknown.
    pub source: SocketAddr,
    pub destination: Option<SocketAddr>,
    /// Positive errno of a failure.
    pub errno: Option<i32>,
    /// True when the errno was inferred from the state signature, not read from a syscall.
    pub errno_inferred: bool,
    pub cause: Option<Cause>,
    pub close: Option<CloseInfo>,
    /// Nanoseconds from SYN (or accept) to CLOSE, on `close` lines.
    pub duration_ns: Option<u64>,
    /// Kernel socket address, as an opaque id; 0 when not known.
    pub socket: u64,
    /// The caller's fd for syscall events, to resolve the socket from /proc.
    pub fd: Option<i32>,
    /// The owner came from the listener on the same port (see sockflag::OWNER_GUESSED).
    pub owner_guessed: bool,
    /// Server side (accepted) rather than client side.
    pub passive: bool,
    /// The state of the record's port pool after it, when the agent tracks pools.
    pub pool: Option<PoolState>,
    /// The owner's network namespace (inode), when known.
    pub netns: Option<u64>,
    /// The owner's container, when its cgroup says so (shared: every event of a
    /// container points to one copy).
    pub container: Option<Arc<Container>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolState {
    pub used: u32,
    pub size: u32,
    pub time_wait: u32,
}

impl Record {
    pub fn outcome(&self) -> &'static str {
        if self.action.is_failure() {
            "failure"
        } else if self.action == Action::ConnectStalled {
            // Still waiting: it may yet succeed.
            "unknown"
        } else {
            "success"
        }
    }

    pub fn network_type(&self) -> &'static str {
        let ip = self.destination.map(|d| d.ip()).unwrap_or(self.source.ip());
        match ip {
            IpAddr::V4(_) => "ipv4",
            IpAddr::V6(_) => "ipv6",
        }
    }
}

/// Names of TCP states, for `portex.close.from_state` and the text format.
pub(crate) fn tcp_state_name(state: u8) -> &'static str {
    use portex_common::tcpstate::*;
    match state {
        ESTABLISHED => "ESTABLISHED",
        SYN_SENT => "SYN_SENT",
        SYN_RECV => "SYN_RECV",
        FIN_WAIT1 => "FIN_WAIT1",
        FIN_WAIT2 => "FIN_WAIT2",
        TIME_WAIT => "TIME_WAIT",
        CLOSE => "CLOSE",
        CLOSE_WAIT => "CLOSE_WAIT",
        LAST_ACK => "LAST_ACK",
        LISTEN => "LISTEN",
        CLOSING => "CLOSING",
        NEW_SYN_RECV => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// A process, keyed by (pid, start time) so that a reused pid is not confused with the
/// process that had it before.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Owner {
    pub pid: u32,
    /// Start time in clock ticks since boot (/proc/<pid>/stat field 22).
    pub start: u64,
    pub name: String,
}

/// One socket as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u8,
    /// TCP state number (UDP: 7 unconnected, 1 connected).
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Socket inode; 0 for TIME_WAIT sockets, which have no file.
    pub inode: u64,
    /// Milliseconds left on the socket's timer (for TIME_WAIT: until it ends).
    pub expires_ms: u32,
}

impl DiagSocket {
    pub(crate) fn is_tcp(&self) -> bool {
        self.protocol as u16 == portex_common::IPPROTO_TCP
    }

    pub(crate) fn is_udp(&self) -> bool {
        self.protocol as u16 == portex_common::IPPROTO_UDP
    }

    pub(crate) fn is_tcp_listener(&self) -> bool {
        self.is_tcp() && self.state == portex_common::tcpstate::LISTEN
    }

    /// A TCP socket bind() gave a port that has neither listened nor connected
    /// (sock_diag lists them, in state CLOSE, when asked for BOUND_INACTIVE).
    pub(crate) fn is_tcp_bound_only(&self) -> bool {
        self.is_tcp() && self.state == portex_common::tcpstate::CLOSE && self.local.port() != 0
    }

    /// A TCP socket whose port bind() or listen() took: connect() never picks that port
    /// again while it lives, for any destination.
    pub(crate) fn binds_tcp_port(&self) -> bool {
        self.is_tcp_listener() || self.is_tcp_bound_only()
    }

    pub(crate) fn in_time_wait(&self) -> bool {
        self.is_tcp() && self.state == portex_common::tcpstate::TIME_WAIT
    }

    /// How long a TIME_WAIT socket has been in TIME_WAIT (its timer runs 60 s).
    pub(crate) fn time_wait_age_ms(&self) -> u64 {
        crate::logic::pool::TIME_WAIT_MS.saturating_sub(self.expires_ms as u64)
    }

    /// A TCP socket in a state that holds its local port.
    pub(crate) fn holds_tcp_port(&self) -> bool {
        self.is_tcp() && crate::logic::pool::TcpState(self.state).holds_port()
    }
}

/// The container a process runs in, read from its cgroup path, and what its runtime
/// recorded about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The 64-hex container id.
    pub id: String,
    /// docker, containerd, cri-o, podman.
    pub runtime: &'static str,
    /// The Kubernetes pod uid, when the path has one: a UUID, 8-4-4-4-12 hex digits
    /// (checked when parsed).
    pub pod_uid: Option<String>,
    /// Name, image and pod, from the runtime's files (empty when they were not found).
    pub workload: Workload,
}

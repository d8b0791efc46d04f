//! Turns kernel records into what a user sees: connect, established, close, time_wait,
//! connect_failed, bind, bind_failed. Pure: no IO, no clock.
//!
//! The kernel sends only two kinds of state transition (into ESTABLISHED, into CLOSE)
//! plus the socket's flags; how a socket closed, and whether its port now sits in
//! TIME_WAIT, is read from the state it left and those flags. The kernel never announces
//! TIME_WAIT: it swaps the socket for a timewait socket and moves the full one to CLOSE,
//! so FIN_WAIT2 -> CLOSE and CLOSING -> CLOSE without a RST mean "now in TIME_WAIT".
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use portex_common::{AF_INET, AF_INET6, Event, connflag, kind, sockflag, tcpstate};

use crate::{
    logic::addr::ip_from,
    logic::errno::{EADDRINUSE, EADDRNOTAVAIL, EAGAIN, EINPROGRESS},
    logic::model::{
        Action, Cause, CloseInfo, CloseKind, Comm, Process, Record, Transport, tcp_state_name,
    },
};

fn process_of(ev: &Event) -> Process {
    Process {
        pid: ev.tgid,
        tid: ev.tid,
        thread_name: Comm(ev.comm),
        cgroup_id: ev.cgroup_id,
    }
}

/// A record with the fields every kind shares filled from the event.
fn base(ev: &Event, action: Action) -> Record {
    let family = if ev.family == AF_INET6 {
        AF_INET6
    } else {
        AF_INET
    };
    let is_state = ev.kind == kind::STATE;
    Record {
        ts_ns: ev.ts_ns,
        action,
        process: process_of(ev),
        transport: Transport::of_protocol(ev.protocol),
        source: SocketAddr::new(ip_from(family, &ev.saddr), ev.sport),
        destination: Some(SocketAddr::new(ip_from(family, &ev.daddr), ev.dport)),
        errno: None,
        errno_inferred: false,
        cause: None,
        close: None,
        duration_ns: None,
        socket: ev.skaddr,
        fd: None,
        // Only STATE events carry socket flags (syscall events carry connflag bits).
        owner_guessed: is_state && ev.flags & sockflag::OWNER_GUESSED != 0,
        passive: is_state && ev.flags & sockflag::PASSIVE != 0,
        pool: None,
        netns: None,
        container: None,
    }
}

/// Decides the records one kernel event stands for, in order, and hands each to `out`.
pub fn interpret(ev: &Event, mut out: impl FnMut(Record)) {
    match ev.kind {
        kind::STATE => state(ev, &mut out),
        kind::CONNECT_RET => connect_ret(ev, &mut out),
        kind::BIND_RET => bind_ret(ev, &mut out),
        kind::SYN_RETRANS => syn_retransmitted(ev, &mut out),
        _ => {}
    }
}

fn state(ev: &Event, out: &mut impl FnMut(Record)) {
    let active_without_syscall =
        ev.flags & sockflag::ACTIVE != 0 && ev.flags & sockflag::IN_CONNECT_SYSCALL == 0;
    match (ev.oldstate, ev.newstate) {
        (tcpstate::SYN_SENT, tcpstate::ESTABLISHED) => {
            if active_without_syscall {
                // io_uring connect, or syscall hooks off: the port is first seen here.
                out(base(ev, Action::Connect));
            }
            out(base(ev, Action::Established));
        }
        (tcpstate::SYN_RECV, tcpstate::ESTABLISHED) => out(base(ev, Action::Established)),
        (tcpstate::SYN_SENT, tcpstate::CLOSE) if ev.sport == 0 => {
            // Port allocation failed outside connect() (io_uring): the same signature the
            // syscall path reports, so the errno is known without seeing it.
            let mut r = base(ev, Action::ConnectFailed);
            r.errno = Some(EADDRNOTAVAIL);
            r.errno_inferred = true;
            r.cause = Some(Cause::PortRangeExhausted);
            out(r);
        }
        (old, tcpstate::CLOSE) => {
            if old == tcpstate::SYN_SENT && active_without_syscall {
                out(base(ev, Action::Connect));
            }
            let (kind, time_wait) = close_kind(old, ev.flags);
            let mut r = base(ev, Action::Close);
            r.close = Some(CloseInfo {
                kind,
                time_wait,
                reset_received: ev.flags & sockflag::RESET_RCVD != 0,
                from_state: tcp_state_name(old),
            });
            if ev.birth_ns != 0 && ev.ts_ns >= ev.birth_ns {
                r.duration_ns = Some(ev.ts_ns - ev.birth_ns);
            }
            let tw = time_wait.then(|| {
                let mut t = r.clone();
                t.action = Action::TimeWait;
                t.duration_ns = None;
                t
            });
            out(r);
            if let Some(t) = tw {
                out(t);
            }
        }
        _ => {}
    }
}

/// The first SYN retransmission of a connect: it is still waiting, already for the
/// initial RTO. Whether a full NAT pool is why is for the pipeline to say (it knows
/// the pools); here it is a stall of unknown cause.
fn syn_retransmitted(ev: &Event, out: &mut impl FnMut(Record)) {
    let mut r = base(ev, Action::ConnectStalled);
    if ev.birth_ns != 0 && ev.ts_ns >= ev.birth_ns {
        r.duration_ns = Some(ev.ts_ns - ev.birth_ns);
    }
    out(r);
}

/// How a socket closed, from the state it left for CLOSE and its flags, and whether its
/// local port now sits in TIME_WAIT.
pub(crate) fn close_kind(old: u8, flags: u32) -> (CloseKind, bool) {
    let reset = flags & sockflag::RESET_RCVD != 0;
    match old {
        tcpstate::SYN_SENT | tcpstate::SYN_RECV => (CloseKind::HandshakeFailed, false),
        tcpstate::FIN_WAIT2 | tcpstate::CLOSING if !reset => (CloseKind::Active, true),
        tcpstate::LAST_ACK => (CloseKind::Passive, false),
        // ESTABLISHED/CLOSE_WAIT/FIN_WAIT1 -> CLOSE skip the FIN exchange: a RST was
        // sent (abort, SO_LINGER 0, unread data) or received.
        _ => (CloseKind::Reset, false),
    }
}

/// The positive errno of a syscall's return value. A record is bytes: a `ret` of
/// i32::MIN (no errno) must not overflow the negation.
fn errno_of(ret: i32) -> i32 {
    ret.saturating_neg()
}

fn connect_ret(ev: &Event, out: &mut impl FnMut(Record)) {
    let err = errno_of(ev.ret);
    if ev.ret == 0 || err == EINPROGRESS {
        let mut r = base(ev, Action::Connect);
        r.fd = Some(ev.fd);
        out(r);
        return;
    }
    let tcp = ev.flags & connflag::TCP_SEEN != 0;
    let mut r = base(ev, Action::ConnectFailed);
    r.fd = Some(ev.fd);
    r.errno = Some(err);
    r.transport = if tcp {
        Transport::Tcp
    } else if err == EAGAIN {
        // Only a datagram socket's auto-bind fails with EAGAIN on connect().
        Transport::Udp
    } else {
        Transport::Unknown
    };
    if !tcp {
        // No port was involved, and the source address was never set.
        r.source = SocketAddr::new(unspecified(r.destination), 0);
    }
    r.cause = Some(connect_cause(err, tcp, ev.flags, ev.sport));
    out(r);
}

fn unspecified(like: Option<SocketAddr>) -> IpAddr {
    match like {
        Some(SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// Tells exhaustion of the range apart from a 4-tuple collision after bind() and from
/// causes that have nothing to do with ports. What the kernel does, as measured here:
/// EADDRNOTAVAIL with a SYN_SENT -> CLOSE inside the call and no source port is the
/// allocator finding no free port; the same with a port (bind() chose it) is a 4-tuple
/// already in use; EADDRNOTAVAIL without a TCP state change is a local address that does
/// not exist; EAGAIN from a datagram socket's connect() is UDP auto-bind finding no port.
pub(crate) fn connect_cause(errno: i32, tcp_seen: bool, flags: u32, sport: u16) -> Cause {
    let failed_in_state = flags & connflag::STATE_FAILED != 0;
    match errno {
        EADDRNOTAVAIL if tcp_seen && failed_in_state && sport == 0 => Cause::PortRangeExhausted,
        EADDRNOTAVAIL if tcp_seen && failed_in_state => Cause::TupleCollision,
        EADDRNOTAVAIL => Cause::AddressNotAvailable,
        EAGAIN if !tcp_seen => Cause::PortRangeExhausted,
        _ => Cause::Other,
    }
}

fn bind_ret(ev: &Event, out: &mut impl FnMut(Record)) {
    let family = if ev.family == AF_INET6 {
        AF_INET6
    } else {
        AF_INET
    };
    let requested_port = ev.sport;
    let mut r = base(
        ev,
        if ev.ret == 0 {
            Action::Bind
        } else {
            Action::BindFailed
        },
    );
    r.destination = None;
    r.source = SocketAddr::new(ip_from(family, &ev.saddr), requested_port);
    r.fd = Some(ev.fd);
    if ev.ret != 0 {
        let err = errno_of(ev.ret);
        r.errno = Some(err);
        r.cause = Some(match err {
            EADDRINUSE if requested_port == 0 => Cause::PortRangeExhausted,
            EADDRINUSE => Cause::PortInUse,
            EADDRNOTAVAIL => Cause::AddressNotAvailable,
            _ => Cause::Other,
        });
    }
    out(r);
}

#[cfg(test)]
mod tests;

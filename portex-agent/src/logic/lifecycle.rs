//! Turns kernel records into what a user sees: connect, established, close, time_wait,
//! connect_failed, bind, bind_failed. Pure: no IO, no clock.
//!
//! The kernel sends only two kinds of state transition (into ESTABLISHED, into CLOSE)
//! plus the socket's flags; how a socket closed, and whether its port now sits in
//! TIME_WAIT, is read from the state it left and those flags. The kernel never announces
//! TIME_WAIT: it swaps the socket for a timewait socket and moves the full one to CLOSE,
//! so FIN_WAIT2 -> CLOSE and CLOSING -> CLOSE without a RST mean "now in TIME_WAIT".
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use portex_common::{
    AF_INET, AF_INET6, Event, IPPROTO_TCP, IPPROTO_UDP, connflag, kind, sockflag, tcpstate,
};

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

fn transport_of(protocol: u16) -> Transport {
    match protocol {
        IPPROTO_TCP => Transport::Tcp,
        IPPROTO_UDP => Transport::Udp,
        _ => Transport::Unknown,
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
        transport: transport_of(ev.protocol),
        source: SocketAddr::new(ip_from(family, &ev.saddr), ev.sport),
        destination: Some(SocketAddr::new(ip_from(family, &ev.daddr), ev.dport)),
        errno: None,
        errno_inferred: false,
        cause: None,
        close: None,
        duration_us: None,
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
                from_state: tcp_state_name(old),
            });
            if ev.birth_ns != 0 && ev.ts_ns >= ev.birth_ns {
                r.duration_us = Some((ev.ts_ns - ev.birth_ns) / 1_000);
            }
            let tw = time_wait.then(|| {
                let mut t = r.clone();
                t.action = Action::TimeWait;
                t.duration_us = None;
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
/// causes that have nothing to do with ports (kernel-facts.md, "Errors at the syscall
/// boundary").
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
mod tests {
    use super::*;
    use portex_common::IPPROTO_TCP;

    const SK: u64 = 0xffff_8881_0000_1000;

    fn ev(kind_: u16) -> Event {
        let mut e = Event::zeroed();
        e.kind = kind_;
        e.ts_ns = 5_000_000;
        e.skaddr = SK;
        e.tgid = 42;
        e.tid = 43;
        e.family = AF_INET;
        e.protocol = IPPROTO_TCP;
        e.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        e.sport = 40_000;
        e.dport = 80;
        e.comm[..4].copy_from_slice(b"curl");
        e
    }

    fn transition(old: u8, new: u8, flags: u32) -> Event {
        let mut e = ev(kind::STATE);
        e.oldstate = old;
        e.newstate = new;
        e.flags = flags;
        e.birth_ns = 1_000_000;
        e
    }

    fn run(e: &Event) -> Vec<Record> {
        let mut v = Vec::new();
        interpret(e, |r| v.push(r));
        v
    }

    fn actions(v: &[Record]) -> Vec<Action> {
        v.iter().map(|r| r.action).collect()
    }

    #[test]
    fn a_return_value_of_i32_min_is_an_unknown_errno_not_an_overflow() {
        // Found by fuzz/fuzz_targets/ring_event.rs: -i32::MIN overflowed (a panic in
        // debug builds, errno -2147483648 in release ones).
        for k in [kind::CONNECT_RET, kind::BIND_RET] {
            let mut e = ev(k);
            e.ret = i32::MIN;
            let v = run(&e);
            assert_eq!(v.len(), 1);
            assert!(v[0].action.is_failure());
            assert_eq!(v[0].errno, Some(i32::MAX));
            assert_eq!(v[0].cause, Some(Cause::Other));
        }
    }

    #[test]
    fn client_close_first_means_time_wait_for_the_owner() {
        // FIN_WAIT2 -> CLOSE runs in softirq; the owner comes from the event (kernel map).
        let v = run(&transition(
            tcpstate::FIN_WAIT2,
            tcpstate::CLOSE,
            sockflag::ACTIVE | sockflag::FIN_SENT,
        ));
        assert_eq!(actions(&v), [Action::Close, Action::TimeWait]);
        let close = v[0].close.as_ref().unwrap();
        assert_eq!((close.kind, close.time_wait), (CloseKind::Active, true));
        assert_eq!(v[0].duration_us, Some(4_000));
        assert_eq!(v[1].process.pid, 42);
        assert_eq!(v[1].source, "10.0.0.1:40000".parse().unwrap());
    }

    #[test]
    fn closing_state_also_ends_in_time_wait() {
        let v = run(&transition(
            tcpstate::CLOSING,
            tcpstate::CLOSE,
            sockflag::ACTIVE,
        ));
        assert_eq!(actions(&v), [Action::Close, Action::TimeWait]);
    }

    #[test]
    fn a_reset_in_fin_wait2_leaves_no_time_wait() {
        let v = run(&transition(
            tcpstate::FIN_WAIT2,
            tcpstate::CLOSE,
            sockflag::RESET_RCVD,
        ));
        assert_eq!(actions(&v), [Action::Close]);
        assert_eq!(v[0].close.as_ref().unwrap().kind, CloseKind::Reset);
    }

    #[test]
    fn passive_close_has_no_time_wait() {
        let v = run(&transition(
            tcpstate::LAST_ACK,
            tcpstate::CLOSE,
            sockflag::PASSIVE | sockflag::FIN_RCVD,
        ));
        assert_eq!(actions(&v), [Action::Close]);
        let c = v[0].close.as_ref().unwrap();
        assert_eq!((c.kind, c.time_wait), (CloseKind::Passive, false));
        assert!(v[0].passive);
    }

    #[test]
    fn abortive_close_is_a_reset() {
        for old in [
            tcpstate::ESTABLISHED,
            tcpstate::CLOSE_WAIT,
            tcpstate::FIN_WAIT1,
        ] {
            let v = run(&transition(old, tcpstate::CLOSE, sockflag::ACTIVE));
            assert_eq!(actions(&v), [Action::Close], "from {old}");
            assert_eq!(v[0].close.as_ref().unwrap().kind, CloseKind::Reset);
        }
    }

    #[test]
    fn connect_is_reported_once_whichever_path_sees_the_port() {
        // The syscall exit reports it: the state path stays quiet.
        let flags = sockflag::ACTIVE | sockflag::IN_CONNECT_SYSCALL;
        assert_eq!(
            actions(&run(&transition(
                tcpstate::SYN_SENT,
                tcpstate::ESTABLISHED,
                flags
            ))),
            [Action::Established]
        );
        // No syscall around it (io_uring, or syscall hooks off): the state path does.
        let v = run(&transition(
            tcpstate::SYN_SENT,
            tcpstate::ESTABLISHED,
            sockflag::ACTIVE,
        ));
        assert_eq!(actions(&v), [Action::Connect, Action::Established]);
        // A refused SYN without a syscall: connect, then a failed handshake.
        let v = run(&transition(
            tcpstate::SYN_SENT,
            tcpstate::CLOSE,
            sockflag::ACTIVE,
        ));
        assert_eq!(actions(&v), [Action::Connect, Action::Close]);
        assert_eq!(
            v[1].close.as_ref().unwrap().kind,
            CloseKind::HandshakeFailed
        );
        // From the syscall path.
        let mut e = ev(kind::CONNECT_RET);
        e.ret = -EINPROGRESS;
        e.flags = connflag::TCP_SEEN;
        e.fd = 7;
        let v = run(&e);
        assert_eq!(actions(&v), [Action::Connect]);
        assert_eq!(v[0].fd, Some(7));
    }

    #[test]
    fn exhaustion_in_connect_is_told_apart_from_collision_and_non_local() {
        let mut e = ev(kind::CONNECT_RET);
        e.ret = -EADDRNOTAVAIL;
        e.sport = 0;
        e.flags = connflag::TCP_SEEN | connflag::STATE_FAILED;
        let v = run(&e);
        assert_eq!(actions(&v), [Action::ConnectFailed]);
        assert_eq!(v[0].cause, Some(Cause::PortRangeExhausted));
        assert_eq!(v[0].errno, Some(EADDRNOTAVAIL));
        assert_eq!(v[0].transport, Transport::Tcp);
        assert_eq!(v[0].destination, Some("10.0.0.2:80".parse().unwrap()));
        assert_eq!(v[0].source.port(), 0);
        assert!(!v[0].passive, "connflag bits are not socket flags");

        e.sport = 5000; // bound first, 4-tuple taken
        assert_eq!(run(&e)[0].cause, Some(Cause::TupleCollision));

        e.flags = 0; // never reached SYN_SENT: not about ports
        let v = run(&e);
        assert_eq!(v[0].cause, Some(Cause::AddressNotAvailable));
        assert_eq!(v[0].transport, Transport::Unknown);
    }

    #[test]
    fn udp_autobind_failure_is_exhaustion() {
        let mut e = ev(kind::CONNECT_RET);
        e.ret = -EAGAIN;
        e.flags = 0;
        e.protocol = 0;
        let v = run(&e);
        assert_eq!(v[0].transport, Transport::Udp);
        assert_eq!(v[0].cause, Some(Cause::PortRangeExhausted));
        assert_eq!(v[0].source, "0.0.0.0:0".parse().unwrap());
    }

    #[test]
    fn other_connect_errors_are_not_port_problems() {
        let mut e = ev(kind::CONNECT_RET);
        e.ret = -111;
        e.flags = connflag::TCP_SEEN | connflag::STATE_FAILED;
        assert_eq!(run(&e)[0].cause, Some(Cause::Other));
    }

    #[test]
    fn exhaustion_outside_a_syscall_is_inferred_from_the_signature() {
        let mut e = transition(tcpstate::SYN_SENT, tcpstate::CLOSE, sockflag::ACTIVE);
        e.sport = 0;
        let v = run(&e);
        assert_eq!(actions(&v), [Action::ConnectFailed]);
        assert!(v[0].errno_inferred);
        assert_eq!(v[0].cause, Some(Cause::PortRangeExhausted));
    }

    #[test]
    fn bind_results() {
        let mut e = ev(kind::BIND_RET);
        e.sport = 0;
        e.fd = 3;
        let v = run(&e);
        assert_eq!(actions(&v), [Action::Bind]);
        assert_eq!(v[0].destination, None);
        e.ret = -EADDRINUSE;
        let v = run(&e);
        assert_eq!(actions(&v), [Action::BindFailed]);
        assert_eq!(v[0].cause, Some(Cause::PortRangeExhausted));
        e.sport = 8080;
        assert_eq!(run(&e)[0].cause, Some(Cause::PortInUse));
    }

    #[test]
    fn ipv4_mapped_addresses_show_as_ipv4() {
        let mut raw = [0u8; 16];
        raw[10] = 0xff;
        raw[11] = 0xff;
        raw[12..].copy_from_slice(&[192, 0, 2, 1]);
        assert_eq!(
            ip_from(AF_INET6, &raw),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        raw[10] = 0;
        assert!(ip_from(AF_INET6, &raw).is_ipv6());
    }

    #[test]
    fn unknown_kinds_produce_nothing() {
        assert!(run(&ev(77)).is_empty());
    }
}

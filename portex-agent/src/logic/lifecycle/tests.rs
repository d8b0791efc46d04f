//! Lifecycle decisions on synthetic kernel events.
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
    assert_eq!(v[0].duration_ns, Some(4_000_000));
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
    let close = v[1].close.as_ref().unwrap();
    assert_eq!(close.kind, CloseKind::HandshakeFailed);
    // No RST flag: unanswered or given up, not refused.
    assert!(!close.reset_received);
    let v = run(&transition(
        tcpstate::SYN_SENT,
        tcpstate::CLOSE,
        sockflag::ACTIVE | sockflag::RESET_RCVD,
    ));
    assert!(v[1].close.as_ref().unwrap().reset_received, "refused");
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

#[test]
fn a_retransmitted_syn_is_a_stalled_connect_with_how_long_it_waited() {
    let mut e = transition(tcpstate::SYN_SENT, tcpstate::SYN_SENT, sockflag::ACTIVE);
    e.kind = kind::SYN_RETRANS;
    e.birth_ns = 1_000_000;
    e.ts_ns = 1_001_000_000;
    let v = run(&e);
    assert_eq!(actions(&v), [Action::ConnectStalled]);
    let r = &v[0];
    assert_eq!(r.duration_ns, Some(1_000_000_000));
    assert_eq!(r.source, "10.0.0.1:40000".parse().unwrap());
    assert_eq!(r.destination, Some("10.0.0.2:80".parse().unwrap()));
    assert_eq!((r.cause, r.errno, r.close.is_none()), (None, None, true));
    assert_eq!(r.outcome(), "unknown");
    // A socket older than the agent: no start, no duration.
    e.birth_ns = 0;
    assert_eq!(run(&e)[0].duration_ns, None);
}

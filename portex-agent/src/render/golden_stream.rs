//! The golden tests' input: the namespace's settings and the kernel events of one
//! fixed stream (render::golden_tests runs it through every renderer).
use portex_common::{AF_INET, AF_INET6, Event, IPPROTO_TCP, connflag, kind, sockflag, tcpstate};

use super::golden_tests::S;
use crate::logic::{
    model::{Container, Workload},
    sysctls::NetSettings,
};

pub(super) fn settings() -> NetSettings {
    NetSettings {
        range: (40000, 40009),
        reserved: vec![(40009, 40009)],
        ..Default::default()
    }
}

pub(super) fn event(
    k: u16,
    pid: u32,
    comm: &str,
    sport: u16,
    dst: ([u8; 4], u16),
    ts: u64,
) -> Event {
    let mut e = Event::zeroed();
    e.kind = k;
    e.ts_ns = ts;
    e.skaddr = 0xffff_8881_0000_0000 + sport as u64;
    e.tgid = pid;
    e.tid = pid;
    e.family = AF_INET;
    e.protocol = IPPROTO_TCP;
    e.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
    e.daddr[..4].copy_from_slice(&dst.0);
    e.sport = sport;
    e.dport = dst.1;
    e.fd = 3;
    e.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    e
}

pub(super) fn state(
    pid: u32,
    sport: u16,
    dst: ([u8; 4], u16),
    old: u8,
    new: u8,
    flags: u32,
    ts: u64,
) -> Event {
    let mut e = event(kind::STATE, pid, "client", sport, dst, ts);
    e.fd = -1;
    e.oldstate = old;
    e.newstate = new;
    e.flags = flags;
    e.birth_ns = ts.saturating_sub(250_000_000);
    e
}

/// A client (pid 100) fills most of the pool towards 10.0.0.9:80, closes a few first
/// (TIME_WAIT) and one by reset, then fails with EADDRNOTAVAIL; a second process (pid
/// 200) talks to another backend over IPv6, and a bind() and a failed bind() go by.
pub(super) fn stream() -> Vec<Event> {
    let web = ([10, 0, 0, 9], 80);
    let api = ([10, 0, 0, 7], 443);
    let mut v = Vec::new();
    let mut ts = 2 * S;
    for port in 40000..40008u16 {
        v.push(event(kind::CONNECT_RET, 100, "client", port, web, ts));
        v.push(state(
            100,
            port,
            web,
            tcpstate::SYN_SENT,
            tcpstate::ESTABLISHED,
            sockflag::ACTIVE | sockflag::IN_CONNECT_SYSCALL,
            ts + 1000,
        ));
        ts += 150_000_000;
    }
    // Three close first (TIME_WAIT), one is reset, one closed by the peer.
    let (active, reset, passive) = (
        (tcpstate::FIN_WAIT2, sockflag::FIN_SENT),
        (tcpstate::ESTABLISHED, sockflag::RESET_RCVD),
        (tcpstate::LAST_ACK, sockflag::FIN_RCVD),
    );
    for (port, (from, flag)) in [
        (40000u16, active),
        (40001, active),
        (40002, active),
        (40003, reset),
        (40004, passive),
    ] {
        let flags = sockflag::ACTIVE | flag;
        v.push(state(100, port, web, from, tcpstate::CLOSE, flags, ts));
        ts += 10_000_000;
    }
    for port in [40003u16, 40004, 40008] {
        v.push(event(kind::CONNECT_RET, 100, "client", port, web, ts));
        ts += 5_000_000;
    }
    let mut fail = event(kind::CONNECT_RET, 100, "client", 0, web, ts);
    fail.ret = -99;
    fail.flags = connflag::TCP_SEEN | connflag::STATE_FAILED;
    v.push(fail);
    ts += 5_000_000;
    let mut v6 = event(kind::CONNECT_RET, 200, "api\u{1b}[1mworker", 40005, api, ts);
    v6.family = AF_INET6;
    v6.saddr = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
    v6.daddr = "fd00::7".parse::<std::net::Ipv6Addr>().unwrap().octets();
    v.push(v6);
    ts += 5_000_000;
    let mut bind = event(kind::BIND_RET, 200, "api", 8080, ([0, 0, 0, 0], 0), ts);
    bind.ret = -98;
    v.push(bind);
    ts += 5_000_000;
    let mut other = event(kind::CONNECT_RET, 300, "probe", 0, ([192, 0, 2, 1], 9), ts);
    other.ret = -111;
    v.push(other);
    ts += 5_000_000;
    // A connect whose SYN goes unanswered for a second (retransmitted), and one the
    // peer refuses (RST in SYN_SENT).
    let dead = ([192, 0, 2, 1], 443);
    let mut stall = state(
        300,
        40006,
        dead,
        tcpstate::SYN_SENT,
        tcpstate::SYN_SENT,
        0,
        ts,
    );
    stall.kind = kind::SYN_RETRANS;
    stall.flags = sockflag::ACTIVE | sockflag::SYN_RETRANSMITTED;
    stall.birth_ns = ts - S;
    ts += 5_000_000;
    let refused = sockflag::ACTIVE | sockflag::RESET_RCVD;
    let refused = state(
        300,
        40007,
        dead,
        tcpstate::SYN_SENT,
        tcpstate::CLOSE,
        refused,
        ts,
    );
    for mut e in [stall, refused] {
        e.comm = [0; 16];
        e.comm[..5].copy_from_slice(b"probe");
        v.push(e);
    }
    v
}

/// The container of pid 200: a Kubernetes pod's, named by its runtime.
pub(super) fn api_container() -> std::sync::Arc<Container> {
    std::sync::Arc::new(Container {
        id: "bb11".repeat(16),
        runtime: "cri-o",
        pod_uid: Some("9f8e7d6c-5b4a-3210-fedc-ba9876543210".into()),
        workload: Workload {
            name: Some("api".into()),
            image: Some("quay.io/acme/api:v3".into()),
            pod_name: Some("api-6b8f9d7c4-q8w2e".into()),
            pod_namespace: Some("billing".into()),
        },
    })
}

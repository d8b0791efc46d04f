//! Builders for unit tests across the crate: one record, one socket of a table, a NAT
//! pool and the conntrack entries behind one.
use crate::logic::{
    model::{Action, DiagSocket, Process, Record, Transport},
    nat::{CtEntry, NatPool, NatPoolKey, RangeSource},
};

/// The test gateway's TCP NAT pool in namespace `netns`: 10.78.0.1 -> 10.78.0.2:8080,
/// `used` of `size` ports (a rule's range), `time_wait` of them in TIME_WAIT, the pod
/// 10.77.0.2 holding `held`.
pub(crate) fn nat_pool(netns: u64, size: u32, used: u32, time_wait: u32, held: u32) -> NatPool {
    NatPool {
        key: NatPoolKey {
            netns,
            proto: 6,
            nat_ip: "10.78.0.1".parse().unwrap(),
            daddr: "10.78.0.2".parse().unwrap(),
            dport: 8080,
        },
        size,
        size_from: RangeSource::Rule,
        used,
        time_wait,
        sources: vec![("10.77.0.2".parse().unwrap(), held)],
    }
}

/// A masqueraded TCP connection from `src` to 10.78.0.2:8080, mapped to `nat`, in
/// TIME_WAIT or established.
pub(crate) fn ct_entry(src: &str, nat: &str, time_wait: bool) -> CtEntry {
    CtEntry {
        proto: 6,
        src: src.parse().unwrap(),
        dst: "10.78.0.2:8080".parse().unwrap(),
        reply_dst: nat.parse().unwrap(),
        snat: true,
        tcp_state: Some(if time_wait {
            crate::logic::nat::CT_TCP_TIME_WAIT
        } else {
            3
        }),
    }
}

/// `n` established TCP connections of the pod 10.77.0.2 to 10.78.0.2:8080, masqueraded
/// to 10.78.0.1 from port 40000 on, as conntrack lists them.
pub(crate) fn snat_entries(n: u16) -> Vec<CtEntry> {
    (0..n)
        .map(|i| CtEntry {
            proto: 6,
            src: format!("10.77.0.2:{}", 50000 + i).parse().unwrap(),
            dst: "10.78.0.2:8080".parse().unwrap(),
            reply_dst: format!("10.78.0.1:{}", 40000 + i).parse().unwrap(),
            snat: true,
            tcp_state: Some(3),
        })
        .collect()
}

/// A TCP record of `pid`/`tid` named `thread`, from `source` to `destination`.
pub(crate) fn record(
    action: Action,
    (pid, tid, thread): (u32, u32, &str),
    source: &str,
    destination: Option<&str>,
) -> Record {
    Record {
        ts_ns: 1,
        action,
        process: Process {
            pid,
            tid,
            thread_name: thread.into(),
            cgroup_id: 0,
        },
        transport: Transport::Tcp,
        source: source.parse().unwrap(),
        destination: destination.map(|d| d.parse().unwrap()),
        errno: None,
        errno_inferred: false,
        cause: None,
        close: None,
        duration_ns: None,
        socket: 1,
        fd: None,
        owner_guessed: false,
        passive: false,
        pool: None,
        netns: None,
        container: None,
    }
}

/// A TCP socket as sock_diag lists it.
pub(crate) fn tcp(state: u8, local: &str, remote: &str, inode: u64) -> DiagSocket {
    DiagSocket {
        protocol: 6,
        state,
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        inode,
        expires_ms: 0,
    }
}

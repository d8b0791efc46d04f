//! Builders for unit tests across the crate: one record, one socket of a table.
use crate::logic::model::{Action, DiagSocket, Process, Record, Transport};

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

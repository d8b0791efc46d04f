//! The enrich stage: what user space adds to a kernel record from the host: the
//! process name (/proc), the socket behind a bind() or a failed connect() (pidfd), the
//! container (cgroup).
use std::sync::Arc;

use crate::{
    logic::model::{Action, Record, Transport},
    sys::{
        containers::Resolver,
        procinfo::{ProcNames, socket_of},
    },
};

pub(crate) struct Enrich {
    names: ProcNames,
    containers: Resolver,
}

impl Enrich {
    pub(crate) fn new() -> Enrich {
        Enrich {
            names: ProcNames::new(5_000_000_000),
            containers: Resolver::new(),
        }
    }

    /// The process (thread-group leader) name and start time of a record's process.
    pub(crate) fn process(&mut self, r: &Record, now: u64) -> (Arc<str>, u64) {
        self.names
            .lookup(r.process.pid, now, &r.process.thread_name.name())
    }

    pub(crate) fn container(&mut self, r: &mut Record, now: u64) {
        r.container = self.containers.container(r.process.cgroup_id, now);
    }
}

/// bind() results carry only the port asked for (0), and a failed connect() on a socket
/// that never reached TCP's state machine carries no protocol: ask the socket itself.
///
/// Returns false when the record is not worth showing: a bind() with
/// IP_BIND_ADDRESS_NO_PORT took no port (connect() picks it). The socket says port 0
/// until connect(), and the port connect() chose after it, so the option is asked.
pub(crate) fn resolve_socket(r: &mut Record) -> bool {
    let needs = match r.action {
        Action::Bind | Action::BindFailed => true,
        Action::ConnectFailed => r.transport == Transport::Unknown,
        _ => false,
    };
    if !needs {
        return true;
    }
    let Some(s) = r.fd.and_then(|fd| socket_of(r.process.pid, fd)) else {
        return true;
    };
    r.transport = s.transport;
    if r.action == Action::Bind {
        if s.local.port() == 0 || s.bind_no_port {
            return false;
        }
        r.source = s.local;
    }
    true
}

//! The event line through serde_json: the same fields, in the same order, as the
//! hand-written `json::write_line`. Not on the agent's path: the micro-benchmark
//! (`cargo xtask bench-writer`) times both on the same records and the hand-written
//! one was kept (README "Performance"); this one is the reference the unit tests
//! hold the hand-written writer to.
use std::net::{IpAddr, SocketAddr};

use serde::{Serialize, Serializer};

use super::{
    View,
    json::{ECS_VERSION, connection_start, direction, event_type},
};
use crate::logic::{
    clock::rfc3339_micros,
    errno,
    model::{Container, Record},
};

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: &'a str,
    ecs: Ecs,
    host: Host<'a>,
    event: Event<'a>,
    process: Process<'a>,
    source: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<Endpoint>,
    network: Network,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Error>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<ContainerFields<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    orchestrator: Option<Orchestrator<'a>>,
    portex: Portex,
}

#[derive(Serialize)]
struct Ecs {
    version: &'static str,
}

/// `host.*` as given (the hand-written writer renders it once; here it is serialised on
/// every line, as a serde writer would).
#[derive(Serialize)]
pub struct Host<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
}

#[derive(Serialize)]
struct Event<'a> {
    kind: &'static str,
    category: [&'static str; 1],
    #[serde(rename = "type")]
    type_: &'a [&'static str],
    action: &'static str,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
}

#[derive(Serialize)]
struct Process<'a> {
    pid: u32,
    name: &'a str,
    thread: Thread<'a>,
}

#[derive(Serialize)]
struct Thread<'a> {
    id: u32,
    name: &'a str,
}

#[derive(Serialize)]
struct Endpoint {
    ip: IpAddr,
    port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Endpoint {
        Endpoint {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

#[derive(Serialize)]
struct Network {
    transport: &'static str,
    #[serde(rename = "type")]
    type_: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
}

#[derive(Serialize)]
struct Error {
    code: &'static str,
}

#[derive(Serialize)]
struct ContainerFields<'a> {
    id: &'a str,
    runtime: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<Image<'a>>,
}

#[derive(Serialize)]
struct Image<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Orchestrator<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    resource: Resource<'a>,
}

#[derive(Serialize)]
struct Resource<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

#[derive(Serialize)]
struct Portex {
    cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    netns: Option<u64>,
    #[serde(skip_serializing_if = "is_zero", serialize_with = "hex")]
    socket: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
    #[serde(skip_serializing_if = "is_false")]
    errno_inferred: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    close: Option<Close>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<Pool>,
    #[serde(skip_serializing_if = "is_false")]
    owner_guessed: bool,
}

#[derive(Serialize)]
struct Close {
    kind: &'static str,
    time_wait: bool,
    from_state: &'static str,
    #[serde(skip_serializing_if = "is_false")]
    reset_received: bool,
}

#[derive(Serialize)]
struct Pool {
    used: u32,
    size: u32,
    time_wait: u32,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// Lower-case hex without leading zeros, written through the formatter (no String).
fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:x}"))
}

fn container(c: &Container) -> (ContainerFields<'_>, Option<Orchestrator<'_>>) {
    let w = &c.workload;
    let fields = ContainerFields {
        id: &c.id,
        runtime: c.runtime,
        name: w.name.as_deref(),
        image: w.image.as_deref().map(|name| Image { name }),
    };
    let orch = (c.pod_uid.is_some() || w.pod_name.is_some()).then_some(Orchestrator {
        type_: "kubernetes",
        namespace: w.pod_namespace.as_deref(),
        resource: Resource {
            type_: "pod",
            name: w.pod_name.as_deref(),
            id: c.pod_uid.as_deref(),
        },
    });
    (fields, orch)
}

/// Appends the event as one line of NDJSON, newline included, into a byte buffer (a
/// serde writer's natural output). `ts` is scratch space for the timestamp.
pub fn write_line(v: &View, host: &Host, ts: &mut String, out: &mut Vec<u8>) {
    let r: &Record = v.rec;
    ts.clear();
    rfc3339_micros(v.unix_ns, ts);
    let thread_name = r.process.thread_name.name();
    let (container, orchestrator) = match r.container.as_deref().map(container) {
        Some((c, o)) => (Some(c), o),
        None => (None, None),
    };
    let line = Line {
        timestamp: ts,
        ecs: Ecs {
            version: ECS_VERSION,
        },
        host: Host {
            name: host.name,
            id: host.id,
        },
        event: Event {
            kind: "event",
            category: ["network"],
            type_: event_type(r),
            action: r.action.as_str(),
            outcome: r.outcome(),
            duration: r.duration_ns,
            start: connection_start(v).map(rfc3339),
            end: connection_start(v).map(|_| rfc3339(v.unix_ns)),
        },
        process: Process {
            pid: r.process.pid,
            name: v.process_name,
            thread: Thread {
                id: r.process.tid,
                name: &thread_name,
            },
        },
        source: r.source.into(),
        destination: r.destination.map(Endpoint::from),
        network: Network {
            transport: r.transport.as_str(),
            type_: r.network_type(),
            direction: direction(r),
        },
        error: r.errno.map(|e| Error {
            code: errno::name(e),
        }),
        container,
        orchestrator,
        portex: Portex {
            cgroup_id: r.process.cgroup_id,
            netns: r.netns,
            socket: r.socket,
            cause: r.cause.map(|c| c.as_str()),
            errno_inferred: r.errno_inferred,
            close: r.close.as_ref().map(|c| Close {
                kind: c.kind.as_str(),
                time_wait: c.time_wait,
                from_state: c.from_state,
                reset_received: c.reset_received,
            }),
            pool: r.pool.map(|p| Pool {
                used: p.used,
                size: p.size,
                time_wait: p.time_wait,
            }),
            owner_guessed: r.owner_guessed,
        },
    };
    // Serialising these types into a Vec cannot fail (no map with non-string keys, no
    // failing Serialize impl).
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

fn rfc3339(unix_ns: i128) -> String {
    let mut s = String::with_capacity(32);
    rfc3339_micros(unix_ns, &mut s);
    s
}

//! One JSON object per line, nested ECS objects. Written by hand into a reused buffer:
//! this runs once per event on the agent's hot path.
use std::fmt::Write;

use super::View;
use crate::{
    logic::clock::rfc3339_micros,
    logic::errno,
    logic::model::{Action, Container, Record},
};

/// Appends `s` as a JSON string literal. Control characters are escaped, so untrusted
/// process names cannot break the line.
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    // Almost every name needs no escaping: one copy instead of a push per character.
    if !s
        .bytes()
        .any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f)
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_u64(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Lower-case hex without leading zeros, as `{:x}` prints it.
fn push_hex(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// IPv4 by hand (this runs twice per line); IPv6 through Display.
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            let mut b = itoa::Buffer::new();
            for (i, x) in o.iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(b.format(*x));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn push_endpoint(out: &mut String, key: &str, a: std::net::SocketAddr) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":{\"ip\":\"");
    push_ip(out, a.ip());
    out.push_str("\",\"port\":");
    push_u64(out, a.port() as u64);
    out.push('}');
}

/// The ECS release whose field definitions the lines follow (docs/events.md).
pub(crate) const ECS_VERSION: &str = "8.17.0";

/// What every line carries after its timestamp, the same on every line: `ecs.version`,
/// `host.name` and `host.id`. Rendered (and escaped) once.
#[derive(Clone, Debug)]
pub struct Header {
    fragment: String,
}

impl Header {
    pub fn new(host_name: &str, host_id: Option<&str>) -> Header {
        let mut f = String::with_capacity(96);
        f.push_str(",\"ecs\":{\"version\":\"");
        f.push_str(ECS_VERSION);
        f.push_str("\"},\"host\":{\"name\":");
        push_str(&mut f, host_name);
        if let Some(id) = host_id {
            f.push_str(",\"id\":");
            push_str(&mut f, id);
        }
        f.push('}');
        Header { fragment: f }
    }
}

/// ECS `event.type` of a record: the values ECS expects for category `network`
/// (access, allowed, connection, denied, end, info, protocol, start). A failure is the
/// attempt it failed (`connection` + `start`) with `event.outcome: failure`, as ECS
/// words it for failed attempts: `error` is not among network's expected types.
pub(crate) fn event_type(r: &Record) -> &'static [&'static str] {
    match r.action {
        Action::Connect | Action::ConnectFailed => &["connection", "start"],
        // Accepted: the first line of the server side's connection.
        Action::Established if r.passive => &["connection", "start"],
        Action::Established => &["connection"],
        Action::Close | Action::Connection => &["connection", "end"],
        Action::TimeWait | Action::ConnectStalled => &["connection", "info"],
        Action::Bind | Action::BindFailed => &["info"],
    }
}

/// ECS `event.start` of a `connection` line (Unix ns): its close minus its duration.
pub(crate) fn connection_start(v: &View) -> Option<i128> {
    let r = v.rec;
    (r.action == Action::Connection)
        .then_some(r.duration_ns)
        .flatten()
        .map(|d| v.unix_ns - d as i128)
}

/// ECS `network.direction` from the host's point of view: `egress` for connections
/// this host opened, `ingress` for those it accepted; none for a bind.
pub(crate) fn direction(r: &Record) -> Option<&'static str> {
    if r.passive {
        Some("ingress")
    } else if r.destination.is_some() {
        Some("egress")
    } else {
        None
    }
}

fn push_str_array(out: &mut String, items: &[&str]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
    out.push(']');
}

/// `container.*` and `orchestrator.*`: every string here came from a cgroup path or a
/// runtime's file, so each goes through `push_str`, validated or not.
fn push_container(out: &mut String, c: &Container) {
    out.push_str(",\"container\":{\"id\":");
    push_str(out, &c.id);
    out.push_str(",\"runtime\":\"");
    out.push_str(c.runtime);
    out.push('"');
    let w = &c.workload;
    if let Some(n) = &w.name {
        out.push_str(",\"name\":");
        push_str(out, n);
    }
    if let Some(i) = &w.image {
        out.push_str(",\"image\":{\"name\":");
        push_str(out, i);
        out.push('}');
    }
    out.push('}');
    if c.pod_uid.is_none() && w.pod_name.is_none() {
        return;
    }
    out.push_str(",\"orchestrator\":{\"type\":\"kubernetes\"");
    if let Some(ns) = &w.pod_namespace {
        out.push_str(",\"namespace\":");
        push_str(out, ns);
    }
    out.push_str(",\"resource\":{\"type\":\"pod\"");
    if let Some(n) = &w.pod_name {
        out.push_str(",\"name\":");
        push_str(out, n);
    }
    if let Some(uid) = &c.pod_uid {
        out.push_str(",\"id\":");
        push_str(out, uid);
    }
    out.push_str("}}");
}

/// Appends the event as one line of NDJSON, newline included.
pub fn write_line(v: &View, h: &Header, out: &mut String) {
    let r = v.rec;
    out.push_str("{\"@timestamp\":\"");
    rfc3339_micros(v.unix_ns, out);
    out.push('"');
    out.push_str(&h.fragment);
    out.push_str(",\"event\":{\"kind\":\"event\",\"category\":[\"network\"],\"type\":");
    push_str_array(out, event_type(r));
    out.push_str(",\"action\":\"");
    out.push_str(r.action.as_str());
    out.push_str("\",\"outcome\":\"");
    out.push_str(r.outcome());
    out.push('"');
    if let Some(d) = r.duration_ns {
        out.push_str(",\"duration\":");
        push_u64(out, d);
    }
    if let Some(start) = connection_start(v) {
        out.push_str(",\"start\":\"");
        rfc3339_micros(start, out);
        out.push_str("\",\"end\":\"");
        rfc3339_micros(v.unix_ns, out);
        out.push('"');
    }
    out.push_str("},\"process\":{\"pid\":");
    push_u64(out, r.process.pid as u64);
    out.push_str(",\"name\":");
    push_str(out, v.process_name);
    out.push_str(",\"thread\":{\"id\":");
    push_u64(out, r.process.tid as u64);
    out.push_str(",\"name\":");
    push_str(out, &r.process.thread_name.name());
    out.push_str("}}");
    push_endpoint(out, "source", r.source);
    if let Some(d) = r.destination {
        push_endpoint(out, "destination", d);
    }
    out.push_str(",\"network\":{\"transport\":\"");
    out.push_str(r.transport.as_str());
    out.push_str("\",\"type\":\"");
    out.push_str(r.network_type());
    out.push('"');
    if let Some(d) = direction(r) {
        out.push_str(",\"direction\":\"");
        out.push_str(d);
        out.push('"');
    }
    out.push('}');
    if let Some(e) = r.errno {
        out.push_str(",\"error\":{\"code\":\"");
        out.push_str(errno::name(e));
        out.push_str("\"}");
    }
    if let Some(c) = &r.container {
        push_container(out, c);
    }
    out.push_str(",\"portex\":{\"cgroup_id\":");
    push_u64(out, r.process.cgroup_id);
    if let Some(ns) = r.netns {
        out.push_str(",\"netns\":");
        push_u64(out, ns);
    }
    if r.socket != 0 {
        out.push_str(",\"socket\":\"");
        push_hex(out, r.socket);
        out.push('"');
    }
    if let Some(c) = r.cause {
        out.push_str(",\"cause\":\"");
        out.push_str(c.as_str());
        out.push('"');
    }
    if r.errno_inferred {
        out.push_str(",\"errno_inferred\":true");
    }
    if let Some(c) = &r.close {
        out.push_str(",\"close\":{\"kind\":\"");
        out.push_str(c.kind.as_str());
        out.push_str(if c.time_wait {
            "\",\"time_wait\":true,\"from_state\":\""
        } else {
            "\",\"time_wait\":false,\"from_state\":\""
        });
        out.push_str(c.from_state);
        out.push('"');
        if c.reset_received {
            out.push_str(",\"reset_received\":true");
        }
        out.push('}');
    }
    if let Some(p) = r.pool {
        out.push_str(",\"pool\":{\"used\":");
        push_u64(out, p.used as u64);
        out.push_str(",\"size\":");
        push_u64(out, p.size as u64);
        out.push_str(",\"time_wait\":");
        push_u64(out, p.time_wait as u64);
        out.push('}');
    }
    if r.owner_guessed {
        out.push_str(",\"owner_guessed\":true");
    }
    out.push_str("}}\n");
}

/// A `pool_pressure` line: a pool crossed a utilisation threshold.
pub(crate) fn write_pressure(
    p: &crate::logic::ledger::Pressure,
    unix_ns: i128,
    h: &Header,
    out: &mut String,
) {
    let v = &p.view;
    let k = &v.pool.key;
    out.push_str("{\"@timestamp\":\"");
    rfc3339_micros(unix_ns, out);
    out.push('"');
    out.push_str(&h.fragment);
    out.push_str(",\"event\":{\"kind\":\"alert\",\"category\":[\"network\"],\"type\":[\"info\"],\"action\":\"pool_pressure\",\"outcome\":\"unknown\",\"severity\":");
    let _ = write!(
        out,
        "{}",
        if p.severity == crate::logic::diagnose::Severity::Critical {
            3
        } else {
            2
        }
    );
    out.push('}');
    if let Some(o) = v.pool.holders.iter().find_map(|h| h.owner.as_ref()) {
        let _ = write!(out, ",\"process\":{{\"pid\":{},\"name\":", o.pid);
        push_str(out, &o.name);
        out.push('}');
    }
    let _ = write!(
        out,
        ",\"source\":{{\"ip\":\"{}\"}},\"destination\":{{\"ip\":\"{}\",\"port\":{}}},\"network\":{{\"transport\":\"{}\",\"type\":\"{}\"}}",
        k.saddr,
        k.daddr,
        k.dport,
        k.transport.as_str(),
        if k.daddr.is_ipv4() { "ipv4" } else { "ipv6" }
    );
    let _ = write!(
        out,
        ",\"portex\":{{\"netns\":{},\"pool\":{{\"severity\":\"{}\",\"used\":{},\"size\":{},\"time_wait\":{},\"utilisation\":{:.4},\"opens_per_s\":{:.1},\"steady_state_used\":{:.0}",
        k.netns,
        p.severity.as_str(),
        v.pool.used,
        v.pool.size,
        v.pool.time_wait,
        v.pool.utilisation(),
        v.opens_per_s,
        v.forecast.steady_state_used
    );
    if let Some(s) = v.forecast.seconds_to_full {
        let _ = write!(out, ",\"seconds_to_full\":{s:.1}");
    }
    out.push_str(",\"holders\":[");
    for (i, h) in v.pool.holders.iter().take(5).enumerate() {
        if i > 0 {
            out.push(',');
        }
        match &h.owner {
            Some(o) => {
                let _ = write!(out, "{{\"pid\":{},\"name\":", o.pid);
                push_str(out, &o.name);
            }
            None => out.push_str("{\"pid\":null,\"name\":null"),
        }
        let _ = write!(out, ",\"held\":{},\"time_wait\":{}}}", h.held, h.time_wait);
    }
    out.push_str("]}}}\n");
}

/// A `pool_pressure` line of a NAT pool (logic::nat_view): the NAT address as the
/// source, `portex.pool.kind` "nat", and the original sources that hold its mappings
/// instead of processes.
pub(crate) fn write_nat_pressure(
    p: &crate::logic::nat_view::NatPressure,
    unix_ns: i128,
    h: &Header,
    out: &mut String,
) {
    let pool = &p.pool;
    let k = &pool.key;
    out.push_str("{\"@timestamp\":\"");
    rfc3339_micros(unix_ns, out);
    out.push('"');
    out.push_str(&h.fragment);
    let _ = write!(
        out,
        ",\"event\":{{\"kind\":\"alert\",\"category\":[\"network\"],\"type\":[\"info\"],\"action\":\"pool_pressure\",\"outcome\":\"unknown\",\"severity\":{}}}",
        if p.severity == crate::logic::diagnose::Severity::Critical {
            3
        } else {
            2
        }
    );
    let _ = write!(
        out,
        ",\"source\":{{\"ip\":\"{}\"}},\"destination\":{{\"ip\":\"{}\",\"port\":{}}},\"network\":{{\"transport\":\"{}\",\"type\":\"{}\"}}",
        k.nat_ip,
        k.daddr,
        k.dport,
        crate::logic::nat::proto_name(k.proto),
        if k.daddr.is_ipv4() { "ipv4" } else { "ipv6" }
    );
    let _ = write!(
        out,
        ",\"portex\":{{\"netns\":{},\"pool\":{{\"kind\":\"nat\",\"severity\":\"{}\",\"used\":{},\"size\":{},\"size_from\":\"{}\",\"time_wait\":{},\"utilisation\":{:.4},\"sources\":[",
        k.netns,
        p.severity.as_str(),
        pool.used,
        pool.size,
        pool.size_from.as_str(),
        pool.time_wait,
        pool.utilisation()
    );
    for (i, (ip, held)) in pool
        .sources
        .iter()
        .take(crate::logic::nat_view::PRESSURE_SOURCES)
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"ip\":\"{ip}\",\"held\":{held}");
        if let Some(Some(o)) = p.processes.get(i) {
            let _ = write!(out, ",\"process\":{{\"pid\":{},\"name\":", o.pid);
            push_str(out, &o.name);
            out.push('}');
        }
        if let Some(Some(c)) = p.containers.get(i) {
            out.push_str(",\"container\":{\"id\":");
            push_str(out, c);
            out.push('}');
        }
        out.push('}');
    }
    out.push_str("]}}}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_the_formatter() {
        for v in [0u64, 1, 0xf, 0x10, 0xffff_8881_2345_6780, u64::MAX] {
            let mut s = String::new();
            push_hex(&mut s, v);
            assert_eq!(s, format!("{v:x}"));
        }
    }

    #[test]
    fn strings_are_escaped_only_when_needed() {
        let mut s = String::new();
        push_str(&mut s, "curl");
        push_str(&mut s, "a\"b\\c\u{1b}[31m\u{7f}é");
        assert_eq!(s, "\"curl\"\"a\\\"b\\\\c\\u001b[31m\\u007fé\"");
    }
}

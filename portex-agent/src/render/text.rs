//! One human-readable line per event.
use std::fmt::Write;

use super::View;
use crate::{logic::clock::rfc3339_micros, logic::errno};

pub(crate) use crate::logic::untrusted::sanitize;

pub fn write_line(v: &View, out: &mut String) {
    let r = v.rec;
    let mut ts = String::with_capacity(32);
    rfc3339_micros(v.unix_ns, &mut ts);
    // Time of day is enough on a terminal: HH:MM:SS.micros
    out.push_str(ts.get(11..26).unwrap_or(&ts));
    let _ = write!(out, " {:<14} {:>7} ", r.action.as_str(), r.process.pid);
    sanitize(v.process_name, out);
    let _ = write!(out, " {} {}", r.transport.as_str(), r.source);
    if let Some(d) = r.destination {
        let _ = write!(out, " -> {d}");
    }
    if let Some(e) = r.errno {
        let _ = write!(out, " {}", errno::name(e));
    }
    if let Some(c) = r.cause {
        let _ = write!(out, " ({})", c.describe());
    }
    if let Some(c) = &r.close {
        let _ = write!(out, " {}", c.kind.as_str());
        if c.reset_received && c.kind == crate::logic::model::CloseKind::HandshakeFailed {
            out.push_str(" refused");
        }
        if c.time_wait {
            out.push_str(" time_wait");
        }
    }
    if let Some(d) = r.duration_ns {
        let us = d / 1000;
        let _ = write!(out, " {}.{:03}ms", us / 1000, us % 1000);
    }
    if let Some(c) = &r.container {
        push_workload(c, out);
    }
    out.push('\n');
}

/// ` pod=NAMESPACE/NAME container=NAME` (the short id when the runtime named none):
/// names a runtime recorded, so shown through `sanitize` like process names.
fn push_workload(c: &crate::logic::model::Container, out: &mut String) {
    let w = &c.workload;
    if let Some(pod) = &w.pod_name {
        out.push_str(" pod=");
        if let Some(ns) = &w.pod_namespace {
            sanitize(ns, out);
            out.push('/');
        }
        sanitize(pod, out);
    }
    out.push_str(" container=");
    match &w.name {
        Some(n) => sanitize(n, out),
        None => out.push_str(c.id.get(..12).unwrap_or(&c.id)),
    }
}

/// A pool crossed a utilisation threshold.
pub(crate) fn write_pressure(p: &crate::logic::ledger::Pressure, unix_ns: i128, out: &mut String) {
    let mut ts = String::with_capacity(32);
    rfc3339_micros(unix_ns, &mut ts);
    out.push_str(ts.get(11..26).unwrap_or(&ts));
    let v = &p.view;
    let k = &v.pool.key;
    let _ = write!(
        out,
        " pool_pressure  [{}] {} {}/{} used ({:.0}%), {} in TIME_WAIT",
        p.severity.as_str(),
        k.label(),
        v.pool.used,
        v.pool.size,
        v.pool.utilisation() * 100.0,
        v.pool.time_wait
    );
    if let Some(s) = v.forecast.seconds_to_full {
        let _ = write!(out, ", full in {s:.0}s");
    }
    let holders: Vec<String> = v
        .pool
        .holders
        .iter()
        .take(3)
        .map(|h| format!("{} ({})", h.label(), h.held))
        .collect();
    let _ = writeln!(out, "; top holders: {}", holders.join(", "));
}

/// A NAT pool crossed a utilisation threshold.
pub(crate) fn write_nat_pressure(
    p: &crate::logic::nat_view::NatPressure,
    unix_ns: i128,
    out: &mut String,
) {
    let mut ts = String::with_capacity(32);
    rfc3339_micros(unix_ns, &mut ts);
    out.push_str(ts.get(11..26).unwrap_or(&ts));
    let pool = &p.pool;
    let _ = write!(
        out,
        " pool_pressure  [{}] {} {}/{} mapped ({:.0}%), {} in TIME_WAIT",
        p.severity.as_str(),
        pool.key.label(),
        pool.used,
        pool.size,
        pool.utilisation() * 100.0,
        pool.time_wait
    );
    let sources: Vec<String> = pool
        .sources
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, (ip, n))| match p.processes.get(i) {
            Some(Some(o)) => {
                let mut name = String::new();
                sanitize(&o.name, &mut name);
                format!("{ip} ({n}, {} {name})", o.pid)
            }
            _ => format!("{ip} ({n})"),
        })
        .collect();
    let _ = writeln!(out, "; top sources: {}", sources.join(", "));
}

/// "0.1", "20", "471": a decimal only where it matters.
pub(crate) fn rate(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::{
        fixtures::record,
        model::{Action, Cause, CloseInfo, CloseKind, Record, Transport},
    };

    /// 2026-11-26T18:08:31.727400123Z
    const UNIX_NS: i128 = 1_795_716_511_727_400_123;

    fn rec(action: Action, source: &str, destination: Option<&str>) -> Record {
        let mut r = record(action, (8133, 8134, "worker"), source, destination);
        r.socket = 0xffff_8881_0000_0040;
        r.netns = Some(4026531840);
        r
    }

    fn line(r: &Record, name: &str) -> String {
        let mut out = String::new();
        write_line(
            &View {
                rec: r,
                unix_ns: UNIX_NS,
                process_name: name,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn a_connect_failure_names_errno_and_cause() {
        let mut r = rec(Action::ConnectFailed, "127.0.0.1:0", Some("127.0.0.1:5000"));
        r.errno = Some(99);
        r.errno_inferred = true;
        r.cause = Some(Cause::PortRangeExhausted);
        assert_eq!(
            line(&r, "python3"),
            "18:08:31.727400 connect_failed    8133 python3 tcp 127.0.0.1:0 -> 127.0.0.1:5000 \
             EADDRNOTAVAIL (no free source port (ip_local_port_range exhausted))\n"
        );
    }

    #[test]
    fn a_connect_is_time_action_pid_name_transport_and_both_ends() {
        let r = rec(Action::Connect, "10.0.0.1:40001", Some("10.0.0.9:443"));
        assert_eq!(
            line(&r, "curl"),
            "18:08:31.727400 connect           8133 curl tcp 10.0.0.1:40001 -> 10.0.0.9:443\n"
        );
    }

    #[test]
    fn a_close_shows_its_kind_time_wait_and_duration_in_milliseconds() {
        let mut r = rec(Action::Close, "10.0.0.1:40001", Some("10.0.0.9:443"));
        r.close = Some(CloseInfo {
            reset_received: false,
            kind: CloseKind::Active,
            time_wait: true,
            from_state: "FIN_WAIT2",
        });
        r.duration_ns = Some(12_345_678);
        assert_eq!(
            line(&r, "curl"),
            "18:08:31.727400 close             8133 curl tcp 10.0.0.1:40001 -> 10.0.0.9:443 active time_wait 12.345ms\n"
        );
        r.close = Some(CloseInfo {
            reset_received: false,
            kind: CloseKind::Reset,
            time_wait: false,
            from_state: "ESTABLISHED",
        });
        r.duration_ns = Some(7_000);
        assert_eq!(
            line(&r, "curl"),
            "18:08:31.727400 close             8133 curl tcp 10.0.0.1:40001 -> 10.0.0.9:443 reset 0.007ms\n"
        );
    }

    #[test]
    fn a_bind_has_no_destination_and_ipv6_is_bracketed() {
        let mut r = rec(Action::Bind, "[::1]:40002", None);
        r.transport = Transport::Udp;
        r.process.pid = 12;
        assert_eq!(
            line(&r, "dns"),
            "18:08:31.727400 bind                12 dns udp [::1]:40002\n"
        );
    }

    #[test]
    fn a_container_shows_its_pod_and_name_escaped() {
        let mut r = rec(Action::Connect, "10.0.0.1:40001", Some("10.0.0.9:443"));
        let mut c = crate::logic::model::Container {
            id: "ab".repeat(32),
            runtime: "containerd",
            pod_uid: None,
            workload: Default::default(),
        };
        r.container = Some(c.clone().into());
        assert!(line(&r, "curl").ends_with(" container=abababababab\n"));
        c.workload.name = Some("web\u{1b}[2J".into());
        c.workload.pod_name = Some("web-1".into());
        c.workload.pod_namespace = Some("shop".into());
        r.container = Some(c.into());
        assert!(
            line(&r, "curl").ends_with(" pod=shop/web-1 container=web\\x1b[2J\n"),
            "{}",
            line(&r, "curl")
        );
    }

    #[test]
    fn an_untrusted_name_cannot_drive_the_terminal() {
        let r = rec(Action::Connect, "10.0.0.1:40001", Some("10.0.0.9:443"));
        let l = line(&r, "\u{1b}[2Jevil\u{202e}x");
        assert_eq!(
            l,
            "18:08:31.727400 connect           8133 \\x1b[2Jevil\\u{202e}x tcp 10.0.0.1:40001 -> 10.0.0.9:443\n"
        );
        assert_eq!(l.matches('\n').count(), 1);
    }
}

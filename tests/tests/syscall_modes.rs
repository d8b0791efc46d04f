//! `portex watch --syscall-hooks off` and `on`: without the connect/bind syscall
//! tracepoints a TCP exhaustion is still reported (errno inferred from the state
//! signature); with them the errno is read from the syscall and bind() is seen. And a
//! bind() with IP_BIND_ADDRESS_NO_PORT, which takes no port, is not a `bind` event.
use std::net::SocketAddr;

use portex_e2e::*;

const EADDRNOTAVAIL: &str = "99";
const EADDRINUSE: &str = "98";

fn port_of(addr: &str) -> u64 {
    addr.parse::<SocketAddr>().unwrap().port() as u64
}

/// A TCP exhaustion towards 127.0.0.1:PORT (4 ports, 8 attempts) and a bind(0)
/// exhaustion (4 ports, 8 attempts), each in its own namespace, under `watch --json
/// --syscall-hooks MODE`, which says it attached `programs` programs. Each of the 4
/// failing connects is one connect_failed: EADDRNOTAVAIL, the range exhausted.
fn exhaust_under(mode: &str, programs: usize, port: u16) -> (Finished, Driven, Driven) {
    let tag = format!("hooks-{mode}");
    let tcp_ns = Netns::with_range(&format!("{tag}-tcp"), 40000, 40003);
    let bind_ns = Netns::with_range(&format!("{tag}-bind"), 40000, 40003);
    let portex = Portex::start(&["watch", "--json", "--syscall-hooks", mode]);
    let tcp = tcp_ns.drive(&["exhaust-tcp", &format!("127.0.0.1:{port}"), "8"]);
    let bind = bind_ns.drive(&["exhaust-bind", "127.0.0.1:0", "8"]);
    let tcp_pid = pid_needle(tcp.pid);
    portex.wait_lines_with(&[&tcp_pid, "\"action\":\"connect_failed\""], 4);
    if mode == "on" {
        portex.wait_lines_with(&[&pid_needle(bind.pid), "\"action\":\"bind_failed\""], 4);
    }
    let out = portex.stop();
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);
    assert_eq!(tcp.facts("connect ok ").len(), 4, "{:?}", tcp.lines);
    assert_eq!(
        tcp.facts("connect err "),
        [EADDRNOTAVAIL; 4],
        "{:?}",
        tcp.lines
    );
    assert_eq!(bind.facts("bind ok ").len(), 4, "{:?}", bind.lines);
    assert_eq!(bind.facts("bind err "), [EADDRINUSE; 4], "{:?}", bind.lines);
    let attached = format!("({programs} programs attached, syscall hooks {mode})");
    assert!(
        out.stderr.iter().any(|l| l.contains(&attached)),
        "{:?}",
        out.stderr
    );
    let ev = out.events_of(tcp.pid);
    let fails = with_action(&ev, "connect_failed");
    assert_eq!(fails.len(), 4, "{}", out.dump(tcp.pid));
    for f in &fails {
        assert_eq!(f["error"]["code"], "EADDRNOTAVAIL", "{f}");
        assert_eq!(f["portex"]["cause"], "port_range_exhausted", "{f}");
        assert_eq!(f["destination"]["port"], port, "{f}");
    }
    (out, tcp, bind)
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn hooks_off_still_reports_a_tcp_exhaustion_with_an_inferred_errno() {
    if !require_root() {
        return;
    }
    let (out, tcp, bind) = exhaust_under("off", 3, 8101);
    let ev = out.events_of(tcp.pid);
    for f in with_action(&ev, "connect_failed") {
        assert_eq!(f["portex"]["errno_inferred"], true, "{f}");
        assert_eq!(f["source"]["port"], 0, "{f}");
    }
    // The lifecycle does not need the hooks either.
    assert_eq!(
        source_ports(&with_action(&ev, "connect")),
        tcp.ports("connect ok "),
        "{}",
        out.dump(tcp.pid)
    );
    // bind() is invisible without them: neither its ports nor its failures.
    let ev = out.events_of(bind.pid);
    assert!(
        with_action(&ev, "bind").is_empty() && with_action(&ev, "bind_failed").is_empty(),
        "{}",
        out.dump(bind.pid)
    );
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn hooks_on_read_the_errno_from_the_syscall_and_report_bind() {
    if !require_root() {
        return;
    }
    let (out, tcp, bind) = exhaust_under("on", 7, 8102);
    for f in with_action(&out.events_of(tcp.pid), "connect_failed") {
        assert!(f["portex"].get("errno_inferred").is_none(), "{f}");
    }
    let ev = out.events_of(bind.pid);
    assert_eq!(
        source_ports(&with_action(&ev, "bind")),
        bind.ports("bind ok "),
        "{}",
        out.dump(bind.pid)
    );
    let bf = with_action(&ev, "bind_failed");
    assert_eq!(bf.len(), 4, "{}", out.dump(bind.pid));
    for f in bf {
        assert_eq!(f["error"]["code"], "EADDRINUSE", "{f}");
        assert!(f["portex"].get("errno_inferred").is_none(), "{f}");
    }
}

/// docs/events.md: "A bind() with IP_BIND_ADDRESS_NO_PORT takes no port and is not
/// reported (connect() picks the port)". The sockets stay open, so portex can look at
/// them after connect() gave them a port; plain bind(0) sockets in the same process
/// are the control.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn bind_with_ip_bind_address_no_port_is_not_a_bind_event() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("noport", 40000, 40999);
    let portex = Portex::start(&["watch", "--json"]);
    let held = ns.spawn(&["bind-mix", "127.0.0.1:8103", "10", "3"]);
    let no_port: Vec<(String, String)> = held
        .driven
        .facts("no-port bound ")
        .iter()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), w[2].to_string())
        })
        .collect();
    assert_eq!(no_port.len(), 10, "{:?}", held.driven.lines);
    for (bound, _) in &no_port {
        assert_eq!(
            port_of(bound),
            0,
            "IP_BIND_ADDRESS_NO_PORT: bind() took no port"
        );
    }
    let plain = held.driven.ports("bind ok ");
    assert_eq!(plain.len(), 3);
    // Wait until the control's bind events are out (they come after the others).
    let pid = held.driven.pid;
    assert!(
        portex.wait_lines_with(&[&pid_needle(pid), "\"action\":\"bind\""], 3),
        "the 3 plain binds were not reported"
    );
    let out = portex.stop();
    drop(held);
    let ev = out.events_of(pid);
    assert_eq!(
        source_ports(&with_action(&ev, "bind")),
        plain,
        "only the plain bind(0) calls\n{}",
        out.dump(pid)
    );
    // The connections themselves are all there, with the ports connect() chose.
    let connected: Vec<&Value> = with_action(&ev, "connect")
        .into_iter()
        .filter(|c| c["source"]["port"] != 8103)
        .collect();
    let mut all: Vec<u64> = no_port
        .iter()
        .map(|(_, c)| port_of(c))
        .chain(plain)
        .collect();
    all.sort();
    assert_eq!(source_ports(&connected), all, "{}", out.dump(pid));
}

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

/// A TCP exhaustion (4 ports, 8 attempts) and a bind(0) exhaustion (4 ports, 8
/// attempts), each in its own namespace, under `watch --json --syscall-hooks MODE`.
fn exhaust_under(mode: &str, tag: &str, port: &str) -> (Finished, Driven, Driven) {
    let tcp_ns = Netns::new(&format!("{tag}-tcp"));
    tcp_ns.port_range(40000, 40003);
    let bind_ns = Netns::new(&format!("{tag}-bind"));
    bind_ns.port_range(40000, 40003);
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
    (out, tcp, bind)
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn hooks_off_still_reports_a_tcp_exhaustion_with_an_inferred_errno() {
    if !require_root() {
        return;
    }
    let (out, tcp, bind) = exhaust_under("off", "hooks-off", "8101");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("(2 programs attached, syscall hooks off)")),
        "{:?}",
        out.stderr
    );
    let ev = out.events_of(tcp.pid);
    let fails = with_action(&ev, "connect_failed");
    assert_eq!(fails.len(), 4, "{}", out.dump(tcp.pid));
    for f in &fails {
        assert_eq!(f["error"]["code"], "EADDRNOTAVAIL", "{f}");
        assert_eq!(f["portex"]["cause"], "port_range_exhausted", "{f}");
        assert_eq!(f["portex"]["errno_inferred"], true, "{f}");
        assert_eq!(f["destination"]["port"], 8101, "{f}");
        assert_eq!(f["source"]["port"], 0, "{f}");
    }
    // The lifecycle does not need the hooks either.
    let mut connected: Vec<u64> = with_action(&ev, "connect")
        .iter()
        .map(|c| c["source"]["port"].as_u64().unwrap())
        .collect();
    let mut truth: Vec<u64> = tcp
        .facts("connect ok ")
        .iter()
        .map(|a| port_of(a))
        .collect();
    connected.sort();
    truth.sort();
    assert_eq!(connected, truth, "{}", out.dump(tcp.pid));
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
    let (out, tcp, bind) = exhaust_under("on", "hooks-on", "8102");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("(6 programs attached, syscall hooks on)")),
        "{:?}",
        out.stderr
    );
    let ev = out.events_of(tcp.pid);
    let fails = with_action(&ev, "connect_failed");
    assert_eq!(fails.len(), 4, "{}", out.dump(tcp.pid));
    for f in &fails {
        assert_eq!(f["error"]["code"], "EADDRNOTAVAIL", "{f}");
        assert_eq!(f["portex"]["cause"], "port_range_exhausted", "{f}");
        assert!(f["portex"].get("errno_inferred").is_none(), "{f}");
        assert_eq!(f["destination"]["port"], 8102, "{f}");
    }
    let ev = out.events_of(bind.pid);
    let mut bound: Vec<u64> = with_action(&ev, "bind")
        .iter()
        .map(|b| b["source"]["port"].as_u64().unwrap())
        .collect();
    let mut truth: Vec<u64> = bind.facts("bind ok ").iter().map(|a| port_of(a)).collect();
    bound.sort();
    truth.sort();
    assert_eq!(bound, truth, "{}", out.dump(bind.pid));
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
    let ns = Netns::new("noport");
    ns.port_range(40000, 40999);
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
    let plain: Vec<u64> = held
        .driven
        .facts("bind ok ")
        .iter()
        .map(|a| port_of(a))
        .collect();
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
    let mut bound: Vec<u64> = with_action(&ev, "bind")
        .iter()
        .map(|b| b["source"]["port"].as_u64().unwrap())
        .collect();
    bound.sort();
    let mut truth = plain.clone();
    truth.sort();
    assert_eq!(
        bound,
        truth,
        "only the plain bind(0) calls\n{}",
        out.dump(pid)
    );
    // The connections themselves are all there, with the ports connect() chose.
    let mut connected: Vec<u64> = with_action(&ev, "connect")
        .iter()
        .filter(|c| c["source"]["port"] != 8103)
        .map(|c| c["source"]["port"].as_u64().unwrap())
        .collect();
    connected.sort();
    let mut all: Vec<u64> = no_port
        .iter()
        .map(|(_, c)| port_of(c))
        .chain(plain)
        .collect();
    all.sort();
    assert_eq!(connected, all, "{}", out.dump(pid));
}

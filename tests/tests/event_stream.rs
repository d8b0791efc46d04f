//! Issue "From kernel to NDJSON": the real programs, real sockets, compared with what
//! the driver saw. Each test has its own network namespace with a few ports.
use portex_e2e::*;

const EADDRNOTAVAIL: i32 = 99;
const EADDRINUSE: i32 = 98;
const EAGAIN: i32 = 11;

fn errnos(d: &Driven, prefix: &str) -> Vec<i32> {
    d.facts(prefix).iter().map(|e| e.parse().unwrap()).collect()
}

/// Checks exhaustion of a 4-port range towards one destination, for v4 or v6.
fn exhaust_tcp(listen: &str, tag: &str) {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range(tag, 40000, 40003);
    let portex = Portex::start(&["watch", "--json"]);
    let d = ns.drive(&["exhaust-tcp", listen, "8"]);
    let out = portex.stop();
    let ok = d.facts("connect ok ");
    let failed = errnos(&d, "connect err ");
    assert!(
        !ok.is_empty() && !failed.is_empty(),
        "the driver did not exhaust the range: {:?}",
        d.lines
    );
    assert!(failed.iter().all(|&e| e == EADDRNOTAVAIL), "{failed:?}");
    let dest: String = d.facts("listen ")[0].clone();

    let ev = out.events_of(d.pid);
    let fails = with_action(&ev, "connect_failed");
    assert_eq!(
        fails.len(),
        failed.len(),
        "one connect_failed per failing connect\n{}",
        out.dump(d.pid)
    );
    for f in &fails {
        assert_eq!(f["error"]["code"], "EADDRNOTAVAIL", "{f}");
        assert_eq!(f["portex"]["cause"], "port_range_exhausted", "{f}");
        assert_eq!(f["event"]["outcome"], "failure");
        assert_eq!(f["network"]["transport"], "tcp");
        let got = format!(
            "{}",
            std::net::SocketAddr::new(
                f["destination"]["ip"].as_str().unwrap().parse().unwrap(),
                f["destination"]["port"].as_u64().unwrap() as u16,
            )
        );
        assert_eq!(got, dest, "{f}");
        // The pool is full when connect() fails: 4 of 4 ports towards this destination.
        assert_eq!(f["portex"]["pool"]["used"], 4, "{f}");
        assert_eq!(f["portex"]["pool"]["size"], 4, "{f}");
    }
    // The pool goes from 3 of 4 (75 %, below --warn) to 4 of 4 in one step and stays
    // full: exactly one pool_pressure, critical, for this pool, naming the driver.
    let pressure = with_action(&ev, "pool_pressure");
    assert_eq!(pressure.len(), 1, "{}", out.dump(d.pid));
    let p = pressure[0];
    assert_eq!(p["portex"]["pool"]["severity"], "critical", "{p}");
    assert_eq!(p["portex"]["pool"]["used"], 4, "{p}");
    assert_eq!(p["portex"]["pool"]["size"], 4, "{p}");
    assert_eq!(p["portex"]["pool"]["holders"][0]["pid"], d.pid, "{p}");
    assert_eq!(p["portex"]["pool"]["holders"][0]["held"], 4, "{p}");
    let connects = with_action(&ev, "connect");
    let ports = source_ports(&connects);
    assert_eq!(
        connects.len(),
        ok.len(),
        "one connect per successful connect\n{}",
        out.dump(d.pid)
    );
    assert!(
        ports.iter().all(|p| (40000..=40003).contains(p)),
        "ports outside the range: {ports:?}"
    );
    assert_eq!(
        ports,
        d.ports("connect ok "),
        "source ports must match what connect() got"
    );
    // Every EADDRNOTAVAIL is also warned about on stderr (the first ones of a pool: these
    // few are all shown). Other tests run beside this one: match the pid as a whole
    // field, " pid=123 " never matches pid 1234.
    let warnings = out
        .stderr
        .iter()
        .filter(|l| l.contains("EADDRNOTAVAIL") && l.contains(&format!(" pid={} ", d.pid)))
        .count();
    assert_eq!(warnings, failed.len(), "{:?}", out.stderr);
    assert_eq!(out.code, Some(0));
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn exhausting_the_range_reports_each_failure_once() {
    exhaust_tcp("127.0.0.1:5000", "exh4");
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn exhausting_the_range_over_ipv6() {
    exhaust_tcp("[::1]:5000", "exh6");
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn client_closing_first_leaves_its_ports_in_time_wait() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("tw", 41000, 41099);
    let portex = Portex::start(&["watch", "--json"]);
    let d = ns.drive(&["client-close", "127.0.0.1:6000", "5"]);
    let out = portex.stop();
    let ev = out.events_of(d.pid);
    assert_eq!(
        source_ports(&with_action(&ev, "time_wait")),
        d.ports("connect ok "),
        "exactly the client ports enter TIME_WAIT\n{}",
        out.dump(d.pid)
    );
    // The server side (port 6000) closed passively: no TIME_WAIT there.
    let server_closes: Vec<_> = with_action(&ev, "close")
        .into_iter()
        .filter(|v| v["source"]["port"] == 6000)
        .collect();
    assert_eq!(server_closes.len(), 5, "{}", out.dump(d.pid));
    for c in server_closes {
        assert_eq!(c["portex"]["close"]["kind"], "passive", "{c}");
        assert_eq!(c["portex"]["close"]["time_wait"], false);
    }
    let client_closes: Vec<_> = with_action(&ev, "close")
        .into_iter()
        .filter(|v| v["source"]["port"] != 6000)
        .collect();
    assert_eq!(client_closes.len(), 5, "{}", out.dump(d.pid));
    for c in client_closes {
        assert_eq!(c["portex"]["close"]["kind"], "active", "{c}");
        assert_eq!(c["portex"]["close"]["time_wait"], true, "{c}");
        // A loopback connection the driver closes at once: well under a second.
        let ns = c["event"]["duration"].as_u64().unwrap_or(0);
        assert!(ns > 0 && ns < 5_000_000_000, "duration {ns} ns: {c}");
    }
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn connect_after_bind_to_a_taken_tuple_is_a_collision() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("coll");
    let portex = Portex::start(&["watch", "--json"]);
    let d = ns.drive(&["collision", "127.0.0.1:7000"]);
    let out = portex.stop();
    assert_eq!(errnos(&d, "connect err "), [EADDRNOTAVAIL], "{:?}", d.lines);
    let ev = out.events_of(d.pid);
    let fails = with_action(&ev, "connect_failed");
    assert_eq!(fails.len(), 1, "{}", out.dump(d.pid));
    assert_eq!(
        fails[0]["portex"]["cause"], "tuple_collision",
        "{}",
        fails[0]
    );
    assert_eq!(fails[0]["error"]["code"], "EADDRNOTAVAIL");
    let bound: std::net::SocketAddr = d.facts("connect ok ")[0].parse().unwrap();
    assert_eq!(
        fails[0]["source"]["port"].as_u64(),
        Some(bound.port() as u64)
    );
    assert_eq!(fails[0]["destination"]["port"], 7000);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn binding_port_zero_until_none_is_left() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("bind", 42000, 42003);
    let portex = Portex::start(&["watch", "--json"]);
    let d = ns.drive(&["exhaust-bind", "127.0.0.1:0", "8"]);
    let out = portex.stop();
    let ok = d.facts("bind ok ");
    let failed = errnos(&d, "bind err ");
    assert!(!ok.is_empty() && !failed.is_empty(), "{:?}", d.lines);
    assert!(failed.iter().all(|&e| e == EADDRINUSE), "{failed:?}");
    let ev = out.events_of(d.pid);
    let binds = with_action(&ev, "bind");
    assert_eq!(binds.len(), ok.len(), "{}", out.dump(d.pid));
    assert_eq!(
        source_ports(&binds),
        d.ports("bind ok "),
        "bind events name the port the kernel chose"
    );
    for b in &binds {
        assert_eq!(b["network"]["transport"], "tcp", "{b}");
    }
    let bf = with_action(&ev, "bind_failed");
    assert_eq!(bf.len(), failed.len(), "{}", out.dump(d.pid));
    for f in bf {
        assert_eq!(f["error"]["code"], "EADDRINUSE", "{f}");
        assert_eq!(f["portex"]["cause"], "port_range_exhausted", "{f}");
        assert_eq!(f["event"]["outcome"], "failure");
    }
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn udp_connect_until_none_is_left() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("udp", 43000, 43003);
    let portex = Portex::start(&["watch", "--json"]);
    let d = ns.drive(&["exhaust-udp", "127.0.0.1:9", "8"]);
    let out = portex.stop();
    let failed = errnos(&d, "connect err ");
    assert!(!failed.is_empty(), "{:?}", d.lines);
    assert!(failed.iter().all(|&e| e == EAGAIN), "{failed:?}");
    let ev = out.events_of(d.pid);
    let fails = with_action(&ev, "connect_failed");
    assert_eq!(fails.len(), failed.len(), "{}", out.dump(d.pid));
    for f in fails {
        assert_eq!(f["error"]["code"], "EAGAIN", "{f}");
        assert_eq!(f["network"]["transport"], "udp", "{f}");
        assert_eq!(f["portex"]["cause"], "port_range_exhausted", "{f}");
        assert_eq!(f["destination"]["port"], 9);
    }
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_user_without_privileges_gets_one_clear_line() {
    // setpriv --reuid needs root to switch to uid 65534.
    if !require_root() {
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(SETPRIV_NOBODY)
        .arg("--inh-caps=-all")
        .arg(public_copy(&portex_bin()))
        .args(["watch", "--json"])
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn refused_connects_are_reported_whether_blocking_or_not() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("refused");
    let portex = Portex::start(&["watch", "--json"]);
    let d = ns.drive(&["refused", "127.0.0.1:7900"]);
    let out = portex.stop();
    assert!(
        d.lines.contains(&"nonblocking so_error 111".to_string()),
        "{:?}",
        d.lines
    );
    assert!(
        d.lines.contains(&"blocking err 111".to_string()),
        "{:?}",
        d.lines
    );
    let ev = out.events_of(d.pid);
    // Both attempts got a port, sent a SYN and were reset within the call: a connect
    // with a real port and a failed handshake each, whatever connect() returned
    // (EINPROGRESS for the non-blocking one).
    let connects = with_action(&ev, "connect");
    let closes = with_action(&ev, "close");
    assert_eq!(
        (connects.len(), closes.len()),
        (2, 2),
        "{}",
        out.dump(d.pid)
    );
    for (c, x) in connects.iter().zip(&closes) {
        assert_ne!(c["source"]["port"], 0, "{c}");
        assert_eq!(x["portex"]["close"]["kind"], "handshake_failed", "{x}");
        assert_eq!(x["source"]["port"], c["source"]["port"]);
    }
    // The blocking one also returned ECONNREFUSED, which is not a port problem.
    let fails = with_action(&ev, "connect_failed");
    assert_eq!(fails.len(), 1, "{}", out.dump(d.pid));
    assert_eq!(fails[0]["error"]["code"], "ECONNREFUSED");
    assert_eq!(fails[0]["portex"]["cause"], "other");
    assert_eq!(fails[0]["network"]["direction"], "egress");
}

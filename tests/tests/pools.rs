//! Issue "Port pools": `portex status` against `ss` in a namespace the test fills.
use portex_e2e::*;

fn pools_of(v: &Value) -> PoolMap {
    let ns = &v["namespaces"][0];
    assert_eq!(ns["current"], true);
    tcp_pools(ns)
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn status_matches_ss_for_thousands_of_time_wait_and_live_connections() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("pools", 40000, 49999);
    // Loopback's default (tcp_tw_reuse=2) lets connect() recycle TIME_WAIT ports, which
    // would make the count depend on timing; ss and portex must agree either way.
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let held = ns.spawn(&[
        "pool-mix",
        "127.0.0.1:6001",
        "127.0.0.2:6002",
        "3000",
        "20",
        "50",
    ]);
    let (code, v) = status_in(&ns, &["--limit", "1000"]);
    let truth = ns.ss_pools(40000, 49999);
    let got = pools_of(&v);
    assert_eq!(
        got, truth,
        "portex status pools (used, time_wait) must equal ss"
    );
    let a = &got[&("127.0.0.1".to_string(), "127.0.0.1".to_string(), 6001)];
    // TIME_WAIT can end early (a new SYN recycles it), so "thousands", not exactly 3000;
    // the live connections are exact.
    assert!(a.1 >= 2500 && a.0 - a.1 == 20, "{a:?}");
    assert_eq!(
        got[&("127.0.0.1".to_string(), "127.0.0.2".to_string(), 6002)],
        (50, 0)
    );
    assert_eq!(code, Some(0), "30% used is under the warning threshold");

    // Live connections are held by the driver; TIME_WAIT ones have no owner.
    let pools = v["namespaces"][0]["pools"].as_array().unwrap();
    for p in pools {
        for h in p["holders"].as_array().unwrap() {
            match h["pid"].as_u64() {
                Some(pid) => {
                    assert_eq!(pid, held.driven.pid as u64, "{h}");
                    assert_eq!(h["time_wait"], 0);
                }
                None => assert_eq!(h["held"], h["time_wait"], "{h}"),
            }
        }
    }
    let procs = v["namespaces"][0]["processes"].as_array().unwrap();
    assert_eq!(
        procs[0]["process"]["pid"].as_u64(),
        Some(held.driven.pid as u64)
    );
    assert_eq!(procs[0]["held"], 70);
    assert_eq!(
        v["namespaces"][0]["settings"]["ip_local_port_range"],
        serde_json::json!([40000, 49999])
    );
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_full_small_range_is_at_100_percent_and_exits_2_critical() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("full", 40000, 40003);
    let held = ns.spawn(&[
        "pool-mix",
        "127.0.0.1:6001",
        "127.0.0.2:6002",
        "0",
        "4",
        "1",
    ]);
    let (code, v) = status_in(&ns, &["--limit", "1000"]);
    assert_eq!(code, Some(2), "critical: {v:#}");
    assert_eq!(v["status"], "critical");
    let p = &v["namespaces"][0]["pools"][0];
    assert_eq!(
        (
            p["used"].as_u64(),
            p["size"].as_u64(),
            p["utilisation"].as_f64()
        ),
        (Some(4), Some(4), Some(1.0)),
        "{p}"
    );
    assert_eq!(
        p["holders"][0]["pid"].as_u64(),
        Some(held.driven.pid as u64)
    );
    let ids = diagnosis_ids(&v["namespaces"][0]);
    assert!(
        ids.iter().any(|i| i == "pool_exhaustion") && ids.iter().any(|i| i == "narrow_port_range"),
        "{ids:?}"
    );
    // Text mode agrees, with the same exit code.
    let (code, text, _) = ns.exec(&[portex_bin().to_str().unwrap(), "status"]);
    assert_eq!(code, Some(2));
    assert!(text.contains("100%"), "{text}");
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn bind_before_connect_is_diagnosed() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("bbc", 40000, 40999);
    let held = ns.spawn(&["bind-connect", "127.0.0.1:6200", "40"]);
    let (_, v) = status_in(&ns, &["--limit", "1000"]);
    let d = diagnosis(&v["namespaces"][0], "bind_before_connect");
    assert!(
        d["pids"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(held.driven.pid)),
        "{d}"
    );
    assert!(
        d["fix"]
            .as_str()
            .unwrap()
            .contains("IP_BIND_ADDRESS_NO_PORT")
    );
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn status_needs_no_privileges_for_its_own_namespace() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("unpriv", 40000, 40003);
    let _held = ns.spawn(&[
        "pool-mix",
        "127.0.0.1:6001",
        "127.0.0.2:6002",
        "0",
        "4",
        "0",
    ]);
    let bin = public_copy(&portex_bin());
    let mut cmd = vec!["setpriv"];
    cmd.extend(SETPRIV_NOBODY);
    cmd.extend([bin.to_str().unwrap(), "status", "--json"]);
    let (code, out, err) = ns.exec(&cmd);
    assert_eq!(code, Some(2), "a full pool, seen without privileges: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(v["namespaces"][0]["pools"][0]["used"], 4, "{v:#}");
}

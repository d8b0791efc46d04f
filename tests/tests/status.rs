//! `portex status`: `--all-netns` and `--netns` from the host namespace,
//! `--warn`/`--critical`, the exit statuses monitoring plugins read (0 ok, 1 warning,
//! 2 critical, 3 could not check), and the diagnoses it prints (and one it must not
//! print), each against a namespace the test fills and `ss` inside it.
use std::{process::Command, time::Duration};

use portex_e2e::*;

fn ids(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn key(src: &str, dst: &str, port: u16) -> (String, String, u16) {
    (src.to_string(), dst.to_string(), port)
}

/// Waits until `n` client sockets of `ns` sit in TIME_WAIT (the last FINs are in flight
/// when a driver returns).
fn wait_time_wait(ns: &Netns, n: usize) {
    assert!(
        wait_for(Duration::from_secs(20), || ss_count(ns, "time-wait") == n),
        "expected {n} sockets in TIME_WAIT, ss shows {}",
        ss_count(ns, "time-wait")
    );
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn status_all_netns_sees_a_test_namespace_from_the_host() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("allns", 40000, 40009);
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let held = ns.spawn(&[
        "pool-mix",
        "127.0.0.1:8201",
        "127.0.0.2:8202",
        "3",
        "3",
        "2",
    ]);
    wait_time_wait(&ns, 3);
    let inode = ns.inode();
    let truth = ns.ss_pools(40000, 40009);
    assert_eq!(
        truth,
        [
            (key("127.0.0.1", "127.0.0.1", 8201), (6, 3)),
            (key("127.0.0.1", "127.0.0.2", 8202), (2, 0)),
        ]
        .into_iter()
        .collect()
    );

    // From the host's namespace (this test process runs there).
    let out = Command::new(portex_bin())
        .args(["status", "--json", "--all-netns", "--limit", "1000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let all = v["namespaces"].as_array().unwrap();
    let here: Vec<&Value> = all.iter().filter(|n| n["current"] == true).collect();
    assert_eq!(here.len(), 1, "exactly one namespace is the current one");
    assert_ne!(here[0]["netns"], inode);
    let mine: Vec<&Value> = all.iter().filter(|n| n["netns"] == inode).collect();
    assert_eq!(mine.len(), 1, "the test namespace {inode} once: {v:#}");
    let r = mine[0];
    assert_eq!(r["name"], ns.name.as_str());
    assert_eq!(r["current"], false);
    assert_eq!(
        r["settings"]["ip_local_port_range"],
        serde_json::json!([40000, 40009])
    );
    assert_eq!(r["settings"]["tcp_tw_reuse"], 0);
    assert_eq!(r["time_wait"], 3);
    assert_eq!(tcp_pools(r), truth, "{r:#}");
    let procs = r["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{r:#}");
    assert_eq!(
        procs[0]["process"]["pid"].as_u64(),
        Some(held.driven.pid as u64)
    );
    assert_eq!(procs[0]["held"], 5);

    // Text: the namespace by inode and name, not marked as this one.
    let out = Command::new(portex_bin())
        .args(["status", "--all-netns", "--limit", "1000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let header = format!("network namespace {inode} ({})", ns.name);
    assert!(
        text.lines().any(|l| l == header),
        "no line {header:?} in:\n{text}"
    );
    // Without --all-netns the host's report leaves it out.
    let out = Command::new(portex_bin())
        .args(["status", "--json", "--limit", "1000"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nss = v["namespaces"].as_array().unwrap();
    assert_eq!(nss.len(), 1);
    assert_ne!(nss[0]["netns"], inode);
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn status_thresholds_set_the_severity_shown_and_the_exit_status() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("thresh", 40000, 40009);
    // 5 of 10 ports towards 127.0.0.1:8211: 50 %.
    let _held = ns.spawn(&[
        "pool-mix",
        "127.0.0.1:8211",
        "127.0.0.2:8212",
        "0",
        "5",
        "0",
    ]);
    let pool_label = "tcp 127.0.0.1 -> 127.0.0.1:8211";
    // (flags, exit status, report status, pool_exhaustion severity, text mark)
    type Case<'a> = (&'a [&'a str], i32, &'a str, Option<&'a str>, &'a str);
    let cases: [Case; 6] = [
        (&[], 0, "ok", None, "  "),
        (&["--warn", "40"], 1, "warning", Some("warning"), "! "),
        // At the threshold is over it.
        (&["--warn", "50"], 1, "warning", Some("warning"), "! "),
        (
            &["--warn", "40", "--critical", "50"],
            2,
            "critical",
            Some("critical"),
            "!!",
        ),
        (
            &["--warn", "30", "--critical", "45"],
            2,
            "critical",
            Some("critical"),
            "!!",
        ),
        (&["--warn", "51", "--critical", "60"], 0, "ok", None, "  "),
    ];
    for (flags, code, status, severity, mark) in cases {
        let (got, v) = status_in(&ns, flags);
        assert_eq!(got, Some(code), "{flags:?}: {v:#}");
        assert_eq!(v["status"], status, "{flags:?}");
        let r = &v["namespaces"][0];
        let p = &r["pools"][0];
        assert_eq!(
            (p["used"].as_u64(), p["size"].as_u64()),
            (Some(5), Some(10)),
            "{p}"
        );
        let shown = r["diagnoses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == "pool_exhaustion")
            .map(|d| d["severity"].as_str().unwrap().to_string());
        assert_eq!(shown.as_deref(), severity, "{flags:?}: {r:#}");
        let mut args = vec![portex_bin().to_str().unwrap().to_string(), "status".into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got, text, err) = ns.exec(&args);
        assert_eq!(got, Some(code), "text {flags:?}: {err}");
        // The first line is the verdict: the fullest pool and its severity.
        assert!(
            text.starts_with(&format!("verdict: {status}: fullest pool {pool_label} ")),
            "{text}"
        );
        let line = text
            .lines()
            .skip(1)
            .find(|l| l.contains(pool_label))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.starts_with(mark), "{flags:?}: {line:?}");
        assert!(line.contains(" 50%"), "{line}");
        if let Some(s) = severity {
            assert!(
                text.contains(&format!("  [{s}] {pool_label} has 5 of 10")),
                "{text}"
            );
        }
    }
    let (_, v) = status_in(&ns, &["--warn", "40", "--critical", "50"]);
    assert_eq!(
        v["thresholds"],
        serde_json::json!({"warning": 0.4, "critical": 0.5})
    );
    // A critical threshold below the warning one is refused, in one line: the check
    // could not run.
    let (got, out, err) = ns.exec(&[
        portex_bin().to_str().unwrap(),
        "status",
        "--warn",
        "60",
        "--critical",
        "50",
    ]);
    assert_eq!(got, Some(3), "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--critical") && err.contains("--warn"),
        "{err}"
    );
}

/// `portex status` ARGS from this (the host's) namespace: (exit status, stdout, stderr).
fn status_here(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(portex_bin())
        .arg("status")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The exit statuses of a monitoring plugin (Nagios, Icinga, Sensu): 0 ok, 1 warning,
/// 2 critical with the default thresholds (80 %, 95 %), and 3 whenever the check could
/// not run, bad flags included (clap's own usage status is 2: it must not read as
/// critical).
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn status_exit_codes_follow_the_monitoring_plugin_convention() {
    if !require_root() {
        return;
    }
    let empty = Netns::with_range("xempty", 40000, 40009);
    let warn = Netns::with_range("xwarn", 40000, 40009);
    let crit = Netns::with_range("xcrit", 40000, 40009);
    // 8 of 10 ports towards one destination: 80 %, a warning; 10 of 10: critical.
    let _w = warn.spawn(&[
        "pool-mix",
        "127.0.0.1:8251",
        "127.0.0.2:8252",
        "0",
        "8",
        "0",
    ]);
    let _c = crit.spawn(&[
        "pool-mix",
        "127.0.0.1:8261",
        "127.0.0.2:8262",
        "0",
        "10",
        "0",
    ]);
    let bin = portex_bin();
    let bin = bin.to_str().unwrap();
    for (ns, code, verdict) in [
        (&empty, 0, "verdict: ok: no ephemeral port in use"),
        (
            &warn,
            1,
            "verdict: warning: fullest pool tcp 127.0.0.1 -> 127.0.0.1:8251 ",
        ),
        (
            &crit,
            2,
            "verdict: critical: fullest pool tcp 127.0.0.1 -> 127.0.0.1:8261 ",
        ),
    ] {
        // Inside the namespace, and from the host by its name and by its inode.
        let (got, out, err) = ns.exec(&[bin, "status"]);
        assert_eq!(got, Some(code), "{}: {out}{err}", ns.name);
        assert!(out.starts_with(verdict), "{out}");
        let inode = ns.inode().to_string();
        for by in [ns.name.as_str(), inode.as_str()] {
            let (got, out, err) = status_here(&["--json", "--netns", by]);
            assert_eq!(got, Some(code), "--netns {by}: {err}");
            let v: Value = serde_json::from_str(&out).unwrap();
            let nss = v["namespaces"].as_array().unwrap();
            assert_eq!(nss.len(), 1, "{v:#}");
            assert_eq!(nss[0]["netns"], ns.inode());
            assert_eq!(nss[0]["name"], ns.name.as_str());
        }
    }
    // The fullest pool of all namespaces sets the status.
    let (got, _, err) = status_here(&["--all-netns", "--limit", "1"]);
    assert_eq!(got, Some(2), "{err}");
    // Could not check: 3, one line on stderr, nothing on stdout.
    let path = format!("/var/run/netns/{}", empty.name);
    for args in [
        &["--netns", "portex-e2e-no-such-namespace"][..],
        &["--netns", "4294967295"],
        &["--netns", "/proc/self/ns/mnt"],
        &["--netns", &path, "--all-netns"],
        &["--bogus"],
        &["--warn", "101"],
        &["--warn", "60", "--critical", "50"],
        &["--limit", "many"],
    ] {
        let (got, out, err) = status_here(args);
        assert_eq!(got, Some(3), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("portex: error: "), "{args:?}: {err}");
    }
    // Without the privilege to enter another namespace (uid 65534, no capabilities).
    let out = Command::new("setpriv")
        .args(SETPRIV_NOBODY)
        .arg("--inh-caps=-all")
        .arg(public_copy(&portex_bin()))
        .args(["status", "--netns", &path])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());
    // Other commands keep 2 for bad usage: it is not a verdict there.
    let out = Command::new(portex_bin())
        .args(["watch", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn status_diagnoses_the_client_closing_first_and_tcp_tw_reuse_off() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("ccf", 40000, 40039);
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    // 20 closed by the client (TIME_WAIT) + 10 open: 30 of 40 ports, 75 %.
    let held = ns.spawn(&[
        "pool-mix",
        "127.0.0.1:8221",
        "127.0.0.2:8222",
        "20",
        "10",
        "0",
    ]);
    wait_time_wait(&ns, 20);
    let (code, v) = status_in(&ns, &[]);
    assert_eq!(code, Some(0), "75 % is under the warning threshold: {v:#}");
    let r = &v["namespaces"][0];
    assert_eq!(tcp_pools(r), ns.ss_pools(40000, 40039));
    assert_eq!(tcp_pools(r)[&key("127.0.0.1", "127.0.0.1", 8221)], (30, 20));
    assert_eq!(
        ids(&diagnosis_ids(r)),
        [
            "client_closes_first",
            "narrow_port_range",
            // 20 closes in the last second, against 40 ports / 60 s.
            "rate_above_sustainable",
            "tcp_tw_reuse_off"
        ],
        "{r:#}"
    );
    let d = diagnosis(r, "client_closes_first");
    assert_eq!(d["severity"], "info");
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .starts_with("20 of 30 ports towards tcp 127.0.0.1 -> 127.0.0.1:8221 sit in TIME_WAIT"),
        "{d}"
    );
    // The live holder is named; TIME_WAIT has no owner.
    assert_eq!(d["pids"], serde_json::json!([held.driven.pid]));
    let d = diagnosis(r, "tcp_tw_reuse_off");
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .starts_with("net.ipv4.tcp_tw_reuse is 0 (off)"),
        "{d}"
    );
    assert!(d["fix"].as_str().unwrap().contains("tcp_tw_reuse=1"), "{d}");
    let d = diagnosis(r, "narrow_port_range");
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .contains("40000-40039 (40 ports)"),
        "{d}"
    );

    // With tcp_tw_reuse=1 the same TIME_WAIT pile-up no longer blames the sysctl.
    ns.sysctl("net.ipv4.tcp_tw_reuse", "1");
    let (_, v) = status_in(&ns, &[]);
    let r = &v["namespaces"][0];
    assert_eq!(tcp_pools(r)[&key("127.0.0.1", "127.0.0.1", 8221)], (30, 20));
    assert_eq!(
        ids(&diagnosis_ids(r)),
        ["client_closes_first", "narrow_port_range"],
        "{r:#}"
    );
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn status_diagnoses_many_short_connections_to_one_destination() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("short");
    // Linux's default range: nothing is near full, only the pattern is wrong.
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    drop(ns.drive(&["client-close", "127.0.0.1:8231", "70"]));
    wait_time_wait(&ns, 70);
    let (code, v) = status_in(&ns, &[]);
    assert_eq!(code, Some(0));
    let r = &v["namespaces"][0];
    assert_eq!(
        r["settings"]["ip_local_port_range"],
        serde_json::json!([32768, 60999])
    );
    assert_eq!(tcp_pools(r), ns.ss_pools(32768, 60999));
    assert_eq!(tcp_pools(r)[&key("127.0.0.1", "127.0.0.1", 8231)], (70, 70));
    assert_eq!(ids(&diagnosis_ids(r)), ["short_lived_connections"], "{r:#}");
    let d = diagnosis(r, "short_lived_connections");
    assert!(
        d["summary"].as_str().unwrap().starts_with(
            "70 closed connections per live one towards tcp 127.0.0.1 -> 127.0.0.1:8231"
        ),
        "{d}"
    );
    assert_eq!(d["severity"], "info");
}

/// The odd-port rule must not fire for connect() alone (connect picks even ports); the
/// same number of bind()-then-connect() sockets is the control.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn status_does_not_blame_bind_for_a_connect_only_load() {
    if !require_root() {
        return;
    }
    let connect_only = Netns::with_range("conly", 40000, 40999);
    let _a = connect_only.spawn(&[
        "pool-mix",
        "127.0.0.1:8241",
        "127.0.0.2:8242",
        "0",
        "40",
        "0",
    ]);
    let bound = Netns::with_range("bonly", 40000, 40999);
    let b = bound.spawn(&["bind-connect", "127.0.0.1:8243", "40"]);

    let (code, v) = status_in(&connect_only, &[]);
    assert_eq!(code, Some(0));
    let r = &v["namespaces"][0];
    assert_eq!(tcp_pools(r)[&key("127.0.0.1", "127.0.0.1", 8241)], (40, 0));
    assert_eq!(diagnosis_ids(r), Vec::<String>::new(), "{r:#}");

    let (_, v) = status_in(&bound, &[]);
    let r = &v["namespaces"][0];
    assert_eq!(tcp_pools(r)[&key("127.0.0.1", "127.0.0.1", 8243)], (40, 0));
    assert_eq!(ids(&diagnosis_ids(r)), ["bind_before_connect"], "{r:#}");
    assert_eq!(
        diagnosis(r, "bind_before_connect")["pids"],
        serde_json::json!([b.driven.pid])
    );
}

//! Every string from outside the agent through the NDJSON writer: process and thread
//! names, cgroup paths (container id, pod uid), the names a runtime recorded (container,
//! image, pod, namespace), the host's name, pool holders. Each line must parse with
//! serde_json, give back the string it was given, and carry no raw control character;
//! and the hand-written writer must say what the serde writer says.
use std::sync::Arc;

use serde_json::Value;

use super::{
    View,
    json::{Header, write_line, write_pressure},
    json_serde,
};
use crate::{
    logic::{
        diagnose::Thresholds,
        fixtures::record,
        ledger::Ledger,
        model::{Action, Comm, Container, Record, Workload},
        sysctls::NetSettings,
    },
    sys::containers::parse_cgroup_path,
};

const ID: &str = "3f4a5b6c7d8e9f00112233445566778899aabbccddeeff00112233445566aabb";
const HOST_ID: &str = "0123456789abcdef0123456789abcdef";

/// Names a process, a cgroup's creator or a runtime's file could hold.
fn hostile() -> Vec<String> {
    let mut v: Vec<String> = [
        "plain",
        "",
        "\"",
        "\\",
        "a\"b\\c",
        "\"},\"event\":{\"kind\":\"alert\"",
        "\\u0000",
        "line\nbreak\r\n",
        "tab\there",
        "\u{1b}[2J\u{1b}]0;owned\u{7}",
        "\u{7f}\u{80}\u{9f}",
        "evil\u{202e}lortnoc",
        "\u{feff}bom",
        "nul\0byte",
        "é漢字🚀",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push((0u8..0x20).map(char::from).collect());
    v.push("\"\\".repeat(40_000));
    v.push("x".repeat(1 << 20));
    v
}

fn header() -> Header {
    Header::new("host", Some(HOST_ID))
}

fn json_line(r: &Record, name: &str, h: &Header) -> String {
    let mut out = String::new();
    write_line(
        &View {
            rec: r,
            unix_ns: 1_795_845_600_000_000_000,
            process_name: name,
        },
        h,
        &mut out,
    );
    out
}

/// One whole line of JSON: ends with its only newline, no raw C0 control or DEL.
fn parse(line: &str) -> Value {
    assert!(line.ends_with('\n'), "{line:?}");
    assert_eq!(line.matches('\n').count(), 1, "{line:?}");
    let body = &line[..line.len() - 1];
    assert!(!body.bytes().any(|b| b < 0x20 || b == 0x7f), "{line:?}");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// The hand-written line and the serde one mean the same.
fn same_as_serde(r: &Record, name: &str, line: &str) {
    let host = json_serde::Host {
        name: "host",
        id: Some(HOST_ID),
    };
    let (mut ts, mut out) = (String::new(), Vec::new());
    json_serde::write_line(
        &View {
            rec: r,
            unix_ns: 1_795_845_600_000_000_000,
            process_name: name,
        },
        &host,
        &mut ts,
        &mut out,
    );
    let theirs: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(parse(line), theirs);
}

fn connect() -> Record {
    let mut r = record(
        Action::Connect,
        (7, 8, "cli"),
        "10.0.0.1:40000",
        Some("10.0.0.9:80"),
    );
    r.netns = Some(4026531840);
    r
}

#[test]
fn hostile_process_and_thread_names_come_back_as_they_were() {
    for name in hostile() {
        let mut r = connect();
        r.process.thread_name = Comm::from(name.as_str());
        let line = json_line(&r, &name, &header());
        let v = parse(&line);
        assert_eq!(v["process"]["name"], name.as_str());
        assert_eq!(
            v["process"]["thread"]["name"],
            *r.process.thread_name.name()
        );
        same_as_serde(&r, &name, &line);
    }
}

#[test]
fn invalid_utf8_in_a_comm_is_escaped_text_never_lost() {
    for bytes in [
        &b"\xff\xfe\xfd"[..],
        b"ok\xc3",
        b"\xe2\x80\"\\\x1b",
        b"\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e",
    ] {
        let mut comm = [0u8; 16];
        comm[..bytes.len()].copy_from_slice(bytes);
        let mut r = connect();
        r.process.thread_name = Comm(comm);
        let name = r.process.thread_name.name().into_owned();
        let line = json_line(&r, &name, &header());
        let v = parse(&line);
        let got = v["process"]["thread"]["name"].as_str().unwrap();
        assert!(got.contains("\\x"), "{got:?}");
        assert_eq!(got, name);
        same_as_serde(&r, &name, &line);
    }
}

#[test]
fn hostile_cgroup_paths_give_a_valid_container_or_none() {
    let mut paths = Vec::new();
    for h in hostile() {
        let esc = h.replace('/', "_");
        paths.push(format!(
            "/kubepods.slice/kubepods-pod{esc}.slice/cri-containerd-{ID}.scope"
        ));
        paths.push(format!(
            "/kubepods/pod{}/{ID}",
            esc.get(..36).unwrap_or(&esc)
        ));
        paths.push(format!("/system.slice/docker-{esc}.scope"));
        paths.push(format!("/{esc}/libpod-{ID}.scope/{esc}"));
    }
    // A pod segment of exactly 36 bytes that is not a uid.
    paths.push(format!(
        "/kubepods.slice/kubepods-pod\"aaaaaaa_1111_2222_3333_44445555666\\.slice/crio-{ID}.scope"
    ));
    let mut containers = 0;
    for p in paths {
        let Some(c) = parse_cgroup_path(&p) else {
            continue;
        };
        containers += 1;
        assert_eq!(c.id, ID);
        let mut r = connect();
        r.container = Some(Arc::new(c));
        let line = json_line(&r, "cli", &header());
        let v = parse(&line);
        assert_eq!(v["container"]["id"], ID);
        assert!(v["orchestrator"]["resource"]["id"].is_null(), "{line}");
        same_as_serde(&r, "cli", &line);
    }
    assert!(containers > 0);
}

#[test]
fn hostile_runtime_names_are_escaped_wherever_they_land() {
    for s in hostile() {
        let c = Container {
            id: ID.into(),
            runtime: "containerd",
            // Not a uid a parser would accept: the writer must not trust the type.
            pod_uid: Some(s.clone()),
            workload: Workload {
                name: Some(s.clone()),
                image: Some(s.clone()),
                pod_name: Some(s.clone()),
                pod_namespace: Some(s.clone()),
            },
        };
        let mut r = connect();
        r.container = Some(Arc::new(c));
        let line = json_line(&r, "cli", &header());
        let v = parse(&line);
        assert_eq!(v["container"]["name"], s.as_str());
        assert_eq!(v["container"]["image"]["name"], s.as_str());
        assert_eq!(v["orchestrator"]["namespace"], s.as_str());
        assert_eq!(v["orchestrator"]["resource"]["name"], s.as_str());
        assert_eq!(v["orchestrator"]["resource"]["id"], s.as_str());
        same_as_serde(&r, "cli", &line);
    }
}

#[test]
fn a_hostile_host_name_is_escaped_on_every_line() {
    for s in hostile() {
        let h = Header::new(&s, Some(&s));
        let v = parse(&json_line(&connect(), "cli", &h));
        assert_eq!(v["host"]["name"], s.as_str());
        assert_eq!(v["host"]["id"], s.as_str());
        assert_eq!(v["ecs"]["version"], "8.17.0");
    }
}

#[test]
fn hostile_holder_names_in_a_pool_pressure_line() {
    for s in hostile() {
        let mut l = Ledger::new();
        let settings = NetSettings {
            range: (40000, 40009),
            ..Default::default()
        };
        l.reconcile(4026531840, settings, &[], |_| None, 0);
        l.process_seen(7, 1, &s);
        let mut fired = None;
        for i in 0..10u16 {
            let mut r = connect();
            r.source.set_port(40000 + i);
            let k = l.apply(&r, Some(4026531840), 1).unwrap();
            fired = fired.or(l.check_pressure(&k, &Thresholds::default(), 1));
        }
        let p = fired.expect("the pool filled up");
        let mut out = String::new();
        write_pressure(
            &p,
            1_795_845_600_000_000_000,
            &Header::new(&s, None),
            &mut out,
        );
        let v = parse(&out);
        assert_eq!(v["portex"]["pool"]["holders"][0]["name"], s.as_str());
        assert_eq!(v["process"]["name"], s.as_str());
        assert_eq!(v["event"]["kind"], "alert");
    }
}

#[test]
fn a_connection_line_has_its_start_and_end_and_says_what_serde_says() {
    use crate::logic::model::{CloseInfo, CloseKind};
    let mut r = connect();
    r.action = Action::Connection;
    r.duration_ns = Some(1_500_000_000);
    r.close = Some(CloseInfo {
        reset_received: false,
        kind: CloseKind::Active,
        time_wait: true,
        from_state: "FIN_WAIT2",
    });
    let line = json_line(&r, "cli", &header());
    same_as_serde(&r, "cli", &line);
    let v = parse(&line);
    assert_eq!(v["event"]["action"], "connection");
    assert_eq!(v["event"]["type"], serde_json::json!(["connection", "end"]));
    assert_eq!(v["event"]["end"], v["@timestamp"]);
    assert_eq!(v["event"]["start"], "2026-11-28T05:59:58.500000Z");
    assert_eq!(v["portex"]["close"]["time_wait"], true);
    // Without a known start, no start or end either.
    r.duration_ns = None;
    let v = parse(&json_line(&r, "cli", &header()));
    assert!(v["event"].get("start").is_none(), "{v}");
}

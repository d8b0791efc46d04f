//! NDJSON event lines: the checked-in schema, picking events by process and action, and
//! the pools and diagnoses of a status report.
use std::{collections::BTreeMap, path::PathBuf, sync::OnceLock};

use crate::{PoolMap, Value};

/// The checked-in schema of an event line (docs/event.schema.json).
pub fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/event.schema.json");
        let text = std::fs::read_to_string(&path).expect("reading the schema");
        let v: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&v).expect("the schema compiles")
    })
}

/// Every line must be JSON and valid against the schema.
pub fn validate_lines<'a>(lines: impl Iterator<Item = &'a str>) -> usize {
    let mut n = 0;
    for line in lines.filter(|l| !l.is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let errors: Vec<String> = schema()
            .iter_errors(&v)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "line does not match docs/event.schema.json: {errors:?}\n{line}"
        );
        n += 1;
    }
    n
}

pub fn action(v: &Value) -> &str {
    v["event"]["action"].as_str().unwrap_or("")
}

pub fn with_action<'a>(events: &'a [Value], a: &str) -> Vec<&'a Value> {
    events.iter().filter(|v| action(v) == a).collect()
}

/// The source ports of events, sorted.
pub fn source_ports(events: &[&Value]) -> Vec<u64> {
    let mut ports: Vec<u64> = events
        .iter()
        .map(|e| e["source"]["port"].as_u64().unwrap())
        .collect();
    ports.sort();
    ports
}

/// A status report's TCP pools as ss_pools keys them: (used, time_wait).
pub fn tcp_pools(ns_report: &Value) -> PoolMap {
    ns_report["pools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["network"]["transport"] == "tcp")
        .map(|p| {
            (
                (
                    p["source"]["ip"].as_str().unwrap().to_string(),
                    p["destination"]["ip"].as_str().unwrap().to_string(),
                    p["destination"]["port"].as_u64().unwrap() as u16,
                ),
                (
                    p["used"].as_u64().unwrap(),
                    p["time_wait"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Diagnosis ids of a status report's namespace entry, sorted.
pub fn diagnosis_ids(ns_report: &Value) -> Vec<String> {
    let mut ids: Vec<String> = ns_report["diagnoses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The diagnosis `id` of a status report's namespace entry; panics when there is none.
pub fn diagnosis<'a>(ns_report: &'a Value, id: &str) -> &'a Value {
    ns_report["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no {id}: {ns_report:#}"))
}

/// The JSON events of process `pid` among output lines (other lines skipped).
pub fn events_of_pid(lines: &[String], pid: u32) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["process"]["pid"].as_u64() == Some(pid as u64))
        .collect()
}

/// Events per action.
pub fn by_action(events: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(action(e).to_string()).or_default() += 1;
    }
    m
}

/// (action, count) pairs as `by_action` gives them.
pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(a, n)| (a.to_string(), *n)).collect()
}

/// What `watch` (accepted sockets included) reports for `client-close ADDR 5` run by one
/// process: 5 client connects, 5 client + 5 server established, 5 client (active) + 5
/// server (passive) closes, 5 client ports in TIME_WAIT.
pub fn client_close_5() -> BTreeMap<String, usize> {
    counts(&[
        ("connect", 5),
        ("established", 10),
        ("close", 10),
        ("time_wait", 5),
    ])
}

//! NDJSON event lines: the checked-in schema, and picking events by action.
use std::{path::PathBuf, sync::OnceLock};

use crate::Value;

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

/// A status report's TCP pools as ss_pools keys them: (used, time_wait).
pub fn tcp_pools(
    ns_report: &Value,
) -> std::collections::BTreeMap<(String, String, u16), (u64, u64)> {
    ns_report["pools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["transport"] == "tcp")
        .map(|p| {
            (
                (
                    p["source_ip"].as_str().unwrap().to_string(),
                    p["destination_ip"].as_str().unwrap().to_string(),
                    p["destination_port"].as_u64().unwrap() as u16,
                ),
                (
                    p["used"].as_u64().unwrap(),
                    p["time_wait"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

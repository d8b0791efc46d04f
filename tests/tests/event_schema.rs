//! The schema of an event line (docs/event.schema.json) against lines whose content is
//! known: the golden stream of the renderers (every action, pool_pressure, a container
//! of a Kubernetes pod) must match it, and lines that break a documented rule must not.
//! Needs no root: the live lines of every mode are validated by the harness
//! (`Portex::stop`, and on drop).
use portex_e2e::*;

fn golden() -> Vec<String> {
    let path = workspace_root().join("portex-agent/tests/golden/events.ndjson");
    lines_of(&path)
}

#[test]
fn every_golden_line_matches_the_schema() {
    let lines = golden();
    assert!(lines.len() > 30, "{} lines", lines.len());
    assert_eq!(
        validate_lines(lines.iter().map(String::as_str)),
        lines.len()
    );
    let all = lines.join("\n");
    for must in [
        "\"orchestrator\"",
        "\"pool_pressure\"",
        "\"duration\"",
        "\"egress\"",
    ] {
        assert!(all.contains(must), "{must} missing from the golden stream");
    }
}

#[test]
fn the_example_in_the_documentation_matches_the_schema() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/events.md")).unwrap();
    let example = doc
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/events.md has a JSON example");
    assert_eq!(validate_lines(example.lines()), 1);
}

/// Each edit breaks one rule of docs/events.md; the schema must say no.
#[test]
fn lines_that_break_a_documented_rule_are_refused() {
    let lines = golden();
    let find = |action: &str| -> Value {
        let needle = format!("\"action\":\"{action}\"");
        serde_json::from_str(lines.iter().find(|l| l.contains(&needle)).unwrap()).unwrap()
    };
    type Edit = fn(&mut Value);
    let cases: [(&str, &str, Edit); 12] = [
        ("connect", "no ecs.version", |v| {
            v.as_object_mut().unwrap().remove("ecs");
        }),
        ("connect", "no host", |v| {
            v.as_object_mut().unwrap().remove("host");
        }),
        ("connect", "event.type error with network", |v| {
            v["event"]["type"] = serde_json::json!(["connection", "error"]);
        }),
        ("close", "close typed start", |v| {
            v["event"]["type"] = serde_json::json!(["connection", "start"]);
        }),
        ("connect", "a duration on a connect", |v| {
            v["event"]["duration"] = 5.into();
        }),
        ("connect", "the old portex.direction", |v| {
            v["portex"]["direction"] = "outbound".into();
        }),
        ("close", "the old portex.duration_us", |v| {
            v["portex"]["duration_us"] = 5.into();
        }),
        (
            "connect",
            "network.direction outbound (ECS host view: egress)",
            |v| {
                v["network"]["direction"] = "outbound".into();
            },
        ),
        ("connect_failed", "a failure with outcome success", |v| {
            v["event"]["outcome"] = "success".into();
        }),
        ("pool_pressure", "pool_pressure as kind event", |v| {
            v["event"]["kind"] = "event".into();
        }),
        ("connect", "a pod uid that is not a uid", |v| {
            v["orchestrator"] = serde_json::json!({"type": "kubernetes", "resource": {"type": "pod", "id": "x\"y"}});
        }),
        (
            "connect",
            "a container name with a control character",
            |v| {
                v["container"] = serde_json::json!({"id": "ab".repeat(32), "runtime": "docker", "name": "a\u{1b}b"});
            },
        ),
    ];
    for (action, why, edit) in cases {
        let mut v = find(action);
        assert!(schema().is_valid(&v), "{action} as it is must be valid");
        edit(&mut v);
        assert!(!schema().is_valid(&v), "{why}: accepted\n{v}");
    }
}

//! packaging/vector and packaging/fluent-bit keep the shipper's own fields beside
//! portex's (the parsed line is merged into the record, not put in its place).
//!
//! Vector: its remap program runs in `vrl`, the command line of Vector's own VRL
//! implementation (crates.io: vrl, installed by scripts/setup.sh), on the event
//! Vector's file source makes of a real portex line (golden events.ndjson). Vector
//! itself is in neither Debian nor crates.io.
//! Fluent Bit is not installable here (not in Debian, PyPI or npm): its configuration is
//! read and checked for the setup that merges (the parser filter with Reserve_Data On,
//! no parser on the tail input, which would replace the record). Needs no root.
use std::process::Command;

use portex_e2e::{Value, workspace_root};

/// The `source` program of the remap transform `portex_json`.
fn vector_program() -> String {
    let toml =
        std::fs::read_to_string(workspace_root().join("packaging/vector/vector.toml")).unwrap();
    let after = toml
        .split("[transforms.portex_json]")
        .nth(1)
        .expect("the remap transform");
    let body = after
        .split("source = '''")
        .nth(1)
        .and_then(|b| b.split("'''").next())
        .expect("its source");
    body.to_string()
}

/// Runs the program on `events` (one JSON object each) with vrl; the objects it leaves.
fn vrl(program: &str, events: &[Value]) -> Vec<Value> {
    let dir = std::env::temp_dir().join(format!("portex-vrl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("program.vrl");
    let input = dir.join("events.json");
    std::fs::write(&prog, program).unwrap();
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = Command::new("vrl")
        .arg("--input")
        .arg(&input)
        .arg("--program")
        .arg(&prog)
        .arg("--print-object")
        .output()
        .unwrap_or_else(|e| panic!("vrl (cargo install vrl; scripts/setup.sh): {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "vrl: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("vrl printed {stdout}: {e}")))
        .collect()
}

#[test]
fn vector_merges_the_parsed_line_and_keeps_its_own_fields() {
    let golden =
        std::fs::read_to_string(workspace_root().join("portex-agent/tests/golden/events.ndjson"))
            .unwrap();
    let line = golden.lines().next().unwrap();
    // What Vector's file source makes of a line (its legacy namespace, the default).
    let read = |message: &str| {
        serde_json::json!({
            "message": message,
            "file": "/var/log/portex/events.ndjson",
            "host": "vector-pod-7",
            "source_type": "file",
            "timestamp": "2026-11-28T06:00:02.5Z",
        })
    };
    let out = vrl(&vector_program(), &[read(line), read("not json {")]);
    assert_eq!(out.len(), 2, "{out:?}");
    let ev = &out[0];
    // Vector's fields stay ...
    assert_eq!(ev["file"], "/var/log/portex/events.ndjson", "{ev}");
    assert_eq!(ev["source_type"], "file", "{ev}");
    assert_eq!(ev["timestamp"], "2026-11-28T06:00:02.5Z", "{ev}");
    // ... portex's are all there, nested as it wrote them, host included ...
    let parsed: Value = serde_json::from_str(line).unwrap();
    for (k, v) in parsed.as_object().unwrap() {
        assert_eq!(&ev[k], v, "{k} in {ev}");
    }
    assert_eq!(ev["host"]["name"], "golden-host");
    assert_eq!(ev["event"]["action"], "connect");
    // ... and the raw line, now fields, is gone.
    assert!(ev.get("message").is_none(), "{ev}");
    // A line that is not JSON passes as Vector read it.
    assert_eq!(out[1], read("not json {"));
}

/// The settings of each `[SECTION]` of a Fluent Bit classic configuration.
fn fluent_sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((name.to_string(), Vec::new()));
        } else if let Some((_, kv)) = out.last_mut() {
            let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            kv.push((k.to_lowercase(), v.trim().to_string()));
        }
    }
    out
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn fluent_bit_merges_the_parsed_line_into_the_record() {
    let dir = workspace_root().join("packaging/fluent-bit");
    let conf = fluent_sections(&std::fs::read_to_string(dir.join("fluent-bit.conf")).unwrap());
    let parsers = fluent_sections(&std::fs::read_to_string(dir.join("parsers.conf")).unwrap());
    let input = &conf.iter().find(|(s, _)| s == "INPUT").expect("an input").1;
    assert_eq!(get(input, "name"), Some("tail"));
    assert_eq!(get(input, "path"), Some("/var/log/portex/events.ndjson"));
    // A parser on the tail input replaces the record with the parsed line.
    assert_eq!(get(input, "parser"), None, "{input:?}");
    let tag = get(input, "tag").unwrap();
    let filter = &conf
        .iter()
        .find(|(s, kv)| s == "FILTER" && get(kv, "name") == Some("parser"))
        .expect("a parser filter")
        .1;
    assert_eq!(get(filter, "match"), Some(tag));
    // tail puts the line under "log"; Reserve_Data keeps the record's other fields.
    assert_eq!(get(filter, "key_name"), Some("log"));
    assert_eq!(get(filter, "reserve_data"), Some("On"));
    let parser = get(filter, "parser").unwrap();
    let p = &parsers
        .iter()
        .find(|(s, kv)| s == "PARSER" && get(kv, "name") == Some(parser))
        .expect("the parser the filter names")
        .1;
    assert_eq!(get(p, "format"), Some("json"));
    assert_eq!(get(p, "time_key"), Some("@timestamp"));
    // The event keeps its @timestamp as a field too.
    assert_eq!(get(p, "time_keep"), Some("On"));
}

//! packaging/prometheus: promtool accepts the rules and every case of their unit tests
//! passes, and the rules name only metrics the agent publishes (the golden exposition,
//! portex-agent/tests/golden/metrics.prom), so a renamed metric fails here rather than
//! silencing an alert. Needs no root; promtool is the Debian package prometheus
//! (scripts/setup.sh).
use std::{collections::BTreeSet, path::Path, process::Command};

use portex_e2e::workspace_root;

fn promtool(dir: &Path, args: &[&str]) {
    let out = Command::new("promtool")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("promtool (Debian package prometheus, scripts/setup.sh): {e}"));
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("promtool {args:?}:\n{said}");
    assert!(out.status.success(), "promtool {args:?} failed:\n{said}");
}

#[test]
fn promtool_checks_the_rules_and_passes_their_tests() {
    let dir = workspace_root().join("packaging/prometheus");
    promtool(&dir, &["check", "rules", "portex.rules.yml"]);
    promtool(&dir, &["test", "rules", "portex.rules.test.yml"]);
}

/// The words of `text` that look like metric names starting with `prefix`.
fn names(text: &str, prefix: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_rules_name_only_metrics_the_agent_publishes() {
    let root = workspace_root();
    let rules =
        std::fs::read_to_string(root.join("packaging/prometheus/portex.rules.yml")).unwrap();
    let golden =
        std::fs::read_to_string(root.join("portex-agent/tests/golden/metrics.prom")).unwrap();
    let published = names(&golden, "portex_");
    let recorded: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(|n| n.trim().to_string())
        .collect();
    let used: Vec<String> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| names(l, "portex_"))
        .filter(|n| !n.contains(':') && !recorded.contains(n))
        .collect();
    assert!(!used.is_empty());
    let unknown: Vec<&String> = used.iter().filter(|n| !published.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the rules use metrics the agent does not publish: {unknown:?}"
    );
    // The pool and failure labels the rules group by.
    for label in [
        "destination_address",
        "destination_port",
        "transport",
        "errno",
        "where",
    ] {
        assert!(golden.contains(&format!("{label}=\"")), "{label}");
        assert!(rules.contains(label), "{label}");
    }
}

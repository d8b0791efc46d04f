//! Issue 11, "Logging": diagnostics go through the logger. An exhaustion writes its
//! first failures at once and sums up the rest instead of a line per failure, and
//! `--log-format json` makes every line of stderr a JSON object.
use portex_e2e::*;

/// Failures of a pool written one by one before the rest are summed up
/// (portex-agent logic::warn_limit::LIMITS.burst).
const BURST: usize = 5;

/// 400 connects into a 4-port range: about 396 EADDRNOTAVAIL from one process, in well
/// under a second. Returns the driver and its failures.
fn exhaust(ns: &Netns) -> (Driven, usize) {
    let d = ns.drive(&["exhaust-tcp", "127.0.0.1:5000", "400"]);
    let failed = d.facts("connect err ").len();
    assert!(
        failed > 300,
        "the driver did not exhaust the range: {:?}",
        d.lines
    );
    (d, failed)
}

/// The number after `key=` in a text log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let (_, rest) = line.split_once(&format!(" {key}="))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn an_exhaustion_writes_its_first_failures_and_sums_up_the_rest() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("logtext", 40000, 40003);
    let portex = Portex::start(&["watch", "--failures-only"]);
    let (d, failed) = exhaust(&ns);
    let fin = portex.stop();
    assert_eq!(fin.code, Some(0), "{:?}", fin.stderr);
    // Other tests run beside this one: their lines name other pids.
    let shown: Vec<&String> = fin
        .stderr
        .iter()
        .filter(|l| {
            l.contains("EADDRNOTAVAIL: connect failed") && l.contains(&format!(" pid={} ", d.pid))
        })
        .collect();
    assert_eq!(shown.len(), BURST, "{:#?}", fin.stderr);
    for l in &shown {
        // Timestamp (RFC 3339, UTC), level, target, message, fields.
        assert!(l.len() > 30 && l.as_bytes()[10] == b'T', "{l}");
        assert!(l.contains("Z  WARN portex_agent::pipeline::emit: "), "{l}");
        assert_eq!(field(l, "netns"), Some(ns.inode()), "{l}");
        assert!(l.contains(" destination=127.0.0.1:5000 "), "{l}");
    }
    let summaries: Vec<&String> = fin
        .stderr
        .iter()
        .filter(|l| {
            l.contains("not shown one by one") && l.contains(&format!(" top.pid={} ", d.pid))
        })
        .collect();
    assert!(!summaries.is_empty(), "{:#?}", fin.stderr);
    let summed: u64 = summaries
        .iter()
        .map(|l| field(l, "not_shown").unwrap_or_else(|| panic!("{l}")))
        .sum();
    assert_eq!(summed as usize, failed - BURST, "{summaries:#?}");
    // Not a line per failure: the few shown and one summary per 10 s (the run is short).
    assert!(summaries.len() <= 2, "{summaries:#?}");
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn json_log_format_makes_every_stderr_line_a_json_object() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("logjson", 40000, 40003);
    let portex = Portex::start(&["agent", "--log-format", "json", "--syscall-hooks", "on"]);
    let (d, failed) = exhaust(&ns);
    let fin = portex.stop();
    assert_eq!(fin.code, Some(0), "{:?}", fin.stderr);
    let records: Vec<Value> = fin
        .stderr
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for r in &records {
        let ts = r["timestamp"].as_str().unwrap_or_else(|| panic!("{r}"));
        assert!(
            ts.len() == 27 && ts.ends_with('Z') && &ts[10..11] == "T",
            "{r}"
        );
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&r["level"].as_str().unwrap()),
            "{r}"
        );
        assert!(r["target"].is_string() && r["message"].is_string(), "{r}");
    }
    assert!(
        records[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("watching"),
        "{}",
        records[0]
    );
    let shown = records
        .iter()
        .filter(|r| r["pid"] == d.pid && r["message"].as_str().unwrap().contains("EADDRNOTAVAIL"))
        .inspect(|r| {
            assert_eq!(r["level"], "WARN", "{r}");
            assert_eq!(r["netns"], ns.inode(), "{r}");
            assert_eq!(r["destination"], "127.0.0.1:5000", "{r}");
            assert_eq!(r["pool.size"], 4, "{r}");
        })
        .count();
    assert_eq!(shown, BURST, "{:#?}", fin.stderr);
    let summed: u64 = records
        .iter()
        .filter(|r| r["top.pid"] == d.pid)
        .map(|r| r["not_shown"].as_u64().unwrap())
        .sum();
    assert_eq!(summed as usize, failed - BURST, "{:#?}", fin.stderr);
    // The exit summary is a record too, its figures as fields.
    let last = records.last().unwrap();
    assert!(
        last["message"].as_str().unwrap().contains("kernel events"),
        "{last}"
    );
    assert!(last["kernel_events"].as_u64().unwrap() > 0, "{last}");
    assert!(last["output_lines_written"].is_u64(), "{last}");
}

/// A fatal error is one line and a non-zero exit, in JSON too.
#[test]
fn a_fatal_error_in_json_format_is_one_json_record() {
    let (code, err, _) = run_portex(&[
        "agent",
        "--log-format",
        "json",
        "--warn",
        "90",
        "--critical",
        "80",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let r: Value = serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(r["level"], "ERROR", "{r}");
    assert_eq!(r["target"], "portex", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("must not be below"),
        "{r}"
    );
    // A filter that does not parse is bad usage: one line, exit status 2 (3 for status,
    // whose statuses are the monitoring plugins'), before or after the subcommand.
    for (args, want) in [
        (&["watch", "--log-level", "portex=loud"][..], 2),
        (&["--log-level", "portex=loud", "status"][..], 3),
    ] {
        let (code, err, _) = run_portex(args);
        assert_eq!(code, Some(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("portex: error: "), "{err}");
    }
}

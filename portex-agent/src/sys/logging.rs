//! Diagnostics on stderr through `tracing`: levels, RFC 3339 UTC timestamps,
//! RUST_LOG-style filters, and text or JSON (one object per line with timestamp, level,
//! target, message and fields: what journald and Kubernetes log collectors parse).
//! aya's own `log` records come in through tracing-log's bridge, and the kernel
//! programs' aya-log records (sys::kernel_log) through the same bridge.
//!
//! The event stream (stdout, or the agent's --output) is not logging and never passes
//! here. Two lines are not diagnostics either and are never filtered out: the fatal
//! error a command ends with, and the summary of a run. In text format they keep their
//! `portex: ...` form (scripts and tests read them); in JSON format they are records
//! like the others, so that every line of stderr parses.
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use serde_json::{Map, Value};
use tracing_subscriber::EnvFilter;

/// The target a filter names to turn on the kernel programs' records.
pub(crate) const KERNEL_TARGET: &str = "portex_ebpf";

static JSON: AtomicBool = AtomicBool::new(false);
/// The most verbose aya-log level the kernel programs may emit (aya_log::Level as u8:
/// 1 error ... 5 trace); 0 turns them off.
static KERNEL_LEVEL: AtomicU8 = AtomicU8::new(0);

/// A filter (RUST_LOG syntax), checked. Field-value regexes are off: a filter is a
/// level per target, nothing a typo can turn into a slow pattern.
pub(crate) fn parse_filter(text: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .with_regex(false)
        .parse(text)
        .map_err(|e| format!("invalid log filter {text:?}: {e}"))
}

/// Installs the logger for the rest of the process. `kernel_log` (or a directive for
/// KERNEL_TARGET in `filter`) turns on the kernel programs' records; otherwise the
/// loader keeps them out of the programs.
pub(crate) fn init(filter: &str, json: bool, kernel_log: bool) -> Result<(), String> {
    JSON.store(json, Ordering::Relaxed);
    let asked = kernel_log || filter.contains(KERNEL_TARGET);
    let filter = if kernel_log && !filter.contains(KERNEL_TARGET) {
        // The kernel's records are all warn or debug: show them whatever the level.
        format!("{filter},{KERNEL_TARGET}=debug")
    } else {
        filter.to_string()
    };
    let filter = parse_filter(&filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let res = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    res.map_err(|e| format!("cannot set up logging: {e}"))?;
    if asked {
        KERNEL_LEVEL.store(kernel_level(), Ordering::Relaxed);
    }
    Ok(())
}

/// The most verbose level the installed filter lets through for KERNEL_TARGET.
fn kernel_level() -> u8 {
    use tracing::Level;
    // aya_log_common::Level: Error = 1 ... Trace = 5.
    if tracing::enabled!(target: KERNEL_TARGET, Level::TRACE) {
        5
    } else if tracing::enabled!(target: KERNEL_TARGET, Level::DEBUG) {
        4
    } else if tracing::enabled!(target: KERNEL_TARGET, Level::INFO) {
        3
    } else if tracing::enabled!(target: KERNEL_TARGET, Level::WARN) {
        2
    } else if tracing::enabled!(target: KERNEL_TARGET, Level::ERROR) {
        1
    } else {
        0
    }
}

/// For the loader: AYA_LOG_LEVEL of the kernel programs (0: off).
pub(crate) fn kernel_log_level() -> u8 {
    KERNEL_LEVEL.load(Ordering::Relaxed)
}

pub(crate) fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The fatal error a command ends with: `portex: error: MSG` in text, an ERROR record
/// in JSON. Never filtered.
pub(crate) fn fatal(msg: &str) {
    if json() {
        record("ERROR", msg, Map::new());
    } else {
        eprintln!("portex: error: {msg}");
    }
}

/// A line of user output on stderr (the summary of a run): `portex: MSG` in text, an
/// INFO record with `fields` in JSON. Never filtered.
pub(crate) fn always(msg: &str, fields: Map<String, Value>) {
    if json() {
        record("INFO", msg, fields);
    } else {
        eprintln!("portex: {msg}");
    }
}

/// One JSON record in the shape of the logger's: timestamp, level, message, the fields,
/// target (in that order: serde_json's maps would sort the keys).
fn record(level: &str, msg: &str, fields: Map<String, Value>) {
    let mut ts = String::with_capacity(32);
    let now = crate::sys::clock::read_clock(libc::CLOCK_REALTIME) as i128;
    crate::logic::clock::rfc3339_micros(now, &mut ts);
    let mut line = format!(
        "{{\"timestamp\":\"{ts}\",\"level\":\"{level}\",\"message\":{}",
        Value::from(msg)
    );
    for (k, v) in fields {
        line.push_str(&format!(",{}:{v}", Value::from(k)));
    }
    line.push_str(",\"target\":\"portex\"}");
    eprintln!("{line}");
}

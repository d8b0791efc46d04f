//! One human-readable line per event.
use std::fmt::Write;

use super::View;
use crate::{clock::rfc3339_micros, errno};

pub use crate::untrusted::sanitize;

pub fn write_line(v: &View, out: &mut String) {
    let r = v.rec;
    let mut ts = String::with_capacity(32);
    rfc3339_micros(v.unix_ns, &mut ts);
    // Time of day is enough on a terminal: HH:MM:SS.micros
    out.push_str(ts.get(11..26).unwrap_or(&ts));
    let _ = write!(out, " {:<14} {:>7} ", r.action.as_str(), r.process.pid);
    sanitize(v.process_name, out);
    let _ = write!(out, " {} {}", r.transport.as_str(), r.source);
    if let Some(d) = r.destination {
        let _ = write!(out, " -> {d}");
    }
    if let Some(e) = r.errno {
        let _ = write!(out, " {}", errno::name(e));
    }
    if let Some(c) = r.cause {
        let _ = write!(out, " ({})", c.describe());
    }
    if let Some(c) = &r.close {
        let _ = write!(out, " {}", c.kind.as_str());
        if c.time_wait {
            out.push_str(" time_wait");
        }
    }
    if let Some(d) = r.duration_us {
        let _ = write!(out, " {}.{:03}ms", d / 1000, d % 1000);
    }
    out.push('\n');
}

/// A pool crossed a utilisation threshold.
pub fn write_pressure(p: &crate::ledger::Pressure, unix_ns: i128, out: &mut String) {
    let mut ts = String::with_capacity(32);
    rfc3339_micros(unix_ns, &mut ts);
    out.push_str(ts.get(11..26).unwrap_or(&ts));
    let v = &p.view;
    let k = &v.pool.key;
    let _ = write!(
        out,
        " pool_pressure  [{}] {} {}/{} used ({:.0}%), {} in TIME_WAIT",
        p.severity.as_str(),
        k.label(),
        v.pool.used,
        v.pool.size,
        v.pool.utilisation() * 100.0,
        v.pool.time_wait
    );
    if let Some(s) = v.forecast.seconds_to_full {
        let _ = write!(out, ", full in {s:.0}s");
    }
    let holders: Vec<String> = v
        .pool
        .holders
        .iter()
        .take(3)
        .map(|h| format!("{} ({})", h.label(), h.held))
        .collect();
    let _ = writeln!(out, "; top holders: {}", holders.join(", "));
}

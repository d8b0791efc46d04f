//! The summary as printed: a Markdown table.
use serde_json::Value;

/// The summary as a Markdown table (what the README shows).
pub(super) fn table(table: &[Value]) -> String {
    let mut s = String::from(
        "| section | case | tracer / tool | result | ratio |\n|---|---|---|---|---|\n",
    );
    for r in table {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let line = match r["section"].as_str().unwrap_or("") {
            "churn" => format!(
                "| churn | {} | {} | {:.0} conn/s; workload {:.1} us CPU/conn ({:+.1}); tracer {:.2} ms CPU/1k conn; {} dropped{}{} | {:.3} |",
                r["mode"].as_str().unwrap_or(""),
                r["tracer"].as_str().unwrap_or(""),
                f("median_per_sec"),
                f("workload_cpu_us_per_conn"),
                f("workload_cpu_added_us_per_conn"),
                f("cpu_ms_per_1000_conn"),
                r["dropped"],
                // Runs the kernel skipped (recursion_misses), for portex's tracers.
                if f("skipped_per_million_events").is_nan() {
                    String::new()
                } else {
                    format!(
                        " (of them {} skipped runs: {:.1} per million kernel events)",
                        r["kernel_runs_skipped"],
                        f("skipped_per_million_events")
                    )
                },
                // Output volume, for the tracers whose output is counted.
                if f("lines_per_1000_conn").is_nan() {
                    String::new()
                } else {
                    format!(
                        "; {:.0} lines, {:.0} KiB per 1k conn",
                        f("lines_per_1000_conn"),
                        f("bytes_per_1000_conn") / 1024.0
                    )
                },
                f("ratio_to_untraced")
            ),
            "syscalls" => format!(
                "| syscalls | getppid loop, 2 threads | {} | {:.0} calls/s | {:.3} |",
                r["tracer"].as_str().unwrap_or(""),
                f("median_per_sec"),
                f("ratio_to_untraced")
            ),
            "status" => format!(
                "| status | {} TIME_WAIT sockets | {} | {:.1} ms | {:.2} x ss |",
                r["time_wait_sockets"],
                r["tool"].as_str().unwrap_or(""),
                f("median_ms"),
                f("ratio_to_ss")
            ),
            "failure_latency" => format!(
                "| failure -> event | {} failing connects | portex agent | p50 {:.2} ms, p99 {:.2} ms | |",
                r["samples"],
                f("p50_ms"),
                f("p99_ms")
            ),
            "exhaustion" => format!(
                "| exhaustion loop | {} connects, {} failed | portex agent --syscall-hooks on --accepted | {} kernel runs skipped in {} events ({:.1} per million) | |",
                r["connects"],
                r["failed"],
                r["kernel_runs_skipped"],
                r["kernel_events"],
                f("skipped_per_million_events")
            ),
            "memory" => format!(
                "| memory | {} ports held | portex agent | {:.1} MiB RSS (peak {:.1}) | |",
                r["ports_held"],
                f("agent_rss_mib"),
                f("agent_peak_rss_mib")
            ),
            "nat" => nat_line(r),
            _ => continue,
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}

/// A row of the NAT section (bench/nat.rs): conntrack -L, portex status, or the agent.
fn nat_line(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let case = format!("{} SNAT conntrack entries", r["entries"]);
    let tool = r["tool"].as_str().unwrap_or("");
    match tool {
        "conntrack -L" => format!(
            "| nat | {case} | {tool} | {:.0} ms (best of 3) | |",
            f(&r["best_ms"])
        ),
        "portex status --json" => format!(
            "| nat | {case} | {tool} | {:.0} ms ({:.0} ms without them: {:+.0} ms dump and accounting) | {:.2} x conntrack -L |",
            f(&r["best_ms"]),
            f(&r["best_ms_without"]),
            f(&r["added_ms"]),
            f(&r["ratio_to_conntrack"])
        ),
        _ => {
            let (w, wo) = (&r["with"], &r["without"]);
            let scans = match (
                w["nat_scans_total"].as_f64(),
                w["nat_scan_seconds"].as_f64(),
            ) {
                (Some(n), Some(s)) => format!("{n} NAT scans, the last {:.1} ms", s * 1000.0),
                _ => "NAT scans not reported by this build".into(),
            };
            format!(
                "| nat | {case}, {} s | {tool} | CPU {:.0} ms ({:.0} ms without them: {:+.1} ms/s); {scans} | |",
                r["seconds"],
                f(&w["cpu_ms"]),
                f(&wo["cpu_ms"]),
                f(&r["cpu_added_ms_per_s"])
            )
        }
    }
}

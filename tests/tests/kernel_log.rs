//! Issue 11, "Logging": the kernel programs' own diagnostics (aya-log), in a test binary
//! of its own: it floods the host with connections, which would make the agents of tests
//! running beside it in one binary lose events.
use std::time::Duration;

use portex_e2e::*;

/// With --kernel-log, a ring buffer too small for the load makes the programs say so,
/// through the logger (target portex_ebpf), at powers of two of each CPU's count: a few
/// lines, not one per lost event.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn kernel_log_reports_a_full_ring_buffer_a_few_times() {
    if !require_root() {
        return;
    }
    let portex = Portex::start(&[
        "agent",
        "--output",
        "/dev/null",
        "--kernel-log",
        "--log-format",
        "json",
        "--ring-kib",
        "4",
        "--syscall-hooks",
        "off",
    ]);
    let ns = Netns::new("klog");
    ns.drive(&["flood", "127.0.0.1:7000", "3", "2"]);
    assert!(portex.wait_stderr("ring buffer full", 1, Duration::from_secs(10)));
    let fin = portex.stop();
    let records: Vec<Value> = fin
        .stderr
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let kernel: Vec<&Value> = records
        .iter()
        .filter(|r| r["target"] == "portex_ebpf")
        .collect();
    let lost = records.last().unwrap()["dropped_ring_buffer_full"]
        .as_u64()
        .unwrap();
    assert!(lost > 0, "{:#?}", fin.stderr);
    for r in &kernel {
        assert_eq!(r["level"], "WARN", "{r}");
        assert!(
            r["message"].as_str().unwrap().contains("ring buffer full"),
            "{r}"
        );
    }
    // Per CPU: the 1st, 2nd, 4th ... loss, so at most log2(lost) + 1 lines per CPU.
    let cpus = std::thread::available_parallelism().map_or(64, |n| n.get()) as u64;
    let bound = cpus * (64 - lost.leading_zeros() as u64 + 1);
    assert!(
        !kernel.is_empty() && (kernel.len() as u64) <= bound,
        "{} kernel records for {lost} lost events",
        kernel.len()
    );
}

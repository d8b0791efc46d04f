//! Prometheus text exposition. Pure: the values come in a Page. Names follow the
//! Prometheus conventions: base units as suffixes (`_seconds`, `_bytes`, and `_ports`
//! for counts of ports), `_total` on counters, no per-second gauge where `rate()` over a
//! counter says the same. Label sets are bounded: actions, errnos and causes are small
//! enums; pools appear only above a utilisation floor and only the top N; processes only
//! as the top N groups of (name, container) plus `other` (logic::top_holders), never by
//! pid. No label carries an ephemeral port.
use std::{collections::BTreeMap, fmt::Write};

use super::prometheus_nat::{NatSnapshot, render_nat};
use crate::logic::{self_stats::SelfStats, top_holders::HolderGroup};

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PoolGauge {
    pub netns: u64,
    pub transport: &'static str,
    pub source_address: String,
    /// The destination service: its address (no brackets for IPv6) and port.
    pub destination_address: String,
    pub destination_port: u16,
    pub size: u32,
    pub used: u32,
    pub time_wait: u32,
    /// Of them, TIME_WAIT ports connect() may take over (not in `used`).
    pub reusable: u32,
    pub seconds_to_full: Option<f64>,
}

/// What the output thread publishes for scrapes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub pools: Vec<PoolGauge>,
    pub holders: Vec<HolderGroup>,
    pub tracked_sockets: u64,
    pub nat: NatSnapshot,
}

/// Everything one scrape shows, read where each value lives (pipeline::metrics).
#[derive(Clone, Debug, Default)]
pub(crate) struct Page {
    pub(crate) kernel_events: u64,
    pub(crate) ringbuf_dropped: u64,
    pub(crate) user_dropped: u64,
    pub(crate) decode_errors: u64,
    pub(crate) kernel_skipped: u64,
    pub(crate) map_full: u64,
    /// 1 while the connect/bind syscall tracepoints are attached.
    pub(crate) syscall_hooks: u64,
    /// Every kernel program and whether the running kernel took it.
    pub(crate) programs: Vec<(&'static str, bool)>,
    pub(crate) sink_written: u64,
    pub(crate) sink_dropped: u64,
    pub(crate) sink_errors: u64,
    pub(crate) http_rejected: u64,
    pub(crate) http_accept_errors: u64,
    pub(crate) events: BTreeMap<&'static str, u64>,
    /// (errno, cause, transport) -> count
    pub(crate) failures: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    pub(crate) pool_pressure: BTreeMap<&'static str, u64>,
    /// connect_stalled by cause.
    pub(crate) stalls: BTreeMap<&'static str, u64>,
    pub(crate) snapshot: Snapshot,
    /// The agent's own process (the standard process_* metrics).
    pub(crate) own: SelfStats,
}

/// Label values are escaped as the exposition format requires, and control characters
/// (which process names may carry) are shown as text.
pub(super) fn esc(v: &str) -> String {
    crate::logic::untrusted::label_value(v)
}

pub(super) fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

pub(crate) fn render(page: &Page) -> String {
    let mut o = String::with_capacity(8192);
    head(
        &mut o,
        "portex_build_info",
        "gauge",
        "Build information; always 1.",
    );
    let _ = writeln!(
        o,
        "portex_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    head(
        &mut o,
        "portex_kernel_events_total",
        "counter",
        "Records read from the ring buffer.",
    );
    let _ = writeln!(o, "portex_kernel_events_total {}", page.kernel_events);
    head(
        &mut o,
        "portex_events_total",
        "counter",
        "Events by action.",
    );
    for (a, n) in page.events.iter() {
        let _ = writeln!(o, "portex_events_total{{action=\"{a}\"}} {n}");
    }
    head(
        &mut o,
        "portex_failures_total",
        "counter",
        "Failed connect()/bind() calls by errno and cause.",
    );
    for ((e, c, t), n) in page.failures.iter() {
        let _ = writeln!(
            o,
            "portex_failures_total{{errno=\"{e}\",cause=\"{c}\",transport=\"{t}\"}} {n}"
        );
    }
    head(
        &mut o,
        "portex_connect_stalls_total",
        "counter",
        "connect() calls whose SYN was retransmitted (still waiting), by cause: nat_exhausted when a full NAT pool of this host serves the destination, else unknown.",
    );
    for (c, n) in page.stalls.iter() {
        let _ = writeln!(o, "portex_connect_stalls_total{{cause=\"{c}\"}} {n}");
    }
    head(
        &mut o,
        "portex_pool_pressure_total",
        "counter",
        "pool_pressure events by severity.",
    );
    for (s, n) in page.pool_pressure.iter() {
        let _ = writeln!(o, "portex_pool_pressure_total{{severity=\"{s}\"}} {n}");
    }
    head(
        &mut o,
        "portex_dropped_events_total",
        "counter",
        "Events lost, by where they were lost.",
    );
    for (w, v) in [
        ("ring_buffer", page.ringbuf_dropped),
        ("user_space", page.user_dropped),
        ("undecodable", page.decode_errors),
        ("kernel_skipped_run", page.kernel_skipped),
    ] {
        let _ = writeln!(o, "portex_dropped_events_total{{where=\"{w}\"}} {v}");
    }
    head(
        &mut o,
        "portex_socket_map_full_total",
        "counter",
        "Sockets the kernel could not track (map full).",
    );
    let _ = writeln!(o, "portex_socket_map_full_total {}", page.map_full);
    head(
        &mut o,
        "portex_syscall_hooks_attached",
        "gauge",
        "1 while the connect/bind syscall tracepoints are attached (auto mode attaches them under pressure).",
    );
    let _ = writeln!(o, "portex_syscall_hooks_attached {}", page.syscall_hooks);
    head(
        &mut o,
        "portex_program_loaded",
        "gauge",
        "1 when the running kernel took the eBPF program; 0 when it refused it or lacks what it reads (the agent's log says why and what is lost).",
    );
    for (name, loaded) in &page.programs {
        let _ = writeln!(
            o,
            "portex_program_loaded{{program=\"{name}\"}} {}",
            *loaded as u8
        );
    }
    head(
        &mut o,
        "portex_sink_lines_total",
        "counter",
        "NDJSON lines by fate at the output sink.",
    );
    let _ = writeln!(
        o,
        "portex_sink_lines_total{{result=\"written\"}} {}",
        page.sink_written
    );
    let _ = writeln!(
        o,
        "portex_sink_lines_total{{result=\"dropped\"}} {}",
        page.sink_dropped
    );
    head(
        &mut o,
        "portex_sink_errors_total",
        "counter",
        "Failed writes to the output sink.",
    );
    let _ = writeln!(o, "portex_sink_errors_total {}", page.sink_errors);
    head(
        &mut o,
        "portex_http_connections_rejected_total",
        "counter",
        "Metrics connections closed unanswered, by reason (too many at once, accept() failed).",
    );
    for (r, v) in [
        ("too_many_clients", page.http_rejected),
        ("accept_failed", page.http_accept_errors),
    ] {
        let _ = writeln!(
            o,
            "portex_http_connections_rejected_total{{reason=\"{r}\"}} {v}"
        );
    }

    let snap = &page.snapshot;
    head(
        &mut o,
        "portex_tracked_sockets",
        "gauge",
        "Sockets holding a port in the ledger.",
    );
    let _ = writeln!(o, "portex_tracked_sockets {}", snap.tracked_sockets);
    let pool_labels = |p: &PoolGauge| {
        format!(
            "netns=\"{}\",transport=\"{}\",source_address=\"{}\",destination_address=\"{}\",destination_port=\"{}\"",
            p.netns,
            p.transport,
            esc(&p.source_address),
            esc(&p.destination_address),
            p.destination_port
        )
    };
    for (name, help, get) in [
        (
            "portex_pool_size_ports",
            "Source ports connect() can use towards the destination.",
            (|p: &PoolGauge| p.size) as fn(&PoolGauge) -> u32,
        ),
        (
            "portex_pool_used_ports",
            "Source ports in use towards the destination.",
            |p: &PoolGauge| p.used,
        ),
        (
            "portex_pool_time_wait_ports",
            "Sockets in TIME_WAIT towards the destination (reusable ones included).",
            |p: &PoolGauge| p.time_wait,
        ),
        (
            "portex_pool_reusable_ports",
            "TIME_WAIT ports connect() may take over (tcp_tw_reuse, older than tcp_tw_reuse_delay); not counted as used.",
            |p: &PoolGauge| p.reusable,
        ),
    ] {
        head(&mut o, name, "gauge", help);
        for p in &snap.pools {
            let _ = writeln!(o, "{name}{{{}}} {}", pool_labels(p), get(p));
        }
    }
    head(
        &mut o,
        "portex_pool_time_to_full_seconds",
        "gauge",
        "Forecast: seconds until the pool is empty at the current rates (absent when it is not filling up).",
    );
    for p in &snap.pools {
        if let Some(s) = p.seconds_to_full {
            let _ = writeln!(
                o,
                "portex_pool_time_to_full_seconds{{{}}} {s:.1}",
                pool_labels(p)
            );
        }
    }
    let holder_labels = |h: &HolderGroup| {
        format!(
            "process_name=\"{}\",container_id=\"{}\"",
            esc(&h.name),
            esc(h.container_id.as_deref().unwrap_or(""))
        )
    };
    for (name, help, get) in [
        (
            "portex_process_held_ports",
            "Ports held by the processes of one name in one container: the top groups, the rest as process_name=\"other\".",
            (|h: &HolderGroup| h.held) as fn(&HolderGroup) -> u32,
        ),
        (
            "portex_process_time_wait_ports",
            "Of them, ports in TIME_WAIT.",
            |h: &HolderGroup| h.time_wait,
        ),
    ] {
        head(&mut o, name, "gauge", help);
        for h in &snap.holders {
            let _ = writeln!(o, "{name}{{{}}} {}", holder_labels(h), get(h));
        }
    }
    render_nat(&mut o, &snap.nat);
    own_process(&mut o, &page.own);
    o
}

/// The standard process_* metrics, with the names, types and help texts of the
/// official client libraries, so that dashboards made for any exporter work.
fn own_process(o: &mut String, s: &SelfStats) {
    let float = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| v.to_string());
    let int = |v: Option<u64>| v.map(|v| v.to_string());
    for (name, kind, help, v) in [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            float(s.cpu_seconds),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            int(s.resident_memory_bytes),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            int(s.virtual_memory_bytes),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            float(s.start_time_seconds),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            int(s.open_fds),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            int(s.max_fds),
        ),
    ] {
        if let Some(v) = v {
            head(o, name, kind, help);
            let _ = writeln!(o, "{name} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Page {
        let mut m = Page::default();
        m.failures
            .insert(("EADDRNOTAVAIL", "port_range_exhausted", "tcp"), 3);
        m.snapshot.pools.push(PoolGauge {
            netns: 1,
            transport: "tcp",
            source_address: "10.0.0.1".into(),
            destination_address: "fd00::9".into(),
            destination_port: 80,
            size: 4,
            used: 4,
            time_wait: 0,
            reusable: 0,
            seconds_to_full: Some(0.0),
        });
        m.snapshot.holders.push(HolderGroup {
            name: "a\"b".into(),
            container_id: None,
            held: 4,
            time_wait: 0,
        });
        m.own = SelfStats {
            cpu_seconds: Some(2.5),
            resident_memory_bytes: Some(4096),
            virtual_memory_bytes: None,
            start_time_seconds: Some(1764000000.25),
            open_fds: Some(9),
            max_fds: Some(1024),
        };
        m
    }

    #[test]
    fn renders_counters_and_bounded_gauges() {
        let t = render(&page());
        assert!(t.contains("portex_failures_total{errno=\"EADDRNOTAVAIL\",cause=\"port_range_exhausted\",transport=\"tcp\"} 3"), "{t}");
        assert!(t.contains("portex_pool_used_ports{netns=\"1\",transport=\"tcp\",source_address=\"10.0.0.1\",destination_address=\"fd00::9\",destination_port=\"80\"} 4"), "{t}");
        assert!(
            t.contains("portex_process_held_ports{process_name=\"a\\\"b\",container_id=\"\"} 4"),
            "{t}"
        );
        assert!(!t.contains("pid="), "{t}");
        // Every sample line belongs to a declared family.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(t.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }

    #[test]
    fn the_agents_own_process_metrics_are_the_standard_ones() {
        let t = render(&page());
        for line in [
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 2.5",
            "process_resident_memory_bytes 4096",
            "process_start_time_seconds 1764000000.25",
            "process_open_fds 9",
            "process_max_fds 1024",
        ] {
            assert!(t.lines().any(|l| l == line), "{line}\n{t}");
        }
        // A figure that could not be read is left out, with its HELP and TYPE.
        assert!(!t.contains("process_virtual_memory_bytes"), "{t}");
        let empty = render(&Page::default());
        assert!(
            !empty
                .lines()
                .any(|l| l.starts_with("process_") || l.starts_with("# TYPE process_")),
            "{empty}"
        );
    }
}

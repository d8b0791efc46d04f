//! Prometheus text exposition. Pure: the values come in a Page. Label sets are
//! bounded: actions, errnos and causes are small enums; pools appear only above a
//! utilisation floor and only the top N; processes only the top N holders. No label
//! carries an ephemeral port.
use std::{collections::BTreeMap, fmt::Write};

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PoolGauge {
    pub netns: u64,
    pub transport: &'static str,
    pub source: String,
    /// "ip:port" of the destination service.
    pub destination: String,
    pub size: u32,
    pub used: u32,
    pub time_wait: u32,
    /// Of them, TIME_WAIT ports connect() may take over (not in `used`).
    pub reusable: u32,
    pub seconds_to_full: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct HolderGauge {
    pub pid: u32,
    pub comm: String,
    pub container_id: Option<String>,
    pub held: u32,
    pub time_wait: u32,
}

/// What the output thread publishes for scrapes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub pools: Vec<PoolGauge>,
    pub holders: Vec<HolderGauge>,
    pub tracked_sockets: u64,
    pub events_per_second: f64,
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
    pub(crate) sink_written: u64,
    pub(crate) sink_dropped: u64,
    pub(crate) sink_errors: u64,
    pub(crate) http_rejected: u64,
    pub(crate) http_accept_errors: u64,
    pub(crate) events: BTreeMap<&'static str, u64>,
    /// (errno, cause, transport) -> count
    pub(crate) failures: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    pub(crate) pool_pressure: BTreeMap<&'static str, u64>,
    pub(crate) snapshot: Snapshot,
}

/// Label values are escaped as the exposition format requires, and control characters
/// (which process names may carry) are shown as text.
fn esc(v: &str) -> String {
    crate::logic::untrusted::label_value(v)
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
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
        "portex_events_per_second",
        "gauge",
        "Kernel events per second over the last seconds.",
    );
    let _ = writeln!(o, "portex_events_per_second {:.3}", snap.events_per_second);
    head(
        &mut o,
        "portex_tracked_sockets",
        "gauge",
        "Sockets holding a port in the ledger.",
    );
    let _ = writeln!(o, "portex_tracked_sockets {}", snap.tracked_sockets);
    let pool_labels = |p: &PoolGauge| {
        format!(
            "netns=\"{}\",transport=\"{}\",source=\"{}\",destination=\"{}\"",
            p.netns,
            p.transport,
            esc(&p.source),
            esc(&p.destination)
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
        "portex_pool_seconds_to_full",
        "gauge",
        "Forecast: seconds until the pool is empty at the current rates.",
    );
    for p in &snap.pools {
        if let Some(s) = p.seconds_to_full {
            let _ = writeln!(
                o,
                "portex_pool_seconds_to_full{{{}}} {s:.1}",
                pool_labels(p)
            );
        }
    }
    let holder_labels = |h: &HolderGauge| {
        format!(
            "pid=\"{}\",comm=\"{}\",container_id=\"{}\"",
            h.pid,
            esc(&h.comm),
            esc(h.container_id.as_deref().unwrap_or(""))
        )
    };
    for (name, help, get) in [
        (
            "portex_process_ports_held",
            "Ports held by the top processes.",
            (|h: &HolderGauge| h.held) as fn(&HolderGauge) -> u32,
        ),
        (
            "portex_process_time_wait_ports",
            "Ports in TIME_WAIT held by the top processes.",
            |h: &HolderGauge| h.time_wait,
        ),
    ] {
        head(&mut o, name, "gauge", help);
        for h in &snap.holders {
            let _ = writeln!(o, "{name}{{{}}} {}", holder_labels(h), get(h));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_bounded_gauges() {
        let mut m = Page::default();
        m.failures
            .insert(("EADDRNOTAVAIL", "port_range_exhausted", "tcp"), 3);
        m.snapshot.pools.push(PoolGauge {
            netns: 1,
            transport: "tcp",
            source: "10.0.0.1".into(),
            destination: "10.0.0.9:80".into(),
            size: 4,
            used: 4,
            time_wait: 0,
            reusable: 0,
            seconds_to_full: Some(0.0),
        });
        m.snapshot.holders.push(HolderGauge {
            pid: 7,
            comm: "a\"b".into(),
            container_id: None,
            held: 4,
            time_wait: 0,
        });
        let t = render(&m);
        assert!(t.contains("portex_failures_total{errno=\"EADDRNOTAVAIL\",cause=\"port_range_exhausted\",transport=\"tcp\"} 3"), "{t}");
        assert!(t.contains("portex_pool_used_ports{netns=\"1\",transport=\"tcp\",source=\"10.0.0.1\",destination=\"10.0.0.9:80\"} 4"));
        assert!(t.contains("comm=\"a\\\"b\""));
        // Every sample line belongs to a declared family.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(t.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }
}

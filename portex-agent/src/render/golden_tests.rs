//! Golden test of every renderer on one fixed synthetic input: kernel events through
//! interpretation and the live ledger into NDJSON, text and `top --once` frames; a
//! socket table through the pool model into the status report (text and JSON); fixed
//! counters into the Prometheus page. The outputs must stay byte-for-byte the same when
//! code moves; `PORTEX_BLESS=1 cargo test -p portex-agent golden` rewrites the files
//! after an intended change (review the diff).
use std::{net::SocketAddr, path::PathBuf};

use super::golden_stream::{api_container, settings, stream};
use crate::{
    logic::diagnose::{LiveFacts, Thresholds, diagnose},
    logic::fixtures::tcp,
    logic::ledger::Ledger,
    logic::lifecycle::interpret,
    logic::model::DiagSocket,
    logic::model::Owner,
    logic::model::Record,
    logic::nat::{NatPool, NatPoolKey, RangeSource},
    logic::nat_view::{ConntrackTable, NatAlerts, NatView},
    logic::pool::build_pools,
    logic::self_stats::SelfStats,
    logic::top_holders::{HolderGroup, OTHER},
    render::prometheus::{self, Page, PoolGauge, Snapshot},
    render::prometheus_nat::{ConntrackGauge, NatPoolGauge, NatSnapshot},
    render::status::{NetnsReport, render_json, render_text},
    render::top::{SortBy, frame_rows, text_frame},
    render::{View, json, json_serde, text},
};

pub(super) const S: u64 = 1_000_000_000;
const NS: u64 = 4026532000;
/// Boot clock to Unix time: 2026-11-28T06:00:00Z at boot.
const BOOT_UNIX_NS: i128 = 1_795_845_600 * 1_000_000_000;

/// The live path without its IO: interpretation, the ledger (its namespace seeded with
/// an empty table), pressure, rendering.
fn live() -> (String, String, Ledger, u64) {
    let header = json::Header::new("golden-host", Some("0123456789abcdef0123456789abcdef"));
    let mut ledger = Ledger::new();
    ledger.reconcile(NS, settings(), &[], |_| None, S);
    let th = Thresholds::default();
    let (mut nd, mut tx) = (String::new(), String::new());
    let mut last = 0;
    for ev in stream() {
        let mut recs: Vec<Record> = Vec::new();
        interpret(&ev, |r| recs.push(r));
        for mut r in recs {
            let now = r.ts_ns;
            last = now;
            let name = r.process.thread_name.name().into_owned();
            ledger.process_seen(r.process.pid, 7, &name);
            let key = if matches!(
                r.action,
                crate::logic::model::Action::Bind | crate::logic::model::Action::BindFailed
            ) {
                ledger.apply_bind(&r, now);
                None
            } else {
                ledger.apply(&r, Some(NS), now)
            };
            r.netns = Some(NS);
            if r.process.pid == 200 {
                r.container = Some(api_container());
            }
            let pressure = key
                .as_ref()
                .and_then(|k| ledger.check_pressure(k, &th, now));
            if r.action.is_failure()
                && let Some((used, size, time_wait)) =
                    key.as_ref().and_then(|k| ledger.pool_state(k))
            {
                r.pool = Some(crate::logic::model::PoolState {
                    used,
                    size,
                    time_wait,
                });
            }
            let unix_ns = BOOT_UNIX_NS + r.ts_ns as i128;
            let view = View {
                rec: &r,
                unix_ns,
                process_name: &name,
            };
            let before = nd.len();
            json::write_line(&view, &header, &mut nd);
            // The serde writer (the benchmark's rival) writes the same bytes.
            let (mut ts, mut theirs) = (String::new(), Vec::new());
            let host = json_serde::Host {
                name: "golden-host",
                id: Some("0123456789abcdef0123456789abcdef"),
            };
            json_serde::write_line(&view, &host, &mut ts, &mut theirs);
            assert_eq!(&nd.as_bytes()[before..], &theirs[..]);
            text::write_line(&view, &mut tx);
            if let Some(p) = pressure {
                json::write_pressure(&p, unix_ns, &header, &mut nd);
                text::write_pressure(&p, unix_ns, &mut tx);
            }
        }
    }
    // The NAT scanner's view after the stream: a NAT pool past critical.
    let mut nat = NatAlerts::default().observe(&nat_view().pools, &th);
    for p in &mut nat {
        let k = &p.pool.key;
        let q: Vec<_> = p
            .pool
            .sources
            .iter()
            .map(|s| (s.0, k.daddr, k.dport))
            .collect();
        p.processes = ledger.owners_from(&q);
        // What the agent reads from the named process's cgroup.
        p.containers = vec![Some("cc22".repeat(16))];
    }
    let unix_ns = BOOT_UNIX_NS + last as i128;
    for p in &nat {
        json::write_nat_pressure(p, unix_ns, &header, &mut nd);
        text::write_nat_pressure(p, unix_ns, &mut tx);
    }
    (nd, tx, ledger, last)
}

/// A gateway namespace masquerading to 10 ports towards the service the stream's
/// client connects to: its first source is that client's address (the ledger names its
/// process), the second a pod the ledger does not know.
fn nat_view() -> NatView {
    let key = NatPoolKey {
        netns: NS + 1,
        proto: 6,
        nat_ip: "10.78.0.1".parse().unwrap(),
        daddr: "10.0.0.9".parse().unwrap(),
        dport: 80,
    };
    NatView {
        at_ns: 5 * S,
        duration_ns: 12_500_000,
        scans: 3,
        pools: vec![NatPool {
            key,
            size: 10,
            size_from: RangeSource::Rule,
            used: 10,
            time_wait: 7,
            sources: vec![
                ("10.0.0.1".parse().unwrap(), 8),
                ("10.77.0.3".parse().unwrap(), 2),
            ],
        }],
        tables: vec![ConntrackTable {
            netns: NS + 1,
            count: 12,
            max: 262_144,
            tw_timeout_s: Some(120),
            insert_failed: None,
        }],
    }
}

fn status_reports() -> Vec<NetnsReport> {
    let mut sockets = vec![
        tcp(10, "0.0.0.0:40007", "0.0.0.0:0", 1),
        tcp(1, "10.0.0.1:40007", "10.0.0.5:5555", 2),
        tcp(2, "[fd00::1]:40002", "[fd00::7]:443", 31),
    ];
    for p in 40000..40006u16 {
        sockets.push(tcp(
            if p < 40003 { 6 } else { 1 },
            &format!("10.0.0.1:{p}"),
            "10.0.0.9:80",
            if p < 40003 { 0 } else { 10 + p as u64 },
        ));
    }
    sockets.push(DiagSocket {
        protocol: 17,
        state: 7,
        local: "0.0.0.0:40001".parse().unwrap(),
        remote: "0.0.0.0:0".parse().unwrap(),
        inode: 40,
        expires_ms: 0,
    });
    let owner = |s: &DiagSocket| match s.inode {
        0 => None,
        31 => Some(Owner {
            pid: 200,
            start: 9,
            name: "api".into(),
        }),
        40 => Some(Owner {
            pid: 300,
            start: 9,
            name: "dns".into(),
        }),
        _ => Some(Owner {
            pid: 100,
            start: 9,
            name: "client\u{7}".into(),
        }),
    };
    let th = Thresholds::default();
    let pools = build_pools(NS, &settings(), &sockets, owner);
    let diagnoses = diagnose(&settings(), &pools, &th, &LiveFacts::default());
    let id = (NS, Some("golden".to_string()));
    vec![NetnsReport::new(
        id,
        NS,
        settings(),
        &sockets,
        pools,
        diagnoses,
    )]
}

fn metrics_page() -> String {
    let page = Page {
        kernel_events: 1234,
        ringbuf_dropped: 5,
        user_dropped: 6,
        decode_errors: 1,
        kernel_skipped: 2,
        map_full: 3,
        syscall_hooks: 1,
        programs: vec![("inet_sock_set_state", true), ("tcp_retransmit_skb", false)],
        sink_written: 1000,
        sink_dropped: 7,
        sink_errors: 1,
        http_rejected: 4,
        http_accept_errors: 2,
        events: [("connect", 900u64), ("close", 850), ("connect_failed", 12)]
            .into_iter()
            .collect(),
        failures: [(("EADDRNOTAVAIL", "port_range_exhausted", "tcp"), 12)]
            .into_iter()
            .collect(),
        pool_pressure: [("warning", 2)].into_iter().collect(),
        stalls: [("nat_exhausted", 2)].into_iter().collect(),
        snapshot: Snapshot {
            pools: vec![PoolGauge {
                netns: NS,
                transport: "tcp",
                source_address: "10.0.0.1".into(),
                destination_address: "10.0.0.9".into(),
                destination_port: 80,
                size: 9,
                used: 8,
                time_wait: 3,
                reusable: 1,
                seconds_to_full: Some(1.5),
            }],
            holders: vec![
                HolderGroup {
                    name: "cli\"ent\n".into(),
                    container_id: Some("0123456789ab".into()),
                    held: 8,
                    time_wait: 3,
                },
                HolderGroup {
                    name: OTHER.into(),
                    container_id: None,
                    held: 1,
                    time_wait: 0,
                },
            ],
            tracked_sockets: 9,
            nat: NatSnapshot {
                pools: vec![NatPoolGauge {
                    netns: NS + 1,
                    protocol: "tcp",
                    nat_address: "10.78.0.1".into(),
                    destination_address: "10.78.0.2".into(),
                    destination_port: 8080,
                    size: 10,
                    size_from: "rule",
                    used: 10,
                    time_wait: 7,
                }],
                tables: vec![ConntrackGauge {
                    netns: NS + 1,
                    entries: 12,
                    max: 262_144,
                }],
                scan_seconds: Some(0.0125),
                scans: 3,
            },
        },
        own: SelfStats {
            cpu_seconds: Some(12.34),
            resident_memory_bytes: Some(25_165_824),
            virtual_memory_bytes: Some(1_234_567_168),
            start_time_seconds: Some(1_795_845_700.5),
            open_fds: Some(29),
            max_fds: Some(65_536),
        },
    };
    prometheus::render(&page)
}

fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("PORTEX_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (PORTEX_BLESS=1 writes it)", path.display()));
    if want != got {
        let line = want.lines().zip(got.lines()).position(|(a, b)| a != b);
        panic!(
            "{name} changed (first differing line {:?}):\n--- want\n{want}\n--- got\n{got}",
            line.map(|l| l + 1)
        );
    }
}

#[test]
fn golden_event_lines() {
    let (nd, tx, _, _) = live();
    check("events.ndjson", &nd);
    check("events.txt", &tx);
}

#[test]
fn golden_top_frame() {
    let (_, _, mut ledger, last) = live();
    let now = last + S / 2;
    let nat = nat_view();
    let frame = frame_rows(
        &mut ledger,
        now,
        SortBy::default(),
        &Thresholds::default(),
        Some(&nat),
    );
    check("top.txt", &text_frame(&frame, 20));
}

#[test]
fn golden_status() {
    let th = Thresholds::default();
    let reports = status_reports();
    check("status.txt", &render_text(&reports, None, &th, 50));
    check("status.json", &render_json(&reports, None, &th, 50));
}

#[test]
fn golden_metrics() {
    check("metrics.prom", &metrics_page());
}

#[test]
fn the_stream_covers_every_kind_of_line() {
    let (nd, _, _, _) = live();
    for action in [
        "\"connect\"",
        "\"established\"",
        "\"close\"",
        "\"time_wait\"",
        "\"connect_failed\"",
        "\"bind_failed\"",
        "\"connect_stalled\"",
        "pool_pressure",
    ] {
        assert!(
            nd.contains(action),
            "{action} missing from the golden stream"
        );
    }
    let _ = SocketAddr::from(([0, 0, 0, 0], 0));
}

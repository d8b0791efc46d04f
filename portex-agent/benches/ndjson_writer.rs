//! Micro-benchmark of the NDJSON writer: the hand-written one the agent uses
//! (`render::json::write_line`) against serde_json with derived structs
//! (`render::json_serde`), on the same records, each into a reused buffer as on the
//! agent's output thread. Run by `cargo xtask bench-writer` (or `cargo bench -p
//! portex-agent --bench ndjson_writer -- [--out FILE] [--quick]`); prints a table and
//! writes JSON (default target/bench/writer.json). No root needed.
use std::{
    hint::black_box,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use portex_agent::bench::{
    Container, Header, Record, View, Workload, interpret, serde_writer, write_line,
};
use portex_common::{AF_INET, Event, IPPROTO_TCP, connflag, kind, sockflag, tcpstate};

/// 2026-11-28T06:00:00Z at boot.
const BOOT_UNIX_NS: i128 = 1_795_845_600 * 1_000_000_000;
const HOST: &str = "node-7.example";
const HOST_ID: &str = "0123456789abcdef0123456789abcdef";

fn event(k: u16, sport: u16, ts: u64) -> Event {
    let mut e = Event::zeroed();
    e.kind = k;
    e.ts_ns = ts;
    e.skaddr = 0xffff_8881_0000_0000 + sport as u64;
    e.tgid = 4242;
    e.tid = 4243;
    e.family = AF_INET;
    e.protocol = IPPROTO_TCP;
    e.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
    e.daddr[..4].copy_from_slice(&[10, 0, 0, 9]);
    e.sport = sport;
    e.dport = 8080;
    e.fd = 3;
    e.comm[..6].copy_from_slice(b"worker");
    e.cgroup_id = 7391;
    e
}

/// The lines of client-close connections as the agent writes them (connect,
/// established, close with its duration, time_wait), a failed connect with its pool,
/// half of them from a Kubernetes pod's container.
fn records() -> Vec<Record> {
    let mut evs = Vec::new();
    for i in 0..4u16 {
        let ts = 1_000_000_000 + i as u64 * 1_000_000;
        evs.push(event(kind::CONNECT_RET, 40000 + i, ts));
        let mut est = event(kind::STATE, 40000 + i, ts + 50_000);
        est.fd = -1;
        est.oldstate = tcpstate::SYN_SENT;
        est.newstate = tcpstate::ESTABLISHED;
        est.flags = sockflag::ACTIVE | sockflag::IN_CONNECT_SYSCALL;
        evs.push(est);
        let mut close = event(kind::STATE, 40000 + i, ts + 900_000);
        close.fd = -1;
        close.oldstate = tcpstate::FIN_WAIT2;
        close.newstate = tcpstate::CLOSE;
        close.flags = sockflag::ACTIVE | sockflag::FIN_SENT;
        close.birth_ns = ts;
        evs.push(close);
    }
    let mut fail = event(kind::CONNECT_RET, 0, 2_000_000_000);
    fail.ret = -99;
    fail.flags = connflag::TCP_SEEN | connflag::STATE_FAILED;
    evs.push(fail);
    let pod = Arc::new(Container {
        id: "bb11".repeat(16),
        runtime: "cri-o",
        pod_uid: Some("9f8e7d6c-5b4a-3210-fedc-ba9876543210".into()),
        workload: Workload {
            name: Some("api".into()),
            image: Some("quay.io/acme/api:v3".into()),
            pod_name: Some("api-6b8f9d7c4-q8w2e".into()),
            pod_namespace: Some("billing".into()),
        },
    });
    let mut out = Vec::new();
    for (i, ev) in evs.iter().enumerate() {
        interpret(ev, |mut r| {
            r.netns = Some(4026531840);
            if i % 2 == 1 {
                r.container = Some(pod.clone());
            }
            out.push(r);
        });
    }
    out
}

/// Lines per batch before the buffer is handed on (cleared), as the output thread does.
const BATCH: usize = 1024;

fn time_hand(recs: &[Record], lines: usize) -> (Duration, usize) {
    let h = Header::new(HOST, Some(HOST_ID));
    let mut out = String::with_capacity(BATCH * 512);
    let (mut bytes, start) = (0, Instant::now());
    for i in 0..lines {
        let r = &recs[i % recs.len()];
        let v = View {
            rec: r,
            unix_ns: BOOT_UNIX_NS + r.ts_ns as i128,
            process_name: "worker",
        };
        write_line(black_box(&v), &h, &mut out);
        if i % BATCH == BATCH - 1 {
            bytes += out.len();
            black_box(&out);
            out.clear();
        }
    }
    (start.elapsed(), bytes + out.len())
}

fn time_serde(recs: &[Record], lines: usize) -> (Duration, usize) {
    let h = serde_writer::Host {
        name: HOST,
        id: Some(HOST_ID),
    };
    let (mut out, mut ts) = (Vec::with_capacity(BATCH * 512), String::new());
    let (mut bytes, start) = (0, Instant::now());
    for i in 0..lines {
        let r = &recs[i % recs.len()];
        let v = View {
            rec: r,
            unix_ns: BOOT_UNIX_NS + r.ts_ns as i128,
            process_name: "worker",
        };
        serde_writer::write_line(black_box(&v), &h, &mut ts, &mut out);
        if i % BATCH == BATCH - 1 {
            bytes += out.len();
            black_box(&out);
            out.clear();
        }
    }
    (start.elapsed(), bytes + out.len())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out_path = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/writer.json")
        });
    let recs = records();
    // Both writers must write the same bytes, or the comparison means nothing.
    {
        let h = Header::new(HOST, Some(HOST_ID));
        let sh = serde_writer::Host {
            name: HOST,
            id: Some(HOST_ID),
        };
        for r in &recs {
            let v = View {
                rec: r,
                unix_ns: BOOT_UNIX_NS + r.ts_ns as i128,
                process_name: "worker",
            };
            let (mut a, mut b, mut ts) = (String::new(), Vec::new(), String::new());
            write_line(&v, &h, &mut a);
            serde_writer::write_line(&v, &sh, &mut ts, &mut b);
            assert_eq!(a.as_bytes(), &b[..], "the writers disagree");
        }
    }
    let (rounds, lines) = if quick { (3, 200_000) } else { (9, 2_000_000) };
    // Warm-up, then interleaved rounds so that both see the same machine.
    time_hand(&recs, lines / 10);
    time_serde(&recs, lines / 10);
    let (mut hand, mut serde, mut bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        let (d, b) = time_hand(&recs, lines);
        hand.push(d.as_nanos() as f64 / lines as f64);
        bytes = b;
        let (d, b2) = time_serde(&recs, lines);
        serde.push(d.as_nanos() as f64 / lines as f64);
        assert_eq!(b, b2);
    }
    let bytes_per_line = bytes as f64 / lines as f64;
    let (h, s) = (median(hand.clone()), median(serde.clone()));
    println!("| writer | ns/line (median of {rounds}) | bytes/line | lines/s |");
    println!("|---|---|---|---|");
    println!(
        "| hand-written (render::json) | {h:.0} | {bytes_per_line:.0} | {:.0} |",
        1e9 / h
    );
    println!(
        "| serde_json, derived structs (render::json_serde) | {s:.0} | {bytes_per_line:.0} | {:.0} |",
        1e9 / s
    );
    println!("serde / hand-written: {:.2}x", s / h);
    let json = format!(
        "{{\"quick\":{quick},\"rounds\":{rounds},\"lines_per_round\":{lines},\"records\":{},\"bytes_per_line\":{bytes_per_line:.1},\"hand_written_ns_per_line\":{h:.1},\"serde_ns_per_line\":{s:.1},\"serde_over_hand\":{:.3},\"hand_rounds\":{hand:?},\"serde_rounds\":{serde:?}}}\n",
        recs.len(),
        s / h
    );
    if let Some(dir) = out_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&out_path, json) {
        Ok(()) => println!("wrote {}", out_path.display()),
        Err(e) => {
            eprintln!("ndjson_writer: writing {}: {e}", out_path.display());
            std::process::exit(1);
        }
    }
}

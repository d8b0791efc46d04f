//! The status report on synthetic tables.
use super::*;
use crate::logic::{fixtures::tcp, pool::build_pools};

#[test]
fn the_verdict_names_the_fullest_pool_and_its_sustainable_rate() {
    let settings = NetSettings {
        range: (40000, 40019),
        ..NetSettings::default()
    };
    // 15 live connections over loopback (reuse=2 applies: 1 s hold), 2 elsewhere.
    let mut socks: Vec<DiagSocket> = (0..15)
        .map(|i| tcp(1, &format!("127.0.0.1:{}", 40000 + i), "127.0.0.1:5000", 1))
        .collect();
    socks.push(tcp(1, "10.0.0.1:40000", "10.0.0.9:80", 2));
    socks.push(tcp(1, "10.0.0.1:40001", "10.0.0.9:80", 3));
    let pools = build_pools(7, &settings, &socks, |_| None);
    let report = NetnsReport::new((7, None), 7, settings, &socks, pools, Vec::new());
    let reports = [report];
    let th = Thresholds::default();
    let v = verdict(&reports).unwrap();
    assert_eq!(v.hold_ms, 1000);
    assert_eq!(
        v.text(&th),
        "verdict: ok: fullest pool tcp 127.0.0.1 -> 127.0.0.1:5000 (network namespace 7): \
         5 of 20 ports free (75% used); it sustains ~20 new connections/s if this side \
         closes first (a TIME_WAIT port is held 1 s)"
    );
    assert_eq!(v.json(&th)["sustainable_client_close_per_s"], 20.0);
    assert!(verdict(&[]).is_none());
}

#[test]
fn bind_taken_ports_are_one_line_and_quiet_pools_are_summed() {
    let settings = NetSettings {
        range: (40000, 40999),
        ..NetSettings::default()
    };
    let mut socks = vec![
        tcp(10, "0.0.0.0:40007", "0.0.0.0:0", 1),
        tcp(7, "10.0.0.1:40008", "0.0.0.0:0", 2),
    ];
    socks.extend((0..70).map(|i| tcp(6, "10.0.0.1:40009", &format!("10.0.0.5:{}", 50000 + i), 0)));
    socks.extend((0..5).map(|i| {
        tcp(
            1,
            &format!("10.0.0.1:{}", 40100 + i),
            &format!("10.0.0.{i}:80"),
            9,
        )
    }));
    let pools = build_pools(7, &settings, &socks, |_| None);
    let r = NetnsReport::new((7, None), 7, settings, &socks, pools, Vec::new());
    assert_eq!(r.tcp_pool_size, 997);
    assert_eq!(
        server_ports_line(&r).unwrap(),
        "listening and bound ports in range: 3 (listening: 40007; bound, not listening: \
         40008; listener closed, connections left: 40009); each is one port less in every \
         TCP pool"
    );
    assert_eq!(r.pools.len(), 5);
    assert_eq!(
        omitted_line(&r.pools, 2).unwrap(),
        "... and 3 more pools holding 3 ports, none using more than 1 (--limit N lists more)"
    );
    assert!(omitted_line(&r.pools, 5).is_none());
}

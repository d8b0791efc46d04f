//! The pool model on synthetic socket tables.
use super::*;
use crate::logic::fixtures::tcp;
use crate::logic::{
    model::{DiagSocket, Owner},
    sysctls::NetSettings,
};

fn settings(lo: u16, hi: u16) -> NetSettings {
    NetSettings {
        range: (lo, hi),
        ..Default::default()
    }
}

fn owner(pid: u32) -> Owner {
    Owner {
        pid,
        start: 1,
        name: format!("p{pid}"),
    }
}

#[test]
fn pools_are_per_destination_and_count_time_wait() {
    let socks = vec![
        tcp(1, "10.0.0.1:40000", "10.0.0.9:80", 11),
        tcp(6, "10.0.0.1:40001", "10.0.0.9:80", 0),
        tcp(6, "10.0.0.1:40002", "10.0.0.9:80", 0),
        tcp(1, "10.0.0.1:40000", "10.0.0.8:443", 12),
    ];
    let pools = build_pools(1, &settings(40000, 40003), &socks, |s| {
        (s.inode == 11).then(|| owner(7))
    });
    assert_eq!(pools.len(), 2);
    let p = &pools[0];
    assert_eq!(p.key.dport, 80);
    assert_eq!((p.size, p.used, p.time_wait, p.established), (4, 3, 2, 1));
    assert_eq!(p.utilisation(), 0.75);
    assert_eq!(
        p.holders[0],
        Holder {
            owner: None,
            held: 2,
            time_wait: 2
        }
    );
    assert_eq!(p.holders[1].owner, Some(owner(7)));
    assert_eq!(pools[1].used, 1);
}

#[test]
fn server_side_listeners_and_out_of_range_ports_are_not_in_pools() {
    let socks = vec![
        tcp(10, "0.0.0.0:40003", "0.0.0.0:0", 1), // listener inside the range
        tcp(1, "10.0.0.1:40003", "10.0.0.5:5555", 2), // accepted from it
        tcp(1, "10.0.0.1:8080", "10.0.0.5:40000", 3), // server port outside range
        tcp(1, "10.0.0.1:40001", "10.0.0.9:80", 4), // a client
        tcp(3, "10.0.0.1:40002", "10.0.0.9:81", 5), // SYN_RECV: not held by connect
    ];
    let pools = build_pools(1, &settings(40000, 40003), &socks, |_| None);
    assert_eq!(pools.len(), 1);
    // The listener's port is unusable for every destination.
    assert_eq!((pools[0].size, pools[0].used), (3, 1));
}

#[test]
fn reserved_ports_shrink_the_pool() {
    let mut s = settings(40000, 40009);
    s.reserved = vec![(40005, 40009)];
    let socks = vec![
        tcp(1, "10.0.0.1:40001", "10.0.0.9:80", 4),
        tcp(1, "10.0.0.1:40006", "10.0.0.9:80", 5),
    ];
    let pools = build_pools(1, &s, &socks, |_| None);
    assert_eq!((pools[0].size, pools[0].used), (5, 1));
}

#[test]
fn udp_has_one_pool_per_namespace() {
    let u = |l: &str, r: &str| DiagSocket {
        protocol: 17,
        state: 1,
        local: l.parse().unwrap(),
        remote: r.parse().unwrap(),
        inode: 9,
        expires_ms: 0,
    };
    let socks = vec![
        u("127.0.0.1:40000", "127.0.0.1:53"),
        u("0.0.0.0:40001", "0.0.0.0:0"),
    ];
    let pools = build_pools(1, &settings(40000, 40003), &socks, |_| None);
    assert_eq!(pools.len(), 1);
    assert!(pools[0].key.is_udp_pool());
    assert_eq!((pools[0].size, pools[0].used), (4, 2));
}

#[test]
fn fullest_pool_first() {
    let socks = vec![
        tcp(1, "10.0.0.1:40000", "10.0.0.9:80", 1),
        tcp(1, "10.0.0.1:40000", "10.0.0.8:80", 2),
        tcp(1, "10.0.0.1:40001", "10.0.0.8:80", 3),
    ];
    let pools = build_pools(1, &settings(40000, 40003), &socks, |_| None);
    assert_eq!(pools[0].key.daddr.to_string(), "10.0.0.8");
    assert_eq!(pools[0].odd_ports, 1);
}

#[test]
fn ownerless_holders_say_what_holds_the_ports() {
    let h = |held, time_wait| Holder {
        owner: None,
        held,
        time_wait,
    };
    assert_eq!(h(3, 3).label(), "(no owner: TIME_WAIT)");
    assert_eq!(
        h(2, 0).label(),
        "(no owner: orphaned, closed by its process)"
    );
    assert_eq!(h(5, 3).label(), "(no owner: 3 TIME_WAIT, 2 orphaned)");
    let mut named = h(1, 0);
    named.owner = Some(Owner {
        pid: 7,
        start: 0,
        name: "x\u{1b}[2J\u{202e}y".into(),
    });
    assert_eq!(named.label(), "7 x\\x1b[2J\\u{202e}y");
}

#[test]
fn time_wait_reuse_follows_the_kernels_rule() {
    let lo = "127.0.0.1".parse().unwrap();
    let far = "10.0.0.9".parse().unwrap();
    let mine = "10.0.0.1".parse().unwrap();
    let rules = |reuse: u8, timestamps: bool| {
        let s = NetSettings {
            tw_reuse: reuse,
            timestamps,
            ..settings(40000, 40009)
        };
        PortRules::new(s, [])
    };
    // 2 (the default): loopback only; 1: always; 0: never; no timestamps: never.
    assert!(rules(2, true).tw_reuse_applies(lo, lo));
    assert!(!rules(2, true).tw_reuse_applies(mine, far));
    assert!(rules(1, true).tw_reuse_applies(mine, far));
    assert!(!rules(0, true).tw_reuse_applies(lo, lo));
    assert!(!rules(1, false).tw_reuse_applies(mine, far));
    // Reusable once older than the delay; held 60 s where reuse does not apply.
    assert!(!rules(2, true).tw_reusable(lo, lo, 999));
    assert!(rules(2, true).tw_reusable(lo, lo, 1000));
    assert_eq!(rules(2, true).tw_hold_ms(lo, lo), 1000);
    assert_eq!(rules(2, true).tw_hold_ms(mine, far), 60_000);
}

#[test]
fn reusable_time_wait_ports_are_free_for_their_destination() {
    let tw = |port: u16, age_ms: u32| DiagSocket {
        expires_ms: 60_000 - age_ms,
        ..tcp(6, &format!("127.0.0.1:{port}"), "127.0.0.1:5000", 0)
    };
    let socks = vec![tw(40000, 200), tw(40001, 1500), tw(40002, 30_000)];
    let pools = build_pools(1, &settings(40000, 40009), &socks, |_| None);
    let p = &pools[0];
    assert_eq!((p.used, p.time_wait, p.reusable, p.free()), (1, 3, 2, 9));
    // Over a veth (not loopback) with the default reuse=2, all three hold their port.
    let far = |port: u16| DiagSocket {
        expires_ms: 1_000,
        ..tcp(6, &format!("10.0.0.1:{port}"), "10.0.0.2:5000", 0)
    };
    let pools = build_pools(
        1,
        &settings(40000, 40009),
        &[far(40000), far(40001)],
        |_| None,
    );
    assert_eq!((pools[0].used, pools[0].reusable), (2, 0));
}

#[test]
fn a_closed_listeners_time_wait_is_one_bound_port_not_a_pool_per_peer() {
    // A server on 40005 closed first 100 times, then its listener closed: 100 TIME_WAIT
    // sockets from 100 peer ports keep the bind bucket. One client connection elsewhere.
    let mut socks: Vec<DiagSocket> = (0..100)
        .map(|i| tcp(6, "10.0.0.1:40005", &format!("10.0.0.7:{}", 50000 + i), 0))
        .collect();
    socks.push(tcp(1, "10.0.0.1:40001", "10.0.0.9:80", 4));
    let s = settings(40000, 40999);
    let pools = build_pools(1, &s, &socks, |_| None);
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!((pools[0].size, pools[0].used), (999, 1));
    let rules = table_rules(&s, &socks);
    assert_eq!(rules.bound_in_range(), &[40005]);
    assert_eq!(rules.tcp_size(), 999);
}

#[test]
fn a_client_reaching_many_destinations_is_not_taken_for_a_server() {
    // One local port towards 100 backends, all on port 443: a client's pools.
    let socks: Vec<DiagSocket> = (0..100)
        .map(|i| tcp(6, "10.0.0.1:40005", &format!("10.0.1.{i}:443"), 0))
        .collect();
    let pools = build_pools(1, &settings(40000, 40999), &socks, |_| None);
    assert_eq!(pools.len(), 100);
    assert!(pools.iter().all(|p| p.size == 1000 && p.used == 1));
    // Towards 100 backends on 100 ports, and every port of a small range in use: that
    // would infer the whole range, so nothing is inferred.
    let socks: Vec<DiagSocket> = (0..8u16)
        .flat_map(|port| {
            (0..100).map(move |i| {
                tcp(
                    6,
                    &format!("10.0.0.1:{}", 40000 + port),
                    &format!("10.0.1.{i}:{}", 20000 + i),
                    0,
                )
            })
        })
        .collect();
    let rules = table_rules(&settings(40000, 40007), &socks);
    assert!(rules.bound_in_range().is_empty());
    assert_eq!(rules.tcp_size(), 8);
}

//! The ledger on synthetic event streams and socket tables.
use std::net::SocketAddr;

use rustc_hash::FxHashSet as HashSet;

use super::*;
use crate::logic::fixtures::{record, tcp};
use crate::logic::model::{CloseInfo, CloseKind};
use crate::logic::{
    diagnose::{Severity, Thresholds},
    model::{Action, DiagSocket, Owner, Record, Transport},
    sysctls::NetSettings,
};

const S: u64 = 1_000_000_000;
const NS: u64 = 4026531840;

fn settings() -> NetSettings {
    NetSettings {
        range: (40000, 40009),
        ..Default::default()
    }
}

fn rec(action: Action, sport: u16, dport: u16, ts: u64) -> Record {
    let (src, dst) = (format!("10.0.0.1:{sport}"), format!("10.0.0.9:{dport}"));
    let mut r = record(action, (7, 7, "cli"), &src, Some(&dst));
    r.ts_ns = ts;
    r.duration_ns = Some(1_000_000);
    r
}

fn close(sport: u16, tw: bool, ts: u64) -> Record {
    let mut r = rec(Action::Close, sport, 80, ts);
    r.close = Some(CloseInfo {
        reset_received: false,
        kind: if tw {
            CloseKind::Active
        } else {
            CloseKind::Passive
        },
        time_wait: tw,
        from_state: "FIN_WAIT2",
    });
    r
}

/// The record of a bind(port 0) by pid 7 that got `port`.
fn bind_port_zero(l: &mut Ledger, port: u16) {
    let mut b = rec(Action::Bind, port, 0, S);
    b.destination = None;
    l.apply_bind(&b, S);
}

fn ledger() -> Ledger {
    let mut l = Ledger::new();
    l.reconcile(NS, settings(), &[], |_| None, 0);
    l
}

fn key() -> PoolKey {
    PoolKey {
        netns: NS,
        transport: Transport::Tcp,
        saddr: "10.0.0.1".parse().unwrap(),
        daddr: "10.0.0.9".parse().unwrap(),
        dport: 80,
    }
}

#[test]
fn connects_fill_and_time_wait_expires_after_60s() {
    let mut l = ledger();
    for i in 0..4 {
        l.apply(&rec(Action::Connect, 40000 + i, 80, S), Some(NS), S);
    }
    assert_eq!(l.pool_state(&key()), Some((4, 10, 0)));
    l.apply(&close(40000, true, 2 * S), Some(NS), 2 * S);
    l.apply(&close(40001, false, 2 * S), Some(NS), 2 * S);
    assert_eq!(l.pool_state(&key()), Some((3, 10, 1)));
    assert_eq!(l.processes()[&7].time_wait, 1);
    l.expire(61 * S);
    assert_eq!(
        l.pool_state(&key()),
        Some((3, 10, 1)),
        "not yet: 60 s from the close"
    );
    l.expire(62 * S);
    assert_eq!(l.pool_state(&key()), Some((2, 10, 0)));
    assert_eq!(l.processes()[&7].held, 2);
}

#[test]
fn duplicate_connect_and_established_count_once() {
    let mut l = ledger();
    l.apply(&rec(Action::Connect, 40000, 80, S), Some(NS), S);
    l.apply(&rec(Action::Established, 40000, 80, S), Some(NS), S);
    assert_eq!(l.pool_state(&key()).unwrap().0, 1);
    // Outside the range: not in a pool.
    assert_eq!(
        l.apply(&rec(Action::Connect, 5000, 80, S), Some(NS), S),
        None
    );
}

#[test]
fn reconciliation_corrects_drift_and_keeps_time_wait_owners() {
    let mut l = ledger();
    l.apply(&rec(Action::Connect, 40000, 80, S), Some(NS), S);
    l.apply(&close(40000, true, 2 * S), Some(NS), 2 * S);
    l.apply(&rec(Action::Connect, 40001, 80, S), Some(NS), S);
    // The kernel says: 40000 still in TIME_WAIT, 40001 gone (a missed close), and a
    // connection the ledger never saw (owner from /proc).
    let d = |state, port| DiagSocket {
        protocol: 6,
        state,
        local: SocketAddr::new("10.0.0.1".parse().unwrap(), port),
        remote: "10.0.0.9:80".parse().unwrap(),
        inode: if state == 6 { 0 } else { 99 },
        expires_ms: 59_000,
    };
    let owner = |s: &DiagSocket| {
        (s.inode == 99).then(|| Owner {
            pid: 8,
            start: 1,
            name: "other".into(),
        })
    };
    l.reconcile(NS, settings(), &[d(6, 40000), d(1, 40005)], owner, 3 * S);
    assert_eq!(l.pool_state(&key()), Some((2, 10, 1)));
    let views = l.pool_views(3 * S);
    let holders: Vec<(Option<u32>, u32)> = views[0]
        .pool
        .holders
        .iter()
        .map(|h| (h.owner.as_ref().map(|o| o.pid), h.held))
        .collect();
    assert!(
        holders.contains(&(Some(7), 1)),
        "TIME_WAIT owner kept: {holders:?}"
    );
    assert!(holders.contains(&(Some(8), 1)), "{holders:?}");
    // The kept TIME_WAIT still ends 60 s after its close.
    l.expire(62 * S);
    assert_eq!(l.pool_state(&key()), Some((1, 10, 0)));
}

#[test]
fn a_deleted_namespace_is_forgotten_with_its_pools() {
    let mut l = ledger();
    l.apply(&rec(Action::Connect, 40000, 80, S), Some(NS), S);
    assert_eq!(l.tracked_sockets(), 1);
    l.forget_namespaces_except(&[NS].into_iter().collect());
    assert_eq!(l.pool_state(&key()), Some((1, 10, 0)));
    l.forget_namespaces_except(&HashSet::default());
    assert_eq!(l.tracked_sockets(), 0);
    assert_eq!(l.pool_state(&key()), None);
    assert!(l.fullest_pool().is_none());
    assert_eq!(l.processes().get(&7).map(|p| p.held), Some(0));
}

#[test]
fn pressure_fires_once_per_threshold_and_rearms() {
    let mut l = ledger();
    let th = Thresholds::default();
    let mut fired = Vec::new();
    for i in 0..10 {
        let k = l
            .apply(&rec(Action::Connect, 40000 + i, 80, S), Some(NS), S)
            .unwrap();
        if let Some(p) = l.check_pressure(&k, &th, S) {
            fired.push((i, p.severity));
        }
    }
    assert_eq!(fired, vec![(7, Severity::Warning), (9, Severity::Critical)]);
    for i in 0..10 {
        l.apply(&close(40000 + i, false, 2 * S), Some(NS), 2 * S);
    }
    assert!(l.check_pressure(&key(), &th, 2 * S).is_none());
    for i in 0..8 {
        l.apply(&rec(Action::Connect, 40000 + i, 80, 3 * S), Some(NS), 3 * S);
    }
    assert_eq!(
        l.check_pressure(&key(), &th, 3 * S).map(|p| p.severity),
        Some(Severity::Warning)
    );
}

#[test]
fn bind_then_connect_is_counted_per_process() {
    let mut l = ledger();
    bind_port_zero(&mut l, 40003);
    l.apply(&rec(Action::Connect, 40003, 80, S), Some(NS), S);
    l.apply(&rec(Action::Connect, 40004, 80, S), Some(NS), S);
    assert_eq!(l.processes()[&7].bind_then_connect, 1);
}

#[test]
fn a_port_bind_chose_shrinks_the_other_pools_of_that_address() {
    let mut l = ledger();
    bind_port_zero(&mut l, 40003);
    l.apply(&rec(Action::Connect, 40003, 80, S), Some(NS), S);
    l.apply(&rec(Action::Connect, 40004, 81, S), Some(NS), S);
    let k81 = PoolKey { dport: 81, ..key() };
    assert_eq!(
        l.pool_state(&key()),
        Some((1, 10, 0)),
        "its own pool counts it as used"
    );
    assert_eq!(
        l.pool_state(&k81),
        Some((1, 9, 0)),
        "every other pool lost the port"
    );
    // It stays taken through TIME_WAIT, and comes back when that ends.
    l.apply(&close(40003, true, 2 * S), Some(NS), 2 * S);
    assert_eq!(l.pool_state(&k81).unwrap().1, 9);
    l.expire(63 * S);
    assert_eq!(l.pool_state(&k81).unwrap().1, 10);
}

#[test]
fn failures_are_counted_per_process_and_pool() {
    let mut l = ledger();
    let mut f = rec(Action::ConnectFailed, 0, 80, S);
    f.errno = Some(99);
    l.apply(&f, Some(NS), S);
    assert_eq!(l.processes()[&7].failures["EADDRNOTAVAIL"], 1);
    assert_eq!(l.pool_views(S)[0].failures, 1);
}

#[test]
fn status_and_the_ledger_see_the_same_pools_in_one_socket_table() {
    let table = vec![
        tcp(10, "0.0.0.0:40008", "0.0.0.0:0", 1), // listener inside the range
        tcp(1, "10.0.0.1:40008", "10.0.0.5:5555", 2), // accepted from it
        tcp(1, "10.0.0.1:40000", "10.0.0.9:80", 3), // established
        tcp(2, "10.0.0.1:40001", "10.0.0.9:80", 4), // SYN_SENT
        tcp(6, "10.0.0.1:40002", "10.0.0.9:80", 0), // TIME_WAIT, no owner
        tcp(4, "10.0.0.1:40003", "10.0.0.9:80", 5), // FIN_WAIT1
        tcp(1, "10.0.0.1:40000", "10.0.0.8:443", 6), // another destination
        tcp(1, "[fd00::1]:40005", "[fd00::7]:443", 7), // IPv6
        tcp(1, "10.0.0.1:8080", "10.0.0.5:40000", 8), // server port outside range
        tcp(1, "10.0.0.1:40009", "10.0.0.9:80", 9), // reserved port
    ];
    let mut s = settings();
    s.reserved = vec![(40009, 40009)];
    let owner = |sock: &DiagSocket| {
        (sock.inode != 0).then(|| Owner {
            pid: 100 + (sock.inode % 2) as u32,
            start: 5,
            name: format!("p{}", sock.inode % 2),
        })
    };
    let status = crate::logic::pool::build_pools(NS, &s, &table, owner);

    let mut l = Ledger::new();
    for pid in [100, 101] {
        l.process_seen(pid, 5, &format!("p{}", pid - 100));
    }
    l.reconcile(NS, s, &table, owner, S);
    let live: Vec<_> = l.pool_views(S).into_iter().map(|v| v.pool).collect();
    assert_eq!(status.len(), 3, "{status:#?}");
    assert_eq!(live, status);
}

#[test]
fn loopback_time_wait_becomes_reusable_after_the_delay_and_can_be_taken_over() {
    let mut l = Ledger::new();
    l.reconcile(NS, settings(), &[], |_| None, 0);
    let lo = |action, port: u16, ts| {
        let mut r = record(
            action,
            (7, 7, "cli"),
            &format!("127.0.0.1:{port}"),
            Some("127.0.0.1:5000"),
        );
        r.ts_ns = ts;
        r
    };
    let k = PoolKey {
        saddr: "127.0.0.1".parse().unwrap(),
        daddr: "127.0.0.1".parse().unwrap(),
        dport: 5000,
        ..key()
    };
    for port in 40000..40004 {
        l.apply(&lo(Action::Connect, port, S), Some(NS), S);
        let mut c = lo(Action::Close, port, 2 * S);
        c.close = close(port, true, 2 * S).close;
        l.apply(&c, Some(NS), 2 * S);
    }
    l.expire(2 * S + S / 2);
    assert_eq!(
        l.pool_state(&k),
        Some((4, 10, 4)),
        "younger than the 1 s delay"
    );
    l.expire(3 * S + S / 10);
    assert_eq!(
        l.pool_state(&k),
        Some((0, 10, 4)),
        "reusable: free for connect()"
    );
    assert_eq!(l.pool_views(3 * S)[0].pool.reusable, 4);
    // The kernel takes one over: a live connection on that 4-tuple again.
    l.apply(&lo(Action::Connect, 40001, 4 * S), Some(NS), 4 * S);
    assert_eq!(l.pool_state(&k), Some((1, 10, 3)));
    // The other three end after 60 s; the live one stays.
    l.expire(62 * S + S / 2);
    assert_eq!(l.pool_state(&k), Some((1, 10, 0)));
}

#[test]
fn a_bind_learned_after_the_seed_still_takes_the_port_from_other_pools() {
    // The namespace was read (first event) after the connection existed: its entry
    // comes from the table, its bind() and connect() events after.
    let mut l = Ledger::new();
    let seeded = tcp(1, "10.0.0.1:40003", "10.0.0.9:80", 5);
    l.reconcile(NS, settings(), &[seeded], |_| None, S);
    bind_port_zero(&mut l, 40003);
    l.apply(&rec(Action::Connect, 40003, 80, S), Some(NS), S);
    l.apply(&rec(Action::Connect, 40004, 81, S), Some(NS), S);
    let k81 = PoolKey { dport: 81, ..key() };
    assert_eq!(l.pool_state(&k81), Some((1, 9, 0)));
    assert_eq!(l.pool_state(&key()), Some((1, 10, 0)));
}

#[test]
fn a_closed_listeners_connections_become_one_bound_port_at_reconciliation() {
    let mut l = Ledger::new();
    let s = NetSettings {
        range: (40000, 40999),
        ..Default::default()
    };
    // 100 TIME_WAIT of a server on 40005 whose listener closed, one client connection.
    let mut table: Vec<DiagSocket> = (0..100)
        .map(|i| tcp(6, "10.0.0.1:40005", &format!("10.0.0.7:{}", 50000 + i), 0))
        .collect();
    table.push(tcp(1, "10.0.0.1:40001", "10.0.0.9:80", 0));
    l.reconcile(NS, s.clone(), &table, |_| None, S);
    let views = l.pool_views(S);
    assert_eq!(views.len(), 1, "one client pool, no pool per peer");
    let key = &views[0].pool.key;
    assert_eq!(l.pool_state(key), Some((1, 999, 0)));
    // Its connections gone, the port is every pool's again.
    l.reconcile(NS, s, &table[100..], |_| None, 2 * S);
    assert_eq!(l.pool_state(key), Some((1, 1000, 0)));
}

#[test]
fn live_pools_are_diagnosed_as_status_would_with_the_ledger_close_rate() {
    let mut l = ledger();
    // 9 connections of 10 ports, 8 closed by this side (TIME_WAIT, not reusable towards
    // a non-loopback address with tcp_tw_reuse=2), one a second.
    for i in 0..9 {
        let t = (i as u64 + 1) * S;
        l.apply(&rec(Action::Connect, 40000 + i, 80, t), Some(NS), t);
        if i < 8 {
            l.apply(&close(40000 + i, true, t + S / 2), Some(NS), t + S / 2);
        }
    }
    let now = 10 * S;
    let views = l.pool_views(now);
    assert!(views[0].closes_first_per_s > 0.5, "{:?}", views[0]);
    let ns = l.diagnoses(views, &Thresholds::default());
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[0].netns, NS);
    let mut ids: Vec<&str> = ns[0].diagnoses.iter().map(|d| d.id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "client_closes_first",
            "narrow_port_range",
            "pool_exhaustion",
            "rate_above_sustainable",
            "tcp_tw_reuse_off"
        ]
    );
    // A namespace whose sysctls no reconciliation has read yet says nothing.
    let mut blind = Ledger::new();
    blind.apply(&rec(Action::Connect, 40000, 80, S), Some(NS), S);
    let views = blind.pool_views(2 * S);
    assert!(blind.diagnoses(views, &Thresholds::default()).is_empty());
}

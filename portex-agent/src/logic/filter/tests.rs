//! The filter against records and pool_pressure alarms.
use super::*;
use crate::logic::{
    fixtures::record,
    model::{Action, Container, Transport},
    pool::{Holder, Pool},
};

fn rec(action: Action, pid: u32, thread: &str) -> Record {
    let (src, dst) = ("127.0.0.1:40000", Some("127.0.0.1:5000"));
    record(action, (pid, pid + 1, thread), src, dst)
}

fn to(dst: &str) -> Record {
    let src = if dst.starts_with('[') {
        "[::1]:40000"
    } else {
        "127.0.0.1:40000"
    };
    record(Action::Connect, (7, 7, "app"), src, Some(dst))
}

const ALL: [Action; 8] = [
    Action::Connect,
    Action::ConnectStalled,
    Action::Established,
    Action::Close,
    Action::TimeWait,
    Action::ConnectFailed,
    Action::Bind,
    Action::BindFailed,
];

#[test]
fn no_filter_keeps_everything() {
    let f = Filter::default();
    for a in ALL {
        assert!(f.accepts(&rec(a, 7, "worker"), "app"), "{a:?}");
    }
    assert!(
        f.accepts(&rec(Action::Connect, 0, ""), ""),
        "unknown owner too"
    );
}

#[test]
fn pid_keeps_only_that_process() {
    let f = Filter {
        pid: Some(1234),
        ..Filter::default()
    };
    for a in ALL {
        assert!(f.accepts(&rec(a, 1234, "app"), "app"), "{a:?}");
        assert!(!f.accepts(&rec(a, 1235, "app"), "app"), "{a:?}");
        assert!(!f.accepts(&rec(a, 0, "app"), "app"), "{a:?}");
    }
    // The thread id is not the process id: a record of thread 1234 of process 1233
    // is not process 1234's.
    let mut r = rec(Action::Connect, 1233, "app");
    r.process.tid = 1234;
    assert!(!f.accepts(&r, "app"));
}

#[test]
fn comm_matches_the_process_name_or_the_thread_name_exactly() {
    let f = Filter {
        comm: Some("nginx".into()),
        ..Filter::default()
    };
    // The process name.
    assert!(f.accepts(&rec(Action::Connect, 7, "worker-3"), "nginx"));
    // The thread's name, when the process has another.
    assert!(f.accepts(&rec(Action::Connect, 7, "nginx"), "launcher"));
    // Neither.
    assert!(!f.accepts(&rec(Action::Connect, 7, "worker-3"), "launcher"));
    // Whole names only: no prefix, suffix or case folding.
    assert!(!f.accepts(&rec(Action::Connect, 7, "nginx2"), "nginx2"));
    assert!(!f.accepts(&rec(Action::Connect, 7, "ngin"), "ngin"));
    assert!(!f.accepts(&rec(Action::Connect, 7, "NGINX"), "NGINX"));
    assert!(!f.accepts(&rec(Action::Connect, 7, ""), ""));
}

#[test]
fn failures_only_keeps_the_failures_and_the_connects_still_waiting() {
    let f = Filter {
        failures_only: true,
        ..Filter::default()
    };
    let kept: Vec<Action> = ALL
        .into_iter()
        .filter(|&a| f.accepts(&rec(a, 7, "app"), "app"))
        .collect();
    assert_eq!(
        kept,
        [
            Action::ConnectStalled,
            Action::ConnectFailed,
            Action::BindFailed
        ]
    );
}

#[test]
fn destination_filters_keep_matching_destinations_and_leave_out_binds() {
    let f = Filter {
        daddr: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
        ..Filter::default()
    };
    assert!(f.accepts(&to("10.1.2.3:80"), "app"));
    assert!(f.accepts(&to("[::1]:80"), "app"));
    assert!(f.accepts(&to("[::ffff:10.0.0.1]:80"), "app"));
    assert!(!f.accepts(&to("192.0.2.1:80"), "app"));
    let bind = record(Action::Bind, (7, 7, "app"), "10.0.0.1:40000", None);
    assert!(!f.accepts(&bind, "app"), "a bind has no destination");

    let f = Filter {
        dport: vec!["443".parse().unwrap(), "8000-8100".parse().unwrap()],
        ..Filter::default()
    };
    assert!(f.accepts(&to("192.0.2.1:443"), "app"));
    assert!(f.accepts(&to("192.0.2.1:8050"), "app"));
    assert!(!f.accepts(&to("192.0.2.1:80"), "app"));
    assert!(!f.accepts(&bind, "app"));
}

#[test]
fn family_follows_the_network_type_shown() {
    let v4 = Filter {
        family: Some(Family::V4),
        ..Filter::default()
    };
    let v6 = Filter {
        family: Some(Family::V6),
        ..Filter::default()
    };
    assert!(v4.accepts(&to("10.0.0.1:80"), "app"));
    assert!(!v6.accepts(&to("10.0.0.1:80"), "app"));
    assert!(v6.accepts(&to("[2001:db8::1]:80"), "app"));
    assert!(!v4.accepts(&to("[2001:db8::1]:80"), "app"));
    // A bind has only its source.
    let bind = record(Action::Bind, (7, 7, "app"), "[::1]:40000", None);
    assert!(v6.accepts(&bind, "app") && !v4.accepts(&bind, "app"));
}

#[test]
fn netns_and_container_need_the_record_to_carry_them() {
    let f = Filter {
        netns: Some(4026532000),
        ..Filter::default()
    };
    let mut r = to("10.0.0.1:80");
    assert!(!f.accepts(&r, "app"), "unknown namespace: not shown");
    r.netns = Some(4026531840);
    assert!(!f.accepts(&r, "app"));
    r.netns = Some(4026532000);
    assert!(f.accepts(&r, "app"));

    let id = "3f1c0e5d2b7a9c8e3f1c0e5d2b7a9c8e3f1c0e5d2b7a9c8e3f1c0e5d2b7a9c8e";
    let f = Filter {
        container: Some("3F1C0E5D2B7A".parse::<ContainerPrefix>().unwrap().0),
        ..Filter::default()
    };
    assert!(!f.accepts(&r, "app"), "no container: not shown");
    r.container = Some(std::sync::Arc::new(Container {
        id: id.into(),
        runtime: "docker",
        pod_uid: None,
        workload: Default::default(),
    }));
    assert!(f.accepts(&r, "app"));
    let whole = Filter {
        container: Some(id.into()),
        ..Filter::default()
    };
    assert!(whole.accepts(&r, "app"));
    std::sync::Arc::make_mut(r.container.as_mut().unwrap()).id = format!("4{}", &id[1..]);
    assert!(!f.accepts(&r, "app"));
    for bad in ["", "web", "3f1c-0e", &format!("{id}0")] {
        assert!(bad.parse::<ContainerPrefix>().is_err(), "{bad:?}");
    }
}

#[test]
fn every_condition_must_hold() {
    let f = Filter {
        pid: Some(42),
        comm: Some("curl".into()),
        failures_only: true,
        dport: vec!["80".parse().unwrap()],
        family: Some(Family::V4),
        ..Filter::default()
    };
    let r = record(
        Action::ConnectFailed,
        (42, 42, "curl"),
        "127.0.0.1:0",
        Some("10.0.0.1:80"),
    );
    assert!(f.accepts(&r, "curl"));
    let breaks: [fn(&mut Record); 5] = [
        |r| r.action = Action::Connect,
        |r| r.process.pid = 43,
        |r| r.process.thread_name = "wget".into(),
        |r| r.destination = Some("10.0.0.1:81".parse().unwrap()),
        |r| r.destination = Some("[::1]:80".parse().unwrap()),
    ];
    for (i, b) in breaks.iter().enumerate() {
        let mut r = r.clone();
        b(&mut r);
        let name = r.process.thread_name.name().into_owned();
        assert!(!f.accepts(&r, &name), "condition {i}");
    }
}

fn key(netns: u64, transport: Transport, daddr: &str, dport: u16) -> PoolKey {
    let daddr: IpAddr = daddr.parse().unwrap();
    let saddr = if daddr.is_unspecified() {
        daddr
    } else {
        "127.0.0.1".parse().unwrap()
    };
    PoolKey {
        netns,
        transport,
        saddr,
        daddr,
        dport,
    }
}

fn owner(pid: u32, name: &str) -> Owner {
    Owner {
        pid,
        start: 1,
        name: name.into(),
    }
}

#[test]
fn pressure_passes_the_filters_its_pool_and_holders_match() {
    let k = key(9, Transport::Tcp, "10.0.0.1", 80);
    let mut pool = Pool::empty(k, 10);
    pool.holders = vec![
        Holder {
            owner: Some(owner(42, "curl")),
            held: 8,
            time_wait: 0,
        },
        Holder {
            owner: None,
            held: 1,
            time_wait: 1,
        },
    ];
    let holders = || pool.holders.iter().filter_map(|h| h.owner.as_ref());
    let trigger = to("10.0.0.1:80");
    let passes = |f: Filter| f.accepts_pressure(&pool.key, holders(), &trigger);
    assert!(passes(Filter::default()));
    assert!(passes(Filter {
        failures_only: true,
        ..Filter::default()
    }));
    assert!(passes(Filter {
        pid: Some(42),
        comm: Some("curl".into()),
        ..Filter::default()
    }));
    assert!(!passes(Filter {
        pid: Some(43),
        ..Filter::default()
    }));
    assert!(!passes(Filter {
        comm: Some("wget".into()),
        ..Filter::default()
    }));
    assert!(passes(Filter {
        daddr: vec!["10.0.0.0/24".parse().unwrap()],
        dport: vec!["1-100".parse().unwrap()],
        netns: Some(9),
        family: Some(Family::V4),
        ..Filter::default()
    }));
    for f in [
        Filter {
            daddr: vec!["10.0.1.0/24".parse().unwrap()],
            ..Filter::default()
        },
        Filter {
            dport: vec!["443".parse().unwrap()],
            ..Filter::default()
        },
        Filter {
            netns: Some(10),
            ..Filter::default()
        },
        Filter {
            family: Some(Family::V6),
            ..Filter::default()
        },
        // The record that tipped the pool has no container.
        Filter {
            container: Some("ab".into()),
            ..Filter::default()
        },
    ] {
        assert!(!passes(f.clone()), "{f:?}");
    }
    // The UDP pool of a namespace has no destination.
    let udp = key(9, Transport::Udp, "0.0.0.0", 0);
    let none = std::iter::empty::<&Owner>();
    let f = Filter {
        family: Some(Family::V6),
        netns: Some(9),
        ..Filter::default()
    };
    assert!(f.accepts_pressure(&udp, none.clone(), &trigger));
    let f = Filter {
        dport: vec!["1-65535".parse().unwrap()],
        ..Filter::default()
    };
    assert!(!f.accepts_pressure(&udp, none, &trigger));
}

#[test]
fn a_nat_pools_pressure_passes_the_destination_filters_not_the_process_ones() {
    let key = NatPoolKey {
        netns: 9,
        proto: 6,
        nat_ip: "10.78.0.1".parse().unwrap(),
        daddr: "10.78.0.2".parse().unwrap(),
        dport: 8080,
    };
    let f = |f: Filter| f.accepts_nat_pressure(&key);
    assert!(f(Filter::default()));
    assert!(f(Filter {
        failures_only: true,
        netns: Some(9),
        dport: vec!["8080".parse().unwrap()],
        daddr: vec!["10.78.0.0/16".parse().unwrap()],
        ..Filter::default()
    }));
    assert!(!f(Filter {
        dport: vec!["443".parse().unwrap()],
        ..Filter::default()
    }));
    assert!(!f(Filter {
        netns: Some(8),
        ..Filter::default()
    }));
    assert!(!f(Filter {
        pid: Some(1),
        ..Filter::default()
    }));
}

//! The NAT rules' port range as portex reads it (its own nf_tables netlink dump) against
//! what the real `nft` shows, rule shape by rule shape, in a namespace of its own; and
//! the same read where no nft binary exists (a container image FROM scratch: here, a
//! mount namespace with /dev/null bound over /usr/sbin/nft).
//!
//! `portex status` reads the range only when the conntrack table holds a NATed
//! connection: one is made with `conntrack -I --src-nat` and outlives every ruleset
//! the test loads (`nft flush ruleset` takes iptables-nft's tables too). The namespace
//! goes when the test ends, on every path.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use portex_e2e::*;

const NAT_IP: &str = "add table ip nat
add chain ip nat post { type nat hook postrouting priority 100 ; }
";
const NAT_INET: &str = "add table inet nat6
add chain inet nat6 post { type nat hook postrouting priority 100 ; }
";

/// (name, nft script, iptables-nft arguments, the range portex must report)
type Shape = (
    &'static str,
    String,
    &'static [&'static str],
    Option<(u64, u64)>,
);

fn shapes() -> Vec<Shape> {
    let ip = |rules: &str| format!("{NAT_IP}{rules}\n");
    let inet = |rules: &str| format!("{NAT_IP}{NAT_INET}{rules}\n");
    vec![
        (
            "masquerade to a range",
            ip("add rule ip nat post meta l4proto tcp masquerade to :40000-40009"),
            &[],
            Some((40000, 40009)),
        ),
        (
            "masquerade to one port",
            ip("add rule ip nat post meta l4proto tcp masquerade to :5000"),
            &[],
            Some((5000, 5000)),
        ),
        (
            "masquerade without a range",
            ip("add rule ip nat post masquerade"),
            &[],
            None,
        ),
        (
            "snat to addresses and ports",
            ip("add rule ip nat post meta l4proto tcp snat to 10.1.2.3-10.1.2.9:41000-41009"),
            &[],
            Some((41000, 41009)),
        ),
        (
            "snat to an address only",
            ip("add rule ip nat post snat to 10.1.2.3"),
            &[],
            None,
        ),
        (
            "ip, ip6 and inet rules that agree",
            inet(
                "add rule ip nat post meta l4proto tcp masquerade to :42000-42009
add rule inet nat6 post meta nfproto ipv6 meta l4proto tcp snat ip6 to [fd00::1]:42000-42009
add rule inet nat6 post meta nfproto ipv4 meta l4proto udp snat ip to 10.0.0.1:42000-42009
add rule inet nat6 post meta l4proto tcp masquerade to :42000-42009",
            ),
            &[],
            Some((42000, 42009)),
        ),
        (
            "rules that disagree",
            inet(
                "add rule ip nat post meta l4proto tcp masquerade to :40000-40009
add rule inet nat6 post meta l4proto tcp masquerade to :50000-50009",
            ),
            &[],
            None,
        ),
        (
            "ports from a map",
            ip("add rule ip nat post meta l4proto tcp masquerade to :tcp dport map { 80 : 5000 }"),
            &[],
            None,
        ),
        (
            "iptables-nft MASQUERADE",
            String::new(),
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-p",
                "tcp",
                "-j",
                "MASQUERADE",
                "--to-ports",
                "40000-40009",
            ],
            None,
        ),
    ]
}

/// What `nft -j list ruleset` says the range is, by the rule portex's reports follow:
/// every masquerade/snat statement's port range, Some only when they all agree and it
/// is not the kernel's default (1024-65535); an xt MASQUERADE/SNAT target (whose range
/// nft does not show) or a port nft cannot print as a number makes it unknown.
fn nft_json_range(j: &Value) -> Option<(u64, u64)> {
    let mut ranges = Vec::new();
    for rule in j["nftables"]
        .as_array()?
        .iter()
        .filter_map(|i| i.get("rule"))
    {
        for e in rule["expr"].as_array().into_iter().flatten() {
            if e["xt"]["type"] == "target"
                && matches!(e["xt"]["name"].as_str(), Some("MASQUERADE" | "SNAT"))
            {
                return None;
            }
            let Some(stmt) = e.get("masquerade").or_else(|| e.get("snat")) else {
                continue;
            };
            ranges.push(match stmt.get("port") {
                None => (1024, 65535),
                Some(p) => match (p.get("range"), p.as_u64()) {
                    (Some(r), _) => (r[0].as_u64()?, r[1].as_u64()?),
                    (None, Some(one)) => (one, one),
                    _ => return None,
                },
            });
        }
    }
    ranges.sort_unstable();
    ranges.dedup();
    match ranges.as_slice() {
        [one] if *one != (1024, 65535) => Some(*one),
        _ => None,
    }
}

/// A NATed connection in `ns`'s conntrack table, so that `status` reads the rules'
/// range. The NAT table first: it loads nf_nat, which `conntrack -I --src-nat` needs.
fn nated_connection(ns: &Netns, dir: &TmpDir) {
    let setup = dir.join("setup.nft");
    std::fs::write(&setup, NAT_IP).unwrap();
    run_ok(ns, &["nft", "-f", setup.to_str().unwrap()]);
    let insert = "conntrack -I -p tcp -s 10.9.0.2 -d 10.9.1.2 --sport 5555 --dport 80 \
                  --state ESTABLISHED --timeout 600 --src-nat 10.9.1.1:40001 -u ASSURED";
    run_ok(ns, &insert.split_whitespace().collect::<Vec<_>>());
}

/// `portex status --netns NS --json` from this (the host's) namespace; with `hide_nft`,
/// in a mount namespace of its own where /usr/sbin/nft is /dev/null. The report's
/// `rule_port_range`.
fn portex_range(ns: &Netns, hide_nft: bool) -> Option<(u64, u64)> {
    let bin = portex_bin();
    let status = format!("exec {} status --netns {} --json", bin.display(), ns.name);
    let script = if hide_nft {
        // The nft binary cannot run there: the proof that portex does not need it.
        format!(
            "mount --bind /dev/null /usr/sbin/nft && ! /usr/sbin/nft --version 2>/dev/null && {status}"
        )
    } else {
        status
    };
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let out = cmd.output().expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let nat = &v["namespaces"][0]["nat"];
    assert!(nat.is_object(), "no NAT section: {v}");
    let r = &nat["rule_port_range"];
    (!r.is_null()).then(|| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
}

fn run_ok(ns: &Netns, cmd: &[&str]) -> String {
    let (code, out, err) = ns.exec(cmd);
    assert_eq!(code, Some(0), "{cmd:?}: {err}");
    out
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn the_rule_range_is_what_nft_shows_with_or_without_nft() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("natrules");
    let dir = TmpDir::new("natrules");
    nated_connection(&ns, &dir);
    for (name, script, iptables, want) in shapes() {
        run_ok(&ns, &["nft", "flush", "ruleset"]);
        if !script.is_empty() {
            let f = dir.join("rules.nft");
            std::fs::write(&f, &script).unwrap();
            run_ok(&ns, &["nft", "-f", f.to_str().unwrap()]);
        }
        if !iptables.is_empty() {
            let mut cmd = vec!["iptables-nft"];
            cmd.extend_from_slice(iptables);
            run_ok(&ns, &cmd);
        }
        let listed: Value =
            serde_json::from_str(&run_ok(&ns, &["nft", "-j", "list", "ruleset"])).unwrap();
        let got = portex_range(&ns, false);
        eprintln!("{name}: portex {got:?}, nft {:?}", nft_json_range(&listed));
        assert_eq!(got, nft_json_range(&listed), "{name}: {listed}");
        assert_eq!(got, want, "{name}");
    }
    // The container's case: no nft binary at all.
    let (name, script, _, want) = &shapes()[0];
    run_ok(&ns, &["nft", "flush", "ruleset"]);
    let f = dir.join("rules.nft");
    std::fs::write(&f, script).unwrap();
    run_ok(&ns, &["nft", "-f", f.to_str().unwrap()]);
    assert_eq!(portex_range(&ns, true), *want, "{name}, without nft");
}

/// A process killed (and reaped) when the test ends, on every path.
struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A user who keeps changing the ruleset of their namespace (every change ends a dump
/// under way with NLM_F_DUMP_INTR, and nft would dump again and again): portex's read
/// gives up within its budget (2 s) and `status` answers, with the range or without.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_ruleset_that_keeps_changing_does_not_hold_status() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("natchurn");
    let dir = TmpDir::new("natchurn");
    nated_connection(&ns, &dir);
    // 3,000 rules: a dump of many datagrams, long enough to be cut by a change.
    let mut script = format!(
        "{NAT_IP}add rule ip nat post meta l4proto tcp masquerade to :40000-40009
add table ip filter
add chain ip filter out {{ type filter hook output priority 0 ; }}
"
    );
    for i in 0..3000 {
        script.push_str(&format!(
            "add rule ip filter out tcp dport {} accept\n",
            1000 + i
        ));
    }
    let f = dir.join("rules.nft");
    std::fs::write(&f, &script).unwrap();
    run_ok(&ns, &["nft", "flush", "ruleset"]);
    run_ok(&ns, &["nft", "-f", f.to_str().unwrap()]);
    let churn = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sh", "-c"])
        .arg("while :; do nft add rule ip filter out tcp dport 9 accept; done")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the churning loop");
    let _churn = KillOnDrop(churn);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let t = Instant::now();
        let got = portex_range(&ns, false);
        let took = t.elapsed();
        eprintln!("status took {took:?}: {got:?}");
        assert!(got.is_none() || got == Some((40000, 40009)), "{got:?}");
        // The budget, and what starting portex costs on a loaded machine.
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
}

//! The rule-dump parser on dumps captured from Linux 6.18 with nftables 1.0.6 and
//! iptables-nft 1.8.9 (tests/fixtures/nftables: capture.py made them, SHAPE.nft is
//! what nft listed), and on a few made-up messages for what nft never sends.
use super::{rules::RuleDump, *};
use crate::{
    logic::nat::{NatPorts, RuleRanges},
    sys::netlink::{NFGEN_LEN, NLM_F_DUMP_INTR, NLMSG_HDRLEN},
};

/// The datagrams of capture SHAPE (SHAPE-0.bin, SHAPE-1.bin, ...).
fn capture(shape: &str) -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nftables");
    let v: Vec<Vec<u8>> = (0..)
        .map_while(|i| std::fs::read(format!("{dir}/{shape}-{i}.bin")).ok())
        .collect();
    assert!(!v.is_empty(), "no capture {shape}");
    v
}

/// A whole dump through the parser: every datagram but the last says "more".
fn parse(datagrams: &[Vec<u8>]) -> RuleDump {
    let mut dump = RuleDump::default();
    for (i, d) in datagrams.iter().enumerate() {
        let last = i + 1 == datagrams.len();
        assert_eq!(dump.datagram(d), last.then_some(0), "datagram {i}");
    }
    dump
}

fn folded(statements: &[NatPorts]) -> RuleRanges {
    let mut r = RuleRanges::default();
    statements.iter().for_each(|p| r.add(*p));
    r
}

#[test]
fn each_rule_shape_gives_the_range_nft_shows() {
    use NatPorts::*;
    let r = Range(40000, 40009);
    /// (capture, its statements in order, the namespace's range)
    type Case<'a> = (&'a str, &'a [NatPorts], Option<(u16, u16)>);
    let cases: [Case; 13] = [
        ("masq-range", &[r], Some((40000, 40009))),
        ("masq-plain", &[Default], None),
        ("masq-one-port", &[Range(5000, 5000)], Some((5000, 5000))),
        ("masq-random-no-range", &[Default], None),
        ("snat-addr-ports", &[r], Some((40000, 40009))),
        ("snat-addr-only", &[Default], None),
        // ip masquerade, inet snat ip6 and snat ip, inet masquerade; the DNAT rule of
        // the same table is not a source range.
        ("inet-agree", &[r, r, r, r], Some((40000, 40009))),
        ("disagree", &[r, Range(50000, 50009)], None),
        ("port-map", &[Unknown], None),
        ("xt-masquerade", &[Unknown], None),
        // nft's table first: it was made first.
        ("xt-snat-and-nft", &[r, Unknown], None),
        ("empty", &[], None),
        // 120 filter rules first: the answer takes 3 datagrams and a closing one.
        ("many-rules", &[r], Some((40000, 40009))),
    ];
    for (shape, statements, range) in cases {
        let dump = parse(&capture(shape));
        assert_eq!(dump.ranges, folded(statements), "{shape}");
        assert_eq!(dump.statements, statements.len(), "{shape}");
        assert_eq!(dump.ranges.range(), range, "{shape}");
        assert!(!dump.interrupted, "{shape}");
    }
    assert!(capture("many-rules").len() >= 3);
}

#[test]
fn the_request_is_a_rule_dump_of_every_family() {
    // struct nlmsghdr {20, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETRULE,
    // NLM_F_REQUEST | NLM_F_DUMP, seq 1, pid 0} and nfgenmsg {NFPROTO_UNSPEC, 0, 0}:
    // the bytes capture.py sends.
    let mut want = vec![20, 0, 0, 0];
    want.extend_from_slice(&0x0a07u16.to_ne_bytes());
    want.extend_from_slice(&0x0301u16.to_ne_bytes());
    want.extend_from_slice(&1u32.to_ne_bytes());
    want.extend_from_slice(&[0; 8]);
    assert_eq!(request(), want);
}

#[test]
fn a_refusal_is_the_kernels_errno() {
    // From a process without CAP_NET_ADMIN.
    let mut dump = RuleDump::default();
    assert_eq!(dump.datagram(&capture("error-eperm")[0]), Some(libc::EPERM));
    assert_eq!(dump.statements, 0);
}

#[test]
fn a_dump_the_ruleset_changed_under_is_marked_interrupted() {
    let mut d = capture("masq-range");
    // The kernel sets NLM_F_DUMP_INTR on the messages after the change, NLMSG_DONE
    // included (netlink_dump_done).
    let flags = u16::from_ne_bytes([d[1][6], d[1][7]]) | NLM_F_DUMP_INTR;
    d[1][6..8].copy_from_slice(&flags.to_ne_bytes());
    let dump = parse(&d);
    assert!(dump.interrupted);
    assert_eq!(dump.ranges.range(), Some((40000, 40009)));
}

#[test]
fn truncated_or_corrupted_dumps_never_panic_nor_invent_a_statement() {
    // Every cut of the small dumps; of the long one (42 kB), every 61st.
    for (shape, step) in [
        ("inet-agree", 1),
        ("xt-snat-and-nft", 1),
        ("port-map", 1),
        ("many-rules", 61),
    ] {
        let whole = parse(&capture(shape)).statements;
        for d in capture(shape) {
            for cut in (0..d.len()).step_by(step) {
                let mut dump = RuleDump::default();
                let _ = dump.datagram(&d[..cut]);
                assert!(dump.statements <= whole, "{shape} cut at {cut}");
            }
        }
    }
    // Every byte of a rule set to 0xff or 0 in turn: lengths, types, registers. Five
    // NAT expressions at most (a zeroed NFTA_NAT_TYPE makes the DNAT one an SNAT).
    let d = &capture("inet-agree")[0];
    for i in 0..d.len() {
        for v in [0u8, 0xff] {
            let mut m = d.clone();
            m[i] = v;
            let mut dump = RuleDump::default();
            let _ = dump.datagram(&m);
            assert!(dump.statements <= 5, "byte {i} = {v}");
        }
    }
}

/// Made-up rules: a NEWRULE message of `exprs` (name, data attributes).
fn rule(exprs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }
    let list: Vec<u8> = exprs
        .iter()
        .flat_map(|(name, data)| {
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            attr(1, &[attr(1, &n), attr(2, data)].concat())
        })
        .collect();
    let body = attr(4, &list);
    let len = NLMSG_HDRLEN + NFGEN_LEN + body.len();
    let mut m = (len as u32).to_ne_bytes().to_vec();
    m.extend_from_slice(&0x0a06u16.to_ne_bytes());
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(&[2, 0, 0, 0]);
    m.extend(body);
    m
}

fn reg_attr(ty: u16, reg: u32) -> Vec<u8> {
    let mut v = 8u16.to_ne_bytes().to_vec();
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&reg.to_be_bytes());
    v
}

/// immediate: dreg `reg`, the value `bytes` (NFTA_IMMEDIATE_DATA { NFTA_DATA_VALUE }).
fn immediate(reg: u32, bytes: &[u8]) -> (&'static str, Vec<u8>) {
    let mut value = ((4 + bytes.len()) as u16).to_ne_bytes().to_vec();
    value.extend_from_slice(&1u16.to_ne_bytes());
    value.extend_from_slice(bytes);
    value.resize(value.len().next_multiple_of(4), 0);
    let mut data = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
    data.extend_from_slice(&2u16.to_ne_bytes());
    data.extend(value);
    ("immediate", [reg_attr(1, reg), data].concat())
}

fn masq(min: u32, max: u32) -> (&'static str, Vec<u8>) {
    ("masq", [reg_attr(2, min), reg_attr(3, max)].concat())
}

fn statements_of(m: &[u8]) -> RuleRanges {
    let mut dump = RuleDump::default();
    assert_eq!(dump.datagram(m), None);
    dump.ranges
}

#[test]
fn ports_are_read_from_32_bit_registers_and_forgotten_when_overwritten() {
    use NatPorts::*;
    let p = |n: u16| n.to_be_bytes();
    // NFT_REG32_01 (9) is word 5, the second word of NFT_REG_1 (words 4..8): a 6-byte
    // value loaded into NFT_REG_1 fills it too (the min port's 2 bytes, then the max).
    let one_load = rule(&[immediate(1, &[0, 0, 0, 0, 0x9c, 0x49]), masq(1, 9)]);
    assert_eq!(statements_of(&one_load), folded(&[Range(0, 40009)]));
    let two_regs = rule(&[
        immediate(9, &p(40000)),
        immediate(10, &p(40009)),
        masq(9, 10),
    ]);
    assert_eq!(statements_of(&two_regs), folded(&[Range(40000, 40009)]));
    // A payload load between the immediate and the masquerade may have overwritten it.
    let overwritten = rule(&[
        immediate(9, &p(40000)),
        immediate(10, &p(40009)),
        ("payload", vec![]),
        masq(9, 10),
    ]);
    assert_eq!(statements_of(&overwritten), folded(&[Unknown]));
    // A counter writes no register.
    let counted = rule(&[immediate(1, &p(5000)), ("counter", vec![]), masq(1, 1)]);
    assert_eq!(statements_of(&counted), folded(&[Range(5000, 5000)]));
    // Registers do not carry over from one rule to the next, nor past the file's end.
    let loaded = rule(&[immediate(1, &p(5000))]);
    let masq_only = rule(&[masq(1, 1)]);
    assert_eq!(
        statements_of(&[loaded, masq_only].concat()),
        folded(&[Unknown])
    );
    let past_end = rule(&[immediate(23, &[1, 2, 3, 4, 5]), masq(23, 23)]);
    assert_eq!(statements_of(&past_end), folded(&[Unknown]));
    // The verdict register and numbers between the two ranges hold no port.
    for reg in [0, 5, 7, 24, u32::MAX] {
        let r = rule(&[immediate(reg, &p(5000)), masq(reg, reg)]);
        assert_eq!(statements_of(&r), folded(&[Unknown]), "reg {reg}");
    }
}

#[test]
fn a_read_past_its_budget_gives_up() {
    // Whatever the ruleset and the privileges (a refusal is an answer of 40 bytes), as
    // long as this kernel has nfnetlink (a user cannot have the module loaded).
    let no_nfnetlink = |e: &str| e.starts_with("opening a nf_tables netlink socket");
    // A deadline already passed: no wait at all.
    let e = format!("{:#}", read(Instant::now(), MAX_DUMP_BYTES).unwrap_err());
    assert!(
        e.contains("no complete answer in time") || no_nfnetlink(&e),
        "{e}"
    );
    let soon = Instant::now() + Duration::from_secs(1);
    let e = format!("{:#}", read(soon, 1).unwrap_err());
    assert!(e.contains("longer than 1 bytes") || no_nfnetlink(&e), "{e}");
}

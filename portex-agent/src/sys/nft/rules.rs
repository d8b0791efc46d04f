//! The parser of an nf_tables rule dump (NFT_MSG_GETRULE, what `nft list ruleset`
//! reads): each rule's masquerade and snat statements and the source ports they name,
//! folded into a logic::nat::RuleRanges. Pure, bytes in: unit-tested on dumps captured
//! from the kernel (tests.rs) and fuzzed (fuzz/fuzz_targets/nftables.rs).
//!
//! A rule is a list of expressions run in order over a file of registers; a NAT
//! expression names the registers that hold its ports. What nft (1.0.6) sends Linux 6.18
//! (`nft --debug=netlink add rule ...`), each port the first two bytes of a register of
//! its own, big-endian (0x9c40 = 40000):
//!
//! ```text
//! meta l4proto tcp masquerade to :40000-40009
//!   [ immediate reg 1 0x0000409c ]  [ immediate reg 2 0x0000499c ]
//!   [ masq proto_min reg 1 proto_max reg 2 flags 0x2 ]
//! meta l4proto tcp snat to 10.1.2.3:40000-40009
//!   [ immediate reg 1 0x0302010a ]  [ immediate reg 2 0x0000409c ]
//!   [ immediate reg 3 0x0000499c ]
//!   [ nat snat ip addr_min reg 1 proto_min reg 2 proto_max reg 3 flags 0x2 ]
//! meta l4proto tcp masquerade to :5000            (one port: proto_min only)
//!   [ immediate reg 1 0x00008813 ]  [ masq proto_min reg 1 flags 0x2 ]
//! masquerade to :tcp dport map { 80 : 5000 }      (no constant: unknown)
//!   [ payload load 2b @ transport header + 2 => reg 1 ]
//!   [ lookup reg 1 set __map%d dreg 1 ]  [ masq proto_min reg 1 flags 0x2 ]
//! ```
//!
//! So the parser plays each rule's `immediate` expressions into a model of the
//! registers, forgets them at any expression that may write one, and reads the ports a
//! `masq` or SNAT `nat` expression names; a register it cannot vouch for makes that
//! statement's range unknown. iptables-nft's MASQUERADE and SNAT are an xt `target`
//! expression: unknown too.
use crate::{
    logic::nat::{NatPorts, RuleRanges},
    sys::netlink::{self, NFGEN_LEN, NFNL_SUBSYS_NFTABLES, NLM_F_DUMP_INTR, attrs, be32},
};

/// The message type of each rule of the dump.
const NFT_MSG_NEWRULE: u16 = 6;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_MASQ_REG_PROTO_MIN: u16 = 2;
const NFTA_MASQ_REG_PROTO_MAX: u16 = 3;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
const NFT_NAT_SNAT: u32 = 0;
const NFTA_TARGET_NAME: u16 = 1;

/// Expressions that read registers and write none: the registers stay as they were.
/// Any other expression (payload, meta, lookup, bitwise, ...) may write one.
const WRITE_NO_REGISTER: [&str; 6] = ["cmp", "range", "counter", "log", "limit", "quota"];

/// One rule dump, datagram after datagram.
#[derive(Debug, Default)]
pub(crate) struct RuleDump {
    /// The masquerade/snat statements so far, folded.
    pub ranges: RuleRanges,
    /// How many masquerade/snat statements (xt targets included) were read.
    pub statements: usize,
    /// The ruleset changed while it was dumped (NLM_F_DUMP_INTR on a message): the
    /// dump may have missed or repeated rules.
    pub interrupted: bool,
}

impl RuleDump {
    /// Reads one datagram of the dump: None while more follow, Some(0) at its end,
    /// Some(errno) when the kernel refused or a length is wrong.
    pub(crate) fn datagram(&mut self, b: &[u8]) -> Option<i32> {
        netlink::messages_with_flags(b, |ty, flags, msg| {
            self.interrupted |= flags & NLM_F_DUMP_INTR != 0;
            if ty == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE {
                let rule = msg.get(NFGEN_LEN..).unwrap_or_default();
                self.rule(rule);
            }
        })
    }

    fn rule(&mut self, b: &[u8]) {
        // Registers are not trusted across rules: each rule starts with none known.
        let mut regs = Registers::default();
        let Some((_, list)) = attrs(b).find(|(t, _)| *t == NFTA_RULE_EXPRESSIONS) else {
            return;
        };
        for (_, expr) in attrs(list).filter(|(t, _)| *t == NFTA_LIST_ELEM) {
            let (mut name, mut data) = (&[][..], &[][..]);
            for (t, p) in attrs(expr) {
                match t {
                    NFTA_EXPR_NAME => name = p.split(|&c| c == 0).next().unwrap_or_default(),
                    NFTA_EXPR_DATA => data = p,
                    _ => {}
                }
            }
            let ports = match name {
                b"immediate" => {
                    regs.immediate(data);
                    None
                }
                b"masq" => Some(regs.ports(data, NFTA_MASQ_REG_PROTO_MIN, NFTA_MASQ_REG_PROTO_MAX)),
                b"nat" if attr(data, NFTA_NAT_TYPE).and_then(be32) == Some(NFT_NAT_SNAT) => {
                    Some(regs.ports(data, NFTA_NAT_REG_PROTO_MIN, NFTA_NAT_REG_PROTO_MAX))
                }
                b"target" => matches!(
                    attr(data, NFTA_TARGET_NAME).map(|n| n.split(|&c| c == 0).next()),
                    Some(Some(b"MASQUERADE" | b"SNAT"))
                )
                .then_some(NatPorts::Unknown),
                n if WRITE_NO_REGISTER.iter().any(|w| w.as_bytes() == n) => None,
                _ => {
                    regs = Registers::default();
                    None
                }
            };
            if let Some(p) = ports {
                self.statements += 1;
                self.ranges.add(p);
            }
        }
    }
}

/// The first attribute of type `ty` in `b`.
fn attr(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

/// The data registers, as the kernel lays them out: 16 words of 32 bits after the
/// verdict register's 4 (NFT_REG32_NUM = 20), and which words an immediate loaded.
const WORDS: usize = 20;

#[derive(Default)]
struct Registers {
    bytes: [[u8; 4]; WORDS],
    known: [bool; WORDS],
}

/// The first word of register `reg` as a dump names it (nft_dump_register): NFT_REG_1
/// to NFT_REG_4 (1..=4) are 128-bit registers of 4 words, NFT_REG32_00 to NFT_REG32_15
/// (8..=23) one word each; both start after the verdict register (words 0..4).
fn word(reg: u32) -> Option<usize> {
    match reg {
        1..=4 => Some(reg as usize * 4),
        8..=23 => Some(reg as usize - 4),
        _ => None,
    }
}

impl Registers {
    /// An immediate expression: a constant into the words from its destination on
    /// (the kernel zeroes the rest of the last word, nft_data_copy). A verdict, or a
    /// value that does not fit, loads nothing a NAT expression could read.
    fn immediate(&mut self, data: &[u8]) {
        let dreg = attr(data, NFTA_IMMEDIATE_DREG).and_then(be32);
        let value = attr(data, NFTA_IMMEDIATE_DATA).and_then(|d| attr(d, NFTA_DATA_VALUE));
        let (Some(first), Some(value)) = (dreg.and_then(word), value) else {
            return;
        };
        let words = value.len().div_ceil(4);
        if words == 0 || first + words > WORDS {
            return;
        }
        for (i, chunk) in value.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.bytes[first + i] = w;
            self.known[first + i] = true;
        }
    }

    /// The port a register holds: its first two bytes, big-endian (nft_reg_load16).
    fn port(&self, reg: u32) -> Option<u16> {
        let w = word(reg)?;
        self.known[w].then(|| u16::from_be_bytes([self.bytes[w][0], self.bytes[w][1]]))
    }

    /// The ports of a NAT expression whose registers are attributes `min` and `max`:
    /// none named, the kernel's default; only `min`, that one port (the kernel takes
    /// max = min); a register no constant was loaded into, unknown. The expression's
    /// flags are not looked at: nft shows the range whatever they say, and sets
    /// NF_NAT_RANGE_PROTO_SPECIFIED with every range it writes.
    fn ports(&self, data: &[u8], min: u16, max: u16) -> NatPorts {
        let Some(lo) = attr(data, min) else {
            return NatPorts::Default;
        };
        let hi = attr(data, max).unwrap_or(lo);
        match (
            be32(lo).and_then(|r| self.port(r)),
            be32(hi).and_then(|r| self.port(r)),
        ) {
            (Some(lo), Some(hi)) => NatPorts::Range(lo, hi),
            _ => NatPorts::Unknown,
        }
    }
}

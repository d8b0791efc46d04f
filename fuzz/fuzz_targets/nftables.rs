//! nf_tables rule dumps (NFT_MSG_GETRULE replies, the NAT rules' port range): one
//! datagram as `recv` returns it (any length, any nlmsg_len, any attribute, any
//! register number) through the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portex_agent::fuzzing::nftables::parse_rules;

/// A list element holding an expression name ("nat" and its NUL: 8 bytes) and its
/// data nest (4): no masquerade/snat statement takes fewer bytes.
const MIN_STATEMENT: usize = 4 + 8 + 4;

fuzz_target!(|data: &[u8]| {
    let (statements, range, _, verdict) = parse_rules(data);
    assert!(statements <= data.len() / MIN_STATEMENT);
    if let Some((lo, hi)) = range {
        assert!(statements >= 1);
        assert_ne!(
            (lo, hi),
            (1024, 65535),
            "the kernel's default is no rule range"
        );
    }
    if let Some(errno) = verdict {
        assert!(errno >= 0, "an errno, not a negated one: {errno}");
    }
});

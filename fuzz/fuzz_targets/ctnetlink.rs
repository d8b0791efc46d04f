//! ctnetlink replies: a conntrack table dump and a per-CPU counters dump, one datagram
//! as `recv` returns it (any length, any nlmsg_len, any attribute), through both parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portex_agent::fuzzing::ctnetlink::{parse_counters, parse_table};

/// nlmsghdr + nfgenmsg + the two tuples' nests: no entry is smaller.
const MIN_ENTRY_MSG: usize = 16 + 4 + 8;

fuzz_target!(|data: &[u8]| {
    let (entries, verdict) = parse_table(data);
    assert!(entries <= data.len() / MIN_ENTRY_MSG);
    if let Some(errno) = verdict {
        assert!(errno >= 0, "an errno, not a negated one: {errno}");
    }
    // Each counter is a u32 attribute of 8 bytes: none can exceed u32::MAX per 8 bytes.
    let ((insert_failed, drop, early_drop), _) = parse_counters(data);
    let most = (data.len() as u64 / 8) * u32::MAX as u64;
    assert!(insert_failed <= most && drop <= most && early_drop <= most);
});

//! The other /proc text the agent reads: the sysctls of a network namespace
//! (ip_local_port_range, ip_local_reserved_ports, and what is computed from them),
//! /proc/net/sockstat, the CapEff line of /proc/self/status, and for the agent's own
//! process_* metrics the btime line of /proc/stat and "Max open files" of
//! /proc/self/limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portex_agent::fuzzing::{
    DEFAULT_RANGE, NetSettings, parse_btime, parse_cap_eff, parse_max_open_files, parse_range,
    parse_reserved, parse_sockstat_tcp,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let range = parse_range(&text);
    if let Some((lo, hi)) = range {
        assert!(lo <= hi);
    }
    let reserved = parse_reserved(&text);
    assert!(reserved.len() <= text.len() / 2 + 1);
    let s = NetSettings {
        range: range.unwrap_or(DEFAULT_RANGE),
        reserved,
        ..Default::default()
    };
    let size = s.range_size();
    assert!((1..=65_536).contains(&size));
    assert!(s.usable_ports() <= size);
    let _ = s.is_reserved(s.range.0);

    let _ = parse_sockstat_tcp(&text);
    let _ = parse_cap_eff(&text);
    if parse_btime(&text).is_some() {
        assert!(text.contains("btime "));
    }
    if parse_max_open_files(&text).is_some() {
        assert!(text.contains("Max open files"));
    }
});

//! Reads the pool sysctls of the calling thread's network namespace.
use std::fs;

use crate::logic::sysctls::{NetSettings, parse_range, parse_reserved};

/// Reads this thread's namespace (/proc/sys/net shows the namespace of the reading
/// thread).
pub(crate) fn read() -> NetSettings {
    let get = |k: &str| fs::read_to_string(format!("/proc/sys/net/ipv4/{k}")).unwrap_or_default();
    let d = NetSettings::default();
    NetSettings {
        range: parse_range(&get("ip_local_port_range")).unwrap_or(d.range),
        reserved: parse_reserved(&get("ip_local_reserved_ports")),
        tw_reuse: get("tcp_tw_reuse").trim().parse().unwrap_or(d.tw_reuse),
        tw_reuse_delay_ms: get("tcp_tw_reuse_delay")
            .trim()
            .parse()
            .unwrap_or(d.tw_reuse_delay_ms),
        timestamps: get("tcp_timestamps")
            .trim()
            .parse::<u8>()
            .map_or(d.timestamps, |v| v != 0),
        max_tw_buckets: get("tcp_max_tw_buckets")
            .trim()
            .parse()
            .unwrap_or(d.max_tw_buckets),
        fin_timeout_s: get("tcp_fin_timeout")
            .trim()
            .parse()
            .unwrap_or(d.fin_timeout_s),
    }
}

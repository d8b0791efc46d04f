//! portex: the agent. The tree states the rules (docs/architecture.md):
//! - `logic`: pure decisions (decoding, lifecycle, the pool model, the ledger,
//!   forecast, diagnosis, arming). No IO, no aya, no tokio, no unsafe.
//! - `sys`: every syscall, /proc, netlink, cgroup and BPF access; the only home of
//!   `unsafe`.
//! - `render`: NDJSON, text, status and Prometheus output. Pure.
//! - `pipeline`: reader -> interpret -> enrich -> account -> render -> sinks, the one
//!   pipeline `watch`, `agent` and `top` run.
//! - `cmd`: the command line and one thin file per subcommand.
//!
//! Nothing is public but `main`, the command-line definition (for the man pages) and
//! the parsers the fuzz targets drive, so the compiler sees dead code.
#![warn(unreachable_pub)]
mod cmd;
mod logic;
mod pipeline;
mod render;
mod sys;

pub use cmd::{cli::cli_command, main};

/// The two NDJSON writers and what they take, for the micro-benchmark
/// (portex-agent/benches/ndjson_writer.rs, `cargo xtask bench-writer`; not an API).
#[doc(hidden)]
pub mod bench {
    pub use crate::{
        logic::lifecycle::interpret,
        logic::model::{Container, Record, Workload},
        render::{View, json::Header, json::write_line},
    };
    pub mod serde_writer {
        pub use crate::render::json_serde::{Host, write_line};
    }
}

/// The parsers of outside bytes, for the fuzz targets in fuzz/ (not an API).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::{
        cmd::cli::{AgentArgs, Cli, Command},
        cmd::logging::{LogArgs, LogFormat},
        logic::{
            decode::{DecodeError, decode},
            self_stats::{StatFields, parse_btime, parse_max_open_files, parse_stat_fields},
            sysctls::{DEFAULT_RANGE, NetSettings, parse_range, parse_reserved},
        },
        pipeline::tracker::parse_sockstat_tcp,
        render::View,
        sys::{
            containers::{
                Container, parse_cgroup_path, parse_mountinfo_cgroup2, parse_proc_cgroup,
            },
            host::parse_cap_eff,
            http::{Route, route},
            owners::parse_stat,
            sockdiag::{Parsed, parse_messages},
        },
    };
    pub mod config {
        pub use crate::cmd::config::{parse_file, resolve};
    }
    /// ctnetlink replies (the conntrack table, and its per-CPU counters).
    pub mod ctnetlink {
        /// One datagram of a conntrack dump: (entries parsed, the dump's verdict).
        pub fn parse_table(datagram: &[u8]) -> (usize, Option<i32>) {
            let mut v = Vec::new();
            let verdict = crate::sys::conntrack::parse_messages(datagram, &mut v);
            (v.len(), verdict)
        }

        /// One datagram of a per-CPU counters dump: (insert_failed, drop, early_drop)
        /// summed, and the dump's verdict.
        pub fn parse_counters(datagram: &[u8]) -> ((u64, u64, u64), Option<i32>) {
            let mut s = crate::logic::nat::CtStats::default();
            let verdict = crate::sys::conntrack_stats::parse_messages(datagram, &mut s);
            ((s.insert_failed, s.drop, s.early_drop), verdict)
        }
    }
    /// nf_tables rule dumps (the NAT rules' port range).
    pub mod nftables {
        /// One datagram of a rule dump: (masquerade/snat statements read, the range
        /// they agree on, whether a message said the dump was interrupted, the dump's
        /// verdict).
        pub fn parse_rules(datagram: &[u8]) -> (usize, Option<(u16, u16)>, bool, Option<i32>) {
            let mut d = crate::sys::nft::RuleDump::default();
            let verdict = d.datagram(datagram);
            (d.statements, d.ranges.range(), d.interrupted, verdict)
        }
    }
    pub mod limits {
        pub use crate::logic::limits::{
            CONFIG_FILE_BYTES, LINGER_S, METRICS_SERIES, QUEUE_BYTES, ROTATE_KEEP, ring_kib,
            rotate_size,
        };
    }
    pub mod untrusted {
        pub use crate::logic::untrusted::{decode, is_bidi_control, label_value, sanitize};
    }
    pub mod lifecycle {
        pub use crate::logic::lifecycle::interpret;
    }
    pub mod json {
        pub use crate::render::json::{Header, write_line};
    }
    pub mod workload {
        pub use crate::logic::workload::{
            MAX_VALUE_BYTES, Workload, parse_docker_config, parse_oci_config,
            parse_storage_containers,
        };
    }
    pub mod text {
        pub use crate::render::text::write_line;
    }
}

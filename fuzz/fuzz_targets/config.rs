//! The config file: `config::parse_file` then `config::resolve` with the flags'
//! defaults, as `portex agent --config FILE` does after `load_file` has checked the size
//! and UTF-8. Must end in Err for bad input, never panic, never allocate without bound
//! (libFuzzer's -malloc_limit_mb catches a huge allocation); what resolves is in bounds.
#![no_main]

use std::{path::Path, sync::OnceLock};

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use portex_agent::fuzzing::{AgentArgs, Cli, Command, config, limits};

fn defaults() -> &'static AgentArgs {
    static ARGS: OnceLock<AgentArgs> = OnceLock::new();
    ARGS.get_or_init(|| match Cli::parse_from(["portex", "agent"]).command {
        Command::Agent(a) => a,
        _ => unreachable!("`portex agent` parses as the agent command"),
    })
}

fuzz_target!(|data: &[u8]| {
    // load_file refuses these before parsing.
    if data.len() as u64 > limits::CONFIG_FILE_BYTES {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match config::parse_file(Path::new("/etc/portex/agent.toml"), text) {
        Ok(f) => f,
        Err(e) => {
            let _ = format!("{e:#}");
            return;
        }
    };
    match config::resolve(defaults(), file) {
        Err(e) => {
            let _ = format!("{e:#}");
        }
        Ok(c) => {
            assert!((0.0..=100.0).contains(&c.warn), "{c:?}");
            assert!(c.warn <= c.critical && c.critical <= 100.0, "{c:?}");
            assert!((0.0..=100.0).contains(&c.metrics_pool_min), "{c:?}");
            assert!(limits::QUEUE_BYTES.check(c.queue_bytes).is_ok(), "{c:?}");
            assert_eq!(limits::ring_kib(c.ring_kib as u64), Ok(c.ring_kib));
            assert!(limits::rotate_size(c.rotate_size).is_ok(), "{c:?}");
            assert!(limits::ROTATE_KEEP.check(c.rotate_keep as u64).is_ok());
            assert!(c.metrics_max_pools as u64 <= limits::METRICS_SERIES.max);
            assert!(c.metrics_top_processes as u64 <= limits::METRICS_SERIES.max);
            assert!(c.syscall_hooks_linger <= limits::LINGER_S.max);
            assert_ne!(c.filter.count, Some(0), "{c:?}");
            assert!(c.filter.duration.is_none_or(|d| !d.is_zero()), "{c:?}");
        }
    }
});

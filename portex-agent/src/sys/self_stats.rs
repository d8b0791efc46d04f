//! Reads the agent's own figures from /proc at scrape time (logic::self_stats parses).
use std::fs;

use crate::logic::self_stats::{SelfFiles, SelfStats, self_stats};

/// The agent's CPU, memory, descriptors and start time now; what cannot be read is None.
pub(crate) fn read() -> SelfStats {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let proc_stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    // The listing holds one descriptor of its own while it runs, as in every client
    // library that counts this way.
    let open_fds = fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
    self_stats(&SelfFiles {
        stat: &stat,
        proc_stat: &proc_stat,
        limits: &limits,
        open_fds,
        clock_ticks: sysconf(libc::_SC_CLK_TCK),
        page_size: sysconf(libc::_SC_PAGESIZE),
    })
}

/// A sysconf value; 0 when unknown.
fn sysconf(name: libc::c_int) -> u64 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let v = unsafe { libc::sysconf(name) };
    v.max(0) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::read();
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0));
        assert!(s.resident_memory_bytes.is_some_and(|b| b > 0));
        assert!(s.virtual_memory_bytes >= s.resident_memory_bytes);
        assert!(s.open_fds.is_some_and(|n| n >= 3));
        assert!(s.max_fds.is_some_and(|n| n >= s.open_fds.unwrap()));
        // Started after 2020 and not in the future.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            s.start_time_seconds
                .is_some_and(|t| t > 1.58e9 && t <= now + 1.0)
        );
    }
}

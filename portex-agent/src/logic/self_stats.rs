//! The agent's own CPU, memory, descriptors and start time, for the standard `process_*`
//! metrics every Prometheus client library exports (same names and units as the Go and
//! Python clients). Pure: sys::self_stats reads the files and hands their text here.

/// What one scrape shows; a figure that could not be read is left out of the page.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SelfStats {
    /// User + system CPU time.
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) resident_memory_bytes: Option<u64>,
    pub(crate) virtual_memory_bytes: Option<u64>,
    /// Since the Unix epoch.
    pub(crate) start_time_seconds: Option<f64>,
    pub(crate) open_fds: Option<u64>,
    /// The soft RLIMIT_NOFILE.
    pub(crate) max_fds: Option<u64>,
}

/// What the kernel's files say, as read.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SelfFiles<'a> {
    /// /proc/self/stat
    pub(crate) stat: &'a str,
    /// /proc/stat (for btime, the boot time in seconds since the epoch)
    pub(crate) proc_stat: &'a str,
    /// /proc/self/limits
    pub(crate) limits: &'a str,
    /// Entries of /proc/self/fd, if it could be listed.
    pub(crate) open_fds: Option<u64>,
    /// sysconf(_SC_CLK_TCK): the unit of the times in stat.
    pub(crate) clock_ticks: u64,
    /// sysconf(_SC_PAGESIZE): the unit of rss in stat.
    pub(crate) page_size: u64,
}

/// The figures of `f`.
pub(crate) fn self_stats(f: &SelfFiles) -> SelfStats {
    let stat = parse_stat_fields(f.stat);
    let ticks = (f.clock_ticks > 0).then_some(f.clock_ticks as f64);
    SelfStats {
        cpu_seconds: stat
            .zip(ticks)
            .map(|(s, t)| s.utime.saturating_add(s.stime) as f64 / t),
        resident_memory_bytes: stat.map(|s| s.rss_pages.saturating_mul(f.page_size)),
        virtual_memory_bytes: stat.map(|s| s.vsize),
        start_time_seconds: stat
            .zip(ticks)
            .zip(parse_btime(f.proc_stat))
            .map(|((s, t), boot)| boot as f64 + s.starttime as f64 / t),
        open_fds: f.open_fds,
        max_fds: parse_max_open_files(f.limits),
    }
}

/// The fields of /proc/<pid>/stat the metrics use (proc(5) numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFields {
    /// (14) utime, clock ticks.
    pub utime: u64,
    /// (15) stime, clock ticks.
    pub stime: u64,
    /// (22) starttime, clock ticks after boot.
    pub starttime: u64,
    /// (23) vsize, bytes.
    pub vsize: u64,
    /// (24) rss, pages.
    pub rss_pages: u64,
}

/// The fields after the comm, which sits between the first '(' and the last ')' and may
/// hold spaces and parentheses; None for anything that is not a stat line.
pub fn parse_stat_fields(stat: &str) -> Option<StatFields> {
    let close = stat.rfind(')')?;
    // Field 3 (state) is the first after the comm.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The boot time ("btime N", seconds since the epoch) of /proc/stat.
pub fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of "Max open files" in /proc/<pid>/limits; None when unlimited or
/// absent.
pub fn parse_max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real files of a running portex agent (trimmed /proc/stat).
    const STAT: &str = "4242 (portex) S 1 4242 4242 0 -1 4194560 5012 0 0 0 150 73 0 0 20 0 4 0 123456 145539072 3958 18446744073709551615 1 1 0 0 0 0 0 4096 17667 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    const PROC_STAT: &str =
        "cpu  1 2 3 4 5 6 7 0 0 0\nintr 1 2\nctxt 99\nbtime 1764000000\nprocesses 1234\n";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            65536                524288               files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn figures_of_real_files() {
        let s = self_stats(&SelfFiles {
            stat: STAT,
            proc_stat: PROC_STAT,
            limits: LIMITS,
            open_fds: Some(29),
            clock_ticks: 100,
            page_size: 4096,
        });
        assert_eq!(
            s,
            SelfStats {
                cpu_seconds: Some(2.23),
                resident_memory_bytes: Some(3958 * 4096),
                virtual_memory_bytes: Some(145539072),
                start_time_seconds: Some(1764000000.0 + 1234.56),
                open_fds: Some(29),
                max_fds: Some(65536),
            }
        );
    }

    #[test]
    fn a_comm_with_parentheses_and_spaces_does_not_shift_the_fields() {
        let stat = STAT.replace("(portex)", "(a) b (c) 1 2)");
        assert_eq!(parse_stat_fields(&stat), parse_stat_fields(STAT));
        assert_eq!(parse_stat_fields(STAT).unwrap().utime, 150);
    }

    #[test]
    fn what_cannot_be_read_is_left_out() {
        let s = self_stats(&SelfFiles {
            stat: "4242 (portex) S 1 2",
            proc_stat: "cpu 1 2\n",
            limits: "Max open files            unlimited            unlimited            files\n",
            open_fds: None,
            clock_ticks: 0,
            page_size: 4096,
        });
        assert_eq!(s, SelfStats::default());
        // No clock tick unit: times are left out, memory is not.
        let s = self_stats(&SelfFiles {
            stat: STAT,
            clock_ticks: 0,
            ..SelfFiles::default()
        });
        assert_eq!(s.cpu_seconds, None);
        assert_eq!(s.start_time_seconds, None);
        assert_eq!(s.virtual_memory_bytes, Some(145539072));
        assert_eq!(parse_stat_fields(""), None);
        assert_eq!(parse_stat_fields("1 (x"), None);
        assert_eq!(parse_btime("btime x\n"), None);
    }
}

//! The sysctls that decide a namespace's pools, and their parsers (sys::sysctls reads
//! them).
/// Linux's default ip_local_port_range: 32768-60999.
pub const DEFAULT_RANGE: (u16, u16) = (32768, 60999);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSettings {
    /// net.ipv4.ip_local_port_range (also used by IPv6), inclusive.
    pub range: (u16, u16),
    /// net.ipv4.ip_local_reserved_ports, as inclusive intervals.
    pub reserved: Vec<(u16, u16)>,
    /// net.ipv4.tcp_tw_reuse: 0 off, 1 on, 2 loopback only (the default).
    pub tw_reuse: u8,
    /// net.ipv4.tcp_tw_reuse_delay (ms, since Linux 6.13; 1000 before): how old a
    /// TIME_WAIT socket must be before connect() may take its port over.
    pub tw_reuse_delay_ms: u32,
    /// net.ipv4.tcp_timestamps != 0: reuse needs the timestamps of the old connection.
    pub timestamps: bool,
    pub max_tw_buckets: u64,
    pub fin_timeout_s: u32,
}

impl Default for NetSettings {
    fn default() -> Self {
        NetSettings {
            range: DEFAULT_RANGE,
            reserved: Vec::new(),
            tw_reuse: 2,
            tw_reuse_delay_ms: 1000,
            timestamps: true,
            max_tw_buckets: 262_144,
            fin_timeout_s: 60,
        }
    }
}

impl NetSettings {
    pub fn in_range(&self, port: u16) -> bool {
        port >= self.range.0 && port <= self.range.1
    }

    pub fn is_reserved(&self, port: u16) -> bool {
        self.reserved.iter().any(|&(a, b)| port >= a && port <= b)
    }

    /// Ports of the range that connect() may pick: the range minus reserved ports.
    pub fn usable_ports(&self) -> u32 {
        let (lo, hi) = self.range;
        let total = (hi as u32).saturating_sub(lo as u32) + 1;
        let reserved: u32 = self
            .reserved
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (a.max(lo), b.min(hi));
                if a > b { 0 } else { (b - a) as u32 + 1 }
            })
            .sum();
        total.saturating_sub(reserved)
    }

    pub fn range_size(&self) -> u32 {
        (self.range.1 as u32).saturating_sub(self.range.0 as u32) + 1
    }
}

/// "32768\t60999"
pub fn parse_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(|x| x.parse::<u16>());
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) if a <= b => Some((a, b)),
        _ => None,
    }
}

/// "8080,9000-9010" (empty when none).
pub fn parse_reserved(s: &str) -> Vec<(u16, u16)> {
    s.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| match p.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => {
                let v = p.trim().parse().ok()?;
                Some((v, v))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysctl_text() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("5 4"), None);
        assert_eq!(parse_reserved("\n"), vec![]);
        assert_eq!(
            parse_reserved("8080,9000-9010\n"),
            vec![(8080, 8080), (9000, 9010)]
        );
    }

    #[test]
    fn usable_ports_subtract_reserved_inside_the_range() {
        let s = NetSettings {
            range: (40000, 40009),
            reserved: vec![(40000, 40001), (50000, 50010)],
            ..Default::default()
        };
        assert_eq!(s.range_size(), 10);
        assert_eq!(s.usable_ports(), 8);
        assert!(s.is_reserved(40001) && !s.is_reserved(40002));
        assert_eq!(NetSettings::default().usable_ports(), 28_232);
    }
}

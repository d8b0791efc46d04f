//! Every size and count a user can set, with its bounds. Flags and the config file are
//! checked by the same functions, so a value refused on the command line is refused in
//! the file too. The bounds keep a typo from taking the host's memory: the packaged unit
//! runs the agent with MemoryMax=256M.

/// Bytes of NDJSON waiting for the output writer (`--queue`).
pub const QUEUE_BYTES: Bound = Bound {
    name: "queue",
    min: 64 << 10,
    max: 1 << 30,
    default: 16 << 20,
};

/// The kernel's ring buffer, in KiB (`--ring-kib`); a power of two. The kernel maps the
/// data pages twice, so the address space is twice this; 256 MiB is far more than a
/// burst of failures needs (an event is 112 bytes).
pub(crate) const RING_KIB: Bound = Bound {
    name: "ring-kib",
    min: 4,
    max: 256 << 10,
    default: 4096,
};

/// Size at which the output file rotates (`--rotate-size`); 0 is never.
pub(crate) const ROTATE_SIZE: Bound = Bound {
    name: "rotate-size",
    min: 4 << 10,
    max: 1 << 40,
    default: 0,
};

/// Rotated files kept (`--rotate-keep`).
pub const ROTATE_KEEP: Bound = Bound {
    name: "rotate-keep",
    min: 0,
    max: 1000,
    default: 5,
};

/// Pools and processes exported as metrics (`--metrics-max-pools`,
/// `--metrics-top-processes`): each is a set of label values Prometheus keeps.
pub const METRICS_SERIES: Bound = Bound {
    name: "metrics-max-pools",
    min: 0,
    max: 10_000,
    default: 20,
};

/// `--syscall-hooks-linger`, seconds.
pub const LINGER_S: Bound = Bound {
    name: "syscall-hooks-linger",
    min: 0,
    max: 7 * 86_400,
    default: 300,
};

/// Seconds between NAT scans (`--nat-scan`); 0 is off. The scanner waits longer when a
/// scan is slow (logic::nat_view::SCAN_COST_FACTOR).
pub(crate) const NAT_SCAN_S: Bound = Bound {
    name: "nat-scan",
    min: 0,
    max: 3600,
    default: crate::logic::nat_view::SCAN_PERIOD_S,
};

/// Processes exported as metrics (`--metrics-top-processes`).
pub(crate) const METRICS_TOP_PROCESSES: Bound = Bound {
    name: "metrics-top-processes",
    default: 10,
    ..METRICS_SERIES
};

/// Pool utilisation (percent) of a warning pool (`--warn`) and a critical one
/// (`--critical`); pools below METRICS_POOL_MIN_PERCENT are not exported as metrics.
pub(crate) const WARN_PERCENT: f64 = 80.0;
pub(crate) const CRITICAL_PERCENT: f64 = 95.0;
pub(crate) const METRICS_POOL_MIN_PERCENT: f64 = 50.0;

/// Where the agent's events go by default: stdout.
pub(crate) const OUTPUT_STDOUT: &str = "-";

/// The config file (`--config`): read no further than this.
pub const CONFIG_FILE_BYTES: u64 = 1 << 20;

#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub name: &'static str,
    pub min: u64,
    pub max: u64,
    pub default: u64,
}

impl Bound {
    /// `v` when it is within bounds, else the sentence that says what is allowed.
    pub fn check(&self, v: u64) -> Result<u64, String> {
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(format!(
                "{} must be between {} and {}, got {v}",
                self.name,
                human(self.min),
                human(self.max)
            ))
        }
    }

    /// Same bounds under another flag's name.
    pub const fn named(self, name: &'static str) -> Bound {
        Bound { name, ..self }
    }

    /// Same bounds with another default.
    pub const fn with_default(self, default: u64) -> Bound {
        Bound { default, ..self }
    }
}

/// 65536 -> "64K", 1073741824 -> "1G"; other numbers as they are.
pub(crate) fn human(v: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if v >= 1 << shift && v.is_multiple_of(1 << shift) {
            return format!("{}{unit}", v >> shift);
        }
    }
    v.to_string()
}

/// The ring size in KiB: within RING_KIB and a power of two.
pub fn ring_kib(v: u64) -> Result<u32, String> {
    let v = RING_KIB.check(v)?;
    if !v.is_power_of_two() {
        return Err(format!("ring-kib must be a power of two, got {v}"));
    }
    Ok(v as u32)
}

/// The rotation size: 0 (never) or within ROTATE_SIZE.
pub fn rotate_size(v: u64) -> Result<u64, String> {
    if v == 0 { Ok(0) } else { ROTATE_SIZE.check(v) }
}

/// The longest `--duration`: a year (a longer wait is a typo, not a plan).
const DURATION_MAX_S: f64 = 366.0 * 86_400.0;

/// `--duration`: seconds (fractions allowed) or a number with a unit: `90s`, `10m`,
/// `2h`, `1d`. More than 0, at most DURATION_MAX_S.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seconds(pub std::time::Duration);

impl std::str::FromStr for Seconds {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (num, unit) = match t.char_indices().last() {
            Some((i, 's')) => (&t[..i], 1.0),
            Some((i, 'm')) => (&t[..i], 60.0),
            Some((i, 'h')) => (&t[..i], 3600.0),
            Some((i, 'd')) => (&t[..i], 86_400.0),
            _ => (t, 1.0),
        };
        let v = num
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(|v| v * unit)
            .ok_or_else(|| format!("not a duration (seconds, or 90s, 10m, 2h, 1d): {s}"))?;
        if !(v > 0.0 && v <= DURATION_MAX_S) {
            return Err(format!(
                "duration must be more than 0 and at most 366 days, got {s}"
            ));
        }
        Ok(Seconds(std::time::Duration::from_secs_f64(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_or_a_unit() {
        let d = |s: &str| s.parse::<Seconds>().map(|v| v.0.as_secs_f64());
        assert_eq!(d("30"), Ok(30.0));
        assert_eq!(d("0.5"), Ok(0.5));
        assert_eq!(d("90s"), Ok(90.0));
        assert_eq!(d(" 10m "), Ok(600.0));
        assert_eq!(d("1.5h"), Ok(5400.0));
        assert_eq!(d("1d"), Ok(86_400.0));
        assert_eq!(d("366d"), Ok(366.0 * 86_400.0));
        for bad in [
            "", "0", "-1", "367d", "1e300", "NaN", "inf", "10x", "m", "1 hour",
        ] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bounds_say_what_is_allowed() {
        assert_eq!(QUEUE_BYTES.check(1 << 20), Ok(1 << 20));
        assert_eq!(
            QUEUE_BYTES.check(1_000_000_000_000).unwrap_err(),
            "queue must be between 64K and 1G, got 1000000000000"
        );
        assert!(ring_kib(4096).is_ok());
        assert!(ring_kib(4_194_304).is_err());
        assert!(ring_kib(1_048_576).is_err());
        assert!(ring_kib(3000).unwrap_err().contains("power of two"));
        assert_eq!(rotate_size(0), Ok(0));
        assert!(rotate_size(100).is_err());
        assert_eq!(human(12345), "12345");
    }
}

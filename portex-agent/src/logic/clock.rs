//! Kernel timestamps (CLOCK_BOOTTIME) to wall-clock time, and RFC 3339 text.

/// Converts CLOCK_BOOTTIME nanoseconds to Unix-epoch nanoseconds with an offset measured
/// once at start-up (the clocks drift apart only when the wall clock is stepped).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    pub(crate) fn with_offset(offset_ns: i128) -> Self {
        WallClock { offset_ns }
    }

    pub(crate) fn to_unix_ns(self, boot_ns: u64) -> i128 {
        boot_ns as i128 + self.offset_ns
    }
}

thread_local! {
    /// The formatted "YYYY-MM-DDTHH:MM:SS." of the last second seen: most events of a
    /// batch share it, and the calendar arithmetic is the expensive part.
    static LAST_SECOND: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
}

/// RFC 3339 in UTC with microseconds: 2026-11-26T18:01:05.123456Z.
pub(crate) fn rfc3339_micros(unix_ns: i128, out: &mut String) {
    let micros = unix_ns.div_euclid(1_000);
    let secs = micros.div_euclid(1_000_000) as i64;
    let frac = micros.rem_euclid(1_000_000) as u32;
    LAST_SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let mut full = String::with_capacity(32);
            rfc3339_slow(unix_ns, &mut full);
            c.1.clear();
            c.1.push_str(&full[..20]);
            c.0 = secs;
        }
        out.push_str(&c.1);
    });
    let mut b = itoa::Buffer::new();
    let digits = b.format(frac);
    for _ in digits.len()..6 {
        out.push('0');
    }
    out.push_str(digits);
    out.push('Z');
}

fn rfc3339_slow(unix_ns: i128, out: &mut String) {
    let micros = unix_ns.div_euclid(1_000);
    let secs = micros.div_euclid(1_000_000) as i64;
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    use std::fmt::Write;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(ns: i128) -> String {
        let mut s = String::new();
        rfc3339_micros(ns, &mut s);
        s
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29T12:34:56.789012Z (leap day)
        assert_eq!(fmt(951_827_696_789_012_345), "2000-02-29T12:34:56.789012Z");
        // 2026-11-26T18:01:05Z
        assert_eq!(
            fmt(1_795_716_065_000_000_000),
            "2026-11-26T18:01:05.000000Z"
        );
    }

    #[test]
    fn converts_boot_time_with_offset() {
        let c = WallClock::with_offset(1_000);
        assert_eq!(c.to_unix_ns(5), 1_005);
    }
}

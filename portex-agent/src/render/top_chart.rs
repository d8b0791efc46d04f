//! The occupancy chart of `top`'s detail as points: used, TIME_WAIT and free ports over
//! the last minutes (x: seconds from now, negative), the forecast from now until the
//! pool is full (or the right edge), and a vertical mark at the first failure. Pure: the
//! TUI turns these into ratatui datasets.
use crate::{logic::pool_history::Sample, render::top_detail::span};

/// The chart never spans less than this, so a young history does not fill the width
/// with three points.
const MIN_SPAN_S: u64 = 60;

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ChartData {
    pub(crate) used: Vec<(f64, f64)>,
    pub(crate) time_wait: Vec<(f64, f64)>,
    pub(crate) free: Vec<(f64, f64)>,
    /// Two points: now, and where the current growth meets the size (or the edge).
    pub(crate) forecast: Vec<(f64, f64)>,
    /// Two points at the first failure, bottom to top; empty if outside the window.
    pub(crate) failure: Vec<(f64, f64)>,
    pub(crate) x_bounds: [f64; 2],
    pub(crate) y_max: f64,
    /// Left and right ends of the time axis: "-5m", "now" or "+12s".
    pub(crate) x_labels: [String; 2],
    /// "0", half and the size.
    pub(crate) y_labels: [String; 3],
}

/// `samples`, oldest first, at most `window_s` seconds back from `now_s`;
/// `seconds_to_full` from the pool's forecast (0: full now).
pub(crate) fn chart_data<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    now_s: u64,
    window_s: u64,
    seconds_to_full: Option<f64>,
    first_failure_s: Option<u64>,
) -> ChartData {
    let oldest_allowed = now_s.saturating_sub(window_s);
    let samples: Vec<&Sample> = samples
        .into_iter()
        .filter(|s| s.at_s >= oldest_allowed && s.at_s <= now_s)
        .collect();
    let Some(last) = samples.last() else {
        return ChartData::default();
    };
    let x = |at: u64| at as f64 - now_s as f64;
    let back = (now_s - samples[0].at_s).clamp(MIN_SPAN_S.min(window_s), window_s);
    let y_max = samples.iter().map(|s| s.size).max().unwrap_or(0).max(1) as f64;
    let series = |f: fn(&Sample) -> u32| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (x(s.at_s), f(s) as f64)).collect()
    };
    // The future shown: until full, at most a quarter of the past shown.
    let ahead = match seconds_to_full {
        Some(t) if t > 0.0 => t.min(back as f64 / 4.0),
        _ => 0.0,
    };
    let forecast = match seconds_to_full {
        Some(t) if t > 0.0 && last.used < last.size => {
            let now_used = last.used as f64;
            let (from, size) = (x(last.at_s), last.size as f64);
            vec![
                (from, now_used),
                (
                    ahead,
                    now_used + (size - now_used) * (ahead - from) / (t - from),
                ),
            ]
        }
        _ => Vec::new(),
    };
    let failure = match first_failure_s {
        Some(f) if f >= now_s.saturating_sub(back) && f <= now_s => {
            vec![(x(f), 0.0), (x(f), y_max)]
        }
        _ => Vec::new(),
    };
    ChartData {
        used: series(|s| s.used),
        time_wait: series(|s| s.time_wait),
        free: series(Sample::free),
        forecast,
        failure,
        x_bounds: [-(back as f64), ahead],
        y_max,
        x_labels: [
            format!("-{}", span(back as f64)),
            if ahead > 0.0 {
                format!("+{}", span(ahead))
            } else {
                "now".into()
            },
        ],
        y_labels: [
            "0".into(),
            format!("{:.0}", y_max / 2.0),
            format!("{y_max:.0}"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filling(from: u64, to: u64) -> Vec<Sample> {
        (from..=to)
            .map(|t| Sample {
                at_s: t,
                size: 40,
                used: ((t - from) * 2).min(40) as u32,
                time_wait: (t - from).min(40) as u32,
                failures: 0,
            })
            .collect()
    }

    #[test]
    fn a_filling_pool_rises_to_its_forecast() {
        // 2 ports a second for 10 s: 20 used, 20 free, full in 10 s.
        let s = filling(1000, 1010);
        let c = chart_data(&s, 1010, 300, Some(10.0), None);
        assert_eq!(c.used.first(), Some(&(-10.0, 0.0)));
        assert_eq!(c.used.last(), Some(&(0.0, 20.0)));
        assert_eq!(c.free.last(), Some(&(0.0, 20.0)));
        assert_eq!(c.time_wait.last(), Some(&(0.0, 10.0)));
        assert_eq!(c.y_max, 40.0);
        // A young history still spans a minute; the future shown is at most a quarter.
        assert_eq!(c.x_bounds, [-60.0, 10.0]);
        assert_eq!(c.forecast, [(0.0, 20.0), (10.0, 40.0)]);
        assert_eq!(c.x_labels, ["-60s".to_string(), "+10s".to_string()]);
        assert_eq!(c.y_labels, ["0".to_string(), "20".into(), "40".into()]);
        assert!(c.failure.is_empty());
        // Far from full, the forecast stops at the edge, on its way up.
        let c = chart_data(&s, 1010, 300, Some(100.0), None);
        assert_eq!(c.x_bounds[1], 15.0);
        assert_eq!(c.forecast[1], (15.0, 23.0));
    }

    #[test]
    fn the_first_failure_is_marked_and_the_window_bounds_the_past() {
        let mut s = filling(0, 700);
        for x in s.iter_mut().filter(|x| x.at_s >= 650) {
            x.failures = x.at_s - 649;
        }
        let c = chart_data(&s, 700, 300, Some(0.0), Some(650));
        assert_eq!(c.used.len(), 301, "the last 5 minutes only");
        assert_eq!(c.x_bounds, [-300.0, 0.0]);
        assert_eq!(c.x_labels, ["-5m".to_string(), "now".into()]);
        assert!(c.forecast.is_empty(), "a full pool has nothing to forecast");
        assert_eq!(c.failure, [(-50.0, 0.0), (-50.0, 40.0)]);
        // A failure before the window is not drawn (the text still says when).
        let c = chart_data(&s, 700, 300, None, Some(100));
        assert!(c.failure.is_empty());
    }

    #[test]
    fn no_samples_no_chart() {
        assert_eq!(chart_data(&[], 10, 300, None, None), ChartData::default());
    }
}

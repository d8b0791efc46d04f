//! What `portex top` shows, computed from the ledger: rows, sorting, filtering, the
//! diagnoses of the live pools, and the plain-text frame used by `--once`. Pure (the
//! ledger and the clock come in).
use std::fmt::Write;

use rustc_hash::FxHashMap as HashMap;

use crate::{
    logic::{
        diagnose::{Diagnosis, Thresholds},
        ledger::{Ledger, NsDiagnoses, PoolView},
        nat_view::NatView,
        pool::PoolKey,
    },
    render::{
        text::{rate, sanitize},
        top_detail::{DetailLine, plain_text, pool_lines},
        top_nat::{NatRow, name_nat_sources, nat_cells, nat_rows},
    },
};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProcRow {
    pub pid: u32,
    /// Sanitised: no control character reaches the terminal.
    pub name: String,
    pub connects_per_s: f64,
    pub closes_per_s: f64,
    pub held: u32,
    pub time_wait: u32,
    pub failures: u64,
    /// The failure errno names, e.g. "EADDRNOTAVAIL:12".
    pub failure_detail: String,
    pub fullest_share: f64,
    /// The pool of that share (the detail of a process shows it).
    pub fullest_pool: Option<PoolKey>,
    /// A failure happened in the last few seconds: highlight the row.
    pub failing_now: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PoolRow {
    pub key: PoolKey,
    pub label: String,
    pub size: u32,
    pub used: u32,
    pub time_wait: u32,
    pub utilisation: f64,
    pub opens_per_s: f64,
    /// Connections this side closed first per second (each keeps its port in TIME_WAIT).
    pub closes_first_per_s: f64,
    /// New connections per second the pool sustains when this side closes first.
    pub sustainable_per_s: f64,
    pub failures: u64,
    /// "full in 42s", "steady 1200", "-".
    pub forecast: String,
    /// Seconds until full at the current growth (0: full now); None when not filling.
    pub seconds_to_full: Option<f64>,
    /// Ports the pool settles at with the current rates.
    pub steady_state_used: f64,
    pub top_holder: String,
    /// The biggest holders: (label, ports held, of them in TIME_WAIT).
    pub holders: Vec<(String, u32, u32)>,
}

/// Holders a pool row keeps for its detail.
const HOLDERS: usize = 5;

/// One refresh of `top`: both tabs' rows, unfiltered, and what `status` would say of
/// each namespace's pools.
#[derive(Clone, Debug, Default)]
pub(crate) struct TopFrame {
    pub procs: Vec<ProcRow>,
    /// Fullest first.
    pub pools: Vec<PoolRow>,
    /// The NAT scanner's pools, fullest first (shown under `pools`).
    pub nat: Vec<NatRow>,
    pub diagnoses: Vec<NsDiagnoses>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Tab {
    #[default]
    Processes,
    Pools,
}

/// Columns a user can sort by (key `s` cycles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum SortBy {
    #[default]
    Connects,
    Held,
    TimeWait,
    Failures,
    Fullest,
}

impl SortBy {
    pub(crate) fn next(self) -> SortBy {
        match self {
            SortBy::Connects => SortBy::Held,
            SortBy::Held => SortBy::TimeWait,
            SortBy::TimeWait => SortBy::Failures,
            SortBy::Failures => SortBy::Fullest,
            SortBy::Fullest => SortBy::Connects,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            SortBy::Connects => "conn/s",
            SortBy::Held => "held",
            SortBy::TimeWait => "time_wait",
            SortBy::Failures => "failures",
            SortBy::Fullest => "fullest pool",
        }
    }
}

const HIGHLIGHT_NS: u64 = 5_000_000_000;

/// Both tabs' rows and the diagnoses from one pass over the ledger's pools (the tally
/// behind the pool views walks every tracked socket: once a frame, not once a tab),
/// and the NAT scanner's last view (its pools and its namespaces' NAT diagnoses).
pub(crate) fn frame_rows(
    ledger: &mut Ledger,
    now: u64,
    sort: SortBy,
    th: &Thresholds,
    nat_view: Option<&NatView>,
) -> TopFrame {
    let views = ledger.pool_views(now);
    let procs = process_rows(ledger, &views, now, sort);
    let pools = pool_rows(&views);
    let mut nat = nat_view.map(nat_rows).unwrap_or_default();
    name_nat_sources(&mut nat, &views);
    let mut diagnoses = ledger.diagnoses(views, th);
    for (netns, d) in nat_view.map(|v| v.diagnoses(th)).unwrap_or_default() {
        match diagnoses.iter_mut().find(|n| n.netns == netns) {
            Some(n) => n.diagnoses.extend(d),
            None => diagnoses.push(NsDiagnoses {
                netns,
                diagnoses: d,
            }),
        }
    }
    TopFrame {
        procs,
        pools,
        nat,
        diagnoses,
    }
}

impl TopFrame {
    /// The process rows a filter (a name part, or a pid) keeps.
    pub(crate) fn shown_procs(&self, filter: &str) -> Vec<&ProcRow> {
        self.procs
            .iter()
            .filter(|r| filter.is_empty() || r.name.contains(filter) || r.pid.to_string() == filter)
            .collect()
    }

    /// The pool rows a filter (a part of the route or of the top holder) keeps.
    pub(crate) fn shown_pools(&self, filter: &str) -> Vec<&PoolRow> {
        self.pools
            .iter()
            .filter(|r| {
                filter.is_empty() || r.label.contains(filter) || r.top_holder.contains(filter)
            })
            .collect()
    }

    /// The NAT rows the same filter keeps (a part of the route or of the top source).
    pub(crate) fn shown_nat(&self, filter: &str) -> Vec<&NatRow> {
        self.nat
            .iter()
            .filter(|r| {
                filter.is_empty() || r.label.contains(filter) || r.top_source.contains(filter)
            })
            .collect()
    }

    pub(crate) fn pool(&self, key: &PoolKey) -> Option<&PoolRow> {
        self.pools.iter().find(|r| &r.key == key)
    }

    /// What concerns a pool: its own diagnoses and its namespace's (a narrow range).
    pub(crate) fn pool_diagnoses(&self, key: &PoolKey) -> Vec<&Diagnosis> {
        self.ns_diagnoses(key.netns)
            .filter(|d| d.pool.as_ref().is_none_or(|p| p == key))
            .collect()
    }

    /// What concerns a process: the diagnoses that name it, and those of the pool where
    /// it holds the largest share.
    pub(crate) fn process_diagnoses(&self, r: &ProcRow) -> Vec<&Diagnosis> {
        let Some(key) = &r.fullest_pool else {
            return self
                .diagnoses
                .iter()
                .flat_map(|n| n.diagnoses.iter())
                .filter(|d| d.pids.contains(&r.pid))
                .collect();
        };
        self.ns_diagnoses(key.netns)
            .filter(|d| {
                d.pids.contains(&r.pid)
                    || match &d.pool {
                        Some(p) => p == key,
                        None => d.pids.is_empty(),
                    }
            })
            .collect()
    }

    fn ns_diagnoses(&self, netns: u64) -> impl Iterator<Item = &Diagnosis> {
        self.diagnoses
            .iter()
            .filter(move |n| n.netns == netns)
            .flat_map(|n| n.diagnoses.iter())
    }
}

fn process_rows(ledger: &mut Ledger, views: &[PoolView], now: u64, sort: SortBy) -> Vec<ProcRow> {
    // Per pid, the largest share of one pool's size it holds, and that pool.
    let mut fullest: HashMap<u32, (f64, &PoolKey)> = HashMap::default();
    for v in views.iter().filter(|v| v.pool.size > 0) {
        for h in &v.pool.holders {
            let Some(o) = &h.owner else { continue };
            let share = h.held as f64 / v.pool.size as f64;
            let e = fullest.entry(o.pid).or_insert((share, &v.pool.key));
            if share > e.0 {
                *e = (share, &v.pool.key);
            }
        }
    }
    let mut rows: Vec<ProcRow> = ledger
        .processes_mut()
        .iter_mut()
        .filter(|(pid, _)| **pid != 0)
        .map(|(&pid, p)| {
            let mut name = String::new();
            sanitize(&p.name, &mut name);
            let fullest = fullest.get(&pid);
            ProcRow {
                pid,
                name,
                connects_per_s: p.connects.per_sec(now),
                closes_per_s: p.closes.per_sec(now),
                held: p.held,
                time_wait: p.time_wait,
                failures: p.failures.values().sum(),
                failure_detail: p
                    .failures
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                fullest_share: fullest.map_or(0.0, |f| f.0),
                fullest_pool: fullest.map(|f| f.1.clone()),
                failing_now: p.last_failure_ns != 0
                    && now.saturating_sub(p.last_failure_ns) < HIGHLIGHT_NS,
            }
        })
        .filter(|r| r.held > 0 || r.connects_per_s > 0.0 || r.closes_per_s > 0.0 || r.failures > 0)
        .collect();
    let key = |r: &ProcRow| -> f64 {
        match sort {
            SortBy::Connects => r.connects_per_s,
            SortBy::Held => r.held as f64,
            SortBy::TimeWait => r.time_wait as f64,
            SortBy::Failures => r.failures as f64,
            SortBy::Fullest => r.fullest_share,
        }
    };
    rows.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.held.cmp(&a.held))
            .then(a.pid.cmp(&b.pid))
    });
    rows
}

fn pool_rows(views: &[PoolView]) -> Vec<PoolRow> {
    views
        .iter()
        .map(|v| {
            let holders: Vec<(String, u32, u32)> = v
                .pool
                .holders
                .iter()
                .take(HOLDERS)
                .map(|h| (h.label(), h.held, h.time_wait))
                .collect();
            let forecast = match v.forecast.seconds_to_full {
                Some(s) if s <= 0.0 => "FULL".into(),
                Some(s) => format!("full in {s:.0}s"),
                None if v.opens_per_s > 0.0 => {
                    format!("steady {:.0}", v.forecast.steady_state_used)
                }
                None => "-".into(),
            };
            PoolRow {
                key: v.pool.key.clone(),
                label: v.pool.key.route(),
                size: v.pool.size,
                used: v.pool.used,
                time_wait: v.pool.time_wait,
                utilisation: v.pool.utilisation(),
                opens_per_s: v.opens_per_s,
                closes_first_per_s: v.closes_first_per_s,
                sustainable_per_s: v.sustainable_per_s,
                failures: v.failures,
                forecast,
                seconds_to_full: v.forecast.seconds_to_full,
                steady_state_used: v.forecast.steady_state_used,
                top_holder: holders.first().map(|h| h.0.clone()).unwrap_or_default(),
                holders,
            }
        })
        .collect()
}

/// Column layout shared by the TUI and `--once`; fits 80 columns.
pub(crate) const PROC_HEADER: [&str; 8] = [
    "PID", "NAME", "CONN/s", "CLOSE/s", "HELD", "TW", "FAIL", "FULLEST",
];
pub(crate) const PROC_WIDTHS: [u16; 8] = [7, 16, 8, 8, 7, 7, 6, 8];
pub(crate) const POOL_HEADER: [&str; 8] = [
    "POOL", "SIZE", "USED", "TW", "UTIL", "CONN/s", "MAX/s", "FORECAST",
];
pub(crate) const POOL_WIDTHS: [u16; 8] = [30, 5, 5, 5, 4, 6, 5, 12];

pub(crate) fn proc_cells(r: &ProcRow) -> [String; 8] {
    [
        r.pid.to_string(),
        r.name.clone(),
        format!("{:.1}", r.connects_per_s),
        format!("{:.1}", r.closes_per_s),
        r.held.to_string(),
        r.time_wait.to_string(),
        r.failures.to_string(),
        format!("{:.0}%", r.fullest_share * 100.0),
    ]
}

pub(crate) fn pool_cells(r: &PoolRow) -> [String; 8] {
    [
        r.label.clone(),
        r.size.to_string(),
        r.used.to_string(),
        r.time_wait.to_string(),
        format!("{:.0}%", r.utilisation * 100.0),
        format!("{:.1}", r.opens_per_s),
        rate(r.sustainable_per_s),
        r.forecast.clone(),
    ]
}

fn fit(s: &str, w: usize) -> String {
    let t: String = s.chars().take(w).collect();
    format!("{t:<w$}")
}

fn table_line<const N: usize>(cells: &[String; N], widths: &[u16; N]) -> String {
    let mut line = String::new();
    for (c, w) in cells.iter().zip(widths) {
        line.push_str(&fit(c, *w as usize));
        line.push(' ');
    }
    line.trim_end().to_string()
}

/// One frame as text, both tabs and the detail of the fullest pool (for `--once` and
/// for terminals that are not).
pub(crate) fn text_frame(frame: &TopFrame, max_rows: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "PROCESSES");
    let _ = writeln!(
        o,
        "{}",
        table_line(&PROC_HEADER.map(String::from), &PROC_WIDTHS)
    );
    for r in frame.procs.iter().take(max_rows) {
        let mark = if r.failing_now { " <- failing" } else { "" };
        let _ = writeln!(o, "{}{mark}", table_line(&proc_cells(r), &PROC_WIDTHS));
    }
    let _ = writeln!(o, "\nPOOLS");
    let _ = writeln!(
        o,
        "{}",
        table_line(&POOL_HEADER.map(String::from), &POOL_WIDTHS)
    );
    for r in frame.pools.iter().take(max_rows) {
        let _ = writeln!(o, "{}", table_line(&pool_cells(r), &POOL_WIDTHS));
    }
    for r in frame.nat.iter().take(max_rows) {
        let _ = writeln!(o, "{}", table_line(&nat_cells(r), &POOL_WIDTHS));
    }
    if let Some(r) = frame.pools.first() {
        let _ = writeln!(o, "\nFULLEST POOL {}", r.key.label());
        let lines: Vec<DetailLine> = pool_lines(r, None, &frame.pool_diagnoses(&r.key));
        o.push_str(&plain_text(&lines));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, name: &str, held: u32) -> ProcRow {
        ProcRow {
            pid,
            name: name.into(),
            connects_per_s: 1.5,
            closes_per_s: 0.0,
            held,
            time_wait: 0,
            failures: 0,
            failure_detail: String::new(),
            fullest_share: 0.5,
            fullest_pool: None,
            failing_now: false,
        }
    }

    #[test]
    fn frame_lines_fit_80_columns() {
        let frame = TopFrame {
            procs: vec![row(1234567, "a-very-long-process-name-indeed", 28232)],
            ..TopFrame::default()
        };
        let f = text_frame(&frame, 10);
        for l in f.lines() {
            assert!(
                l.chars().count() <= 80,
                "{l:?} is {} wide",
                l.chars().count()
            );
        }
        assert!(f.contains("1234567"));
    }

    #[test]
    fn sort_cycles_through_every_column() {
        let mut s = SortBy::default();
        for _ in 0..5 {
            s = s.next();
        }
        assert_eq!(s, SortBy::default());
    }
}

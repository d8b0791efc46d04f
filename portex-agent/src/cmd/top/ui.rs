//! The full-screen terminal UI of `portex top` (ratatui over crossterm): the tables, the
//! selection, the keys; the detail pane under the table is drawn by `detail`.
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind},
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Cell, Paragraph, Row, Table, TableState, Tabs},
};

use super::{Feed, detail};
use crate::{
    cmd::cli::TopArgs,
    logic::{
        diagnose::Thresholds,
        pool::PoolKey,
        pool_history::{PoolHistory, Sample},
    },
    render::top::{
        POOL_HEADER, POOL_WIDTHS, PROC_HEADER, PROC_WIDTHS, PoolRow, ProcRow, SortBy, Tab,
        TopFrame, frame_rows, pool_cells, proc_cells,
    },
    render::top_nat::nat_cells,
    sys::clock::boot_now_ns,
};

#[cfg(test)]
#[path = "ui_tests.rs"]
mod tests;

/// Pools whose history is kept every refresh, fullest first (plus the selected one).
const HISTORY_POOLS: usize = 16;

pub(super) struct State {
    tab: Tab,
    sort: SortBy,
    paused: bool,
    filter: String,
    editing_filter: bool,
    pub(super) frame: TopFrame,
    pub(super) history: PoolHistory,
    /// Boot-clock second of the frame.
    pub(super) now_s: u64,
    /// The rows a user chose; None: the first row, which follows the order.
    sel_pool: Option<PoolKey>,
    sel_pid: Option<u32>,
    /// The detail fills the body (Enter); the arrows then scroll it.
    zoom: bool,
    pub(super) scroll: u16,
    /// How far the last drawn detail could scroll (its text past the pane's height).
    pub(super) scroll_max: std::cell::Cell<u16>,
    last_failure: Option<String>,
}

/// What the detail pane shows.
pub(super) enum Selected<'a> {
    Pool(&'a PoolRow),
    Process(&'a ProcRow),
}

impl State {
    fn new() -> State {
        State {
            tab: Tab::Processes,
            sort: SortBy::default(),
            paused: false,
            filter: String::new(),
            editing_filter: false,
            frame: TopFrame::default(),
            history: PoolHistory::default(),
            now_s: 0,
            sel_pool: None,
            sel_pid: None,
            zoom: false,
            scroll: 0,
            scroll_max: std::cell::Cell::new(0),
            last_failure: None,
        }
    }

    /// The selected row among those shown, and its index.
    fn selected(&self) -> Option<(usize, Selected<'_>)> {
        match self.tab {
            Tab::Processes => {
                let shown = self.frame.shown_procs(&self.filter);
                let i = self
                    .sel_pid
                    .and_then(|pid| shown.iter().position(|r| r.pid == pid))
                    .unwrap_or(0);
                shown.get(i).map(|r| (i, Selected::Process(r)))
            }
            Tab::Pools => {
                let shown = self.frame.shown_pools(&self.filter);
                let i = self
                    .sel_pool
                    .as_ref()
                    .and_then(|k| shown.iter().position(|r| &r.key == k))
                    .unwrap_or(0);
                shown.get(i).map(|r| (i, Selected::Pool(r)))
            }
        }
    }

    /// Moves the selection by `by` rows (or scrolls the zoomed detail).
    fn step(&mut self, by: i32) {
        if self.zoom {
            self.scroll = self
                .scroll
                .saturating_add_signed(by as i16)
                .min(self.scroll_max.get());
            return;
        }
        let at = self.selected().map_or(0, |(i, _)| i);
        let to =
            |len: usize| (at as i64 + by as i64).clamp(0, len.saturating_sub(1) as i64) as usize;
        match self.tab {
            Tab::Processes => {
                let shown = self.frame.shown_procs(&self.filter);
                self.sel_pid = shown.get(to(shown.len())).map(|r| r.pid);
            }
            Tab::Pools => {
                let shown = self.frame.shown_pools(&self.filter);
                self.sel_pool = shown.get(to(shown.len())).map(|r| r.key.clone());
            }
        }
        self.scroll = 0;
    }
}

pub(super) fn run(feed: &mut Feed, args: &TopArgs) -> Result<()> {
    let mut terminal = ratatui::try_init().context("opening the terminal")?;
    let res = event_loop(&mut terminal, feed, args);
    ratatui::restore();
    res
}

fn event_loop(terminal: &mut DefaultTerminal, feed: &mut Feed, args: &TopArgs) -> Result<()> {
    let mut st = State::new();
    let refresh = Duration::from_secs_f64(args.interval);
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            if !st.paused {
                refresh_rows(&mut st, feed)?;
            }
            next = Instant::now() + refresh;
            terminal.draw(|f| draw(f, &st, feed.drops()))?;
        }
        if !event::poll(Duration::from_millis(100))? {
            continue;
        }
        let Event::Key(k) = event::read()? else {
            continue;
        };
        if k.kind != KeyEventKind::Press {
            continue;
        }
        if st.editing_filter {
            match k.code {
                KeyCode::Enter | KeyCode::Esc => st.editing_filter = false,
                KeyCode::Backspace => {
                    st.filter.pop();
                }
                KeyCode::Char(c) if !c.is_control() && st.filter.len() < 32 => st.filter.push(c),
                _ => {}
            }
        } else {
            match k.code {
                KeyCode::Esc if st.zoom => st.zoom = false,
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('c') if k.modifiers.contains(event::KeyModifiers::CONTROL) => {
                    return Ok(());
                }
                KeyCode::Tab | KeyCode::Left | KeyCode::Right => {
                    st.tab = if st.tab == Tab::Processes {
                        Tab::Pools
                    } else {
                        Tab::Processes
                    };
                    st.scroll = 0;
                }
                KeyCode::Char('1') => st.tab = Tab::Processes,
                KeyCode::Char('2') => st.tab = Tab::Pools,
                KeyCode::Down | KeyCode::Char('j') => st.step(1),
                KeyCode::Up | KeyCode::Char('k') => st.step(-1),
                KeyCode::PageDown => st.step(10),
                KeyCode::PageUp => st.step(-10),
                KeyCode::Enter => {
                    st.zoom = !st.zoom;
                    st.scroll = 0;
                }
                KeyCode::Char('s') => st.sort = st.sort.next(),
                KeyCode::Char('p') | KeyCode::Char(' ') => st.paused = !st.paused,
                KeyCode::Char('/') => st.editing_filter = true,
                _ => {}
            }
        }
        refresh_rows(&mut st, feed)?;
        terminal.draw(|f| draw(f, &st, feed.drops()))?;
    }
}

fn refresh_rows(st: &mut State, feed: &mut Feed) -> Result<()> {
    if st.paused {
        return Ok(());
    }
    let now = boot_now_ns();
    let th = Thresholds::default();
    let nat = feed.nat();
    let frame =
        feed.with_ledger(|t| frame_rows(&mut t.ledger, now, st.sort, &th, nat.as_deref()))?;
    take_frame(st, frame, now);
    Ok(())
}

/// A new frame taken at boot-clock `now` (ns): shown, and sampled into the history.
fn take_frame(st: &mut State, frame: TopFrame, now: u64) {
    st.frame = frame;
    st.now_s = now / 1_000_000_000;
    record_history(st);
    if let Some(r) = st.frame.procs.iter().find(|r| r.failing_now) {
        st.last_failure = Some(format!(
            "{} {} failing: {}",
            r.pid, r.name, r.failure_detail
        ));
    }
}

/// One sample a second of the fullest pools and of the pool the detail shows.
fn record_history(st: &mut State) {
    let shown = match st.selected() {
        Some((_, Selected::Pool(r))) => Some(r.key.clone()),
        Some((_, Selected::Process(p))) => p.fullest_pool.clone(),
        None => None,
    };
    let rows = st
        .frame
        .pools
        .iter()
        .enumerate()
        .filter(|(i, r)| *i < HISTORY_POOLS || shown.as_ref() == Some(&r.key));
    for (_, r) in rows {
        let sample = Sample {
            at_s: st.now_s,
            size: r.size,
            used: r.used,
            time_wait: r.time_wait,
            failures: r.failures,
        };
        st.history.record(&r.key, sample);
    }
    st.history.prune(st.now_s);
}

fn draw(f: &mut Frame, st: &State, drops: u64) {
    let [tabs_area, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(f.area());
    let titles = ["1 Processes", "2 Pools"];
    let selected = if st.tab == Tab::Processes { 0 } else { 1 };
    f.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        tabs_area,
    );
    // The tab line has room to spare: the counters go to its right end.
    let mut counters = format!("dropped {drops} ");
    if st.paused {
        counters.insert_str(0, "[PAUSED]  ");
    }
    f.render_widget(Paragraph::new(counters).right_aligned(), tabs_area);
    let chosen = st.selected();
    match &chosen {
        Some((_, sel)) if st.zoom => detail::draw(f, body, st, sel),
        // Too low for both: the table alone (Enter still shows the detail).
        Some((i, sel)) if body.height >= 12 => {
            let rows = match st.tab {
                Tab::Processes => st.frame.shown_procs(&st.filter).len(),
                Tab::Pools => {
                    st.frame.shown_pools(&st.filter).len() + st.frame.shown_nat(&st.filter).len()
                }
            } as u16;
            // Header and borders take 3 lines; the detail gets two thirds at least.
            let table_h = (rows + 3).clamp(4, (body.height / 3).max(4));
            let [top, bottom] =
                Layout::vertical([Constraint::Length(table_h), Constraint::Min(0)]).areas(body);
            draw_table(f, top, st, Some(*i));
            detail::draw(f, bottom, st, sel);
        }
        Some((i, _)) => draw_table(f, body, st, Some(*i)),
        None => draw_table(f, body, st, None),
    }
    let keys = if st.zoom {
        "q quit  enter/esc back  ↑↓ scroll  tab switch  p pause"
    } else {
        "q quit  tab switch  ↑↓ select  enter detail  s sort  p pause  / filter"
    };
    // What is typed first: a narrow terminal clips the end of the line.
    let l1 = if st.editing_filter || !st.filter.is_empty() {
        format!(
            "filter: {}{}  | {keys}",
            st.filter,
            if st.editing_filter { "_" } else { "" }
        )
    } else {
        keys.to_string()
    };
    let l2 = st.last_failure.clone().unwrap_or_default();
    let lines = vec![
        Line::from(l1),
        Line::from(l2).style(Style::default().fg(Color::Red)),
    ];
    f.render_widget(Paragraph::new(lines), status);
}

fn draw_table(f: &mut Frame, area: Rect, st: &State, selected: Option<usize>) {
    let header_style = Style::default().add_modifier(Modifier::BOLD);
    let mut state = TableState::default().with_selected(selected);
    let table = match st.tab {
        Tab::Processes => {
            let rows = st.frame.shown_procs(&st.filter).into_iter().map(|r| {
                let style = if r.failing_now {
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                };
                Row::new(proc_cells(r).map(Cell::from)).style(style)
            });
            Table::new(rows, PROC_WIDTHS.map(Constraint::Length))
                .header(Row::new(PROC_HEADER).style(header_style))
                .block(
                    Block::bordered().title(format!(" processes, sorted by {} ", st.sort.label())),
                )
        }
        Tab::Pools => {
            let style = |u: f64| {
                if u >= 0.95 {
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
                } else if u >= 0.8 {
                    Style::default().fg(Color::Yellow)
                } else {
                    Style::default()
                }
            };
            let host = st
                .frame
                .shown_pools(&st.filter)
                .into_iter()
                .map(|r| Row::new(pool_cells(r).map(Cell::from)).style(style(r.utilisation)));
            // NAT pools come after the host's: the selection (an index into the host
            // pools) never lands on one.
            let nat = st
                .frame
                .shown_nat(&st.filter)
                .into_iter()
                .map(|r| Row::new(nat_cells(r).map(Cell::from)).style(style(r.utilisation)));
            let rows = host.chain(nat);
            Table::new(rows, POOL_WIDTHS.map(Constraint::Length))
                .header(Row::new(POOL_HEADER).style(header_style))
                .block(Block::bordered().title(" pools (source -> destination), fullest first "))
        }
    };
    let table = table.row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(table, area, &mut state);
}

//! The full-screen terminal UI of `portex top` (ratatui over crossterm).
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind},
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Cell, Paragraph, Row, Table, Tabs},
};

use super::Feed;
use crate::{
    cmd::cli::TopArgs,
    render::top::{
        POOL_HEADER, POOL_WIDTHS, PROC_HEADER, PROC_WIDTHS, PoolRow, ProcRow, SortBy, Tab,
        frame_rows, pool_cells, proc_cells,
    },
    sys::clock::boot_now_ns,
};

struct State {
    tab: Tab,
    sort: SortBy,
    paused: bool,
    filter: String,
    editing_filter: bool,
    procs: Vec<ProcRow>,
    pools: Vec<PoolRow>,
    last_failure: Option<String>,
}

pub(super) fn run(feed: &mut Feed, args: &TopArgs) -> Result<()> {
    let mut terminal = ratatui::try_init().context("opening the terminal")?;
    let res = event_loop(&mut terminal, feed, args);
    ratatui::restore();
    res
}

fn event_loop(terminal: &mut DefaultTerminal, feed: &mut Feed, args: &TopArgs) -> Result<()> {
    let mut st = State {
        tab: Tab::Processes,
        sort: SortBy::default(),
        paused: false,
        filter: String::new(),
        editing_filter: false,
        procs: Vec::new(),
        pools: Vec::new(),
        last_failure: None,
    };
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
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('c') if k.modifiers.contains(event::KeyModifiers::CONTROL) => {
                    return Ok(());
                }
                KeyCode::Tab | KeyCode::Left | KeyCode::Right => {
                    st.tab = if st.tab == Tab::Processes {
                        Tab::Pools
                    } else {
                        Tab::Processes
                    }
                }
                KeyCode::Char('1') => st.tab = Tab::Processes,
                KeyCode::Char('2') => st.tab = Tab::Pools,
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
    (st.procs, st.pools) =
        feed.with_ledger(|t| frame_rows(&mut t.ledger, now, st.sort, &st.filter))?;
    if let Some(r) = st.procs.iter().find(|r| r.failing_now) {
        st.last_failure = Some(format!(
            "{} {} failing: {}",
            r.pid, r.name, r.failure_detail
        ));
    }
    Ok(())
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
    let header_style = Style::default().add_modifier(Modifier::BOLD);
    match st.tab {
        Tab::Processes => {
            let rows = st.procs.iter().map(|r| {
                let style = if r.failing_now {
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                };
                Row::new(proc_cells(r).map(Cell::from)).style(style)
            });
            let t = Table::new(rows, PROC_WIDTHS.map(Constraint::Length))
                .header(Row::new(PROC_HEADER).style(header_style))
                .block(
                    Block::bordered().title(format!(" processes, sorted by {} ", st.sort.label())),
                );
            f.render_widget(t, body);
        }
        Tab::Pools => {
            let rows = st.pools.iter().map(|r| {
                let style = if r.utilisation >= 0.95 {
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
                } else if r.utilisation >= 0.8 {
                    Style::default().fg(Color::Yellow)
                } else {
                    Style::default()
                };
                Row::new(pool_cells(r).map(Cell::from)).style(style)
            });
            let t = Table::new(rows, POOL_WIDTHS.map(Constraint::Length))
                .header(Row::new(POOL_HEADER).style(header_style))
                .block(Block::bordered().title(" pools (source -> destination), fullest first "));
            f.render_widget(t, body);
        }
    }
    let mut l1 = format!("q quit  tab switch  s sort  p pause  / filter  | dropped {drops}");
    if st.paused {
        l1.push_str("  [PAUSED]");
    }
    if st.editing_filter || !st.filter.is_empty() {
        l1.push_str(&format!(
            "  filter: {}{}",
            st.filter,
            if st.editing_filter { "_" } else { "" }
        ));
    }
    let l2 = st.last_failure.clone().unwrap_or_default();
    let lines = vec![
        Line::from(l1),
        Line::from(l2).style(Style::default().fg(Color::Red)),
    ];
    f.render_widget(Paragraph::new(lines), status);
}

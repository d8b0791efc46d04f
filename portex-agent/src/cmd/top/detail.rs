//! The detail pane of `top`: the occupancy chart of the selected pool (or of the
//! selected process's fullest pool) beside or above its text, the diagnoses and fixes
//! first. The lines and the points are built by render::top_detail and top_chart.
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols::Marker,
    text::{Line, Span},
    widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, Paragraph, Wrap},
};

use super::ui::{Selected, State};
use crate::{
    logic::pool_history::CAPACITY,
    render::{
        top::PoolRow,
        top_chart::{ChartData, chart_data},
        top_detail::{DetailLine, Tone, pool_lines, process_lines},
    },
};

/// The chart shows the last five minutes (the history keeps ten).
const WINDOW_S: u64 = 300;
const _: () = assert!(WINDOW_S <= CAPACITY as u64);

/// Side by side from this width; chart above text below it.
const WIDE: u16 = 120;

const USED: Color = Color::Yellow;
const TIME_WAIT: Color = Color::Magenta;
const FREE: Color = Color::Green;
const FAILURE: Color = Color::Red;

pub(super) fn draw(f: &mut Frame, area: Rect, st: &State, sel: &Selected) {
    let (title, pool, lines) = match sel {
        Selected::Pool(r) => {
            let ds = st.frame.pool_diagnoses(&r.key);
            let ago = first_failure_ago(st, r);
            (
                format!(" {}, netns {} ", r.key.label(), r.key.netns),
                Some(*r),
                pool_lines(r, ago, &ds),
            )
        }
        Selected::Process(p) => {
            let pool = p.fullest_pool.as_ref().and_then(|k| st.frame.pool(k));
            let ds = st.frame.process_diagnoses(p);
            let with_age = pool.map(|r| (r, first_failure_ago(st, r)));
            (
                format!(" pid {} {} ", p.pid, p.name),
                pool,
                process_lines(p, with_age, &ds),
            )
        }
    };
    let (chart_area, text_area) = if area.width >= WIDE {
        let [c, t] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .spacing(1)
            .areas(area);
        (c, t)
    } else if area.height >= 10 {
        // Chart above the text; the text gets as much: it holds the answer.
        let chart_h = (area.height / 2).clamp(5, 16);
        let [c, t] =
            Layout::vertical([Constraint::Length(chart_h), Constraint::Min(0)]).areas(area);
        (c, t)
    } else {
        (Rect::default(), area)
    };
    if !chart_area.is_empty() {
        draw_chart(f, chart_area, st, pool);
    }
    // Rows the wrapped text takes, over-estimated (wrapping at words leaves a row short
    // by less than a word, and these words are short: a quarter of a row is ample), so
    // that the zoomed detail scrolls to its end and no further.
    let width = text_area.width.max(1) as usize;
    let rows: usize = lines
        .iter()
        .map(|l| l.text.chars().count() * 4 / (width * 3) + 1)
        .sum();
    let visible = text_area.height.saturating_sub(1) as usize;
    st.scroll_max
        .set(rows.saturating_sub(visible).min(u16::MAX as usize) as u16);
    let text: Vec<Line> = lines.iter().map(styled).collect();
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .scroll((st.scroll, 0))
            .block(Block::new().borders(Borders::TOP).title(title)),
        text_area,
    );
}

fn first_failure_ago(st: &State, r: &PoolRow) -> Option<u64> {
    st.history
        .first_failure_s(&r.key)
        .map(|t| st.now_s.saturating_sub(t))
}

fn styled(l: &DetailLine) -> Line<'_> {
    let style = match l.tone {
        Tone::Plain => Style::default(),
        Tone::Critical => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        Tone::Warning => Style::default().fg(Color::Yellow),
        Tone::Info => Style::default().fg(Color::Cyan),
        Tone::Fix => Style::default().fg(Color::Green),
    };
    Line::styled(l.text.as_str(), style)
}

fn draw_chart(f: &mut Frame, area: Rect, st: &State, pool: Option<&PoolRow>) {
    let Some(r) = pool else {
        f.render_widget(
            Paragraph::new("holds no port in a pool")
                .block(Block::new().borders(Borders::TOP).title(" pool ")),
            area,
        );
        return;
    };
    let d = chart_data(
        st.history.samples(&r.key),
        st.now_s,
        WINDOW_S,
        r.seconds_to_full,
        st.history.first_failure_s(&r.key),
    );
    // The title is the legend: each series in its colour with its figure now.
    let mut title = vec![
        Span::raw(" "),
        Span::styled(format!("used {}", r.used), Style::default().fg(USED)),
        Span::raw("  "),
        Span::styled(
            format!("TIME_WAIT {}", r.time_wait),
            Style::default().fg(TIME_WAIT),
        ),
        Span::raw("  "),
        Span::styled(
            format!("free {}", r.size.saturating_sub(r.used)),
            Style::default().fg(FREE),
        ),
        Span::raw(format!(" of {} ", r.size)),
    ];
    if !d.forecast.is_empty() {
        title.push(Span::styled(" forecast ", Style::default().fg(USED)));
    }
    if !d.failure.is_empty() {
        title.push(Span::styled(" 1st failure ", Style::default().fg(FAILURE)));
    }
    // A top border only: on a small terminal every row and column goes to the plot.
    let block = Block::new().borders(Borders::TOP).title(Line::from(title));
    if d.used.is_empty() {
        f.render_widget(Paragraph::new("collecting history...").block(block), area);
        return;
    }
    f.render_widget(chart(&d).block(block), area);
}

fn chart(d: &ChartData) -> Chart<'_> {
    let line = |data: &'static str, points, colour, marker| {
        Dataset::default()
            .name(data)
            .marker(marker)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(colour))
            .data(points)
    };
    // Drawn in this order: the failure mark under the series, the forecast on top.
    let datasets = vec![
        line("1st failure", &d.failure, FAILURE, Marker::Braille),
        line("free", &d.free, FREE, Marker::Braille),
        line("TIME_WAIT", &d.time_wait, TIME_WAIT, Marker::Braille),
        line("used", &d.used, USED, Marker::Braille),
        line("forecast", &d.forecast, USED, Marker::Dot),
    ];
    Chart::new(datasets)
        .legend_position(None)
        .x_axis(
            Axis::default()
                .bounds(d.x_bounds)
                .labels(d.x_labels.iter().map(String::as_str)),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, d.y_max])
                .labels(d.y_labels.iter().map(String::as_str)),
        )
}

//! The screen of `top` drawn into a test backend at 80x24 and 200x50, fed a ledger in
//! which a client that closes first fills a 40-port pool, one connection a second.
use ratatui::{Terminal, backend::TestBackend};

use super::*;
use crate::logic::{
    fixtures::record,
    ledger::Ledger,
    model::{Action, CloseInfo, CloseKind, Record},
    sysctls::NetSettings,
};

const S: u64 = 1_000_000_000;
const NS: u64 = 4026532999;
const T0: u64 = 1000 * S;

fn rec(action: Action, sport: u16, ts: u64) -> Record {
    let mut r = record(
        action,
        (4242, 4242, "client"),
        &format!("10.0.0.1:{sport}"),
        Some("10.0.0.9:7460"),
    );
    r.ts_ns = ts;
    r.duration_ns = Some(1_000_000);
    r
}

/// Second `i` of the fill: one connection closed by this side (TIME_WAIT) while the
/// pool has room, then a failed connect() a second.
fn second(l: &mut Ledger, i: u16) {
    let ts = T0 + i as u64 * S;
    if i < 40 {
        l.apply(&rec(Action::Connect, 40000 + i, ts), Some(NS), ts);
        let mut c = rec(Action::Close, 40000 + i, ts + S / 2);
        c.close = Some(CloseInfo {
            reset_received: false,
            kind: CloseKind::Active,
            time_wait: true,
            from_state: "FIN_WAIT2",
        });
        l.apply(&c, Some(NS), ts + S / 2);
    } else {
        let mut f = rec(Action::ConnectFailed, 0, ts);
        f.errno = Some(99);
        l.apply(&f, Some(NS), ts);
    }
}

/// A State after `seconds` of the fill, one frame a second, on the pools tab.
fn filled(seconds: u16) -> State {
    let mut l = Ledger::new();
    let settings = NetSettings {
        range: (40000, 40039),
        tw_reuse: 0,
        ..NetSettings::default()
    };
    l.reconcile(NS, settings, &[], |_| None, T0);
    l.process_seen(4242, 1, "client");
    let mut st = State::new();
    st.tab = Tab::Pools;
    for i in 0..seconds {
        second(&mut l, i);
        let now = T0 + (i as u64 + 1) * S - 1;
        let frame = frame_rows(&mut l, now, st.sort, &Thresholds::default(), None);
        take_frame(&mut st, frame, now);
    }
    st
}

fn screen(st: &State, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, st, 0)).unwrap();
    let buf = t.backend().buffer();
    let mut s = String::new();
    for y in 0..h {
        for x in 0..w {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

fn braille(s: &str) -> String {
    s.chars()
        .filter(|c| ('\u{2801}'..='\u{28ff}').contains(c))
        .collect()
}

#[test]
fn at_80x24_the_table_the_chart_and_the_keys_fit_and_the_fix_is_a_scroll_away() {
    let st = filled(20);
    let s = screen(&st, 80, 24);
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines[22].starts_with("q quit"), "{s}");
    assert!(s.contains("10.0.0.1 -> 10.0.0.9:7460"), "{s}");
    assert!(s.contains("used 20"), "the chart's legend:\n{s}");
    assert!(!braille(&s).is_empty(), "a chart is drawn:\n{s}");
    // Zoomed, the arrows scroll the text until the fix shows.
    let mut st = st;
    st.zoom = true;
    let found = (0..20).any(|_| {
        let s = screen(&st, 80, 24);
        st.step(1);
        s.contains("fix: let the server close first")
    });
    assert!(found, "{}", screen(&st, 80, 24));
    // Scrolling stops at the end: the last fix stays on screen.
    for _ in 0..100 {
        screen(&st, 80, 24);
        st.step(1);
    }
    let s = screen(&st, 80, 24);
    assert!(
        s.contains("fix: sysctl -w net.ipv4.tcp_tw_reuse=1 (safe"),
        "{s}"
    );
    // Back to the table: the selection moves again.
    st.zoom = false;
    st.step(1);
    assert_eq!(st.scroll, 0);
}

#[test]
fn the_chart_moves_as_the_pool_fills() {
    let (a, b) = (screen(&filled(10), 80, 24), screen(&filled(30), 80, 24));
    assert!(a.contains("used 10") && b.contains("used 30"), "{a}\n{b}");
    assert_ne!(braille(&a), braille(&b));
}

#[test]
fn at_200x50_the_picture_and_every_answer_are_on_one_screen() {
    let st = filled(50);
    let s = screen(&st, 200, 50);
    for want in [
        "used 40",
        "1st failure",
        "40 of 40 ports used (100%), 40 in TIME_WAIT, 0 free",
        // The first failed at second 40, the frame is at second 49.
        "10 connect() failed towards it, the first 9s ago",
        "top holders: 4242 client (40, 40 TIME_WAIT)",
        "[critical] tcp 10.0.0.1 -> 10.0.0.9:7460 has 40 of 40 source ports in use",
        "fix: let the server close first",
        "[info] net.ipv4.tcp_tw_reuse is 0 (off)",
        "fix: sysctl -w net.ipv4.tcp_tw_reuse=1",
        "q quit",
    ] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
    // The process tab shows the same pool for the client.
    let mut st = st;
    st.tab = Tab::Processes;
    let s = screen(&st, 200, 50);
    for want in [
        "pid 4242 client",
        "fullest pool: tcp 10.0.0.1 -> 10.0.0.9:7460, 100% of it held by this process",
        "fix: let the server close first",
    ] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
}

#[test]
fn selection_moves_and_sticks_to_its_row() {
    let mut st = filled(5);
    // One pool only: the selection stays on it.
    st.step(1);
    assert_eq!(st.selected().map(|(i, _)| i), Some(0));
    st.filter = "nothing matches".into();
    assert!(st.selected().is_none());
    let s = screen(&st, 80, 24);
    assert!(s.contains("pools (source"), "the table alone:\n{s}");
}

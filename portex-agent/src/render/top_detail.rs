//! The detail of the selected pool or process in `top`: its figures, holders, and the
//! diagnoses with their fixes worded as `status` words them (render::status). Pure: the
//! rows, the diagnoses and the age of the first failure come in.
use crate::{
    logic::diagnose::{Diagnosis, Severity},
    render::{
        status::diagnosis_lines,
        text::rate,
        top::{PoolRow, ProcRow},
    },
};

/// How a line is shown: the TUI colours by it, the text frame indents fixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tone {
    Plain,
    Critical,
    Warning,
    Info,
    Fix,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DetailLine {
    pub(crate) tone: Tone,
    pub(crate) text: String,
}

fn line(tone: Tone, text: String) -> DetailLine {
    DetailLine { tone, text }
}

/// "42s", "5m", "1.5h": a span short enough to read at a glance.
pub(crate) fn span(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 120.0 {
        format!("{s:.0}s")
    } else if s < 7200.0 {
        format!("{:.0}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

/// What a pool holds, how fast it fills, when it failed, who holds it.
fn pool_facts(r: &PoolRow, first_failure_ago_s: Option<u64>, out: &mut Vec<DetailLine>) {
    out.push(line(
        Tone::Plain,
        format!(
            "{} of {} ports used ({:.0}%), {} in TIME_WAIT, {} free",
            r.used,
            r.size,
            r.utilisation * 100.0,
            r.time_wait,
            r.size.saturating_sub(r.used)
        ),
    ));
    let when = match r.seconds_to_full {
        Some(s) if s <= 0.0 => "full now".to_string(),
        Some(s) => format!("full in {}", span(s)),
        None if r.opens_per_s > 0.0 => format!("settles at ~{:.0} ports", r.steady_state_used),
        None => "not filling".to_string(),
    };
    out.push(line(
        Tone::Plain,
        format!(
            "{} new connections/s, {} closed first by this side; sustains ~{}/s if this side \
             closes first; {when}",
            rate(r.opens_per_s),
            rate(r.closes_first_per_s),
            rate(r.sustainable_per_s)
        ),
    ));
    if r.failures > 0 {
        let first = first_failure_ago_s
            .map(|a| format!(", the first {} ago", span(a as f64)))
            .unwrap_or_default();
        out.push(line(
            Tone::Critical,
            format!("{} connect() failed towards it{first}", r.failures),
        ));
    }
    if !r.holders.is_empty() {
        let holders: Vec<String> = r
            .holders
            .iter()
            .map(|(label, held, tw)| match tw {
                0 => format!("{label} ({held})"),
                _ => format!("{label} ({held}, {tw} TIME_WAIT)"),
            })
            .collect();
        out.push(line(
            Tone::Plain,
            format!("top holders: {}", holders.join(", ")),
        ));
    }
}

/// Each diagnosis in two lines, its summary and its fix.
fn answers(diagnoses: &[&Diagnosis], out: &mut Vec<DetailLine>) {
    if diagnoses.is_empty() {
        out.push(line(Tone::Plain, "no diagnosis: nothing to change".into()));
    }
    for d in diagnoses {
        let tone = match d.severity {
            Severity::Critical => Tone::Critical,
            Severity::Warning => Tone::Warning,
            Severity::Info => Tone::Info,
        };
        let [what, fix] = diagnosis_lines(d);
        out.push(line(tone, what));
        out.push(line(Tone::Fix, fix));
    }
}

/// The detail of a pool.
pub(crate) fn pool_lines(
    r: &PoolRow,
    first_failure_ago_s: Option<u64>,
    diagnoses: &[&Diagnosis],
) -> Vec<DetailLine> {
    let mut out = Vec::new();
    pool_facts(r, first_failure_ago_s, &mut out);
    answers(diagnoses, &mut out);
    out
}

/// The detail of a process: what it holds and does, then the pool where it holds the
/// largest share (`pool`, with the age of its first failure) and the diagnoses.
pub(crate) fn process_lines(
    p: &ProcRow,
    pool: Option<(&PoolRow, Option<u64>)>,
    diagnoses: &[&Diagnosis],
) -> Vec<DetailLine> {
    let mut out = vec![line(
        Tone::Plain,
        format!(
            "holds {} ports, {} in TIME_WAIT; {} connects/s, {} closes/s",
            p.held,
            p.time_wait,
            rate(p.connects_per_s),
            rate(p.closes_per_s)
        ),
    )];
    if p.failures > 0 {
        out.push(line(
            Tone::Critical,
            format!("{} failures: {}", p.failures, p.failure_detail),
        ));
    }
    if let Some((r, first_failure)) = pool {
        out.push(line(
            Tone::Plain,
            format!(
                "fullest pool: {}, {:.0}% of it held by this process",
                r.key.label(),
                p.fullest_share * 100.0
            ),
        ));
        pool_facts(r, first_failure, &mut out);
    }
    answers(diagnoses, &mut out);
    out
}

/// The lines as plain text (the `--once` frame), fixes indented under their diagnosis.
pub(crate) fn plain_text(lines: &[DetailLine]) -> String {
    let mut o = String::new();
    for l in lines {
        o.push_str(if l.tone == Tone::Fix { "    " } else { "  " });
        o.push_str(&l.text);
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::{
        diagnose::{LiveFacts, Thresholds, diagnose},
        model::{Owner, Transport},
        pool::{Holder, Pool, PoolKey},
        sysctls::NetSettings,
    };

    fn key() -> PoolKey {
        PoolKey {
            netns: 1,
            transport: Transport::Tcp,
            saddr: "10.0.0.1".parse().unwrap(),
            daddr: "10.0.0.9".parse().unwrap(),
            dport: 80,
        }
    }

    /// 40 ports, 36 used, 30 of them in TIME_WAIT: the client closes first.
    fn filling() -> (PoolRow, Pool) {
        let pool = Pool {
            key: key(),
            size: 40,
            used: 36,
            time_wait: 30,
            reusable: 0,
            syn_sent: 0,
            established: 6,
            odd_ports: 18,
            holders: vec![
                Holder {
                    owner: None,
                    held: 30,
                    time_wait: 30,
                },
                Holder {
                    owner: Some(Owner {
                        pid: 4242,
                        start: 1,
                        name: "client".into(),
                    }),
                    held: 6,
                    time_wait: 0,
                },
            ],
        };
        let row = PoolRow {
            key: key(),
            label: key().route(),
            size: 40,
            used: 36,
            time_wait: 30,
            utilisation: 0.9,
            opens_per_s: 4.0,
            closes_first_per_s: 4.0,
            sustainable_per_s: 40.0 / 60.0,
            failures: 3,
            forecast: "full in 1s".into(),
            seconds_to_full: Some(1.0),
            steady_state_used: 240.0,
            top_holder: pool.holders[0].label(),
            holders: pool
                .holders
                .iter()
                .map(|h| (h.label(), h.held, h.time_wait))
                .collect(),
        };
        (row, pool)
    }

    #[test]
    fn the_detail_of_a_filling_pool_names_its_holders_and_the_fix_status_gives() {
        let (row, pool) = filling();
        let settings = NetSettings {
            range: (40000, 40039),
            tw_reuse: 0,
            ..NetSettings::default()
        };
        let facts = LiveFacts {
            close_rates: vec![(key(), 4.0)],
            ..LiveFacts::default()
        };
        let all = diagnose(&settings, &[pool], &Thresholds::default(), &facts);
        let ds: Vec<&Diagnosis> = all.iter().collect();
        let lines = pool_lines(&row, Some(35), &ds);
        let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            text[..4],
            [
                "36 of 40 ports used (90%), 30 in TIME_WAIT, 4 free",
                "4.0 new connections/s, 4.0 closed first by this side; sustains ~0.7/s if this \
                 side closes first; full in 1s",
                "3 connect() failed towards it, the first 35s ago",
                "top holders: (no owner: TIME_WAIT) (30, 30 TIME_WAIT), 4242 client (6)",
            ]
        );
        assert_eq!(lines[2].tone, Tone::Critical);
        // Every diagnosis, in status's words, its fix right under it.
        for d in &all {
            let [what, fix] = diagnosis_lines(d);
            let at = text.iter().position(|t| *t == what).expect(d.id);
            assert_eq!(text[at + 1], fix);
            assert_eq!(lines[at + 1].tone, Tone::Fix);
        }
        let ids: Vec<&str> = all.iter().map(|d| d.id).collect();
        for id in [
            "client_closes_first",
            "rate_above_sustainable",
            "tcp_tw_reuse_off",
        ] {
            assert!(ids.contains(&id), "{id} in {ids:?}");
        }
        assert!(
            text.iter()
                .any(|t| t.starts_with("fix: let the server close first"))
        );
        // The most severe first.
        assert_eq!(lines[4].tone, Tone::Critical);
    }

    #[test]
    fn a_quiet_pool_says_there_is_nothing_to_change() {
        let (mut row, _) = filling();
        row.failures = 0;
        row.seconds_to_full = None;
        row.opens_per_s = 0.0;
        row.holders.clear();
        let text: Vec<String> = pool_lines(&row, None, &[])
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[1].ends_with("not filling"), "{text:?}");
        assert_eq!(text[2], "no diagnosis: nothing to change");
    }

    #[test]
    fn a_process_shows_its_fullest_pool_and_the_text_frame_indents_fixes() {
        let (pool, _) = filling();
        let p = ProcRow {
            pid: 4242,
            name: "client".into(),
            connects_per_s: 4.0,
            closes_per_s: 4.0,
            held: 6,
            time_wait: 30,
            failures: 3,
            failure_detail: "EADDRNOTAVAIL:3".into(),
            fullest_share: 0.15,
            fullest_pool: Some(key()),
            failing_now: true,
        };
        let lines = process_lines(&p, Some((&pool, None)), &[]);
        assert_eq!(
            lines[0].text,
            "holds 6 ports, 30 in TIME_WAIT; 4.0 connects/s, 4.0 closes/s"
        );
        assert_eq!(lines[1].text, "3 failures: EADDRNOTAVAIL:3");
        assert_eq!(
            lines[2].text,
            "fullest pool: tcp 10.0.0.1 -> 10.0.0.9:80, 15% of it held by this process"
        );
        assert_eq!(lines[5].text, "3 connect() failed towards it");
        let t = plain_text(&[
            line(Tone::Warning, "[warning] x".into()),
            line(Tone::Fix, "fix: y".into()),
        ]);
        assert_eq!(t, "  [warning] x\n    fix: y\n");
        assert_eq!(
            (span(42.4), span(300.0), span(5400.0)),
            ("42s".into(), "5m".into(), "90m".into())
        );
    }
}

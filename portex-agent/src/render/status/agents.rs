//! What `status` says of the running agents (their TIME_WAIT-owners files): which of
//! their kernel programs the kernel refused, and what that costs.
use std::fmt::Write;

use serde_json::{Value, json};

use crate::logic::kernel::NotLoaded;

/// The running portex processes and their refused programs.
pub(crate) struct Agents<'a> {
    pub pids: &'a [u32],
    pub not_loaded: &'a [NotLoaded],
}

pub(crate) fn agents_text(a: &Agents, o: &mut String) {
    let pids: Vec<String> = a.pids.iter().map(u32::to_string).collect();
    if a.not_loaded.is_empty() {
        let _ = writeln!(
            o,
            "running portex (pid {}): every kernel program loaded",
            pids.join(", ")
        );
        return;
    }
    let _ = writeln!(o, "running portex (pid {}):", pids.join(", "));
    for n in a.not_loaded {
        let _ = writeln!(
            o,
            "  {} is not loaded ({}); without it, {}",
            n.program, n.why, n.lost
        );
    }
}

pub(crate) fn agents_json(a: &Agents) -> Value {
    json!({
        "pids": a.pids,
        "programs_not_loaded": a.not_loaded.iter().map(|n| json!({
            "program": n.program,
            "why": n.why,
            "lost": n.lost,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_program_is_named_with_what_it_costs() {
        let not_loaded = [NotLoaded {
            program: "tcp_retransmit_skb".into(),
            why: "the verifier: invalid read from stack R10 off=-64 size=8".into(),
            lost: "stalled connects are reported only when they fail".into(),
        }];
        let a = Agents {
            pids: &[42],
            not_loaded: &not_loaded,
        };
        let mut o = String::new();
        agents_text(&a, &mut o);
        assert_eq!(
            o,
            "running portex (pid 42):\n  tcp_retransmit_skb is not loaded (the verifier: invalid read \
             from stack R10 off=-64 size=8); without it, stalled connects are reported only when \
             they fail\n"
        );
        let v = agents_json(&a);
        assert_eq!(v["programs_not_loaded"][0]["program"], "tcp_retransmit_skb");
        let mut o = String::new();
        agents_text(
            &Agents {
                pids: &[1, 2],
                not_loaded: &[],
            },
            &mut o,
        );
        assert_eq!(
            o,
            "running portex (pid 1, 2): every kernel program loaded\n"
        );
    }
}

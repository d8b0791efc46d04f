//! The verifier's log reduced to the line a user can act on. Pure.
//!
//! A refused program's log runs to a thousand lines of instructions and register
//! states; the verifier's reason is the last line before its closing statistics
//! ("verification time ...", "processed N insns ...", "stack depth ...").

/// The verifier's reason for refusing a program: the last line of `log` that is not
/// statistics or an instruction dump; None for an empty log.
pub(crate) fn reason(log: &str) -> Option<&str> {
    log.lines()
        .map(str::trim)
        .rev()
        .find(|l| !l.is_empty() && !is_statistics(l) && !is_instruction(l))
}

fn is_statistics(l: &str) -> bool {
    [
        "verification time",
        "stack depth",
        "processed ",
        "insn ",
        "peak_states",
    ]
    .iter()
    .any(|p| l.starts_with(p))
}

/// "83: (79) r4 = *(u64 *)(r10 -64)" and "; source line" comments.
fn is_instruction(l: &str) -> bool {
    l.starts_with(';')
        || l.split_once(": (")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One line for a program the kernel refused to load: the verifier's reason when it
/// gave one, else the system error.
pub(crate) fn refusal(errno_text: &str, log: &str) -> String {
    match reason(log) {
        Some(r) => format!("the verifier: {r}"),
        None => format!("the kernel: {errno_text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tail of Debian 12's 6.1.176 refusing tcp_retransmit_skb (2026-12-07).
    const V6_1: &str = "\
; match ev.family {
80: (15) if r1 == 0x2 goto pc+198     ; R1=scalar(umax=65535,var_off=(0x0; 0xffff)) refs=8
81: (15) if r1 == 0xa goto pc+44      ; R1=scalar(umax=65535,var_off=(0x0; 0xffff)) refs=8
82: (b7) r1 = 128                     ; R1_w=128 refs=8
83: (79) r4 = *(u64 *)(r10 -64)
invalid read from stack R10 off=-64 size=8
verification time 44954 usec
stack depth 104+0+16
processed 1469 insns (limit 1000000) max_states_per_insn 4 total_states 39 peak_states 35 mark_read 16
";

    #[test]
    fn the_reason_is_the_line_before_the_statistics() {
        assert_eq!(
            reason(V6_1),
            Some("invalid read from stack R10 off=-64 size=8")
        );
        assert_eq!(
            refusal("Permission denied (os error 13)", V6_1),
            "the verifier: invalid read from stack R10 off=-64 size=8"
        );
    }

    #[test]
    fn without_a_log_the_system_error_is_the_reason() {
        assert_eq!(reason(""), None);
        assert_eq!(reason("\n\nprocessed 3 insns\n"), None);
        assert_eq!(
            refusal("Invalid argument (os error 22)", ""),
            "the kernel: Invalid argument (os error 22)"
        );
    }
}

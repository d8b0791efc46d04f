//! The kernel programs portex loads, what each one gives, and how a refusal by the
//! running kernel is told to the user. Pure: the loader (sys::ebpf) carries it out.
//!
//! Only the state program is essential: it sees every TCP lifecycle and the port
//! allocation failures. Every other program adds a detail; when the kernel refuses
//! one (its verifier, a missing tracepoint, a different record layout), the agent
//! says so in one line and runs without that detail, so that an older or newer kernel
//! costs a feature, never the agent.
pub(crate) mod tp_format;
pub(crate) mod verifier;

/// How a program is attached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Hook {
    /// The agent cannot run without it: its failure is the agent's.
    Essential,
    /// Attached for the whole run when the kernel accepts one of its variants.
    Optional,
    /// The connect/bind syscall path: a group that is loaded whole or not at all, and
    /// attached and detached as `--syscall-hooks` says.
    Syscall,
}

/// One program of the eBPF object, for one layout of its tracepoint's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    /// The program's name in the eBPF object.
    pub object: &'static str,
    /// The record layout it reads, checked against tracefs before it is loaded (None:
    /// a layout that has not changed in the kernels portex supports).
    pub layout: Option<&'static [(&'static str, usize, usize)]>,
}

/// A feature: one tracepoint, and the programs that can serve it on the kernels
/// portex supports (tried in order; the first the kernel takes is attached).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Program {
    /// The feature's name: the first variant's program name, as metrics and logs say.
    pub name: &'static str,
    pub category: &'static str,
    pub tracepoint: &'static str,
    pub hook: Hook,
    pub variants: &'static [Variant],
    /// What the user loses when the kernel refuses it (a phrase after "without it, ").
    pub lost: &'static str,
}

const SYSCALL_LOST: &str = "errno values other than the inferred EADDRNOTAVAIL, and bind() \
                            failures, are not seen";

pub(crate) const PROGRAMS: &[Program] = &[
    Program {
        name: "inet_sock_set_state",
        variants: &[Variant {
            object: "inet_sock_set_state",
            layout: None,
        }],
        category: "sock",
        tracepoint: "inet_sock_set_state",
        hook: Hook::Essential,
        lost: "portex sees nothing",
    },
    Program {
        name: "tcp_receive_reset",
        variants: &[Variant {
            object: "tcp_receive_reset",
            layout: None,
        }],
        category: "tcp",
        tracepoint: "tcp_receive_reset",
        hook: Hook::Optional,
        lost: "refused connects are not told apart from unanswered ones",
    },
    Program {
        name: "tcp_retransmit_skb",
        variants: &[
            Variant {
                object: "tcp_retransmit_skb",
                layout: Some(tp_format::TCP_RETRANSMIT_SKB),
            },
            Variant {
                object: "tcp_retransmit_skb_no_family",
                layout: Some(tp_format::TCP_RETRANSMIT_SKB_NO_FAMILY),
            },
        ],
        category: "tcp",
        tracepoint: "tcp_retransmit_skb",
        hook: Hook::Optional,
        lost: "stalled connects (an unanswered SYN, e.g. behind a full NAT pool) are \
               reported only when they fail",
    },
    Program {
        name: "sys_enter_connect",
        variants: &[Variant {
            object: "sys_enter_connect",
            layout: None,
        }],
        category: "syscalls",
        tracepoint: "sys_enter_connect",
        hook: Hook::Syscall,
        lost: SYSCALL_LOST,
    },
    Program {
        name: "sys_exit_connect",
        variants: &[Variant {
            object: "sys_exit_connect",
            layout: None,
        }],
        category: "syscalls",
        tracepoint: "sys_exit_connect",
        hook: Hook::Syscall,
        lost: SYSCALL_LOST,
    },
    Program {
        name: "sys_enter_bind",
        variants: &[Variant {
            object: "sys_enter_bind",
            layout: None,
        }],
        category: "syscalls",
        tracepoint: "sys_enter_bind",
        hook: Hook::Syscall,
        lost: SYSCALL_LOST,
    },
    Program {
        name: "sys_exit_bind",
        variants: &[Variant {
            object: "sys_exit_bind",
            layout: None,
        }],
        category: "syscalls",
        tracepoint: "sys_exit_bind",
        hook: Hook::Syscall,
        lost: SYSCALL_LOST,
    },
];

/// A refusal as a running agent hands it to `status` (sys::tw_owners_file).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NotLoaded {
    pub program: String,
    pub why: String,
    pub lost: String,
}

/// A program the running kernel did not take, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Skipped {
    pub program: &'static str,
    pub lost: &'static str,
    /// One line: the verifier's own last word, or what else refused it.
    pub why: String,
}

impl Skipped {
    pub(crate) fn handed_over(&self) -> NotLoaded {
        NotLoaded {
            program: self.program.into(),
            why: self.why.clone(),
            lost: self.lost.into(),
        }
    }

    /// The one line the agent logs.
    pub(crate) fn line(&self) -> String {
        format!(
            "{} is not loaded ({}); without it, {}",
            self.program, self.why, self.lost
        )
    }
}

/// The line an essential program's failure ends the agent with.
pub(crate) fn essential_failed(p: &Program, why: &str) -> String {
    format!(
        "the kernel refused portex's essential program {} on tracepoint {}:{} ({why}); \
         `--log-level debug` prints the verifier's full log",
        p.name, p.category, p.tracepoint
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_program_is_essential_and_names_are_unique() {
        let essential: Vec<_> = PROGRAMS
            .iter()
            .filter(|p| p.hook == Hook::Essential)
            .map(|p| p.name)
            .collect();
        assert_eq!(essential, ["inet_sock_set_state"]);
        for (i, p) in PROGRAMS.iter().enumerate() {
            assert!(PROGRAMS[i + 1..].iter().all(|q| q.name != p.name));
            assert_eq!(
                p.variants[0].object, p.name,
                "the feature is named by its first"
            );
            assert!(p.hook == Hook::Optional || p.variants.len() == 1);
        }
    }

    #[test]
    fn a_skipped_program_is_one_line_saying_what_is_lost() {
        let s = Skipped {
            program: "tcp_retransmit_skb",
            lost: PROGRAMS[2].lost,
            why: "the verifier: invalid read from stack R10 off=-64 size=8".into(),
        };
        let line = s.line();
        assert!(!line.contains('\n'));
        assert!(line.starts_with("tcp_retransmit_skb is not loaded (the verifier: invalid"));
        assert!(line.contains("stalled connects"));
    }
}

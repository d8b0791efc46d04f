//! The kernel matrix: the kernels a fleet runs that Debian's mirror serves, and what
//! portex is expected to load on each. README.md's "Supported kernels" table is this
//! one, with the figures of the last run.

/// One kernel of the matrix.
pub struct Kernel {
    /// Short name, as the run prints it and `--only` takes it.
    pub name: &'static str,
    /// The Debian suite whose `linux-image-amd64` names the kernel.
    pub suite: &'static str,
    /// Programs this kernel is expected to refuse (or lack the layout of), by name.
    pub not_loaded: &'static [&'static str],
    /// Whether the heavier checks (pool oracles, NAT) run here too, not only the core.
    pub heavy: bool,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        suite: "bullseye",
        not_loaded: &[],
        heavy: true,
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
        not_loaded: &[],
        heavy: true,
    },
    Kernel {
        name: "6.12-bpo",
        suite: "bookworm-backports",
        not_loaded: &[],
        heavy: false,
    },
    Kernel {
        name: "6.12",
        suite: "trixie",
        not_loaded: &[],
        heavy: false,
    },
    Kernel {
        name: "7.2",
        suite: "sid",
        not_loaded: &[],
        heavy: true,
    },
];

/// Every program of the eBPF object with `--syscall-hooks on` (the agent's catalogue,
/// portex-agent/src/logic/kernel).
pub const PROGRAMS: usize = 7;

/// One end-to-end test run inside the guest: (test binary, exact test name).
pub type Check = (&'static str, &'static str);

/// What every kernel runs: the agent's lifecycle and clean stop, client and server
/// events with their pids, an exhaustion with every failure attributed and counted.
pub const CORE: &[Check] = &[
    (
        "lifecycle",
        "sigterm_stops_the_agent_cleanly_and_detaches_every_program",
    ),
    (
        "agent",
        "accepted_connections_are_reported_only_with_the_accepted_flag",
    ),
    (
        "event_stream",
        "exhausting_the_range_reports_each_failure_once",
    ),
    (
        "event_stream",
        "refused_connects_are_reported_whether_blocking_or_not",
    ),
];

/// What the kernels marked `heavy` run besides: `status` against the kernel's own
/// answer (a plain range with a listener, TIME_WAIT under every reuse setting), and a
/// NAT pool filled through a masquerade rule, with a dropped SYN reported as stalled by
/// the retransmit program. (nat.rs's fuller test also times the agent's NAT scanner,
/// which under emulation comes round ten times slower: it runs on the host only.)
pub const HEAVY: &[Check] = &[
    (
        "pool_oracle",
        "an_empty_range_and_a_listener_inside_it_match_the_kernel",
    ),
    (
        "pool_oracle",
        "time_wait_over_loopback_matches_the_kernel_for_every_reuse_setting",
    ),
    (
        "nat",
        "a_masquerade_pool_in_status_is_what_the_kernel_lets_through",
    ),
];

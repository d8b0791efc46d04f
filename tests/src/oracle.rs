//! The kernel as the oracle of pool figures (tests/tests/pool_oracle*.rs): a namespace
//! with a 20-port range filled with client-side TIME_WAIT, portex's prediction, then
//! the number of connect() calls the kernel allows (the driver's `tw-then-count`).
use std::{thread, time::Duration};

use crate::{Held, Netns, status_in};

pub const LO: u16 = 41000;
pub const HI: u16 = 41019;
pub const FILL: &str = "20";

/// How long after the fill the prediction is read and the count made.
#[derive(Clone, Copy, Debug)]
pub enum When {
    /// tcp_tw_reuse_delay 5 s, counted at once.
    BeforeDelay,
    /// tcp_tw_reuse_delay 1 s, counted 1.5 s after the fill.
    AfterDelay,
}

/// Whether this kernel has net.ipv4.tcp_tw_reuse_delay (6.13+). Before it the delay is
/// a fixed second, so "before the delay" cannot be held long enough to count: those
/// cases are left out there (the kernel matrix runs them on 5.10-6.12).
pub fn reuse_delay_tunable() -> bool {
    std::path::Path::new("/proc/sys/net/ipv4/tcp_tw_reuse_delay").exists()
}

impl When {
    /// Whether this case can be set up on the running kernel.
    pub fn possible(self) -> bool {
        matches!(self, When::AfterDelay) || reuse_delay_tunable()
    }

    pub fn apply(self, ns: &Netns) {
        let delay = match self {
            When::BeforeDelay => "5000",
            When::AfterDelay => "1000",
        };
        // Without the sysctl the kernel's fixed delay is the 1 s of AfterDelay.
        if reuse_delay_tunable() {
            ns.sysctl("net.ipv4.tcp_tw_reuse_delay", delay);
        }
    }

    pub fn wait(self) {
        if let When::AfterDelay = self {
            thread::sleep(Duration::from_millis(1500));
        }
    }
}

/// Free ports `portex status` predicts in `ns` for connect() from `src` to `dst`: the
/// pool's free ports, or the namespace's TCP pool size when no socket is in that pool.
pub fn status_free(ns: &Netns, src: &str, dst: &str, port: u16) -> u64 {
    let (_, v) = status_in(ns, &["--limit", "1000"]);
    let n = &v["namespaces"][0];
    let pool = n["pools"].as_array().unwrap().iter().find(|p| {
        p["source"]["ip"] == src
            && p["destination"]["ip"] == dst
            && p["destination"]["port"] == port
    });
    match pool {
        Some(p) => p["free"].as_u64().unwrap(),
        None => n["tcp_pool_size"].as_u64().unwrap(),
    }
}

/// The kernel's answer: the driver's "connects K" after `Held::go`.
pub fn kernel_count(client: Held) -> u64 {
    let d = client.go();
    d.facts("connects")
        .first()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no count: {:?}", d.lines))
}

pub fn filled(client: &Held) -> u64 {
    client.driven.facts("filled")[0].parse().unwrap()
}

/// Runs the cases and requires prediction == kernel for each; prints the matrix.
pub fn matrix(cases: Vec<(&str, (u64, u64))>) {
    let table: Vec<String> = cases
        .iter()
        .map(|(name, (p, k))| format!("{name}: predicted {p}, kernel {k}"))
        .collect();
    eprintln!("{}", table.join("\n"));
    for (name, (p, k)) in &cases {
        assert_eq!(
            p,
            k,
            "{name}: portex predicted {p} free ports, connect() got {k}\n{}",
            table.join("\n")
        );
    }
}

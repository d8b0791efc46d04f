//! When the connect/bind syscall tracepoints are worth their cost.
//!
//! Attaching any syscall tracepoint puts every task of the host on the kernel's slower
//! traced-syscall path (getppid loses about a quarter of its speed here), while what the
//! hooks add over the `inet_sock_set_state` signature (bind() ports, EADDRINUSE on
//! bind, EAGAIN on UDP auto-bind, tuple collisions, errnos that are not about ports)
//! matters when ports run short. In `auto` mode the hooks are attached while some pool
//! is filling up or a port failure was seen recently, and detached once things have been
//! quiet for a while. This module decides; the stream attaches.
use std::{fmt, str::FromStr};

/// `--syscall-hooks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum HookMode {
    On,
    Off,
    Auto,
}

impl FromStr for HookMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(HookMode::On),
            "off" => Ok(HookMode::Off),
            "auto" => Ok(HookMode::Auto),
            _ => Err(format!("expected on, off or auto, got {s}")),
        }
    }
}

impl TryFrom<String> for HookMode {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for HookMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookMode::On => "on",
            HookMode::Off => "off",
            HookMode::Auto => "auto",
        })
    }
}

/// Utilisation of the fullest pool at which the hooks attach.
pub(crate) const ARM_AT: f64 = 0.5;
/// They detach only below this (hysteresis, so a pool hovering at the threshold does not
/// attach and detach every tick)...
pub(crate) const DISARM_BELOW: f64 = 0.4;
/// ...and when no reason to attach was seen for this long (by default).
pub(crate) const LINGER_NS: u64 = crate::logic::limits::LINGER_S.default * 1_000_000_000;

/// The decision state of `auto` mode.
#[derive(Debug)]
pub(crate) struct Arming {
    armed: bool,
    linger_ns: u64,
    /// Last time a reason to be attached was seen.
    last_need_ns: u64,
}

/// A decision to attach (armed) or detach the hooks, and why.
#[derive(Debug, PartialEq)]
pub(crate) struct Change {
    pub armed: bool,
    pub reason: String,
}

impl Default for Arming {
    fn default() -> Self {
        Self::new(LINGER_NS)
    }
}

impl Arming {
    pub(crate) fn new(linger_ns: u64) -> Self {
        Arming {
            armed: false,
            linger_ns,
            last_need_ns: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn armed(&self) -> bool {
        self.armed
    }

    /// `fullest`: utilisation (0..1) of the fullest pool and its label; `failure`: a port
    /// failure seen since the last call. Returns a change when one is due.
    pub(crate) fn observe(
        &mut self,
        now: u64,
        fullest: Option<(f64, &str)>,
        failure: bool,
    ) -> Option<Change> {
        let (util, pool) = fullest.unwrap_or((0.0, ""));
        if failure || util >= ARM_AT || (self.armed && util >= DISARM_BELOW) {
            self.last_need_ns = now;
        }
        if !self.armed && (failure || util >= ARM_AT) {
            self.armed = true;
            let reason = if failure {
                "a port allocation failure was seen".to_string()
            } else {
                format!("pool {pool} is {:.0} % full", util * 100.0)
            };
            return Some(Change {
                armed: true,
                reason,
            });
        }
        if self.armed && now.saturating_sub(self.last_need_ns) >= self.linger_ns {
            self.armed = false;
            return Some(Change {
                armed: false,
                reason: format!(
                    "no pool above {:.0} % and no port failure for {} s",
                    DISARM_BELOW * 100.0,
                    self.linger_ns / 1_000_000_000
                ),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn parses_modes() {
        assert_eq!("auto".parse::<HookMode>(), Ok(HookMode::Auto));
        assert_eq!("on".parse::<HookMode>(), Ok(HookMode::On));
        assert_eq!("off".parse::<HookMode>(), Ok(HookMode::Off));
        assert!("yes".parse::<HookMode>().is_err());
        assert_eq!(HookMode::Auto.to_string(), "auto");
    }

    #[test]
    fn quiet_host_never_arms() {
        let mut a = Arming::default();
        for i in 0..1000 {
            assert_eq!(a.observe(i * S, Some((0.3, "p")), false), None);
        }
        assert_eq!(a.observe(2000 * S, None, false), None);
        assert!(!a.armed());
    }

    #[test]
    fn arms_on_a_filling_pool_and_lingers_after_it_drains() {
        let mut a = Arming::default();
        let c = a.observe(10 * S, Some((0.55, "10.0.0.1 -> 10.0.0.2:80")), false);
        assert_eq!(
            c.map(|c| (c.armed, c.reason)),
            Some((true, "pool 10.0.0.1 -> 10.0.0.2:80 is 55 % full".into()))
        );
        // Hysteresis: 45 % keeps it attached however long it lasts.
        assert_eq!(a.observe(1000 * S, Some((0.45, "p")), false), None);
        assert!(a.armed());
        // Drained: detaches LINGER later, not before.
        assert_eq!(a.observe(1001 * S, Some((0.1, "p")), false), None);
        assert_eq!(a.observe(1299 * S, Some((0.1, "p")), false), None);
        let c = a.observe(1300 * S, Some((0.1, "p")), false).unwrap();
        assert!(!c.armed);
        assert!(!a.armed());
    }

    #[test]
    fn a_failure_arms_at_once_and_restarts_the_linger() {
        let mut a = Arming::default();
        let c = a.observe(5 * S, Some((0.0, "p")), true).unwrap();
        assert!(c.armed);
        assert!(c.reason.contains("failure"));
        assert_eq!(a.observe(200 * S, None, true), None);
        assert_eq!(a.observe(499 * S, None, false), None);
        assert!(!a.observe(500 * S, None, false).unwrap().armed);
        // And it can arm again.
        assert!(a.observe(501 * S, None, true).unwrap().armed);
    }
}

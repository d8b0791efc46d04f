//! Which records a user asked to see (`--pid`, `--comm`, `--failures-only`). Pure.
use crate::logic::model::Record;

#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub failures_only: bool,
}

impl Filter {
    /// `process_name` is the resolved process name; `--comm` matches it or the thread's.
    pub(crate) fn accepts(&self, r: &Record, process_name: &str) -> bool {
        if self.failures_only && !r.action.is_failure() {
            return false;
        }
        if self.pid.is_some_and(|p| p != r.process.pid) {
            return false;
        }
        if let Some(c) = &self.comm
            && c != process_name
            && *c != r.process.thread_name.name()
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::{fixtures::record, model::Action};

    fn rec(action: Action, pid: u32, thread: &str) -> Record {
        let (src, dst) = ("127.0.0.1:40000", Some("127.0.0.1:5000"));
        record(action, (pid, pid + 1, thread), src, dst)
    }

    const ALL: [Action; 7] = [
        Action::Connect,
        Action::Established,
        Action::Close,
        Action::TimeWait,
        Action::ConnectFailed,
        Action::Bind,
        Action::BindFailed,
    ];

    #[test]
    fn no_filter_keeps_everything() {
        let f = Filter::default();
        for a in ALL {
            assert!(f.accepts(&rec(a, 7, "worker"), "app"), "{a:?}");
        }
        assert!(
            f.accepts(&rec(Action::Connect, 0, ""), ""),
            "unknown owner too"
        );
    }

    #[test]
    fn pid_keeps_only_that_process() {
        let f = Filter {
            pid: Some(1234),
            ..Filter::default()
        };
        for a in ALL {
            assert!(f.accepts(&rec(a, 1234, "app"), "app"), "{a:?}");
            assert!(!f.accepts(&rec(a, 1235, "app"), "app"), "{a:?}");
            assert!(!f.accepts(&rec(a, 0, "app"), "app"), "{a:?}");
        }
        // The thread id is not the process id: a record of thread 1234 of process 1233
        // is not process 1234's.
        let mut r = rec(Action::Connect, 1233, "app");
        r.process.tid = 1234;
        assert!(!f.accepts(&r, "app"));
    }

    #[test]
    fn comm_matches_the_process_name_or_the_thread_name_exactly() {
        let f = Filter {
            comm: Some("nginx".into()),
            ..Filter::default()
        };
        // The process name.
        assert!(f.accepts(&rec(Action::Connect, 7, "worker-3"), "nginx"));
        // The thread's name, when the process has another.
        assert!(f.accepts(&rec(Action::Connect, 7, "nginx"), "launcher"));
        // Neither.
        assert!(!f.accepts(&rec(Action::Connect, 7, "worker-3"), "launcher"));
        // Whole names only: no prefix, suffix or case folding.
        assert!(!f.accepts(&rec(Action::Connect, 7, "nginx2"), "nginx2"));
        assert!(!f.accepts(&rec(Action::Connect, 7, "ngin"), "ngin"));
        assert!(!f.accepts(&rec(Action::Connect, 7, "NGINX"), "NGINX"));
        assert!(!f.accepts(&rec(Action::Connect, 7, ""), ""));
    }

    #[test]
    fn failures_only_keeps_connect_failed_and_bind_failed() {
        let f = Filter {
            failures_only: true,
            ..Filter::default()
        };
        let kept: Vec<Action> = ALL
            .into_iter()
            .filter(|&a| f.accepts(&rec(a, 7, "app"), "app"))
            .collect();
        assert_eq!(kept, [Action::ConnectFailed, Action::BindFailed]);
    }

    #[test]
    fn every_condition_must_hold() {
        let f = Filter {
            pid: Some(42),
            comm: Some("curl".into()),
            failures_only: true,
        };
        assert!(f.accepts(&rec(Action::ConnectFailed, 42, "curl"), "curl"));
        assert!(!f.accepts(&rec(Action::Connect, 42, "curl"), "curl"));
        assert!(!f.accepts(&rec(Action::ConnectFailed, 43, "curl"), "curl"));
        assert!(!f.accepts(&rec(Action::ConnectFailed, 42, "wget"), "wget"));
    }
}

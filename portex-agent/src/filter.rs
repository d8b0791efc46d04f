//! Which records a user asked to see (`--pid`, `--comm`, `--failures-only`). Pure.
use crate::model::Record;

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub failures_only: bool,
}

impl Filter {
    /// `process_name` is the resolved process name; `--comm` matches it or the thread's.
    pub fn accepts(&self, r: &Record, process_name: &str) -> bool {
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

//! For tests that need environment variables (the agent's `PORTEX_*` settings, which
//! clap reads from the process environment): one such test at a time, and the
//! variables removed afterwards, even when the test fails.
use std::{panic::AssertUnwindSafe, sync::Mutex};

static LOCK: Mutex<()> = Mutex::new(());

/// Runs `f` with `vars` (all `PORTEX_*`) set.
pub(crate) fn with_vars<R>(vars: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in vars {
        assert!(k.starts_with("PORTEX_"), "{k}");
        // SAFETY: setenv is unsound while another thread reads the environment through
        // libc. These unit tests read it only through std (which serialises it with its
        // own lock), only PORTEX_* variables are set, and every test that sets or
        // reads them holds LOCK.
        unsafe { std::env::set_var(k, v) };
    }
    let res = std::panic::catch_unwind(AssertUnwindSafe(f));
    for (k, _) in vars {
        // SAFETY: as above.
        unsafe { std::env::remove_var(k) };
    }
    res.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

//! Processes and conditions: running a command, CPU and memory of a pid, signals,
//! waiting for a child or a condition, a child killed on drop.
use std::{
    io,
    process::{Child, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

/// Runs `cmd` to its end; an error names the command and says what it printed on
/// stderr when it failed.
pub fn try_run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::other(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    Ok(())
}

/// The same, panicking.
pub fn run(cmd: &mut Command) {
    try_run(cmd).unwrap_or_else(|e| panic!("{e}"));
}

/// CPU time (user + system) of a process, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime); `after` starts at field 3.
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// CPU time (user + system) of a process, in milliseconds.
pub fn cpu_ms(pid: u32) -> f64 {
    // SAFETY: sysconf is always safe.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    cpu_ticks(pid) as f64 * 1000.0 / hz
}

/// The number after `field` (e.g. "VmHWM:", "Threads:") in /proc/PID/status; 0 when
/// there is none.
pub fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

/// The anonymous part of `pid`'s resident set in KiB: what it allocated (heap, stacks),
/// without the pages of its executable and libraries, which do not grow with the load
/// (a debug build's own code is about 22 MiB of them).
pub fn anon_rss_kib(pid: u32) -> u64 {
    status_field(pid, "RssAnon:")
}

/// Sends `sig` to process `pid` (a child of ours).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill() with a pid and a signal number has no memory effects.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Waits for `cond` until `timeout`; true when it held.
pub fn wait_for(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_for_every(timeout, Duration::from_millis(50), cond)
}

fn wait_for_every(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        thread::sleep(every);
    }
}

/// Waits up to `timeout` for `child` to exit: its status, or None while it still runs.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_for_every(timeout, Duration::from_millis(10), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// A child process, killed and reaped on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on at the moment (the kernel picks it).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One thread of another process held stopped (ptrace seize + interrupt: only that
/// thread stops, the rest of the process runs on) until dropped. Dropped on the thread
/// that stopped it: ptrace belongs to the tracing thread.
pub struct ThreadStopped {
    tid: i32,
}

impl ThreadStopped {
    /// Stops the thread named `comm` of process `pid`, waiting up to 10 s for it to
    /// have that name (a new thread names itself when it first runs).
    pub fn named(pid: u32, comm: &str) -> io::Result<ThreadStopped> {
        let mut tid = None;
        wait_for(Duration::from_secs(10), || {
            tid = thread_named(pid, comm);
            tid.is_some()
        });
        let tid =
            tid.ok_or_else(|| io::Error::other(format!("no thread {comm} in process {pid}")))?;
        // SAFETY: ptrace requests on a thread id with null address and data.
        let seized = unsafe {
            libc::ptrace(
                libc::PTRACE_SEIZE,
                tid,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if seized != 0 {
            return Err(io::Error::last_os_error());
        }
        let stopped = ThreadStopped { tid };
        // SAFETY: as above, on the thread just seized.
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_INTERRUPT,
                tid,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut status = 0;
        // SAFETY: waits for the tracee to report its stop; `status` is a valid pointer.
        if unsafe { libc::waitpid(tid, &mut status, libc::__WALL) } != tid {
            return Err(io::Error::last_os_error());
        }
        Ok(stopped)
    }
}

impl Drop for ThreadStopped {
    fn drop(&mut self) {
        // SAFETY: detaching the thread this tracer seized; it runs on.
        unsafe {
            libc::ptrace(
                libc::PTRACE_DETACH,
                self.tid,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
    }
}

/// The id of the thread named `comm` of process `pid`.
fn thread_named(pid: u32, comm: &str) -> Option<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .and_then(|t| t.file_name().to_str()?.parse().ok())
}

//! Helper processes that print fact lines: the driver run inside a namespace to its end,
//! or held (any helper that says "ready" and holds its sockets until stdin closes).
use std::{
    io::{self, BufRead, BufReader, Write},
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use crate::{Netns, driver_bin, wait_exit};

/// What a helper printed: its pid and its fact lines.
pub struct Driven {
    pub pid: u32,
    pub lines: Vec<String>,
}

impl Driven {
    /// The words after `prefix` on each line that starts with it.
    pub fn facts(&self, prefix: &str) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|s| s.trim().to_string())
            .collect()
    }
    /// The ports of the socket addresses after `prefix` (e.g. "connect ok "), sorted.
    pub fn ports(&self, prefix: &str) -> Vec<u64> {
        let mut ports: Vec<u64> = self
            .facts(prefix)
            .iter()
            .map(|a| a.parse::<std::net::SocketAddr>().unwrap().port() as u64)
            .collect();
        ports.sort();
        ports
    }
}

/// A helper that has said "ready" and holds what it made; it exits when this is dropped
/// (stdin closed; killed if it has not exited 10 s later).
pub struct Held {
    child: Child,
    out: BufReader<ChildStdout>,
    /// The lines it printed before "ready"; its pid is from its `pid N` line, or else
    /// the child's (the wrappers used, `ip netns exec` and `setpriv`, exec it in place).
    pub driven: Driven,
}

impl Held {
    /// Starts `cmd` with stdin and stdout piped and reads its lines up to "ready".
    pub fn start(cmd: &mut Command) -> io::Result<Held> {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            if out.read_line(&mut l).unwrap_or(0) == 0 {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "{cmd:?} ended before it was ready: {lines:?}"
                )));
            }
            let l = l.trim_end().to_string();
            if l == "ready" {
                break;
            }
            lines.push(l);
        }
        let pid = lines
            .iter()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|p| p.parse().ok())
            .unwrap_or(child.id());
        Ok(Held {
            child,
            out,
            driven: Driven { pid, lines },
        })
    }

    /// For a driver started with `after-go` (`Netns::spawn_paused`): lets it run to its
    /// end; every fact line it printed (the pid line included).
    pub fn go(mut self) -> Driven {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").expect("telling the driver to go");
        drop(stdin);
        let mut lines = std::mem::take(&mut self.driven.lines);
        let mut l = String::new();
        while self.out.read_line(&mut l).unwrap_or(0) > 0 {
            lines.push(l.trim_end().to_string());
            l.clear();
        }
        let status = self.child.wait().expect("waiting for the driver");
        assert!(status.success(), "driver failed: {lines:?}");
        Driven {
            pid: self.driven.pid,
            lines,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        if wait_exit(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Netns {
    /// `driver --netns NAME`: the driver, to be given its arguments, inside this
    /// namespace (it enters it itself).
    pub fn driver(&self) -> Command {
        let mut cmd = Command::new(driver_bin());
        cmd.arg("--netns").arg(&self.name);
        cmd
    }

    /// Runs the driver inside this namespace; returns its pid and its fact lines.
    pub fn drive(&self, args: &[&str]) -> Driven {
        let out = self
            .driver()
            .args(args)
            .output()
            .expect("running the driver");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "driver {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<String> = stdout.lines().map(String::from).collect();
        let pid = lines
            .iter()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|p| p.parse().ok())
            .expect("driver printed no pid");
        Driven { pid, lines }
    }

    /// Starts the driver inside this namespace and waits for its "ready" line; it holds
    /// its sockets until the returned guard is dropped (stdin closed).
    pub fn spawn(&self, args: &[&str]) -> Held {
        Held::start(self.driver().args(args)).unwrap_or_else(|e| panic!("starting the driver: {e}"))
    }

    /// Starts `driver --netns NAME after-go ARGS...`: it has printed its pid and waits
    /// for `Held::go` before it makes any socket (so a test can start `portex watch
    /// --pid` on it first).
    pub fn spawn_paused(&self, args: &[&str]) -> Held {
        let mut all = vec!["after-go"];
        all.extend_from_slice(args);
        self.spawn(&all)
    }
}

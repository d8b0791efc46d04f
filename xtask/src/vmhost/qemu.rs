//! The guest booted under QEMU's TCG (no usable KVM: kernel-facts.md), its serial port
//! written to a log file that is followed while it runs (result lines are shown as
//! they come), killed at the hard timeout, and in any case when xtask ends: the child
//! dies with its parent (PR_SET_PDEATHSIG) even when xtask is killed.
use std::{
    fs,
    io::Read,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// How the boot ended.
pub(super) struct Boot {
    /// The guest powered off by itself (the check unit's SuccessAction/FailureAction).
    pub powered_off: bool,
    /// Seconds from start to the guest's first result line, if any.
    pub to_first_line: Option<f64>,
    pub total: f64,
}

pub(super) struct Machine<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub disk: &'a Path,
}

/// Boots `m`, its serial port into `serial_log` and QEMU's own messages into `qemu_log`.
pub(super) fn boot(
    m: &Machine,
    serial_log: &Path,
    qemu_log: &Path,
    limit: Duration,
) -> Result<Boot> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "2G",
    ])
    .args([
        "-nic",
        "none",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ])
    // No display adapter: its driver's probe is seconds of a TCG boot, for nothing.
    .args(["-vga", "none"])
    .arg("-kernel")
    .arg(m.kernel)
    .arg("-initrd")
    .arg(m.initrd)
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", m.disk.display()))
    .args(["-append", "root=/dev/vda rw console=ttyS0 panic=-1"])
    .stdin(Stdio::null())
    .stdout(fs::File::create(serial_log)?)
    .stderr(fs::File::create(qemu_log)?);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let child = cmd.spawn().context("running qemu-system-x86_64")?;
    let mut qemu = portex_e2e::KillOnDrop(child);
    let mut follow = Follow::new(serial_log)?;
    let mut to_first_line = None;
    let powered_off = loop {
        for line in follow.new_lines()? {
            if let Some(at) = line.find("VMHOST ") {
                to_first_line.get_or_insert(started.elapsed().as_secs_f64());
                eprintln!(
                    "vmhost: [{:>3.0} s] {}",
                    started.elapsed().as_secs_f64(),
                    line[at..].trim_end()
                );
            }
        }
        if let Some(status) = qemu.0.try_wait()? {
            if !status.success() {
                let err = fs::read_to_string(qemu_log).unwrap_or_default();
                anyhow::bail!("qemu-system-x86_64 exited with {status}: {}", err.trim());
            }
            break true;
        }
        if started.elapsed() >= limit {
            // Dropping `qemu` kills it.
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(qemu);
    Ok(Boot {
        powered_off,
        to_first_line,
        total: started.elapsed().as_secs_f64(),
    })
}

/// The complete lines appended to a file since the last call.
struct Follow {
    file: fs::File,
    pending: Vec<u8>,
}

impl Follow {
    fn new(path: &Path) -> Result<Follow> {
        Ok(Follow {
            file: fs::File::open(path)?,
            pending: Vec::new(),
        })
    }

    fn new_lines(&mut self) -> Result<Vec<String>> {
        let mut chunk = Vec::new();
        self.file.read_to_end(&mut chunk)?;
        self.pending.extend_from_slice(&chunk);
        let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let complete: Vec<u8> = self.pending.drain(..=end).collect();
        Ok(String::from_utf8_lossy(&complete)
            .lines()
            .map(str::to_owned)
            .collect())
    }
}

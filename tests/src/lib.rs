//! Harness for the privileged end-to-end tests, shared with xtask's benchmark and soak: a
//! network namespace that removes itself, helper processes (the socket driver, xtask's
//! workloads) run inside one, the real `portex` binary run as a child, /proc, BPF
//! descriptors and metrics scrapes.
//!
//! Tracepoints see the whole machine, so every assertion filters portex's output by the
//! driver's pid; every namespace and process is removed on every path (Drop).
//!
//! The tests want a failed step to panic with its reason; xtask wants an error it can
//! report and, in its load loops, survive. So where both call a step, `try_x` returns an
//! `io::Result` and `x` panics with the same message: one implementation of each.
mod bpf;
mod driver;
#[cfg(feature = "schema")]
mod events;
mod fs;
mod metrics;
mod netns;
#[cfg(feature = "schema")]
mod oracle;
#[cfg(feature = "schema")]
mod portex;
mod procs;
mod sockets;
mod unit;

pub use bpf::*;
pub use driver::*;
#[cfg(feature = "schema")]
pub use events::*;
pub use fs::*;
pub use metrics::*;
pub use netns::*;
#[cfg(feature = "schema")]
pub use oracle::*;
#[cfg(feature = "schema")]
pub use portex::*;
pub use procs::*;
pub use serde_json::Value;
pub use sockets::*;
pub use unit::*;

use std::{io, path::PathBuf, process::Command, sync::OnceLock};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    tests
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// Builds the `portex` binary (nested cargo build: quick when fresh), debug or release,
/// and returns its path.
pub fn build_portex(release: bool) -> io::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).arg("build");
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .args(["-q", "-p", "portex-agent", "--bin", "portex"])
        .status()
        .map_err(|e| io::Error::other(format!("running cargo build for portex: {e}")))?;
    if !status.success() {
        return Err(io::Error::other("building portex failed"));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(workspace_root().join("target"));
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("portex"))
}

/// The debug portex binary, built once per test run.
/// PORTEX_BIN names a prebuilt binary instead (the kernel matrix runs the release
/// build inside guests that have no cargo).
pub fn portex_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("PORTEX_BIN") {
        Some(p) => PathBuf::from(p),
        None => build_portex(false).unwrap_or_else(|e| panic!("{e}")),
    })
    .clone()
}

/// The driver, built by cargo beside the test executables (target/<profile>/).
pub fn driver_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("portex-e2e-driver")
}

/// A copy of `bin` that any user can execute: the tests run portex and the driver as
/// uid 65534, and a checkout under a private directory (such as /root) is not
/// reachable for that user.
pub fn public_copy(bin: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("portex-e2e-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a directory for public binaries");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dst = dir.join(bin.file_name().expect("a binary name"));
    // Copy to a temporary name and rename: tests running in parallel may race here.
    let tmp = dir.join(format!(
        "{}.{:?}",
        bin.file_name().unwrap().to_string_lossy(),
        std::thread::current().id()
    ));
    std::fs::copy(bin, &tmp).expect("copying a binary");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &dst).expect("placing a binary");
    dst
}

/// The flags of `setpriv` that run a command as uid and gid 65534 (nobody) without
/// supplementary groups.
pub const SETPRIV_NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

pub fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a privileged test may go on. Tests built without root or with
/// PORTEX_SKIP_PRIVILEGED=1 are marked ignored at build time (tests/build.rs) and never
/// get here; a test binary built as root but run as another user fails loudly.
pub fn require_root() -> bool {
    assert!(
        is_root(),
        "the end-to-end tests load eBPF programs and need root \
         (build with PORTEX_SKIP_PRIVILEGED=1 to have them reported as ignored)"
    );
    true
}

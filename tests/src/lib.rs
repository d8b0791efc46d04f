//! Harness for the privileged end-to-end tests: a network namespace that removes itself,
//! the real `portex` binary run as a child, and the driver that makes real sockets.
//!
//! Tracepoints see the whole machine, so every assertion filters portex's output by the
//! driver's pid; every namespace and portex process is removed on every path (Drop).
mod events;
mod netns;
mod portex;
mod procs;

pub use events::*;
pub use netns::*;
pub use portex::*;
pub use procs::*;
pub use serde_json::Value;

use std::{path::PathBuf, process::Command, sync::OnceLock};

/// The portex binary, built once per test run (nested cargo build: quick when fresh).
pub fn portex_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "-q", "-p", "portex-agent", "--bin", "portex"])
            .status()
            .expect("running cargo build for portex");
        assert!(status.success(), "building portex failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or(root.join("target"));
        target.join("debug").join("portex")
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

pub(crate) fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
mod extra;
pub use extra::*;

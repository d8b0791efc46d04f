//! Privileged tests are reported as ignored, not as passed, where they cannot run: when
//! the tests are built by a user other than root, or with PORTEX_SKIP_PRIVILEGED=1.
//! Each such test carries `#[cfg_attr(portex_unprivileged, ignore = "...")]`.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(portex_unprivileged)");
    println!("cargo:rerun-if-env-changed=PORTEX_SKIP_PRIVILEGED");
    let skip = std::env::var("PORTEX_SKIP_PRIVILEGED").is_ok_and(|v| v == "1");
    // SAFETY: no arguments.
    let root = unsafe { libc::geteuid() } == 0;
    if skip || !root {
        println!("cargo:rustc-cfg=portex_unprivileged");
    }
}

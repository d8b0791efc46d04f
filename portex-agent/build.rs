//! Builds the eBPF object (portex-ebpf) for the bpf target with aya-build, so that
//! `cargo build` produces one self-contained binary. AYA_BUILD_SKIP=1 skips it for
//! builds that only need the pure-Rust parts; the binary then refuses to load.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../portex-ebpf");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo:rustc-cfg=portex_no_ebpf");
    }
    println!("cargo::rustc-check-cfg=cfg(portex_no_ebpf)");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "portex-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

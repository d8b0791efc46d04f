//! `cargo xtask bench-writer [--quick] [--out F]`: the NDJSON writer's micro-benchmark
//! (portex-agent/benches/ndjson_writer.rs: the hand-written writer against serde_json
//! on the same records). It runs as a cargo bench, optimised like the release binary,
//! not inside xtask (a debug build); needs no root. JSON: target/bench/writer.json.
use anyhow::{Result, bail};

pub fn run(args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(crate::root())
        .args([
            "bench",
            "-q",
            "-p",
            "portex-agent",
            "--bench",
            "ndjson_writer",
            "--",
        ])
        .args(args)
        .status()?;
    if !status.success() {
        bail!("the writer benchmark failed");
    }
    Ok(())
}

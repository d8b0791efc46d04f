//! `cargo xtask ...`: setup, benchmarks, and the workloads they run.
mod bench;
mod churn;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask <command>\n\
         \x20 setup                      install what a fresh machine lacks (scripts/setup.sh)\n\
         \x20 bench [--quick] [--out F]  interleaved A/B benchmark (root); writes JSON\n\
         \x20 churn ...                  the connection churn generator (used by bench)\n\
         \x20 syscalls ...               the syscall-heavy workload (used by bench)"
    );
    std::process::exit(2)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Flag value lookup for the internal subcommands: --name VALUE.
fn val<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match val(args, name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: not a number: {v}")),
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]).to_vec();
    match args.first().map(String::as_str) {
        Some("setup") => {
            let ok = std::process::Command::new("bash")
                .arg(root().join("scripts/setup.sh"))
                .status()?
                .success();
            if !ok {
                bail!("setup failed");
            }
        }
        Some("bench") => {
            // SAFETY: no arguments.
            if unsafe { libc::geteuid() } != 0 {
                bail!(
                    "the benchmark loads eBPF programs and creates network namespaces: run it as root"
                );
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = std::process::Command::new(cargo)
                .current_dir(root())
                .args([
                    "build",
                    "--release",
                    "-q",
                    "-p",
                    "portex-agent",
                    "--bin",
                    "portex",
                ])
                .status()?
                .success();
            if !ok {
                bail!("building portex failed");
            }
            let portex = root().join("target/release/portex");
            let out = val(&rest, "--out")
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("target/bench/bench.json"));
            bench::run(
                bench::Opts {
                    quick: rest.iter().any(|a| a == "--quick"),
                    out,
                },
                &portex,
            )?;
        }
        Some("churn") => churn::run(churn::Opts {
            netns: val(&rest, "--netns").map(String::from),
            ip: val(&rest, "--ip")
                .unwrap_or("127.0.0.1")
                .parse()
                .context("--ip")?,
            ports: num(&rest, "--ports", 8)?,
            client_closes: rest.iter().any(|a| a == "--client-closes"),
            requests: num(&rest, "--requests", 1)?,
            threads: num(&rest, "--threads", 4)?,
            seconds: num(&rest, "--seconds", 3.0)?,
        })?,
        Some("syscalls") => {
            churn::syscalls(num(&rest, "--threads", 2)?, num(&rest, "--seconds", 3.0)?)
        }
        Some("failures") => churn::failures(
            val(&rest, "--netns").context("--netns")?,
            num(&rest, "--count", 20)?,
            num(&rest, "--gap-ms", 5)?,
        )?,
        Some("fill-time-wait") => churn::fill_time_wait(
            val(&rest, "--netns").context("--netns")?,
            num(&rest, "--count", 10_000)?,
            4,
        )?,
        _ => usage(),
    }
    Ok(())
}

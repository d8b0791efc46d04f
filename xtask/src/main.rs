//! `cargo xtask ...`: setup, lints, benchmarks, and the workloads they run.
mod bench;
mod churn;
mod clippy;
mod dist;
mod kernels;
mod man;
mod nat_fill;
mod soak;
mod vmhost;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask <command>\n\
         \x20 setup                      install what a fresh machine lacks (scripts/setup.sh)\n\
         \x20 clippy                     clippy -D warnings: host crates, then portex-ebpf for bpf\n\
         \x20 man [--out DIR]            man pages from the command-line definition (target/man)\n\
         \x20 dist [--check] [--no-deb] [--no-image]\n\
         \x20                            release artifacts in target/dist: static binary, tarball,\n\
         \x20                            .deb, OCI image, SHA256SUMS; --check (root) installs and\n\
         \x20                            runs each (README \"Install\")\n\
         \x20 vmhost [--kernel K] [--timeout SECS] [--keep-disk]\n\
         \x20                            the unit and the image of target/dist proven in a Debian\n\
         \x20                            VM with systemd and podman under QEMU (root; after\n\
         \x20                            dist; debootstrap cached in target/vmhost; README\n\
         \x20                            \"Install\"); K: bookworm (6.1, default) or\n\
         \x20                            bookworm-backports (6.12)\n\
         \x20 bench [--quick] [--only SECTION,...] [--out F]\n\
         \x20                            interleaved A/B benchmark (root); writes JSON;\n\
         \x20                            sections: churn syscalls status failures exhaustion\n\
         \x20                            memory nat\n\
         \x20 bench-writer [--quick] [--out F]\n\
         \x20                            the NDJSON writer against serde_json on the same\n\
         \x20                            records (ns/line, bytes/line); writes JSON\n\
         \x20 kernels [--quick] [--only NAME,...]\n\
         \x20                            the kernel matrix: Debian's kernels booted under QEMU,\n\
         \x20                            each running portex and core end-to-end checks (root;\n\
         \x20                            names: host 5.10 6.1 6.12-bpo 6.12 7.2)\n\
         \x20 soak [--quick] [--minutes M] [--out F]\n\
         \x20                            the agent under connection, process and namespace\n\
         \x20                            churn for M minutes (30; quick: 3) (root); writes JSON\n\
         \x20 churn ...                  the connection churn generator (used by bench)\n\
         \x20 syscalls ...               the syscall-heavy workload (used by bench)\n\
         \x20 nat-fill ...               UDP datagrams that fill a NAT gateway's conntrack (bench)\n\
         \x20 soak-server, soak-client   the soak's server and short-lived client processes"
    );
    std::process::exit(2)
}

fn root() -> PathBuf {
    portex_e2e::workspace_root()
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

/// As root, builds the release `portex` for `what` (bench, soak) and returns its path.
fn build_release(what: &str) -> Result<PathBuf> {
    if !portex_e2e::is_root() {
        bail!("{what} loads eBPF programs and creates network namespaces: run it as root");
    }
    Ok(portex_e2e::build_portex(true)?)
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
        Some("clippy") => clippy::run()?,
        Some("man") => man::run(val(&rest, "--out").map(PathBuf::from))?,
        Some("dist") => {
            let known = ["--check", "--no-deb", "--no-image"];
            if let Some(bad) = rest.iter().find(|a| !known.contains(&a.as_str())) {
                bail!("dist: unknown argument {bad} (known: {})", known.join(" "));
            }
            let has = |flag: &str| rest.iter().any(|a| a == flag);
            dist::run(dist::Opts {
                check: has("--check"),
                deb: !has("--no-deb"),
                image: !has("--no-image"),
            })?
        }
        Some("vmhost") => {
            let keep_disk = rest.iter().any(|a| a == "--keep-disk");
            let valued: Vec<&String> = rest.iter().filter(|a| *a != "--keep-disk").collect();
            if !valued
                .chunks(2)
                .all(|c| c.len() == 2 && ["--timeout", "--kernel"].contains(&c[0].as_str()))
            {
                bail!(
                    "vmhost: usage: cargo xtask vmhost [--kernel bookworm|bookworm-backports] [--timeout SECS] [--keep-disk]"
                );
            }
            vmhost::run(vmhost::Opts {
                kernel: vmhost::Kernel::parse(val(&rest, "--kernel").unwrap_or("bookworm"))?,
                timeout: std::time::Duration::from_secs(num(&rest, "--timeout", 600)?),
                keep_disk,
            })?
        }
        Some("bench") => {
            let portex = build_release("the benchmark")?;
            let out = val(&rest, "--out")
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("target/bench/bench.json"));
            bench::run(
                bench::Opts {
                    quick: rest.iter().any(|a| a == "--quick"),
                    only: val(&rest, "--only").map(|s| s.split(',').map(String::from).collect()),
                    out,
                },
                &portex,
            )?;
        }
        Some("bench-writer") => bench::writer::run(&rest)?,
        Some("kernels") => {
            let known = ["--quick", "--only"];
            if let Some(bad) = rest
                .iter()
                .filter(|a| a.starts_with("--"))
                .find(|a| !known.contains(&a.as_str()))
            {
                bail!(
                    "kernels: unknown argument {bad} (known: {})",
                    known.join(" ")
                );
            }
            let portex = build_release("the kernel matrix")?;
            kernels::run(
                kernels::Opts {
                    only: val(&rest, "--only").map(|s| s.split(',').map(String::from).collect()),
                    quick: rest.iter().any(|a| a == "--quick"),
                },
                &portex,
            )?;
        }
        Some("soak") => {
            let portex = build_release("the soak test")?;
            let minutes = match val(&rest, "--minutes") {
                Some(_) => Some(num(&rest, "--minutes", 30.0)?),
                None => None,
            };
            soak::run(
                soak::Opts {
                    quick: rest.iter().any(|a| a == "--quick"),
                    minutes,
                    out: val(&rest, "--out")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| root().join("target/bench/soak.json")),
                },
                &portex,
            )?;
        }
        Some("soak-server") => soak::load::serve(val(&rest, "--netns").context("--netns")?)?,
        Some("soak-client") => soak::load::client_main(
            val(&rest, "--netns").context("--netns")?,
            num(&rest, "--conns", 4)?,
            rest.iter().any(|a| a == "--hold"),
        )?,
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
        Some("exhaust-loop") => churn::exhaust_loop(
            val(&rest, "--netns").context("--netns")?,
            num(&rest, "--per-round", 40)?,
            num(&rest, "--seconds", 10.0)?,
        )?,
        Some("nat-fill") => nat_fill::run(nat_fill::Opts {
            netns: val(&rest, "--netns").context("--netns")?.to_string(),
            src: val(&rest, "--src")
                .context("--src")?
                .parse()
                .context("--src")?,
            dest: val(&rest, "--dest")
                .context("--dest")?
                .parse()
                .context("--dest")?,
            dports: nat_fill::parse_ports(val(&rest, "--dports").context("--dports")?)?,
            count: num(&rest, "--count", 100_000)?,
            first_port: num(&rest, "--first-port", 20_000)?,
        })?,
        Some("fill-time-wait") => churn::fill_time_wait(
            val(&rest, "--netns").context("--netns")?,
            num(&rest, "--count", 10_000)?,
            4,
        )?,
        _ => usage(),
    }
    Ok(())
}

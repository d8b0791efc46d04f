//! `cargo xtask kernels`: the kernel matrix. Each kernel of `table::KERNELS` is fetched
//! from Debian's mirror, booted under virtme-ng (QEMU, TCG: KVM is not usable here)
//! with the host's filesystem, and made to run the release `portex` and a set of the
//! end-to-end tests; the host's own kernel runs the same set directly. One line per
//! kernel, a results file (target/kernels/results.json) and the table README.md's
//! "Supported kernels" section shows (target/kernels/table.md). Any kernel whose
//! programs differ from the table's expectation, or whose checks fail, fails the run.
mod fetch;
mod guest;
mod report;
mod table;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use report::KernelResult;
use table::{CORE, HEAVY, KERNELS, PROGRAMS};

pub struct Opts {
    /// Kernel names to run (None: all, and the host's).
    pub only: Option<Vec<String>>,
    /// Core checks only, on every kernel.
    pub quick: bool,
}

/// Where fetched kernels are kept between runs: outside the checkout, so that a fresh
/// clone on the same machine finds them, and not under /var/cache, which virtme-ng
/// hides behind a tmpfs in the guest (the guest's modprobe would find no module, and
/// each sock_diag dump then waits seconds on the kernel's failed module requests).
fn cache_dir() -> PathBuf {
    std::env::var_os("PORTEX_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/portex/kernels"))
}

/// Builds the end-to-end test executables once; (test target name, executable).
fn build_tests() -> Result<Vec<(String, PathBuf)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(crate::root())
        .args([
            "test",
            "-p",
            "portex-e2e",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the end-to-end tests")?;
    if !out.status.success() {
        bail!("building the end-to-end tests failed");
    }
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str())
        else {
            continue;
        };
        if v["target"]["kind"][0] == "test" {
            tests.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(tests)
}

/// One kernel's line as soon as it is known, kept for the results file.
fn report(results: &mut Vec<KernelResult>, r: KernelResult) {
    println!("{}", r.line());
    results.push(r);
}

pub fn run(opts: Opts, portex: &Path) -> Result<()> {
    let wanted = |name: &str| {
        opts.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == name))
    };
    let tests = build_tests()?;
    let results_dir = crate::root().join("target/kernels");
    std::fs::create_dir_all(&results_dir)?;
    let cache = cache_dir();
    let kernels: Vec<_> = KERNELS.iter().filter(|k| wanted(k.name)).collect();
    let apt = if kernels.is_empty() {
        None
    } else {
        let suites: Vec<&str> = kernels.iter().map(|k| k.suite).collect();
        Some(fetch::Apt::new(&cache, &suites)?)
    };
    let started = Instant::now();
    let mut results = Vec::new();
    if wanted("host") {
        let plan = guest::Plan {
            portex,
            tests: &tests,
            checks: CORE
                .iter()
                .chain(if opts.quick { &[][..] } else { HEAVY })
                .copied()
                .collect(),
            expect_programs: PROGRAMS,
        };
        let out = guest::out_dir(&results_dir, "host");
        let t = Instant::now();
        let run = guest::run(&plan, None, &out, Duration::from_secs(1200));
        let r = KernelResult::read(
            "host",
            "host",
            "-",
            &[],
            &plan,
            &out,
            run.err(),
            t.elapsed(),
        );
        report(&mut results, r);
    }
    for k in kernels {
        let t = Instant::now();
        let fetched = apt.as_ref().unwrap().fetch(&cache, k.suite);
        let (version, vmlinuz) = match fetched {
            Ok(f) => (f.version, f.vmlinuz),
            Err(e) => {
                report(
                    &mut results,
                    KernelResult::failed(k.name, k.suite, format!("{e:#}")),
                );
                continue;
            }
        };
        let heavy = k.heavy && !opts.quick;
        let plan = guest::Plan {
            portex,
            tests: &tests,
            checks: CORE
                .iter()
                .chain(if heavy { HEAVY } else { &[][..] })
                .copied()
                .collect(),
            expect_programs: PROGRAMS - k.not_loaded.len(),
        };
        let out = guest::out_dir(&results_dir, k.name);
        let mut run = guest::run(&plan, Some(&vmlinuz), &out, Duration::from_secs(900));
        if let Err(e) = &run {
            // The guest itself did not come through (a boot that hung, a VM starved by
            // its host): booted once more, said so. A check that failed is never rerun.
            eprintln!("kernels: {}: {e:#}; booting it once more", k.name);
            run = guest::run(&plan, Some(&vmlinuz), &out, Duration::from_secs(900));
        }
        let r = KernelResult::read(
            k.name,
            k.suite,
            &version,
            k.not_loaded,
            &plan,
            &out,
            run.err(),
            t.elapsed(),
        );
        report(&mut results, r);
    }
    report::write(&results_dir, &results)?;
    println!(
        "kernels: {} of {} passed in {} s; results in {}",
        results.iter().filter(|r| r.ok()).count(),
        results.len(),
        started.elapsed().as_secs(),
        results_dir.join("results.json").display()
    );
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        for r in results.iter().filter(|r| !r.ok()) {
            r.explain();
        }
        bail!("the kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}

//! One kernel's run: a script that runs the checks and leaves its results in a
//! directory, booted under virtme-ng (the host's filesystem, read-only, with the
//! results directory writable), or run on the host's own kernel directly.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::table::Check;

/// What to run in a guest: the release binary, the test executables by name, the
/// checks, and how many programs the kernel is expected to take.
pub struct Plan<'a> {
    pub portex: &'a Path,
    pub tests: &'a [(String, PathBuf)],
    pub checks: Vec<Check>,
    pub expect_programs: usize,
}

/// The guest's script: each step writes its output and status into `out`, so that
/// nothing depends on the console (which TCG guests make slow and lossy).
fn script(plan: &Plan, out: &Path) -> Result<String> {
    let o = out.display();
    const MODULES: &str = "inet_diag tcp_diag udp_diag veth dummy nf_tables nfnetlink \
                           nf_conntrack nf_conntrack_netlink nf_nat nft_chain_nat nft_masq nft_nat \
                           nft_ct nft_reject nft_reject_inet nft_reject_ipv4";
    let p = plan.portex.display();
    let mut s = format!(
        "#!/bin/bash\n\
         # Written by `cargo xtask kernels`: runs inside the guest kernel.\n\
         uname -r > {o}/release\n\
         # The kernel's own module requests (request_module) do not reach the guest's\n\
         # modprobe under virtme-ng, so what the checks use is loaded first: sock_diag\n\
         # for TCP and UDP, veth, nftables' NAT and ctnetlink. Built-in ones just fail.\n\
         for m in {MODULES}; do modprobe -q $m; done\n\
         cat /sys/kernel/tracing/events/tcp/tcp_retransmit_skb/format > {o}/retransmit.format 2>&1\n\
         t0=$(date +%s)\n\
         timeout 180 {p} watch --duration 3 --log-level info >/dev/null 2>{o}/programs.err\n\
         echo $? $(( $(date +%s) - t0 )) > {o}/programs.rc\n"
    );
    for (i, (bin, name)) in plan.checks.iter().enumerate() {
        let exe = plan
            .tests
            .iter()
            .find(|(n, _)| n == bin)
            .map(|(_, p)| p)
            .with_context(|| format!("test executable {bin} was not built"))?;
        s += &format!(
            "t0=$(date +%s)\n\
             PORTEX_BIN={p} PORTEX_EXPECT_PROGRAMS={n} timeout 900 {exe} --exact {name} \
             --test-threads 1 >{o}/check{i}.log 2>&1\n\
             echo $? $(( $(date +%s) - t0 )) > {o}/check{i}.rc\n",
            n = plan.expect_programs,
            exe = exe.display(),
        );
    }
    s += &format!("echo done > {o}/done\n");
    Ok(s)
}

/// Runs the plan on `vmlinuz` under virtme-ng (None: on the running kernel) and
/// returns the results directory.
pub fn run(plan: &Plan, vmlinuz: Option<&Path>, out: &Path, limit: Duration) -> Result<()> {
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out)?;
    let script_path = out.join("run.sh");
    fs::write(&script_path, script(plan, out)?)?;
    let mut cmd = match vmlinuz {
        None => {
            let mut c = Command::new("bash");
            c.arg(&script_path);
            c
        }
        Some(k) => {
            let mut c = Command::new(vng());
            c.arg("--run")
                .arg(k)
                .args(["--disable-kvm", "--cpus", "2", "--memory", "2G"])
                .arg(format!("--rwdir={}", out.display()))
                .arg("--exec")
                .arg(format!("bash {}", script_path.display()));
            c
        }
    };
    let started = Instant::now();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(out.join("console.log"))?)
        .stderr(fs::File::create(out.join("console.err"))?)
        .spawn()
        .context("starting vng (pip install virtme-ng; scripts/setup.sh --kernels)")?;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            // vng's qemu is its child: no guest outlives the run.
            let _ = Command::new("pkill")
                .args(["-f", &format!("rwdir={}", out.display())])
                .status();
            bail!("the guest did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if !out.join("done").exists() {
        bail!(
            "the guest stopped before its checks finished (console: {})",
            out.join("console.err").display()
        );
    }
    Ok(())
}

/// virtme-ng's command: on PATH, or beside the python3 that pip installed it for (a
/// pyenv's shims may not be on a CI job's PATH).
fn vng() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("vng"))
        .find(|p| p.is_file());
    on_path
        .or_else(|| {
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import sys, os; print(os.path.dirname(sys.executable))",
                ])
                .output()
                .ok()?;
            let dir = String::from_utf8(out.stdout).ok()?;
            Some(PathBuf::from(dir.trim()).join("vng")).filter(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("vng"))
}

/// The status and seconds a step wrote ("rc secs").
pub fn step(out: &Path, name: &str) -> Option<(i32, u64)> {
    let s = fs::read_to_string(out.join(format!("{name}.rc"))).ok()?;
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn release(out: &Path) -> String {
    fs::read_to_string(out.join("release"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The results directory of one kernel.
pub fn out_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name.replace('/', "_"))
}

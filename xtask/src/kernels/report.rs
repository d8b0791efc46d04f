//! One kernel's results: read from the files its run left, judged against the table,
//! printed as one line, and written with the others (results.json, table.md).
use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use serde_json::json;

use super::guest::{self, Plan};

pub struct KernelResult {
    pub name: String,
    suite: String,
    version: String,
    release: String,
    /// Programs attached, from the agent's own line; None when it did not start.
    attached: Option<usize>,
    expect_attached: usize,
    not_loaded: Vec<String>,
    expect_not_loaded: Vec<String>,
    /// (test, passed, seconds)
    checks: Vec<(String, bool, u64)>,
    error: Option<String>,
    secs: u64,
    out: Option<PathBuf>,
}

impl KernelResult {
    pub fn failed(name: &str, suite: &str, error: String) -> KernelResult {
        KernelResult {
            name: name.into(),
            suite: suite.into(),
            version: String::new(),
            release: String::new(),
            attached: None,
            expect_attached: 0,
            not_loaded: Vec::new(),
            expect_not_loaded: Vec::new(),
            checks: Vec::new(),
            error: Some(error),
            secs: 0,
            out: None,
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, each a plain field"
    )]
    pub fn read(
        name: &str,
        suite: &str,
        version: &str,
        expect_not_loaded: &[&str],
        plan: &Plan,
        out: &Path,
        error: Option<anyhow::Error>,
        took: Duration,
    ) -> KernelResult {
        let err_text = fs::read_to_string(out.join("programs.err")).unwrap_or_default();
        let (attached, not_loaded) = programs(&err_text);
        let checks = plan
            .checks
            .iter()
            .enumerate()
            .map(|(i, (bin, test))| {
                let s = guest::step(out, &format!("check{i}"));
                (
                    format!("{bin}::{test}"),
                    s.is_some_and(|s| s.0 == 0),
                    s.map_or(0, |s| s.1),
                )
            })
            .collect();
        KernelResult {
            name: name.into(),
            suite: suite.into(),
            version: version.into(),
            release: guest::release(out),
            attached,
            expect_attached: plan.expect_programs,
            not_loaded,
            expect_not_loaded: expect_not_loaded.iter().map(|s| s.to_string()).collect(),
            checks,
            error: error.map(|e| format!("{e:#}")),
            secs: took.as_secs(),
            out: Some(out.to_path_buf()),
        }
    }

    pub fn ok(&self) -> bool {
        self.error.is_none()
            && self.attached == Some(self.expect_attached)
            && sorted(&self.not_loaded) == sorted(&self.expect_not_loaded)
            && !self.checks.is_empty()
            && self.checks.iter().all(|c| c.1)
    }

    fn not_loaded_text(&self) -> String {
        if self.not_loaded.is_empty() {
            "none".into()
        } else {
            self.not_loaded.join(", ")
        }
    }

    pub fn line(&self) -> String {
        let passed = self.checks.iter().filter(|c| c.1).count();
        format!(
            "kernel {:<9} {:<18} {}: programs {}/{} (not loaded: {}), checks {}/{} passed, {} s{}",
            self.name,
            self.release,
            if self.ok() { "ok" } else { "FAILED" },
            self.attached.map_or("-".into(), |a| a.to_string()),
            super::table::PROGRAMS,
            self.not_loaded_text(),
            passed,
            self.checks.len(),
            self.secs,
            self.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    }

    /// What went wrong, with the tail of each failed check's output.
    pub fn explain(&self) {
        eprintln!("--- kernel {}: {}", self.name, self.line());
        if self.attached != Some(self.expect_attached)
            || sorted(&self.not_loaded) != sorted(&self.expect_not_loaded)
        {
            eprintln!(
                "expected {} programs attached, not loaded: {:?}; the agent said:",
                self.expect_attached, self.expect_not_loaded
            );
            if let Some(out) = &self.out {
                eprintln!("{}", tail(&out.join("programs.err"), 20));
            }
        }
        for (i, c) in self.checks.iter().enumerate() {
            if !c.1
                && let Some(out) = &self.out
            {
                eprintln!(
                    "check {} failed:\n{}",
                    c.0,
                    tail(&out.join(format!("check{i}.log")), 40)
                );
            }
        }
        if self.error.is_some()
            && let Some(out) = &self.out
        {
            eprintln!("console:\n{}", tail(&out.join("console.err"), 30));
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "kernel": self.name,
            "suite": self.suite,
            "package_version": self.version,
            "release": self.release,
            "ok": self.ok(),
            "programs_attached": self.attached,
            "programs_expected": self.expect_attached,
            "not_loaded": self.not_loaded,
            "checks": self.checks.iter().map(|c| json!({"test": c.0, "passed": c.1, "seconds": c.2})).collect::<Vec<_>>(),
            "error": self.error,
            "seconds": self.secs,
        })
    }

    fn row(&self) -> String {
        let passed = self.checks.iter().filter(|c| c.1).count();
        format!(
            "| {} ({}) | {} | {}/{} | {} | {}/{} | {} s |",
            self.name,
            self.suite,
            self.release,
            self.attached.map_or("-".into(), |a| a.to_string()),
            super::table::PROGRAMS,
            self.not_loaded_text(),
            passed,
            self.checks.len(),
            self.secs
        )
    }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// From the agent's diagnostics: how many programs it attached ("(N programs
/// attached") and which it did not load ("X is not loaded (", or the syscall group).
fn programs(stderr: &str) -> (Option<usize>, Vec<String>) {
    let attached = stderr.lines().find_map(|l| {
        let (_, rest) = l.split_once(" (")?;
        let n = rest.split_once(" programs attached")?.0;
        n.parse().ok()
    });
    let mut not_loaded = Vec::new();
    for l in stderr.lines() {
        if let Some(i) = l.find(" is not loaded (") {
            let name = l[..i].rsplit(' ').next().unwrap_or_default();
            not_loaded.push(name.to_string());
        } else if l.contains("the connect/bind syscall hooks are not loaded") {
            not_loaded.extend(
                [
                    "sys_enter_connect",
                    "sys_exit_connect",
                    "sys_enter_bind",
                    "sys_exit_bind",
                ]
                .map(String::from),
            );
        }
    }
    (attached, not_loaded)
}

pub fn write(dir: &Path, results: &[KernelResult]) -> Result<()> {
    let all: Vec<_> = results.iter().map(KernelResult::json).collect();
    fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&all)?,
    )?;
    let mut table = String::from(
        "| kernel (Debian suite) | release | programs | not loaded | checks passed | time |\n|---|---|---|---|---|---|\n",
    );
    for r in results {
        table += &r.row();
        table.push('\n');
    }
    fs::write(dir.join("table.md"), table)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_lines_give_programs_attached_and_not_loaded() {
        let err = "2026-12-07T23:11:49Z  WARN portex_agent::sys::ebpf: tcp_retransmit_skb is not loaded (the verifier: invalid read); without it, x\n\
                   2026-12-07T23:11:49Z  INFO portex_agent::pipeline::run: watching TCP connect/bind/close on this host (6 programs attached, syscall hooks on); stop";
        assert_eq!(
            programs(err),
            (Some(6), vec!["tcp_retransmit_skb".to_string()])
        );
        assert_eq!(programs(""), (None, vec![]));
    }
}

//! A program the running kernel refuses costs one line, never the agent: the refused
//! optional programs are named once with the verifier's reason and what is lost, shown
//! as 0 in `portex_program_loaded` and in `status` while the agent runs, and the rest
//! keeps working; an essential program's refusal is one line and exit 1, no log dump.
//! The refusal is made with PORTEX_TEST_REFUSE (debug builds only): this kernel takes
//! every program, and the kernel matrix (`cargo xtask kernels`) checks the real ones.
use std::{process::Command, time::Duration};

use portex_e2e::*;

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn refused_optional_programs_cost_one_line_each_and_the_agent_runs_on() {
    if !require_root() {
        return;
    }
    let portex = Portex::start_wrapped(
        &["env", "PORTEX_TEST_REFUSE=tcp_retransmit_skb,sys_exit_bind"],
        &["agent", "--metrics", "127.0.0.1:0"],
    );
    let metrics = portex.metrics_addr();
    // Loaded and attached: the two other tracepoint programs.
    let ours = bpf_programs_of(portex.pid());
    assert_eq!(ours.len(), 2, "{ours:?}");
    let ns = Netns::new("refused");
    let d = ns.drive(&["client-close", "127.0.0.1:8401", "3"]);
    assert!(
        portex.wait_lines(&pid_needle(d.pid), 12),
        "events still flow: {:?}",
        portex.stderr_now()
    );
    let scrape = scrape(&metrics);
    let loaded = |p: &str| {
        scrape
            .iter()
            .find(|s| s.name == "portex_program_loaded" && s.label("program") == Some(p))
            .map(|s| s.value)
    };
    assert_eq!(loaded("inet_sock_set_state"), Some(1.0));
    assert_eq!(loaded("tcp_receive_reset"), Some(1.0));
    assert_eq!(loaded("tcp_retransmit_skb"), Some(0.0));
    // The syscall group goes whole: sys_enter_bind alone is no use.
    for p in [
        "sys_enter_connect",
        "sys_exit_connect",
        "sys_enter_bind",
        "sys_exit_bind",
    ] {
        assert_eq!(loaded(p), Some(0.0), "{p}");
    }
    // status, while the agent runs, names what it lacks.
    let out = Command::new(portex_bin()).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "tcp_retransmit_skb is not loaded (the verifier: refused by PORTEX_TEST_REFUSE"
        ),
        "{text}"
    );
    let out = Command::new(portex_bin())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused: Vec<&str> = v["running_agents"]["programs_not_loaded"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["program"].as_str())
        .collect();
    assert!(refused.contains(&"tcp_retransmit_skb"), "{v}");
    assert!(refused.contains(&"sys_exit_bind"), "{v}");

    let fin = portex.stop();
    assert_eq!(fin.code, Some(0), "{:?}", fin.stderr);
    // One line for the retransmit program, one for the syscall group, and no
    // verifier log (it goes to --log-level debug only).
    let about = |needle: &str| fin.stderr.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        about("tcp_retransmit_skb is not loaded"),
        1,
        "{:?}",
        fin.stderr
    );
    assert_eq!(
        about("the connect/bind syscall hooks are not loaded"),
        1,
        "{:?}",
        fin.stderr
    );
    assert!(
        about("stalled connects") == 1 && about("errno values other than") == 1,
        "each line says what is lost: {:?}",
        fin.stderr
    );
    assert!(fin.stderr.len() < 10, "{:?}", fin.stderr);
    wait_for(Duration::from_secs(5), || {
        let now = all_bpf_programs();
        ours.iter().all(|id| !now.contains(id))
    });
    let now = all_bpf_programs();
    assert!(ours.iter().all(|id| !now.contains(id)), "{ours:?} left");
}

#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_refused_essential_program_is_one_line_and_exit_1() {
    if !require_root() {
        return;
    }
    let out = Command::new(portex_bin())
        .env("PORTEX_TEST_REFUSE", "inet_sock_set_state")
        .args(["watch", "--duration", "5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("essential program inet_sock_set_state")
            && lines[0].contains("refused by PORTEX_TEST_REFUSE"),
        "{err}"
    );
}

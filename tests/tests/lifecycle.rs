//! The agent's own lifecycle (SIGTERM, as systemd stops it), a connection's abortive
//! close, and container attribution without Kubernetes.
use std::time::Duration;

use portex_e2e::*;

/// systemd stops the agent with SIGTERM: exit status 0, a summary whose loss headline is
/// the sum of its parts, and every program it loaded gone afterwards.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn sigterm_stops_the_agent_cleanly_and_detaches_every_program() {
    if !require_root() {
        return;
    }
    let before = all_bpf_programs();
    let portex = Portex::start(&["agent", "--syscall-hooks", "on"]);
    let pid = portex.pid();
    // Ours are the 7 of `--syscall-hooks on` (inet_sock_set_state, tcp_receive_reset,
    // tcp_retransmit_skb, connect and bind enter/exit): new since `before`, and listed
    // by bpftool. The kernel matrix sets how many an older kernel takes (its table).
    let want: usize = std::env::var("PORTEX_EXPECT_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let ours = bpf_programs_of(pid);
    assert_eq!(ours.len(), want, "{ours:?}");
    let loaded = all_bpf_programs();
    for id in &ours {
        assert!(
            !before.contains(id),
            "{id} was there before the agent: {before:?}"
        );
        assert!(
            loaded.contains(id),
            "bpftool does not list {id}: {loaded:?}"
        );
    }

    let ns = Netns::new("sigterm");
    let d = ns.drive(&["client-close", "127.0.0.1:8301", "20"]);
    // The agent has written the driver's lines before it is stopped (it may lag behind
    // on a busy host: the tracepoints see every connection of the machine).
    let arrived = portex.wait_lines(&pid_needle(d.pid), 80);
    let fin = portex.stop_with(libc::SIGTERM);
    assert_eq!(fin.code, Some(0), "{:?}", fin.stderr);
    // connect, established, close and time_wait for each of the 20 connections.
    assert!(arrived, "{}", fin.dump(d.pid));
    assert_eq!(fin.events_of(d.pid).len(), 80, "{}", fin.dump(d.pid));

    // "portex: N kernel events, M lines rendered; dropped: X (ring buffer full a, user
    // space b, undecodable c, kernel runs skipped d); socket map full e; output: ..."
    let summary = fin
        .stderr
        .iter()
        .rev()
        .find(|l| l.contains("kernel events"))
        .unwrap_or_else(|| panic!("no summary: {:?}", fin.stderr));
    let kernel_events: u64 = summary
        .strip_prefix("portex: ")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(
        kernel_events >= 40,
        "at least an ESTABLISHED and a CLOSE per connection: {summary}"
    );
    let (dropped, parts) = summary_losses(&fin.stderr).unwrap_or_else(|| panic!("{summary}"));
    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ring buffer full",
            "user space",
            "undecodable",
            "kernel runs skipped"
        ],
        "{summary}"
    );
    assert_eq!(
        dropped,
        parts.iter().map(|(_, n)| n).sum::<u64>(),
        "{summary}"
    );
    assert!(rendered(&fin.stderr) >= 80, "{summary}");

    // The process is gone, and so is every program it had loaded (freed once the
    // last reference goes, which the kernel may finish a moment after the exit).
    let mut left = Vec::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            let now = all_bpf_programs();
            left = ours.iter().filter(|id| now.contains(id)).copied().collect();
            left.is_empty()
        }),
        "programs still loaded after exit: {left:?}"
    );
}

/// SO_LINGER 0 aborts the connection with a RST: the close is a `reset` and the port is
/// free at once (no TIME_WAIT), as `ss` confirms.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_connection_closed_with_so_linger_0_is_a_reset_without_time_wait() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_range("reset", 40000, 40099);
    let portex = Portex::start(&["watch", "--json"]);
    let d = ns.drive(&["linger-reset", "127.0.0.1:8311", "5"]);
    // 5 client closes, and the server's (a server socket reset in the accept queue
    // may never be reported).
    portex.wait_lines_with(&[&pid_needle(d.pid), "\"action\":\"close\""], 5);
    let out = portex.stop();
    let truth = d.ports("connect ok ");
    assert_eq!(truth.len(), 5);
    let ev = out.events_of(d.pid);
    let client = |a: &str| -> Vec<&Value> {
        with_action(&ev, a)
            .into_iter()
            .filter(|v| v["source"]["port"] != 8311)
            .collect()
    };
    let closes = client("close");
    assert_eq!(source_ports(&closes), truth, "{}", out.dump(d.pid));
    for c in &closes {
        assert_eq!(c["portex"]["close"]["kind"], "reset", "{c}");
        assert_eq!(c["portex"]["close"]["time_wait"], false, "{c}");
        assert_eq!(c["portex"]["close"]["from_state"], "ESTABLISHED", "{c}");
        assert!(c["event"]["duration"].as_u64().is_some(), "{c}");
    }
    assert_eq!(client("connect").len(), 5, "{}", out.dump(d.pid));
    assert!(
        with_action(&ev, "time_wait").is_empty(),
        "{}",
        out.dump(d.pid)
    );
    assert_eq!(ss_count(&ns, "time-wait"), 0);
}

/// A runtime's record of a container for the length of a test: CRI-O's config.json in
/// containers/storage's run directory, with the annotations CRI-O writes.
struct CriORecord(std::path::PathBuf);

impl CriORecord {
    fn new(id: &str, annotations: Value) -> CriORecord {
        let dir = std::path::PathBuf::from("/run/containers/storage/overlay-containers").join(id);
        std::fs::create_dir_all(dir.join("userdata")).unwrap();
        let spec = serde_json::json!({"ociVersion": "1.2.0", "annotations": annotations});
        std::fs::write(dir.join("userdata/config.json"), spec.to_string()).unwrap();
        CriORecord(dir)
    }
}

impl Drop for CriORecord {
    /// Removes the record, and the directories above it that it created (only when
    /// empty: a host with CRI-O or podman keeps its own).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        for up in self.0.ancestors().skip(1).take(3) {
            let _ = std::fs::remove_dir(up);
        }
    }
}

/// A plain container (docker under a pod-like but non-Kubernetes slice) gets its
/// container id and no orchestrator; the same under kubepods gets the pod uid, and the
/// names its runtime recorded (container, image, pod, namespace).
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_plain_container_has_no_orchestrator_and_a_kubernetes_pod_has_one() {
    if !require_root() {
        return;
    }
    let me = std::process::id();
    let plain_id = format!("{:064x}", 0xabc0_0000_u64 + me as u64);
    let pod_id = format!("{:064x}", 0xdef0_0000_u64 + me as u64);
    let uid = format!("1234abcd-0000-4000-8000-{me:012}");
    // "pod<36 chars>" without a kubepods ancestor: not Kubernetes.
    let plain = Cgroup::new(&format!(
        "portex-e2e-orch-{me}/pod{uid}.slice/docker-{plain_id}.scope"
    ));
    let kube = Cgroup::new(&format!(
        "portex-e2e-orch-{me}-kubepods.slice/kubepods-burstable-pod{}.slice/cri-containerd-{pod_id}.scope",
        uid.replace('-', "_")
    ));
    // Kubernetes' cgroup names no runtime the parser can tell from the path alone
    // (cri-containerd-... here): the lookup finds CRI-O's file all the same.
    let _record = CriORecord::new(
        &pod_id,
        serde_json::json!({
            "io.container.manager": "cri-o",
            "io.kubernetes.container.name": "web",
            "io.kubernetes.cri-o.ImageName": "docker.io/library/nginx:1.27",
            "io.kubernetes.pod.name": "web-7d4b9c8f5-x2k9q",
            "io.kubernetes.pod.namespace": "shop",
            "io.kubernetes.pod.uid": uid,
        }),
    );
    let portex = Portex::start(&["watch", "--json"]);
    let ns = Netns::new("orch");
    let p = ns.drive(&[
        "--cgroup",
        plain.path(),
        "client-close",
        "127.0.0.1:8321",
        "2",
    ]);
    let k = ns.drive(&[
        "--cgroup",
        kube.path(),
        "client-close",
        "127.0.0.1:8322",
        "2",
    ]);
    for pid in [p.pid, k.pid] {
        portex.wait_lines_with(&[&pid_needle(pid), "\"action\":\"time_wait\""], 2);
    }
    let fin = portex.stop();
    let ev = fin.events_of(p.pid);
    assert_eq!(
        with_action(&ev, "time_wait").len(),
        2,
        "{}",
        fin.dump(p.pid)
    );
    for e in &ev {
        assert_eq!(e["container"]["id"], plain_id.as_str(), "{e}");
        assert_eq!(e["container"]["runtime"], "docker", "{e}");
        assert!(e.get("orchestrator").is_none(), "{e}");
    }
    let ev = fin.events_of(k.pid);
    assert_eq!(
        with_action(&ev, "time_wait").len(),
        2,
        "{}",
        fin.dump(k.pid)
    );
    for e in &ev {
        assert_eq!(e["container"]["id"], pod_id.as_str(), "{e}");
        assert_eq!(e["container"]["runtime"], "containerd", "{e}");
        assert_eq!(e["orchestrator"]["type"], "kubernetes", "{e}");
        assert_eq!(e["orchestrator"]["resource"]["type"], "pod", "{e}");
        assert_eq!(e["orchestrator"]["resource"]["id"], uid.as_str(), "{e}");
        assert_eq!(e["container"]["name"], "web", "{e}");
        assert_eq!(
            e["container"]["image"]["name"],
            "docker.io/library/nginx:1.27"
        );
        assert_eq!(e["orchestrator"]["namespace"], "shop", "{e}");
        assert_eq!(e["orchestrator"]["resource"]["name"], "web-7d4b9c8f5-x2k9q");
    }
}

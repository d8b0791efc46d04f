//! cgroup text: a cgroup v2 path (`containers::parse_cgroup_path`), a whole
//! /proc/<pid>/cgroup file (`parse_proc_cgroup`) and /proc/self/mountinfo
//! (`parse_mountinfo_cgroup2`). Container runtimes and users name cgroups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portex_agent::fuzzing::{
    Container, parse_cgroup_path, parse_mountinfo_cgroup2, parse_proc_cgroup,
};

fn check(c: &Container, text: &str) {
    assert_eq!(c.id.len(), 64);
    assert!(c.id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(text.contains(&c.id));
    assert!(["docker", "containerd", "cri-o", "podman"].contains(&c.runtime));
    if let Some(pod) = &c.pod_uid {
        assert_eq!(pod.len(), 36);
        assert!(!pod.contains('_'));
    }
}

fuzz_target!(|data: &[u8]| {
    // The resolver walks directory names through to_string_lossy; /proc files are read
    // as UTF-8.
    let text = String::from_utf8_lossy(data);
    if let Some(c) = parse_cgroup_path(&text) {
        check(&c, &text);
    }
    if let Some(c) = parse_proc_cgroup(&text) {
        check(&c, &text);
    }
    if let Some(root) = parse_mountinfo_cgroup2(&text) {
        let root = root.to_str().expect("a path cut from text is text");
        assert!(!root.is_empty() && text.contains(root));
    }
});

//! Issue "Reliability and security", the output side: where events go when the path is
//! hostile, the disk is full, the file is deleted or nobody reads. Each test reproduces
//! one finding and fails without its fix.
use std::{process::Command, time::Duration};

use portex_e2e::*;

/// Finding 2: the output path is never followed through a symlink, a FIFO does not
/// block start-up, and a file with another link is refused.
#[test]
fn unsafe_output_paths_are_refused_at_start_in_one_line() {
    let dir = TmpDir::new("paths");
    let secret = dir.join("secret");
    std::fs::write(&secret, "keep").unwrap();
    let link = dir.join("link.ndjson");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let fifo = dir.join("fifo.ndjson");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let hard = dir.join("hard.ndjson");
    std::fs::hard_link(&secret, &hard).unwrap();
    for (path, why) in [
        (&link, "symbolic link"),
        (&fifo, "not a regular file"),
        (&hard, "hard links"),
    ] {
        let (code, err, took) = run_portex(&["agent", "--output", path.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(why), "{err}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "keep");
}

/// Finding 5: a full disk leaves no partial line; when space returns, writing resumes
/// and every line in the file is whole JSON, as many as the summary says were written.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_full_disk_leaves_whole_lines_and_resumes() {
    if !require_root() {
        return;
    }
    let dir = Tmpfs::mount("enospc", "64k");
    let out = dir.join("events.ndjson");
    let portex = Portex::agent_to(&out, &[]);
    let ns = Netns::new("enospc");
    drop(ns.drive(&["client-close", "127.0.0.1:7100", "300"]));
    assert!(
        portex.wait_stderr("No space left", 1, Duration::from_secs(20)),
        "{:?}",
        portex.stderr_now()
    );
    // Space returns.
    dir.resize("1g");
    // Writing resumes at the first write after the retry delay: churn until it says so.
    assert!(
        wait_for(Duration::from_secs(20), || {
            drop(ns.drive(&["client-close", "127.0.0.1:7102", "2"]));
            portex
                .stderr_now()
                .iter()
                .any(|l| l.contains("written again"))
        }),
        "{:?}",
        portex.stderr_now()
    );
    let d = ns.drive(&["client-close", "127.0.0.1:7101", "20"]);
    let mine = || count_lines_with(&out, &pid_needle(d.pid));
    assert!(
        wait_for(Duration::from_secs(10), || mine() == 80),
        "{} lines of 20 connections; {:?}",
        mine(),
        portex.stderr_now()
    );
    let fin = portex.stop();
    let lines = lines_of(&out);
    // validate_lines panics on any line that is not whole, valid JSON.
    let n = validate_lines(lines.iter().map(String::as_str));
    let (written, dropped, _) = output_counts(&fin.stderr);
    assert_eq!(n as u64, written, "{:?}", fin.stderr);
    assert!(dropped > 0);
}

/// Finding 6: a deleted output file is noticed before the next write, said once, and
/// created again; nothing more goes to the unlinked inode.
#[test]
#[cfg_attr(portex_unprivileged, ignore = "needs root")]
fn a_deleted_output_file_is_created_again() {
    if !require_root() {
        return;
    }
    let dir = TmpDir::new("deleted");
    let out = dir.join("events.ndjson");
    let portex = Portex::agent_to(&out, &[]);
    let ns = Netns::new("deleted");
    let first = ns.drive(&["client-close", "127.0.0.1:7200", "3"]);
    assert!(wait_for(Duration::from_secs(10), || {
        count_lines_with(&out, &pid_needle(first.pid)) > 0
    }));
    std::fs::remove_file(&out).unwrap();
    let second = ns.drive(&["client-close", "127.0.0.1:7201", "3"]);
    let mine = || count_lines_with(&out, &pid_needle(second.pid));
    assert!(
        wait_for(Duration::from_secs(10), || mine() == 12),
        "{} lines of the second driver in the new file; {:?}",
        mine(),
        portex.stderr_now()
    );
    let fin = portex.stop();
    let said = fin
        .stderr
        .iter()
        .filter(|l| l.contains("was removed"))
        .count();
    assert_eq!(said, 1, "{:?}", fin.stderr);
}

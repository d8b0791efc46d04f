//! Which process holds which socket: /proc/<pid>/fd links name socket inodes.
use std::{collections::HashMap, fs};

use crate::logic::model::Owner;

/// Socket inode -> owner, for every process (the first one found when a socket is
/// shared, e.g. after fork).
pub(crate) fn socket_owners() -> HashMap<u64, Owner> {
    let mut out = HashMap::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let mut owner: Option<Owner> = None;
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let o = owner.get_or_insert_with(|| process(pid));
            out.entry(inode).or_insert_with(|| o.clone());
        }
    }
    out
}

/// Name and start time of a process; empty name when it is gone.
pub(crate) fn process(pid: u32) -> Owner {
    let stat = fs::read(format!("/proc/{pid}/stat")).unwrap_or_default();
    let stat = crate::logic::untrusted::decode(&stat);
    let (name, start) = parse_stat(&stat).unwrap_or_default();
    Owner { pid, start, name }
}

/// (comm, starttime) from /proc/<pid>/stat. The comm is between the first '(' and the
/// last ')', and may itself contain spaces and parentheses.
pub fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    // Fields after the comm start at field 3 (state); starttime is field 22.
    let start = stat
        .get(close + 2..)?
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()?;
    Some((name, start))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_stat_with_an_awkward_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            super::parse_stat(stat),
            Some(("my (odd) name".into(), 987654))
        );
        assert_eq!(super::parse_stat("garbage"), None);
    }
}

//! The processes the metrics name: grouped by (process name, container), the `n`
//! groups holding the most ports, and the rest summed into one `other` group.
//!
//! A pid label would make a new series for every short-lived process (a host forking
//! 50 processes a second makes 180,000 an hour, each kept by Prometheus until it ages
//! out), so pids stay in the events. Process names and container ids are far fewer, but
//! a workload can still name its processes freely (worker-1234) and containers come
//! and go with pods: only `n` groups are ever exported per scrape, plus `other`, so a
//! scrape has at most n + 1 process series and the sum over them is every port held.

/// The name of the group of processes beyond the top `n` (with no container).
pub(crate) const OTHER: &str = "other";

/// Ports held by one group of processes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HolderGroup {
    pub(crate) name: String,
    pub(crate) container_id: Option<String>,
    pub(crate) held: u32,
    pub(crate) time_wait: u32,
}

/// Groups `procs` (one row per process) by name and container, keeps the `n` holding
/// the most ports (ties by name, then container, so a scrape is deterministic) and sums
/// the rest into `OTHER`, listed last. A real group named `OTHER` outside any
/// container is the same series, so the rest is added to it rather than exported
/// twice. `n` = 0 exports nothing.
pub(crate) fn top_groups(
    procs: impl IntoIterator<Item = HolderGroup>,
    n: usize,
) -> Vec<HolderGroup> {
    if n == 0 {
        return Vec::new();
    }
    let mut groups: std::collections::HashMap<(String, Option<String>), (u32, u32)> =
        std::collections::HashMap::new();
    for p in procs {
        let g = groups.entry((p.name, p.container_id)).or_default();
        g.0 = g.0.saturating_add(p.held);
        g.1 = g.1.saturating_add(p.time_wait);
    }
    let mut ranked: Vec<HolderGroup> = groups
        .into_iter()
        .map(|((name, container_id), (held, time_wait))| HolderGroup {
            name,
            container_id,
            held,
            time_wait,
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.held
            .cmp(&a.held)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.container_id.cmp(&b.container_id))
    });
    let rest = ranked.split_off(n.min(ranked.len()));
    if rest.is_empty() {
        return ranked;
    }
    let is_other = |g: &HolderGroup| g.name == OTHER && g.container_id.is_none();
    let other = match ranked.iter().position(is_other) {
        Some(i) => ranked.remove(i),
        None => HolderGroup {
            name: OTHER.into(),
            ..HolderGroup::default()
        },
    };
    let other = rest.into_iter().fold(other, |mut o, g| {
        o.held = o.held.saturating_add(g.held);
        o.time_wait = o.time_wait.saturating_add(g.time_wait);
        o
    });
    ranked.push(other);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, container: Option<&str>, held: u32, time_wait: u32) -> HolderGroup {
        HolderGroup {
            name: name.into(),
            container_id: container.map(Into::into),
            held,
            time_wait,
        }
    }

    #[test]
    fn processes_of_one_name_and_container_are_one_group() {
        // Three short-lived "curl" processes (three pids) are one series.
        let procs = [
            g("curl", None, 3, 1),
            g("curl", None, 2, 2),
            g("curl", Some("abc"), 4, 0),
            g("curl", None, 1, 0),
        ];
        assert_eq!(
            top_groups(procs, 10),
            [g("curl", None, 6, 3), g("curl", Some("abc"), 4, 0)]
        );
    }

    #[test]
    fn beyond_the_top_n_the_rest_is_other_and_nothing_is_lost() {
        let procs = [
            g("a", None, 10, 1),
            g("b", None, 5, 0),
            g("c", Some("x"), 5, 2),
            g("d", None, 1, 1),
        ];
        let top = top_groups(procs.clone(), 2);
        // Ties ranked by name: b before c.
        assert_eq!(
            top,
            [
                g("a", None, 10, 1),
                g("b", None, 5, 0),
                g(OTHER, None, 6, 3)
            ]
        );
        let held = |v: &[HolderGroup]| v.iter().map(|g| g.held).sum::<u32>();
        assert_eq!(held(&top), held(&procs));
        // Room for all: no `other`.
        assert_eq!(top_groups(procs.clone(), 4).len(), 4);
        assert!(top_groups(procs, 0).is_empty());
    }

    #[test]
    fn a_process_named_other_is_not_exported_twice() {
        let procs = [g(OTHER, None, 7, 0), g("b", None, 3, 0), g("c", None, 2, 1)];
        assert_eq!(
            top_groups(procs, 2),
            [g("b", None, 3, 0), g(OTHER, None, 9, 1)]
        );
        // In a container it is another series.
        let procs = [
            g(OTHER, Some("x"), 7, 0),
            g("b", None, 3, 0),
            g("c", None, 2, 1),
        ];
        assert_eq!(
            top_groups(procs, 1),
            [g(OTHER, Some("x"), 7, 0), g(OTHER, None, 5, 1)]
        );
    }
}

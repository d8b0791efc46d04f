//! Suspects held until a NAT scan that began after them. Pure.
//!
//! A stalled or unanswered connect (logic::nat_attribution::suspect) is judged against
//! the NAT as it was right after it: the pool that filled a moment ago is the one that
//! matters, and a view from seconds before would miss it. So the record waits for the
//! first scan (pipeline::nat_scan, asked for at once) that started after the record's
//! time, at most MAX_HOLD_NS; then it is judged against that scan, with the namespaces
//! whose conntrack failed inserts while the connect was waiting (a rise of
//! `insert_failed` seen by a scan that ended after its SYN). A stall is written only
//! then (with or without the cause); an unanswered close is written at once and its
//! `connect_failed` follows when the NAT explains it.
use std::collections::{HashMap, VecDeque};

use crate::logic::{
    model::Record,
    nat_attribution::{attribute, exhausted_pool, suspect},
    nat_view::NatView,
};

/// The longest a suspect waits for a fresh scan (the scanner may rest up to 20 times its
/// last scan's duration before it honours a request); then the latest view judges it.
pub(crate) const MAX_HOLD_NS: u64 = 10_000_000_000;

/// Beyond this many suspects waiting, new ones are judged against the latest view at
/// once: a flood of failing connects must not grow memory.
pub(crate) const MAX_HELD: usize = 4096;

/// How long the counter of a namespace the views no longer show is kept.
const COUNTERS_KEPT_NS: u64 = 600_000_000_000;

/// A namespace's insert_failed as the views saw it.
#[derive(Clone, Copy, Debug)]
struct Counter {
    count: u64,
    /// When (boot ns) a view last showed it rise.
    rose_at: Option<u64>,
    /// When a view last showed it.
    seen_at: u64,
}

/// The suspects waiting, each with what the caller needs to write it later (`T`).
#[derive(Debug)]
pub(crate) struct NatHold<T> {
    held: VecDeque<(Record, T)>,
    /// Per namespace: its insert_failed counter as the views saw it.
    counters: HashMap<u64, Counter>,
    /// The number of the last view seen.
    seen: u64,
}

impl<T> Default for NatHold<T> {
    fn default() -> Self {
        NatHold {
            held: VecDeque::new(),
            counters: HashMap::new(),
            seen: 0,
        }
    }
}

/// What became of a record offered to the hold.
#[derive(Debug, PartialEq)]
pub(crate) enum Offer {
    /// Not a suspect: written now, as it is.
    Pass,
    /// Held: written (a stall) or followed (a close) when judged.
    Held,
    /// Too many held: judged now against the latest view; a failure to write after it.
    Judged(Option<Box<Record>>),
}

impl<T> NatHold<T> {
    /// Offers a record. A stall that is held must not be written now (it comes back
    /// from `release`); a close always is, and a held copy may bring a failure later.
    pub(crate) fn offer(&mut self, r: &mut Record, extra: T, latest: Option<&NatView>) -> Offer {
        if suspect(r).is_none() {
            return Offer::Pass;
        }
        if self.held.len() >= MAX_HELD {
            return Offer::Judged(latest.and_then(|v| self.judge(r, v)).map(Box::new));
        }
        self.held.push_back((r.clone(), extra));
        Offer::Held
    }

    /// Whether records are waiting.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> bool {
        !self.held.is_empty()
    }

    /// The held records that `view` (or their age, or `flush`) decides, in order: each
    /// with its cause when the NAT explains it (a stall, to write now) or the failure
    /// to write (a close's). Without a view (no scan yet) they wait, up to MAX_HOLD_NS.
    pub(crate) fn release(
        &mut self,
        view: Option<&NatView>,
        now: u64,
        flush: bool,
    ) -> Vec<(Record, T)> {
        if let Some(v) = view {
            self.see(v);
        }
        let scan_start = view.map(|v| v.at_ns.saturating_sub(v.duration_ns));
        let mut out = Vec::new();
        while let Some((r, _)) = self.held.front() {
            let fresh = scan_start.is_some_and(|s| s >= r.ts_ns);
            let old = now.saturating_sub(r.ts_ns) >= MAX_HOLD_NS;
            if !(fresh || old || flush) {
                break;
            }
            let (mut r, extra) = self.held.pop_front().expect("front exists");
            let failure = view.and_then(|v| self.judge(&mut r, v));
            match failure {
                Some(f) => out.push((f, extra)),
                // A stall is written whatever the verdict; a close was written already.
                None if r.action == crate::logic::model::Action::ConnectStalled => {
                    out.push((r, extra))
                }
                None => {}
            }
        }
        out
    }

    /// Notes a new view: the namespaces whose insert_failed rose since the one before.
    /// A namespace first seen after the first view (its table just got entries: scans
    /// leave empty tables out) counts from 0; one the views stop showing is kept a while
    /// (COUNTERS_KEPT_NS), so that its counter coming back is not taken for a rise.
    fn see(&mut self, v: &NatView) {
        if v.scans == self.seen {
            return;
        }
        let first = self.seen == 0;
        self.seen = v.scans;
        for t in &v.tables {
            let Some(n) = t.insert_failed else { continue };
            let known = self.counters.get(&t.netns).copied();
            let before = match known {
                Some(c) => c.count,
                None if first => n,
                None => 0,
            };
            let mut rose_at = known.and_then(|c| c.rose_at);
            if n > before {
                rose_at = Some(v.at_ns);
            }
            let c = Counter {
                count: n,
                rose_at,
                seen_at: v.at_ns,
            };
            self.counters.insert(t.netns, c);
        }
        self.counters
            .retain(|_, c| v.at_ns.saturating_sub(c.seen_at) < COUNTERS_KEPT_NS);
    }

    fn judge(&self, r: &mut Record, v: &NatView) -> Option<Record> {
        let dest = suspect(r)?;
        // Since its SYN (a socket older than the agent: the last second).
        let since = r
            .ts_ns
            .saturating_sub(r.duration_ns.unwrap_or(1_000_000_000));
        let failing: Vec<u64> = self
            .counters
            .iter()
            .filter(|(_, c)| c.rose_at.is_some_and(|at| at >= since))
            .map(|(ns, _)| *ns)
            .collect();
        let pool = exhausted_pool(&v.pools, dest, &failing)?;
        attribute(r, pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::{
        fixtures::{record, snat_entries},
        model::{Action, Cause, CloseInfo, CloseKind},
        nat::nat_pools,
        nat_view::ConntrackTable,
    };

    const S: u64 = 1_000_000_000;

    fn stall(ts: u64) -> Record {
        let mut r = record(
            Action::ConnectStalled,
            (7, 7, "app"),
            "10.77.0.2:50000",
            Some("10.78.0.2:8080"),
        );
        r.ts_ns = ts;
        r
    }

    fn unanswered(ts: u64) -> Record {
        let mut r = stall(ts);
        r.action = Action::Close;
        r.close = Some(CloseInfo {
            kind: CloseKind::HandshakeFailed,
            time_wait: false,
            reset_received: false,
            from_state: "SYN_SENT",
        });
        r
    }

    /// A scan from `start` to `start + 0.1 s` of a NAT (namespace 9) towards
    /// 10.78.0.2:8080 with `used` of 10 ports mapped and `insert_failed` so far.
    fn view(scans: u64, start: u64, used: u16, insert_failed: u64) -> NatView {
        let entries = snat_entries(used);
        NatView {
            at_ns: start + S / 10,
            duration_ns: S / 10,
            scans,
            pools: nat_pools(9, &entries, Some((40000, 40009))),
            tables: vec![ConntrackTable {
                netns: 9,
                count: used as u64,
                max: 262144,
                tw_timeout_s: Some(120),
                insert_failed: Some(insert_failed),
            }],
        }
    }

    #[test]
    fn a_stall_waits_for_a_scan_that_began_after_it_and_is_judged_by_it() {
        let mut h: NatHold<&str> = NatHold::default();
        let old = view(1, 0, 9, 0);
        let mut r = stall(5 * S);
        assert_eq!(h.offer(&mut r, "app", Some(&old)), Offer::Held);
        assert!(h.waiting());
        // The scan before it (9 of 10: not full) decides nothing.
        assert!(h.release(Some(&old), 5 * S, false).is_empty());
        // The pool filled meanwhile; the next scan (begun after the stall) shows it.
        let out = h.release(Some(&view(2, 5 * S + 1, 10, 0)), 6 * S, false);
        assert_eq!(out.len(), 1);
        let (r, extra) = &out[0];
        assert_eq!(
            (r.action, r.cause, *extra),
            (Action::ConnectStalled, Some(Cause::NatExhausted), "app")
        );
        assert_eq!(r.pool.map(|p| (p.used, p.size)), Some((10, 10)));
        assert!(!h.waiting());
    }

    #[test]
    fn a_stall_the_nat_does_not_explain_is_written_without_a_cause() {
        let mut h: NatHold<()> = NatHold::default();
        let mut r = stall(5 * S);
        h.offer(&mut r, (), None);
        // No scan came in time: judged by its age against what there is.
        assert!(h.release(None, 6 * S, false).is_empty(), "waits for a view");
        let out = h.release(Some(&view(1, 0, 3, 0)), 5 * S + MAX_HOLD_NS, false);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].0.action, out[0].0.cause),
            (Action::ConnectStalled, None)
        );
    }

    #[test]
    fn an_unanswered_close_brings_a_failure_only_when_the_nat_explains_it() {
        let mut h: NatHold<()> = NatHold::default();
        let mut a = unanswered(5 * S);
        let mut b = unanswered(20 * S);
        assert_eq!(h.offer(&mut a, (), None), Offer::Held);
        assert_eq!(h.offer(&mut b, (), None), Offer::Held);
        // The first is judged by a full pool; the second waits for a later scan, which
        // shows the pool with a port free again: no failure from it.
        let out = h.release(Some(&view(1, 6 * S, 10, 0)), 7 * S, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0.action, Action::ConnectFailed);
        assert!(h.waiting());
        assert!(
            h.release(Some(&view(2, 21 * S, 9, 0)), 22 * S, false)
                .is_empty()
        );
        assert!(!h.waiting());
        // Not suspects: passed on.
        let mut refused = unanswered(30 * S);
        refused.close.as_mut().unwrap().reset_received = true;
        assert_eq!(h.offer(&mut refused, (), None), Offer::Pass);
    }

    #[test]
    fn nearly_full_counts_when_inserts_failed_while_the_connect_waited() {
        let mut h: NatHold<()> = NatHold::default();
        // First view: counters noted, nothing to compare with.
        h.release(Some(&view(1, 0, 9, 4)), S, false);
        assert!(h.counters[&9].rose_at.is_none());
        let mut r = stall(3 * S);
        r.duration_ns = Some(S);
        h.offer(&mut r, (), None);
        // 9 of 10 and insert_failed rose from 4 to 6 after its SYN (2 s): dropped SYNs.
        let out = h.release(Some(&view(2, 3 * S, 9, 6)), 4 * S, false);
        assert_eq!(out[0].0.cause, Some(Cause::NatExhausted));
        // The connect times out at 5 s; no new drop since the last scan, but the rise
        // (seen at 3.1 s) came while it waited: its failure is the NAT's too.
        let mut c = unanswered(5 * S);
        c.duration_ns = Some(3 * S);
        h.offer(&mut c, (), None);
        let out = h.release(Some(&view(3, 5 * S, 9, 6)), 6 * S, false);
        assert_eq!(out[0].0.action, Action::ConnectFailed);
        // A connect that began after the last rise: 9 of 10 explains nothing.
        let mut r = stall(8 * S);
        r.duration_ns = Some(S);
        h.offer(&mut r, (), None);
        let out = h.release(Some(&view(4, 8 * S, 9, 6)), 9 * S, false);
        assert_eq!(out[0].0.cause, None);
    }

    #[test]
    fn a_namespace_whose_table_fills_after_the_first_scan_counts_from_zero() {
        let mut h: NatHold<()> = NatHold::default();
        let mut empty = view(1, 0, 0, 0);
        empty.tables.clear();
        h.release(Some(&empty), S, false);
        let mut r = stall(3 * S);
        r.duration_ns = Some(S);
        h.offer(&mut r, (), None);
        // Its first appearance already counts a drop: that is a rise.
        let out = h.release(Some(&view(2, 3 * S, 9, 1)), 4 * S, false);
        assert_eq!(out[0].0.cause, Some(Cause::NatExhausted));
        // Gone from the views (the table emptied) and back with the same count: no rise.
        h.release(Some(&empty_at(3, 5 * S)), 5 * S, false);
        h.release(Some(&view(4, 6 * S, 9, 1)), 6 * S, false);
        assert_eq!(h.counters[&9].rose_at, Some(3 * S + S / 10));
    }

    fn empty_at(scans: u64, start: u64) -> NatView {
        let mut v = view(scans, start, 0, 0);
        v.tables.clear();
        v
    }

    #[test]
    fn a_flood_is_judged_at_once_and_flush_empties_the_hold() {
        let mut h: NatHold<()> = NatHold::default();
        let full = view(1, 0, 10, 0);
        for i in 0..MAX_HELD as u64 {
            let mut r = stall(S + i);
            assert_eq!(h.offer(&mut r, (), Some(&full)), Offer::Held);
        }
        let mut r = unanswered(2 * S);
        match h.offer(&mut r, (), Some(&full)) {
            Offer::Judged(Some(f)) => assert_eq!(f.cause, Some(Cause::NatExhausted)),
            o => panic!("{o:?}"),
        }
        let mut s = stall(2 * S);
        assert_eq!(h.offer(&mut s, (), Some(&full)), Offer::Judged(None));
        assert_eq!(s.cause, Some(Cause::NatExhausted), "judged in place");
        assert_eq!(h.release(Some(&full), 2 * S, true).len(), MAX_HELD);
        assert!(!h.waiting());
    }
}

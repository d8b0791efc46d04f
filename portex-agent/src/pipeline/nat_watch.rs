//! NAT exhaustion seen from the pod: stalled and unanswered connects are held
//! (logic::nat_hold) until the NAT scanner (pipeline::nat_scan, asked for a scan at
//! once) has read the conntrack tables after them, and judged against that scan. The
//! output thread never reads conntrack itself. Without the scanner (`--nat-scan 0`)
//! nothing is held and nothing is put down to the NAT.
use super::nat_scan::NatFeed;
use crate::logic::{
    model::Record,
    nat_attribution::suspect,
    nat_hold::{NatHold, Offer},
};

/// What a held record needs to be written later: its process name and start time.
pub(crate) struct Held {
    pub name: String,
    pub start: u64,
}

#[derive(Default)]
pub(crate) struct NatWatch {
    feed: Option<NatFeed>,
    hold: NatHold<Held>,
}

impl NatWatch {
    pub(crate) fn new(feed: Option<NatFeed>) -> NatWatch {
        NatWatch {
            feed,
            hold: NatHold::default(),
        }
    }

    /// Offers a record: a suspect is held (and a scan asked for); see logic::nat_hold.
    pub(crate) fn offer(&mut self, r: &mut Record, name: &str, start: u64) -> Offer {
        let Some(feed) = &self.feed else {
            return Offer::Pass;
        };
        // Every record comes here: the common case leaves before any allocation.
        if suspect(r).is_none() {
            return Offer::Pass;
        }
        let held = Held {
            name: name.to_owned(),
            start,
        };
        let offer = self.hold.offer(r, held, feed.latest().as_deref());
        if offer == Offer::Held {
            feed.request();
        }
        offer
    }

    /// The held records the latest scan (or their age, or `flush` at the end) decides:
    /// stalls to write, and failures that follow closes already written.
    pub(crate) fn release(&mut self, now: u64, flush: bool) -> Vec<(Record, Held)> {
        let Some(feed) = &self.feed else {
            return Vec::new();
        };
        let latest = feed.latest();
        self.hold.release(latest.as_deref(), now, flush)
    }
}

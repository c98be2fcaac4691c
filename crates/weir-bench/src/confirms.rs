//! Publisher-confirm bookkeeping: which delivery tags the broker has settled.
//!
//! A broker confirms with `basic.ack`/`basic.nack`, each for one tag or, with `multiple`,
//! for every tag up to it. Weir merges runs into `multiple` acks in order; RabbitMQ may
//! confirm single tags out of order. The tracker handles both exactly: `floor` is the
//! highest tag below which everything is settled, `above` the tags settled beyond it.
//! Invariant: every tag in `above` is greater than `floor + 1`, so `settled = floor +
//! above.len()` and a duplicate confirm is never counted twice.

use std::collections::BTreeSet;

/// What one confirm changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Tags newly acked.
    pub acked: u64,
    /// Tags newly nacked.
    pub nacked: u64,
}

/// Settled delivery tags of one publisher channel (tags start at 1).
#[derive(Clone, Debug, Default)]
pub struct ConfirmTracker {
    floor: u64,
    above: BTreeSet<u64>,
}

impl ConfirmTracker {
    /// Tags settled so far (acked or nacked).
    #[must_use]
    pub fn settled(&self) -> u64 {
        self.floor + self.above.len() as u64
    }

    /// Records `basic.ack`/`basic.nack` for `tag` (and everything below it if `multiple`).
    pub fn confirm(&mut self, tag: u64, multiple: bool, ack: bool) -> Settled {
        let newly = if multiple { self.settle_up_to(tag) } else { self.settle_one(tag) };
        self.advance_floor();
        if ack {
            Settled { acked: newly, nacked: 0 }
        } else {
            Settled { acked: 0, nacked: newly }
        }
    }

    fn settle_up_to(&mut self, tag: u64) -> u64 {
        if tag <= self.floor {
            return 0;
        }
        let beyond = self.above.split_off(&(tag + 1));
        let already = self.above.len() as u64;
        self.above = beyond;
        let newly = tag - self.floor - already;
        self.floor = tag;
        newly
    }

    fn settle_one(&mut self, tag: u64) -> u64 {
        if tag <= self.floor || tag == 0 {
            return 0;
        }
        u64::from(self.above.insert(tag))
    }

    fn advance_floor(&mut self) {
        while self.above.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_acks_in_order_settle_runs() {
        let mut tracker = ConfirmTracker::default();
        assert_eq!(tracker.confirm(3, true, true), Settled { acked: 3, nacked: 0 });
        assert_eq!(tracker.confirm(10, true, true).acked, 7);
        assert_eq!(tracker.settled(), 10);
    }

    #[test]
    fn single_acks_out_of_order_are_counted_once() {
        let mut tracker = ConfirmTracker::default();
        assert_eq!(tracker.confirm(2, false, true).acked, 1);
        assert_eq!(tracker.confirm(4, false, true).acked, 1);
        assert_eq!(tracker.settled(), 2);
        assert_eq!(tracker.confirm(2, false, true).acked, 0, "duplicate");
        assert_eq!(tracker.confirm(1, false, true).acked, 1);
        assert_eq!(tracker.floor, 2);
        // A multiple ack over a gap counts only the tags not settled yet (3 and 5).
        assert_eq!(tracker.confirm(5, true, true).acked, 2);
        assert_eq!(tracker.settled(), 5);
        assert!(tracker.above.is_empty());
    }

    #[test]
    fn nacks_are_counted_apart_from_acks() {
        let mut tracker = ConfirmTracker::default();
        assert_eq!(tracker.confirm(2, true, false), Settled { acked: 0, nacked: 2 });
        assert_eq!(tracker.confirm(3, false, true), Settled { acked: 1, nacked: 0 });
        assert_eq!(tracker.settled(), 3);
    }

    #[test]
    fn stale_multiple_ack_changes_nothing() {
        let mut tracker = ConfirmTracker::default();
        tracker.confirm(5, true, true);
        assert_eq!(tracker.confirm(4, true, true), Settled::default());
        assert_eq!(tracker.confirm(0, false, true), Settled::default());
        assert_eq!(tracker.settled(), 5);
    }

    #[test]
    fn settled_matches_a_naive_set_for_a_mixed_sequence() {
        let mut tracker = ConfirmTracker::default();
        let mut naive = BTreeSet::new();
        let confirms = [(7, false), (1, false), (3, true), (9, false), (8, true), (12, false), (12, true)];
        let mut counted = 0;
        for (tag, multiple) in confirms {
            counted += tracker.confirm(tag, multiple, true).acked;
            if multiple {
                naive.extend(1..=tag);
            } else {
                naive.insert(tag);
            }
            assert_eq!(tracker.settled(), naive.len() as u64);
            assert_eq!(counted, naive.len() as u64);
        }
    }
}

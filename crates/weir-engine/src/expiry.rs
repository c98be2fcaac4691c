//! The timer index of message expiry: (expires at, queue, message), earliest first.
//!
//! Deletion is lazy: a message that leaves its queue early (acked, purged) keeps its entry
//! until the entry comes up and is skipped. So that the index follows the number of messages
//! *waiting* with a time to live rather than the traffic that went through within one TTL
//! window (a long TTL and a fast consumer), the index compacts itself: when it has doubled
//! since the last compaction, entries whose message is gone are dropped. Amortised cost per
//! insert stays O(log n).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::topology::QueueId;

/// Below this size the index never compacts (not worth the pass).
const COMPACTION_SIZE_MIN: usize = 4096;

/// (expires at epoch ms, queue, message seq).
pub(crate) type Expiry = (u64, QueueId, u64);

#[derive(Debug)]
pub(crate) struct ExpiryIndex {
    heap: BinaryHeap<Reverse<Expiry>>,
    compact_at: usize,
}

impl Default for ExpiryIndex {
    fn default() -> Self {
        Self { heap: BinaryHeap::new(), compact_at: COMPACTION_SIZE_MIN }
    }
}

impl ExpiryIndex {
    pub fn from_entries(entries: Vec<Expiry>) -> Self {
        let heap: BinaryHeap<_> = entries.into_iter().map(Reverse).collect();
        let compact_at = (heap.len() * 2).max(COMPACTION_SIZE_MIN);
        Self { heap, compact_at }
    }

    /// Add an entry; `is_live(queue, seq)` tells whether a message is still in its queue, for
    /// the compaction this insert may trigger.
    pub fn insert(&mut self, entry: Expiry, is_live: impl Fn(QueueId, u64) -> bool) {
        self.heap.push(Reverse(entry));
        if self.heap.len() >= self.compact_at {
            self.heap.retain(|Reverse((_, queue, seq))| is_live(*queue, *seq));
            self.compact_at = (self.heap.len() * 2).max(COMPACTION_SIZE_MIN);
        }
    }

    /// When the earliest entry is due.
    pub fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Take the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<(QueueId, u64)> {
        if self.next_at()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, queue, seq))| (queue, seq))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Expiry> {
        self.heap.iter().map(|Reverse(entry)| entry)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_out_earliest_first_and_only_when_due() {
        let mut index = ExpiryIndex::default();
        index.insert((30, 1, 3), |_, _| true);
        index.insert((10, 1, 1), |_, _| true);
        index.insert((20, 2, 2), |_, _| true);
        assert_eq!(index.next_at(), Some(10));
        assert_eq!(index.pop_due(5), None);
        assert_eq!(index.pop_due(25), Some((1, 1)));
        assert_eq!(index.pop_due(25), Some((2, 2)));
        assert_eq!(index.pop_due(25), None);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn departed_messages_do_not_pile_up() {
        // A fast consumer and a long TTL: every message leaves long before its time.
        let mut index = ExpiryIndex::default();
        for seq in 0..100_000u64 {
            // Only the last 10 messages are still waiting.
            index.insert((u64::MAX, 1, seq), |_, s| s + 10 > seq);
        }
        assert!(index.len() < 2 * COMPACTION_SIZE_MIN, "{} entries for 10 waiting messages", index.len());
        // Entries of messages still waiting survive every compaction.
        let kept: Vec<u64> = index.iter().map(|(_, _, seq)| *seq).collect();
        for seq in 99_990..100_000 {
            assert!(kept.contains(&seq), "message {seq} lost its expiry");
        }
    }
}

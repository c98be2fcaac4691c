//! Deduplication (`x-deduplication-window`, milliseconds): a publish whose message-id this
//! queue took within the window is confirmed but not enqueued again — what a producer needs to
//! retry safely after a lost confirm (SQS FIFO's deduplication interval, Artemis's duplicate
//! detection).
//!
//! Each queue with a window keeps the message-ids it took, with when, oldest first; ids older
//! than the window are forgotten as new ones arrive, and at most [`IDS_MAX`] are kept (the
//! oldest go first past that, so a queue fed faster than that within its window deduplicates
//! less far back). Only a message that was really enqueued is remembered: one refused by a
//! full queue or a quota can be retried. A message without a message-id is never a duplicate.
//!
//! Durability: the window is rebuilt at start-up from the checkpoint (which lists each logged
//! queue's window) and the enqueue records after it (their time is in the record whenever a
//! target queue has a window), so a producer that retries after a broker crash is
//! deduplicated too — for persistent messages in durable queues, the ones that survive a
//! crash at all.

use std::collections::{HashMap, VecDeque};

/// The most message-ids one queue remembers.
pub(crate) const IDS_MAX: usize = 1_000_000;

/// The message-ids a queue took recently.
#[derive(Debug, Default)]
pub(crate) struct DedupWindow {
    /// Id → when it was taken (the latest time, if it was taken again after its window).
    taken_at: HashMap<String, u64>,
    /// (taken at, id), oldest first; may hold stale pairs of ids taken again later.
    order: VecDeque<(u64, String)>,
}

impl DedupWindow {
    /// Was `id` taken within `window_ms` before `now`?
    pub fn is_duplicate(&mut self, id: &str, now: u64, window_ms: u64) -> bool {
        self.forget_before(now.saturating_sub(window_ms));
        self.taken_at.get(id).is_some_and(|&at| now.saturating_sub(at) < window_ms)
    }

    /// `id` was taken at `at`.
    pub fn remember(&mut self, id: &str, at: u64) {
        self.taken_at.insert(id.to_string(), at);
        self.order.push_back((at, id.to_string()));
        while self.taken_at.len() > IDS_MAX {
            let Some((at, oldest)) = self.order.pop_front() else { break };
            if self.taken_at.get(&oldest) == Some(&at) {
                self.taken_at.remove(&oldest);
            }
        }
    }

    fn forget_before(&mut self, cutoff: u64) {
        while self.order.front().is_some_and(|(at, _)| *at < cutoff) {
            let (at, id) = self.order.pop_front().expect("checked");
            if self.taken_at.get(&id) == Some(&at) {
                self.taken_at.remove(&id);
            }
        }
    }

    /// (taken at, id) of every id remembered, oldest first (for checkpoints).
    pub fn entries(&self) -> Vec<(u64, String)> {
        self.order.iter().filter(|(at, id)| self.taken_at.get(id) == Some(at)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_duplicates_only_within_the_window() {
        let mut window = DedupWindow::default();
        assert!(!window.is_duplicate("a", 1000, 500));
        window.remember("a", 1000);
        assert!(window.is_duplicate("a", 1400, 500));
        assert!(!window.is_duplicate("b", 1400, 500));
        assert!(!window.is_duplicate("a", 1500, 500), "the window has passed");
        window.remember("a", 1500);
        assert!(window.is_duplicate("a", 1900, 500));
        assert_eq!(window.entries(), vec![(1500, "a".to_string())]);
    }
}

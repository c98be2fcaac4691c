//! One queue's message index: ready messages in order, delivered ones awaiting settlement.
//!
//! Transitions (all O(1) amortised on the FIFO fast path):
//! - `push`: a newly published message joins the tail (its sequence number is the largest
//!   this queue has seen: asserted);
//! - `deliver`: the head moves to `unacked` (or leaves at once for an auto-ack consumer);
//! - `settle`: an unacked message leaves for good (ack, or dead-lettering later);
//! - `requeue`: an unacked message returns to its original place, marked redelivered;
//! - `remove`: a message leaves from wherever it is (log replay of a settlement, purge).

use std::collections::{HashMap, VecDeque};

use crate::entry::{MessageEntry, MessageSeq, ENTRY_FLAG_REDELIVERED};

/// Counts by state, for `queue.declare-ok`, the HTTP API and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub ready_messages: u64,
    pub ready_bytes: u64,
    pub unacked_messages: u64,
    pub unacked_bytes: u64,
}

/// The message index of one queue.
#[derive(Debug, Default)]
pub struct Queue {
    /// Sorted by `seq`, ascending: the head is the next to deliver.
    ready: VecDeque<MessageEntry>,
    unacked: HashMap<MessageSeq, MessageEntry>,
    stats: QueueStats,
    /// The largest sequence number ever pushed: new messages must come after it.
    last_pushed_seq: MessageSeq,
}

impl Queue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.unacked.is_empty()
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// A newly published message joins the tail.
    pub fn push(&mut self, entry: MessageEntry) {
        assert!(
            entry.seq > self.last_pushed_seq,
            "queue push out of order: seq {} after {}",
            entry.seq,
            self.last_pushed_seq
        );
        self.last_pushed_seq = entry.seq;
        self.add_ready_stats(&entry);
        self.ready.push_back(entry);
    }

    /// Hand out the head. With `auto_ack` the message leaves the queue at once; otherwise it
    /// waits in `unacked` for `settle` or `requeue`.
    pub fn deliver(&mut self, auto_ack: bool) -> Option<MessageEntry> {
        let mut entry = self.ready.pop_front()?;
        self.sub_ready_stats(&entry);
        entry.delivery_count = entry.delivery_count.saturating_add(1);
        if !auto_ack {
            self.stats.unacked_messages += 1;
            self.stats.unacked_bytes += u64::from(entry.size_bytes);
            let previous = self.unacked.insert(entry.seq, entry);
            assert!(previous.is_none(), "seq {} delivered twice", entry.seq);
        }
        Some(entry)
    }

    /// Take the head out without handing it out (it is dropped or dead-lettered: overflow).
    pub fn take_head(&mut self) -> Option<MessageEntry> {
        let entry = self.ready.pop_front()?;
        self.sub_ready_stats(&entry);
        Some(entry)
    }

    /// Remove a message only if it is ready (expiry never takes a message out of a consumer's
    /// hands).
    pub fn remove_ready(&mut self, seq: MessageSeq) -> Option<MessageEntry> {
        let index = self.ready.binary_search_by_key(&seq, |e| e.seq).ok()?;
        let entry = self.ready.remove(index)?;
        self.sub_ready_stats(&entry);
        Some(entry)
    }

    pub fn is_unacked(&self, seq: MessageSeq) -> bool {
        self.unacked.contains_key(&seq)
    }

    pub fn contains(&self, seq: MessageSeq) -> bool {
        self.unacked.contains_key(&seq) || self.ready.binary_search_by_key(&seq, |e| e.seq).is_ok()
    }

    /// An unacked message is done with (acked). `None` if it is not unacked here.
    pub fn settle(&mut self, seq: MessageSeq) -> Option<MessageEntry> {
        let entry = self.unacked.remove(&seq)?;
        self.stats.unacked_messages -= 1;
        self.stats.unacked_bytes -= u64::from(entry.size_bytes);
        Some(entry)
    }

    /// An unacked message goes back to its original place in the ready order.
    pub fn requeue(&mut self, seq: MessageSeq) -> bool {
        let Some(mut entry) = self.settle(seq) else {
            return false;
        };
        entry.flags |= ENTRY_FLAG_REDELIVERED;
        self.insert_ready_sorted(entry);
        true
    }

    /// Remove a message wherever it is (ready or unacked).
    pub fn remove(&mut self, seq: MessageSeq) -> Option<MessageEntry> {
        if let Some(entry) = self.settle(seq) {
            return Some(entry);
        }
        self.remove_ready(seq)
    }

    /// Change where a message's body lives (log compaction moved it). Returns the old
    /// location, or `None` if the message is not in the queue.
    pub fn relocate(&mut self, seq: MessageSeq, location: u64) -> Option<u64> {
        let entry = match self.unacked.get_mut(&seq) {
            Some(entry) => entry,
            None => {
                let index = self.ready.binary_search_by_key(&seq, |e| e.seq).ok()?;
                &mut self.ready[index]
            }
        };
        Some(std::mem::replace(&mut entry.location, location))
    }

    /// Drop every ready message (unacked ones stay, as in RabbitMQ's `queue.purge`).
    pub fn purge_ready(&mut self) -> Vec<MessageEntry> {
        self.stats.ready_messages = 0;
        self.stats.ready_bytes = 0;
        self.ready.drain(..).collect()
    }

    /// Every message, ready first then unacked (unacked in no particular order).
    pub fn entries(&self) -> impl Iterator<Item = &MessageEntry> {
        self.ready.iter().chain(self.unacked.values())
    }

    /// Turn every unacked message back to ready (used when a snapshot is restored: nothing
    /// is delivered after a restart).
    pub fn requeue_all(&mut self) {
        let seqs: Vec<MessageSeq> = self.unacked.keys().copied().collect();
        for seq in seqs {
            self.requeue(seq);
        }
    }

    fn insert_ready_sorted(&mut self, entry: MessageEntry) {
        // Requeued messages usually belong near the head, so search from the front.
        let index = match self.ready.binary_search_by_key(&entry.seq, |e| e.seq) {
            Ok(_) => panic!("seq {} is already ready", entry.seq),
            Err(index) => index,
        };
        self.add_ready_stats(&entry);
        self.ready.insert(index, entry);
    }

    fn add_ready_stats(&mut self, entry: &MessageEntry) {
        self.stats.ready_messages += 1;
        self.stats.ready_bytes += u64::from(entry.size_bytes);
    }

    fn sub_ready_stats(&mut self, entry: &MessageEntry) {
        self.stats.ready_messages -= 1;
        self.stats.ready_bytes -= u64::from(entry.size_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> MessageEntry {
        MessageEntry { seq, location: seq * 10, size_bytes: 5, delivery_count: 0, flags: 0 }
    }

    #[test]
    fn fifo_deliver_ack() {
        let mut q = Queue::new();
        for seq in 1..=3 {
            q.push(entry(seq));
        }
        let first = q.deliver(false).unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(first.delivery_count, 1);
        assert_eq!(q.stats().unacked_messages, 1);
        assert!(q.settle(1).is_some());
        assert!(q.settle(1).is_none(), "a second settle finds nothing");
        assert_eq!(q.stats().ready_messages, 2);
    }

    #[test]
    fn requeue_returns_to_original_place_marked_redelivered() {
        let mut q = Queue::new();
        for seq in 1..=3 {
            q.push(entry(seq));
        }
        let a = q.deliver(false).unwrap();
        let b = q.deliver(false).unwrap();
        assert!(q.requeue(b.seq));
        assert!(q.requeue(a.seq));
        let again = q.deliver(true).unwrap();
        assert_eq!(again.seq, 1);
        assert!(again.is_redelivered());
        assert_eq!(again.delivery_count, 2);
        assert_eq!(q.deliver(true).unwrap().seq, 2);
        assert_eq!(q.deliver(true).unwrap().seq, 3);
        assert!(q.is_empty());
    }

    #[test]
    fn remove_from_ready_and_unacked() {
        let mut q = Queue::new();
        for seq in 1..=4 {
            q.push(entry(seq));
        }
        q.deliver(false);
        assert_eq!(q.remove(1).unwrap().seq, 1);
        assert_eq!(q.remove(3).unwrap().seq, 3);
        assert!(q.remove(3).is_none());
        assert_eq!(q.stats().ready_messages, 2);
        assert_eq!(q.stats().unacked_messages, 0);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn push_out_of_order_is_a_bug() {
        let mut q = Queue::new();
        q.push(entry(2));
        q.push(entry(1));
    }

    #[test]
    fn purge_keeps_unacked() {
        let mut q = Queue::new();
        for seq in 1..=3 {
            q.push(entry(seq));
        }
        q.deliver(false);
        assert_eq!(q.purge_ready().len(), 2);
        assert_eq!(q.stats().ready_messages, 0);
        assert_eq!(q.stats().unacked_messages, 1);
        q.requeue_all();
        assert_eq!(q.stats().ready_messages, 1);
    }
}

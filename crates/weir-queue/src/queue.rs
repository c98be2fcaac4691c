//! One queue's message index: ready messages in order, delivered ones awaiting settlement.
//!
//! Order: ready messages sit in priority levels (one level in a queue without priorities).
//! `deliver` takes from the highest non-empty level; inside a level messages are kept sorted by
//! sequence number and handed out oldest first (`fifo`, the default) or newest first (`lifo`).
//! Tuxedo's `x-queue-order: priority,lifo` and RabbitMQ's `x-max-priority` are both this shape.
//!
//! Transitions (O(1) amortised on the default path, plus a scan of the occupied levels where a
//! message is looked up by sequence number alone):
//! - `push`: a newly published message joins the tail of its level (its sequence number is the
//!   largest this queue has seen: asserted);
//! - `deliver`: the next message moves to `unacked` (or leaves at once for an auto-ack consumer);
//! - `settle`: an unacked message leaves for good (ack, or dead-lettering later);
//! - `requeue`: an unacked message returns to its original place, marked redelivered;
//! - `remove`: a message leaves from wherever it is (log replay of a settlement, purge);
//! - `take_oldest`: the least recently received ready message leaves (overflow `drop-head`);
//! - `push_delayed` / `release_delayed`: a message published with a delay waits outside the
//!   ready order (counted, never delivered) until the engine's timer releases it to its place
//!   in the ready order, as if it had been ready all along.

use std::collections::{HashMap, VecDeque};

use crate::entry::{MessageEntry, MessageSeq, ENTRY_FLAG_REDELIVERED};

/// Counts by state, for `queue.declare-ok`, the HTTP API and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub ready_messages: u64,
    pub ready_bytes: u64,
    pub unacked_messages: u64,
    pub unacked_bytes: u64,
    /// Waiting for their delivery time (`x-delay`, `x-deliver-at`); not ready.
    pub delayed_messages: u64,
    pub delayed_bytes: u64,
}

/// How a queue orders its ready messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadyOrder {
    /// The highest priority level; 0 means no priorities (a single level). A message's
    /// priority above it counts as this maximum, as in RabbitMQ.
    pub max_priority: u8,
    /// Inside a priority level, newest first instead of oldest first.
    pub lifo: bool,
}

/// The message index of one queue.
#[derive(Debug)]
pub struct Queue {
    order: ReadyOrder,
    /// One deque per priority level, each sorted by `seq` ascending.
    levels: Vec<VecDeque<MessageEntry>>,
    /// Bit `p` set when level `p` holds a message: the highest level is found in O(1).
    occupied: [u64; 4],
    unacked: HashMap<MessageSeq, MessageEntry>,
    delayed: HashMap<MessageSeq, MessageEntry>,
    stats: QueueStats,
    /// The largest sequence number ever pushed: new messages must come after it.
    last_pushed_seq: MessageSeq,
    /// Bumped whenever a message joins the ready order anywhere but at the tail of its level
    /// (requeue, delayed release): a scan that remembered "nothing up to seq N matches" must
    /// start again.
    reinsertions: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Self::with_order(ReadyOrder::default())
    }
}

impl Queue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_order(order: ReadyOrder) -> Self {
        Queue {
            order,
            levels: (0..=order.max_priority).map(|_| VecDeque::new()).collect(),
            occupied: [0; 4],
            unacked: HashMap::new(),
            delayed: HashMap::new(),
            stats: QueueStats::default(),
            last_pushed_seq: 0,
            reinsertions: 0,
        }
    }

    pub fn order(&self) -> ReadyOrder {
        self.order
    }

    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    pub fn is_empty(&self) -> bool {
        !self.has_ready() && self.unacked.is_empty() && self.delayed.is_empty()
    }

    pub fn has_ready(&self) -> bool {
        self.occupied.iter().any(|&bits| bits != 0)
    }

    /// A newly published message joins the tail of its priority level (its priority is capped
    /// at the queue's maximum here).
    pub fn push(&mut self, entry: MessageEntry) {
        let entry = self.admit(entry);
        self.add_ready_stats(&entry);
        self.levels[usize::from(entry.priority)].push_back(entry);
        self.set_occupied(entry.priority, true);
    }

    /// A newly published message that must wait until its delivery time: kept aside, counted
    /// as delayed, until `release_delayed`.
    pub fn push_delayed(&mut self, entry: MessageEntry) {
        let entry = self.admit(entry);
        self.stats.delayed_messages += 1;
        self.stats.delayed_bytes += u64::from(entry.size_bytes);
        self.delayed.insert(entry.seq, entry);
    }

    /// A delayed message's time has come: it joins the ready order at its place. False if it
    /// is not delayed here (it left meanwhile).
    pub fn release_delayed(&mut self, seq: MessageSeq) -> bool {
        let Some(entry) = self.remove_delayed(seq) else {
            return false;
        };
        self.insert_ready_sorted(entry);
        true
    }

    /// Take a delayed message out (it expired while waiting, or the queue is purged).
    pub fn remove_delayed(&mut self, seq: MessageSeq) -> Option<MessageEntry> {
        let entry = self.delayed.remove(&seq)?;
        self.stats.delayed_messages -= 1;
        self.stats.delayed_bytes -= u64::from(entry.size_bytes);
        Some(entry)
    }

    pub fn is_delayed(&self, seq: MessageSeq) -> bool {
        self.delayed.contains_key(&seq)
    }

    /// Checks the arrival order and caps the priority at the queue's maximum.
    fn admit(&mut self, mut entry: MessageEntry) -> MessageEntry {
        assert!(
            entry.seq > self.last_pushed_seq,
            "queue push out of order: seq {} after {}",
            entry.seq,
            self.last_pushed_seq
        );
        self.last_pushed_seq = entry.seq;
        entry.priority = entry.priority.min(self.order.max_priority);
        entry
    }

    /// Hand out the next message. With `auto_ack` the message leaves the queue at once;
    /// otherwise it waits in `unacked` for `settle` or `requeue`.
    pub fn deliver(&mut self, auto_ack: bool) -> Option<MessageEntry> {
        let level = self.highest_occupied()?;
        let deque = &mut self.levels[usize::from(level)];
        let mut entry = if self.order.lifo { deque.pop_back() } else { deque.pop_front() }.expect("occupied");
        self.level_shrunk(level);
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

    /// Hand out one particular ready message (a filtered consumer chose it). `None` if it is
    /// not ready here.
    pub fn deliver_seq(&mut self, seq: MessageSeq, auto_ack: bool) -> Option<MessageEntry> {
        let mut entry = self.remove_ready(seq)?;
        entry.delivery_count = entry.delivery_count.saturating_add(1);
        if !auto_ack {
            self.stats.unacked_messages += 1;
            self.stats.unacked_bytes += u64::from(entry.size_bytes);
            self.unacked.insert(entry.seq, entry);
        }
        Some(entry)
    }

    /// Ready messages in delivery order (the order `deliver` hands them out), starting after
    /// the message at `after` = (priority level, seq), which need not still be there. A
    /// browse cursor: messages that join behind it are seen, ones that join before it are not
    /// (as IBM MQ's browse-next).
    pub fn ready_after(&self, after: Option<(u8, MessageSeq)>) -> impl Iterator<Item = &MessageEntry> + '_ {
        let lifo = self.order.lifo;
        self.occupied_levels().filter(move |&level| after.is_none_or(|(at, _)| level <= at)).flat_map(move |level| {
            let deque = &self.levels[usize::from(level)];
            let (start, end) = match after {
                Some((at, seq)) if at == level && lifo => (0, deque.partition_point(|e| e.seq < seq)),
                Some((at, seq)) if at == level => (deque.partition_point(|e| e.seq <= seq), deque.len()),
                _ => (0, deque.len()),
            };
            in_direction(deque.range(start..end), lifo)
        })
    }

    /// Ready messages in delivery order, skipping in each priority level `p` those with a
    /// sequence number up to `marks[p]` (missing marks are 0): what a filtered consumer has
    /// not judged yet, if `reinsertions` has not changed since it judged (a FIFO level is
    /// judged oldest first, so what it judged is a prefix of the level).
    pub fn ready_unjudged<'a>(&'a self, marks: &'a [MessageSeq]) -> impl Iterator<Item = &'a MessageEntry> + 'a {
        let lifo = self.order.lifo;
        self.occupied_levels().flat_map(move |level| {
            let mark = marks.get(usize::from(level)).copied().unwrap_or(0);
            let deque = &self.levels[usize::from(level)];
            in_direction(deque.range(deque.partition_point(|e| e.seq <= mark)..), lifo)
        })
    }

    /// The newest ready message's sequence number in priority level `level`.
    pub fn level_newest(&self, level: u8) -> Option<MessageSeq> {
        self.levels.get(usize::from(level))?.back().map(|e| e.seq)
    }

    /// See the field of the same name.
    pub fn reinsertions(&self) -> u64 {
        self.reinsertions
    }

    /// Delayed messages by sequence number (arrival order).
    pub fn delayed_sorted(&self) -> Vec<&MessageEntry> {
        let mut entries: Vec<&MessageEntry> = self.delayed.values().collect();
        entries.sort_unstable_by_key(|e| e.seq);
        entries
    }

    /// Unacked messages by sequence number.
    pub fn unacked_sorted(&self) -> Vec<&MessageEntry> {
        let mut entries: Vec<&MessageEntry> = self.unacked.values().collect();
        entries.sort_unstable_by_key(|e| e.seq);
        entries
    }

    /// Take the least recently received ready message out without handing it out (it is
    /// dropped or dead-lettered: overflow `drop-head`).
    pub fn take_oldest(&mut self) -> Option<MessageEntry> {
        let level = self.occupied_levels().min_by_key(|&level| self.levels[usize::from(level)][0].seq)?;
        let entry = self.levels[usize::from(level)].pop_front().expect("occupied");
        self.level_shrunk(level);
        self.sub_ready_stats(&entry);
        Some(entry)
    }

    /// Take the least recently received message of the lowest occupied priority level out
    /// (overflow `drop-lowest-priority`).
    pub fn take_lowest_priority(&mut self) -> Option<MessageEntry> {
        let level = self.occupied_levels().last()?;
        let entry = self.levels[usize::from(level)].pop_front().expect("occupied");
        self.level_shrunk(level);
        self.sub_ready_stats(&entry);
        Some(entry)
    }

    /// Remove a message only if it is ready (expiry never takes a message out of a consumer's
    /// hands).
    pub fn remove_ready(&mut self, seq: MessageSeq) -> Option<MessageEntry> {
        let (level, index) = self.find_ready(seq)?;
        let entry = self.levels[usize::from(level)].remove(index).expect("found");
        self.level_shrunk(level);
        self.sub_ready_stats(&entry);
        Some(entry)
    }

    pub fn is_unacked(&self, seq: MessageSeq) -> bool {
        self.unacked.contains_key(&seq)
    }

    pub fn contains(&self, seq: MessageSeq) -> bool {
        self.unacked.contains_key(&seq) || self.delayed.contains_key(&seq) || self.find_ready(seq).is_some()
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

    /// A failed message waits before its next delivery (`x-retry-delay`): it moves from
    /// unacked (or ready, when a replay restores the wait) to delayed, marked redelivered,
    /// until `release_delayed` puts it back in its place. False if it is neither.
    pub fn defer(&mut self, seq: MessageSeq) -> bool {
        let Some(mut entry) = self.settle(seq).or_else(|| self.remove_ready(seq)) else {
            return false;
        };
        entry.flags |= ENTRY_FLAG_REDELIVERED;
        self.stats.delayed_messages += 1;
        self.stats.delayed_bytes += u64::from(entry.size_bytes);
        self.delayed.insert(seq, entry);
        true
    }

    pub fn unacked_entry(&self, seq: MessageSeq) -> Option<&MessageEntry> {
        self.unacked.get(&seq)
    }

    /// Restore how often a message was delivered (a replayed failure record). False if it is
    /// not here.
    pub fn set_delivery_count(&mut self, seq: MessageSeq, count: u16) -> bool {
        let entry = match self.unacked.get_mut(&seq).or_else(|| self.delayed.get_mut(&seq)) {
            Some(entry) => entry,
            None => match self.find_ready(seq) {
                Some((level, index)) => &mut self.levels[usize::from(level)][index],
                None => return false,
            },
        };
        entry.delivery_count = count;
        if count > 0 {
            entry.flags |= ENTRY_FLAG_REDELIVERED;
        }
        true
    }

    /// Remove a message wherever it is (ready, unacked or delayed).
    pub fn remove(&mut self, seq: MessageSeq) -> Option<MessageEntry> {
        if let Some(entry) = self.settle(seq) {
            return Some(entry);
        }
        if let Some(entry) = self.remove_delayed(seq) {
            return Some(entry);
        }
        self.remove_ready(seq)
    }

    /// Change where a message's body lives (log compaction moved it). Returns the old
    /// location, or `None` if the message is not in the queue.
    pub fn relocate(&mut self, seq: MessageSeq, location: u64) -> Option<u64> {
        let entry = match self.unacked.get_mut(&seq).or_else(|| self.delayed.get_mut(&seq)) {
            Some(entry) => entry,
            None => {
                let (level, index) = self.find_ready(seq)?;
                &mut self.levels[usize::from(level)][index]
            }
        };
        Some(std::mem::replace(&mut entry.location, location))
    }

    /// Drop every ready message (unacked ones stay, as in RabbitMQ's `queue.purge`).
    pub fn purge_ready(&mut self) -> Vec<MessageEntry> {
        self.stats.ready_messages = 0;
        self.stats.ready_bytes = 0;
        self.occupied = [0; 4];
        self.levels.iter_mut().flat_map(|level| level.drain(..)).collect()
    }

    /// Drop every delayed message (`queue.purge` empties what waits, too).
    pub fn purge_delayed(&mut self) -> Vec<MessageEntry> {
        self.stats.delayed_messages = 0;
        self.stats.delayed_bytes = 0;
        self.delayed.drain().map(|(_, entry)| entry).collect()
    }

    /// Every message: ready first (by level, lowest first, each by sequence number), then
    /// unacked and delayed ones (in no particular order).
    pub fn entries(&self) -> impl Iterator<Item = &MessageEntry> {
        self.levels.iter().flatten().chain(self.unacked.values()).chain(self.delayed.values())
    }

    /// Turn every unacked message back to ready (used when a snapshot is restored: nothing
    /// is delivered after a restart).
    pub fn requeue_all(&mut self) {
        let seqs: Vec<MessageSeq> = self.unacked.keys().copied().collect();
        for seq in seqs {
            self.requeue(seq);
        }
    }

    fn find_ready(&self, seq: MessageSeq) -> Option<(u8, usize)> {
        self.occupied_levels().find_map(|level| {
            let index = self.levels[usize::from(level)].binary_search_by_key(&seq, |e| e.seq).ok()?;
            Some((level, index))
        })
    }

    fn insert_ready_sorted(&mut self, entry: MessageEntry) {
        let deque = &mut self.levels[usize::from(entry.priority)];
        let index = match deque.binary_search_by_key(&entry.seq, |e| e.seq) {
            Ok(_) => panic!("seq {} is already ready", entry.seq),
            Err(index) => index,
        };
        deque.insert(index, entry);
        self.reinsertions += 1;
        self.add_ready_stats(&entry);
        self.set_occupied(entry.priority, true);
    }

    /// Levels holding messages, highest first.
    fn occupied_levels(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=self.order.max_priority).rev().filter(|&level| self.is_occupied(level))
    }

    fn highest_occupied(&self) -> Option<u8> {
        for word in (0..4).rev() {
            let bits = self.occupied[word];
            if bits != 0 {
                return Some((word * 64 + 63 - bits.leading_zeros() as usize) as u8);
            }
        }
        None
    }

    fn is_occupied(&self, level: u8) -> bool {
        self.occupied[usize::from(level / 64)] & (1 << (level % 64)) != 0
    }

    fn set_occupied(&mut self, level: u8, on: bool) {
        let bit = 1u64 << (level % 64);
        let word = &mut self.occupied[usize::from(level / 64)];
        if on {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    fn level_shrunk(&mut self, level: u8) {
        if self.levels[usize::from(level)].is_empty() {
            self.set_occupied(level, false);
        }
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

/// A level's entries oldest first, or newest first for `lifo`.
fn in_direction<'a>(
    range: std::collections::vec_deque::Iter<'a, MessageEntry>,
    lifo: bool,
) -> impl Iterator<Item = &'a MessageEntry> {
    let (forward, backward) = if lifo { (None, Some(range.rev())) } else { (Some(range), None) };
    forward.into_iter().flatten().chain(backward.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> MessageEntry {
        MessageEntry { seq, location: seq * 10, size_bytes: 5, delivery_count: 0, flags: 0, priority: 0 }
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

    fn seqs<'a>(entries: impl Iterator<Item = &'a MessageEntry>) -> Vec<u64> {
        entries.map(|e| e.seq).collect()
    }

    #[test]
    fn browse_cursor_walks_delivery_order_and_sees_later_arrivals() {
        for lifo in [false, true] {
            let mut q = Queue::with_order(ReadyOrder { max_priority: 2, lifo });
            for (seq, priority) in [(1, 0), (2, 2), (3, 0), (4, 2), (5, 1)] {
                q.push(MessageEntry { priority, ..entry(seq) });
            }
            let order = seqs(q.ready_after(None));
            assert_eq!(order, if lifo { vec![4, 2, 5, 3, 1] } else { vec![2, 4, 5, 1, 3] });
            // Step through one at a time, as a browse consumer does.
            let mut cursor = None;
            let mut walked = Vec::new();
            while let Some(next) = q.ready_after(cursor).next() {
                walked.push(next.seq);
                cursor = Some((next.priority, next.seq));
            }
            assert_eq!(walked, order);
            // The cursor's own message may leave; a new low-priority message arrives behind it.
            assert!(q.remove_ready(3).is_some());
            q.push(MessageEntry { priority: 0, ..entry(6) });
            let rest = seqs(q.ready_after(Some((1, 5))));
            assert_eq!(rest, if lifo { vec![6, 1] } else { vec![1, 6] });
        }
    }

    #[test]
    fn unjudged_skips_what_a_filter_saw_until_something_is_reinserted() {
        let mut q = Queue::new();
        for seq in 1..=4 {
            q.push(entry(seq));
        }
        assert_eq!(seqs(q.ready_unjudged(&[2])), vec![3, 4]);
        assert_eq!(q.level_newest(0), Some(4));
        let mut p = Queue::with_order(ReadyOrder { max_priority: 1, lifo: false });
        for (seq, priority) in [(1, 0), (2, 1), (3, 0), (4, 1)] {
            p.push(MessageEntry { priority, ..entry(seq) });
        }
        assert_eq!(seqs(p.ready_unjudged(&[0, 2])), vec![4, 1, 3], "marks per level");
        let before = q.reinsertions();
        let taken = q.deliver_seq(3, false).unwrap();
        assert_eq!((taken.seq, taken.delivery_count), (3, 1));
        assert!(q.deliver_seq(3, false).is_none(), "no longer ready");
        assert_eq!(q.reinsertions(), before, "taking is not reinserting");
        assert!(q.requeue(3));
        assert_eq!(q.reinsertions(), before + 1);
        assert_eq!(seqs(q.ready_after(None)), vec![1, 2, 3, 4]);
        assert_eq!(q.stats().unacked_messages, 0);
    }

    #[test]
    fn deferred_message_waits_as_delayed_then_returns_to_its_place() {
        let mut q = Queue::new();
        for seq in 1..=3 {
            q.push(entry(seq));
        }
        let first = q.deliver(false).unwrap();
        assert!(q.defer(first.seq));
        assert_eq!((q.stats().delayed_messages, q.stats().unacked_messages, q.stats().ready_messages), (1, 0, 2));
        assert!(q.set_delivery_count(first.seq, 4));
        assert!(q.release_delayed(first.seq));
        let again = q.deliver(true).unwrap();
        assert_eq!((again.seq, again.delivery_count, again.is_redelivered()), (1, 5, true));
        assert!(q.defer(2), "a ready message can be deferred too (replay)");
        assert!(!q.defer(2), "not twice");
        assert!(!q.set_delivery_count(99, 1));
    }

    #[test]
    fn lowest_priority_goes_first_oldest_within_it() {
        let mut q = Queue::with_order(ReadyOrder { max_priority: 5, lifo: false });
        for (seq, priority) in [(1, 3), (2, 1), (3, 5), (4, 1)] {
            q.push(MessageEntry { priority, ..entry(seq) });
        }
        let taken: Vec<u64> = std::iter::from_fn(|| q.take_lowest_priority()).map(|e| e.seq).collect();
        assert_eq!(taken, vec![2, 4, 1, 3]);
        assert_eq!(q.stats().ready_messages, 0);
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

//! Randomised comparison of `Queue` against a tiny reference model.
//!
//! The model is the simplest thing that could be right: a `Vec` of ready messages, re-sorted
//! after every change by the queue's order (priority descending, then sequence number
//! ascending for `fifo` or descending for `lifo`), and a `BTreeMap` of unacked ones. Each seed
//! picks a random order (no priorities or up to 12 levels, fifo or lifo). Every step applies
//! one random command to both and compares what came out. One seed reproduces a run: set
//! `WEIR_SEED=<n>`; every failure message prints the seed.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weir_queue::{MessageEntry, Queue, ReadyOrder, ENTRY_FLAG_REDELIVERED};

struct Model {
    order: ReadyOrder,
    ready: Vec<MessageEntry>,
    unacked: BTreeMap<u64, MessageEntry>,
    delayed: BTreeMap<u64, MessageEntry>,
}

impl Model {
    fn sort(&mut self) {
        let lifo = self.order.lifo;
        self.ready.sort_by_key(|e| (std::cmp::Reverse(e.priority), if lifo { u64::MAX - e.seq } else { e.seq }));
    }

    fn push(&mut self, mut entry: MessageEntry) {
        entry.priority = entry.priority.min(self.order.max_priority);
        self.ready.push(entry);
        self.sort();
    }

    fn release_delayed(&mut self, seq: u64) -> bool {
        let Some(entry) = self.delayed.remove(&seq) else {
            return false;
        };
        self.ready.push(entry);
        self.sort();
        true
    }

    fn take_oldest(&mut self) -> Option<MessageEntry> {
        let index = (0..self.ready.len()).min_by_key(|&i| self.ready[i].seq)?;
        Some(self.ready.remove(index))
    }

    fn deliver(&mut self, auto_ack: bool) -> Option<MessageEntry> {
        if self.ready.is_empty() {
            return None;
        }
        let mut entry = self.ready.remove(0);
        entry.delivery_count += 1;
        if !auto_ack {
            self.unacked.insert(entry.seq, entry);
        }
        Some(entry)
    }

    fn requeue(&mut self, seq: u64) -> bool {
        let Some(mut entry) = self.unacked.remove(&seq) else {
            return false;
        };
        entry.flags |= ENTRY_FLAG_REDELIVERED;
        self.ready.push(entry);
        self.sort();
        true
    }

    fn remove(&mut self, seq: u64) -> Option<MessageEntry> {
        if let Some(entry) = self.unacked.remove(&seq) {
            return Some(entry);
        }
        if let Some(entry) = self.delayed.remove(&seq) {
            return Some(entry);
        }
        let index = self.ready.iter().position(|e| e.seq == seq)?;
        Some(self.ready.remove(index))
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let order =
        ReadyOrder { max_priority: if rng.gen_bool(0.3) { 0 } else { rng.gen_range(1..=12) }, lifo: rng.gen_bool(0.3) };
    let mut queue = Queue::with_order(order);
    let mut model = Model { order, ready: Vec::new(), unacked: BTreeMap::new(), delayed: BTreeMap::new() };
    let mut next_seq = 1u64;
    for step in 0..steps {
        let pick_seq = |rng: &mut StdRng| rng.gen_range(1..next_seq.max(2) + 1);
        match rng.gen_range(0..10) {
            0 | 1 | 8 => {
                let entry = MessageEntry {
                    seq: next_seq,
                    location: rng.gen(),
                    size_bytes: rng.gen_range(0..2000),
                    delivery_count: 0,
                    flags: 0,
                    // Sometimes above the queue's maximum: capped, as RabbitMQ does.
                    priority: rng.gen_range(0..=15),
                };
                next_seq += 1;
                if rng.gen_bool(0.25) {
                    queue.push_delayed(entry);
                    let mut capped = entry;
                    capped.priority = capped.priority.min(order.max_priority);
                    model.delayed.insert(entry.seq, capped);
                } else {
                    queue.push(entry);
                    model.push(entry);
                }
            }
            9 => {
                let seq = pick_seq(&mut rng);
                let want = model.release_delayed(seq);
                assert_eq!(queue.release_delayed(seq), want, "seed {seed} step {step}: release_delayed {seq}");
            }
            7 if rng.gen_bool(0.05) => {
                // Purge (ready and delayed), as queue.purge does.
                let mut got = queue.purge_ready();
                got.extend(queue.purge_delayed());
                got.sort_by_key(|e| e.seq);
                let mut want: Vec<MessageEntry> =
                    model.ready.drain(..).chain(std::mem::take(&mut model.delayed).into_values()).collect();
                want.sort_by_key(|e| e.seq);
                assert_eq!(got, want, "seed {seed} step {step}: purge");
            }
            7 => assert_eq!(queue.take_oldest(), model.take_oldest(), "seed {seed} step {step}: take_oldest"),
            2 => {
                let auto_ack = rng.gen_bool(0.3);
                let got = queue.deliver(auto_ack);
                let want = model.deliver(auto_ack);
                assert_eq!(got, want, "seed {seed} step {step}: deliver");
            }
            3 => {
                let seq = pick_seq(&mut rng);
                let got = queue.settle(seq);
                let want = model.unacked.remove(&seq);
                assert_eq!(got, want, "seed {seed} step {step}: settle {seq}");
            }
            4 => {
                let seq = pick_seq(&mut rng);
                assert_eq!(queue.requeue(seq), model.requeue(seq), "seed {seed} step {step}: requeue {seq}");
            }
            5 => {
                let seq = pick_seq(&mut rng);
                assert_eq!(queue.remove(seq), model.remove(seq), "seed {seed} step {step}: remove {seq}");
            }
            _ => {
                let seq = pick_seq(&mut rng);
                let location = rng.gen();
                let in_model = model
                    .ready
                    .iter_mut()
                    .chain(model.unacked.values_mut())
                    .chain(model.delayed.values_mut())
                    .find(|e| e.seq == seq)
                    .map(|e| std::mem::replace(&mut e.location, location));
                assert_eq!(queue.relocate(seq, location), in_model, "seed {seed} step {step}: relocate {seq}");
            }
        }
        let stats = queue.stats();
        assert_eq!(stats.ready_messages as usize, model.ready.len(), "seed {seed} step {step}: ready count");
        assert_eq!(stats.unacked_messages as usize, model.unacked.len(), "seed {seed} step {step}: unacked count");
        let model_ready_bytes: u64 = model.ready.iter().map(|e| u64::from(e.size_bytes)).sum();
        assert_eq!(stats.ready_bytes, model_ready_bytes, "seed {seed} step {step}: ready bytes");
        assert_eq!(queue.has_ready(), !model.ready.is_empty(), "seed {seed} step {step}: has_ready");
        assert_eq!(stats.delayed_messages as usize, model.delayed.len(), "seed {seed} step {step}: delayed count");
        let bytes =
            |entries: &mut dyn Iterator<Item = &MessageEntry>| entries.map(|e| u64::from(e.size_bytes)).sum::<u64>();
        assert_eq!(stats.unacked_bytes, bytes(&mut model.unacked.values()), "seed {seed} step {step}: unacked bytes");
        assert_eq!(stats.delayed_bytes, bytes(&mut model.delayed.values()), "seed {seed} step {step}: delayed bytes");
        for seq in 1..next_seq {
            let in_model = model.delayed.contains_key(&seq)
                || model.unacked.contains_key(&seq)
                || model.ready.iter().any(|e| e.seq == seq);
            assert_eq!(queue.contains(seq), in_model, "seed {seed} step {step}: contains {seq}");
        }
    }
}

#[test]
fn queue_matches_reference_model() {
    if let Some(seed) = std::env::var("WEIR_SEED").ok().and_then(|s| s.parse().ok()) {
        run(seed, 5_000);
        return;
    }
    let base: u64 = rand::random();
    for i in 0..200 {
        run(base.wrapping_add(i), 500);
    }
}

//! weir-queue: the pure queue state machine.
//!
//! A [`Queue`] holds the index of one queue's messages: which are ready, which are
//! delivered and waiting for a settlement, in what order they go out. It does no I/O, reads
//! no clock and starts no thread: every transition is a method call whose result depends
//! only on the queue's state and its arguments. The engine (`weir-engine`) drives it both
//! live and when it replays the log at start-up, so the two paths cannot disagree.
//!
//! Invariants kept here (asserted, because breaking one is a Weir bug):
//! - a message sequence number is in at most one of `ready`, `unacked` and `delayed`;
//! - each priority level of `ready` is sorted by sequence number (requeued messages go back
//!   to their original place, as RabbitMQ's classic queues do); delivery takes the highest
//!   occupied level, oldest first (`fifo`) or newest first (`lifo`);
//! - the byte and count totals equal the sums over the entries.
//!
//! Memory: one [`MessageEntry`] is 24 bytes; the body lives in the log (or, for transient
//! messages, in the engine's content store), never here.

mod entry;
mod queue;
pub mod selector;

pub use entry::{MessageEntry, MessageSeq, ENTRY_FLAG_PERSISTENT, ENTRY_FLAG_REDELIVERED};
pub use queue::{Queue, QueueStats, ReadyOrder};

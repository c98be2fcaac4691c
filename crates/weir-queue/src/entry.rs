//! The index entry the queue keeps per message.
//!
//! It is deliberately small (24 bytes, checked by a test): a 10-million-message backlog
//! must fit in a few hundred MiB. `location` is opaque to the queue: the engine stores a log
//! position there (or a marker for an in-memory transient body).

/// Broker-wide message sequence number, assigned at publish, never reused. It is also the
/// FIFO order key.
pub type MessageSeq = u64;

/// The message was published persistent (delivery-mode 2) into a durable queue: its
/// enqueue is in the log and its settlement must be logged too.
pub const ENTRY_FLAG_PERSISTENT: u8 = 0b0000_0001;
/// The message has been handed out before (AMQP `redelivered`).
pub const ENTRY_FLAG_REDELIVERED: u8 = 0b0000_0010;

/// One message in one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageEntry {
    /// Broker-wide sequence number (FIFO key).
    pub seq: MessageSeq,
    /// Where the body is: opaque to the queue (the engine encodes a log position).
    pub location: u64,
    /// Body size, for byte counts and limits.
    pub size_bytes: u32,
    /// How many times it has been handed out.
    pub delivery_count: u16,
    /// `ENTRY_FLAG_*` bits.
    pub flags: u8,
    /// Priority level inside its queue (0 in a queue without priorities; the message's
    /// `priority` property capped at the queue's maximum otherwise). Fits in what would be
    /// padding.
    pub priority: u8,
}

impl MessageEntry {
    pub fn is_persistent(&self) -> bool {
        self.flags & ENTRY_FLAG_PERSISTENT != 0
    }

    pub fn is_redelivered(&self) -> bool {
        self.flags & ENTRY_FLAG_REDELIVERED != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_stays_small() {
        assert_eq!(std::mem::size_of::<MessageEntry>(), 24);
    }
}

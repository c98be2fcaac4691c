//! Message contents held in memory, by message sequence number.
//!
//! Two kinds of entry:
//! - *pinned*: the only copy of the body (a transient message, or a message in a queue that
//!   is not durable). It stays until the last queue entry referring to it is gone.
//! - *cached*: a persistent message whose body is also in the log. It is kept while the
//!   cache is under its byte budget, so a message consumed soon after it was published is
//!   delivered without a read from disk; otherwise the engine reads it back from the log.
//!
//! Each entry counts the queue entries that refer to it (a fanout publish reaches several
//! queues with one body).

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::Message;

struct Stored {
    message: Arc<Message>,
    references: u32,
    pinned: bool,
}

pub(crate) struct ContentStore {
    entries: HashMap<u64, Stored>,
    cached_bytes: u64,
    pinned_bytes: u64,
    cache_budget_bytes: u64,
}

fn weight(message: &Message) -> u64 {
    (message.body.len() + message.raw_properties.len() + message.routing_key.len() + 64) as u64
}

impl ContentStore {
    pub fn new(cache_budget_bytes: u64) -> Self {
        Self { entries: HashMap::new(), cached_bytes: 0, pinned_bytes: 0, cache_budget_bytes }
    }

    /// Remember a new message referenced by `references` queue entries. A pinned message is
    /// always kept; an unpinned one only while the cache has room.
    pub fn insert(&mut self, seq: u64, message: &Arc<Message>, references: u32, pinned: bool) {
        let bytes = weight(message);
        if pinned {
            self.pinned_bytes += bytes;
        } else if self.cached_bytes + bytes > self.cache_budget_bytes {
            return;
        } else {
            self.cached_bytes += bytes;
        }
        let previous = self.entries.insert(seq, Stored { message: Arc::clone(message), references, pinned });
        assert!(previous.is_none(), "message {seq} stored twice");
    }

    pub fn get(&self, seq: u64) -> Option<Arc<Message>> {
        self.entries.get(&seq).map(|s| Arc::clone(&s.message))
    }

    /// A message pinned only while its log position was unknown (inside a transaction's
    /// capture) becomes an ordinary cache entry, or leaves if the cache is full.
    pub fn unpin(&mut self, seq: u64) {
        let Some(stored) = self.entries.get_mut(&seq) else { return };
        if !stored.pinned {
            return;
        }
        let bytes = weight(&stored.message);
        stored.pinned = false;
        self.pinned_bytes -= bytes;
        if self.cached_bytes + bytes > self.cache_budget_bytes {
            self.entries.remove(&seq);
        } else {
            self.cached_bytes += bytes;
        }
    }

    /// One queue entry referring to `seq` is gone.
    pub fn release(&mut self, seq: u64) {
        let Some(stored) = self.entries.get_mut(&seq) else {
            return;
        };
        stored.references -= 1;
        if stored.references == 0 {
            let stored = self.entries.remove(&seq).expect("present");
            let bytes = weight(&stored.message);
            if stored.pinned {
                self.pinned_bytes -= bytes;
            } else {
                self.cached_bytes -= bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(n: usize) -> Arc<Message> {
        Arc::new(Message {
            exchange: String::new(),
            routing_key: "q".into(),
            raw_properties: Bytes::new(),
            body: Bytes::from(vec![0; n]),
        })
    }

    #[test]
    fn pinned_messages_ignore_the_budget_and_leave_with_their_last_reference() {
        let mut store = ContentStore::new(0);
        store.insert(1, &message(10), 2, true);
        store.insert(2, &message(10), 1, false);
        assert!(store.get(1).is_some());
        assert!(store.get(2).is_none(), "over budget: not cached");
        store.release(1);
        assert!(store.get(1).is_some());
        store.release(1);
        assert!(store.get(1).is_none());
        assert_eq!(store.pinned_bytes, 0);
    }
}

//! Consumers that choose their messages, and looking without taking.
//!
//! - A *filtered* consumer (`x-message-id`, `x-correlation-id`, `x-selector`) takes the first
//!   ready message, in delivery order, that meets its filter. In a FIFO queue it remembers,
//!   per priority level, the newest sequence number up to which no ready message matched,
//!   with the queue's reinsertion count at that moment; while nothing is requeued or
//!   released, later picks look only at newer messages, so each message is judged once per
//!   consumer, not once per delivery. (A LIFO level is judged newest first, so there the
//!   consumer looks at the whole queue each time.)
//! - A *browsing* consumer (`x-browse: true`) is handed copies: the message stays ready for
//!   others, is not counted as delivered, and needs no ack. With manual acks its deliveries
//!   count against its prefetch until acked (an ack, nack or reject of a browsed message does
//!   nothing else), which is how a browser paces itself. It walks the queue once in delivery
//!   order with a cursor, as IBM MQ's browse-next: it sees messages that arrive behind its
//!   cursor, not ones placed before it.
//! - Queues with such consumers are dispatched by [`Broker::dispatch_filtered_one`], which
//!   offers each message to consumers in the usual order (priority groups, round-robin) but
//!   skips a consumer that has nothing it wants. Queues without them keep the O(1) path.
//! - [`Broker::browse`] answers the HTTP API's paged browse, with a cursor per page.

use std::sync::Arc;

use weir_log::Storage;
use weir_queue::MessageEntry;

use crate::api::{BrowseCursor, BrowseRequest, BrowseState, BrowsedMessage, Event, Message, Origin};
use crate::error::EngineError;
use crate::filter::MessageFilter;
use crate::security::Access;

use super::{Broker, ConsumerKey, QueueId};

/// The most messages a browsing consumer looks at per dispatch: a selective browse of a deep
/// queue goes on in the next engine turn instead of holding this one.
const BROWSE_SCAN_MAX: usize = 4096;
/// The most messages one HTTP browse page looks at; the page then ends early with a cursor.
const PAGE_SCAN_MAX: usize = 16_384;

/// What a choosing consumer wants, kept with the consumer.
pub(super) struct ConsumerChoice {
    pub filter: Option<Arc<MessageFilter>>,
    pub browse: bool,
    /// Browse: the last message looked at, as (priority level, seq).
    cursor: Option<(u8, u64)>,
    /// Filter: (queue reinsertions, marks): in priority level `p` no ready message up to
    /// `marks[p]` matched, while the queue's reinsertion count stays the same.
    seen: Option<(u64, Vec<u64>)>,
}

impl ConsumerChoice {
    pub fn new(filter: Option<MessageFilter>, browse: bool) -> Option<Self> {
        if filter.is_none() && !browse {
            return None;
        }
        Some(Self { filter: filter.map(Arc::new), browse, cursor: None, seen: None })
    }
}

/// Which message a consumer gets.
pub(super) enum Pick {
    /// The next in delivery order (a consumer that takes anything).
    Next,
    /// This ready message.
    Seq(u64),
    /// A copy of this one; it stays where it is.
    Browse(MessageEntry),
}

impl<S: Storage> Broker<S> {
    /// Offer ready messages to the queue's consumers in turn, letting each choose, until one
    /// takes (or copies) a message. False when none of those with room wants any.
    pub(super) fn dispatch_filtered_one(&mut self, id: QueueId) -> bool {
        let Some(queue) = self.queues.get(&id) else { return false };
        if !queue.messages.has_ready() {
            return false;
        }
        let candidates: Vec<(usize, usize)> = self.turn_order(id).collect();
        for (index, group_start) in candidates {
            let key = self.queues[&id].consumers[index].clone();
            if let Some(pick) = self.pick_for(id, &key) {
                self.queues.get_mut(&id).expect("present").next_consumer = index - group_start + 1;
                self.deliver_to(id, &key, pick);
                return true;
            }
        }
        false
    }

    /// What consumer `key` of queue `id` gets now, if anything; moves its cursor or its
    /// "seen" mark past what it looked at.
    fn pick_for(&mut self, id: QueueId, key: &ConsumerKey) -> Option<Pick> {
        let channel = self.connections.get(&key.connection)?.channels.get(&key.channel)?;
        let Some(choice) = channel.consumers.get(&key.tag)?.choice.as_ref() else {
            return Some(Pick::Next);
        };
        let messages = &self.queues[&id].messages;
        let filter = choice.filter.as_deref();
        if choice.browse {
            let mut cursor = choice.cursor;
            let mut found = None;
            let mut scanned = 0;
            for entry in messages.ready_after(cursor).take(BROWSE_SCAN_MAX) {
                scanned += 1;
                cursor = Some((entry.priority, entry.seq));
                if filter.is_none_or(|f| self.message_matches(entry, f)) {
                    found = Some(*entry);
                    break;
                }
            }
            if found.is_none() && scanned == BROWSE_SCAN_MAX {
                self.mark_dirty(id); // dispatch cleared its mark: this one is for the next turn
            }
            self.choice_mut(key).cursor = cursor;
            return found.map(Pick::Browse);
        }
        let filter = filter.expect("a choice that does not browse filters");
        let reinsertions = messages.reinsertions();
        let fifo = !messages.order().lifo;
        let mut marks = match &choice.seen {
            Some((count, marks)) if *count == reinsertions && fifo => marks.clone(),
            _ => vec![0; usize::from(messages.order().max_priority) + 1],
        };
        let found = messages.ready_unjudged(&marks).find(|e| self.message_matches(e, filter)).copied();
        if fifo {
            // Judged: every level above the match whole, and the match's level up to it.
            let stop = found.map(|e| (e.priority, e.seq));
            for (level, mark) in marks.iter_mut().enumerate() {
                let level = level as u8;
                match stop {
                    Some((at, seq)) if at == level => *mark = seq,
                    Some((at, _)) if level < at => {}
                    _ => *mark = messages.level_newest(level).unwrap_or(*mark).max(*mark),
                }
            }
            self.choice_mut(key).seen = Some((reinsertions, marks));
        }
        found.map(|e| Pick::Seq(e.seq))
    }

    fn choice_mut(&mut self, key: &ConsumerKey) -> &mut ConsumerChoice {
        self.connections
            .get_mut(&key.connection)
            .and_then(|c| c.channels.get_mut(&key.channel))
            .and_then(|c| c.consumers.get_mut(&key.tag))
            .and_then(|c| c.choice.as_mut())
            .expect("a choosing consumer")
    }

    /// Does the message behind `entry` meet `filter`? A message that cannot be read matches
    /// nothing (a delivery attempt reports and drops it).
    fn message_matches(&self, entry: &MessageEntry, filter: &MessageFilter) -> bool {
        self.peek_message(entry).is_some_and(|message| filter.matches(&message))
    }

    /// A message's content without taking it: from memory, or read back from the log.
    pub(super) fn peek_message(&self, entry: &MessageEntry) -> Option<Arc<Message>> {
        if let Some(message) = self.content.get(entry.seq) {
            return Some(message);
        }
        match self.read_message(entry) {
            Ok(message) => Some(Arc::new(message)),
            Err(failure) => {
                tracing::warn!(seq = entry.seq, "cannot read a message to look at it: {failure}");
                None
            }
        }
    }

    /// The first ready message of queue `id`, in delivery order, that meets `filter`.
    pub(super) fn first_match(&self, id: QueueId, filter: &MessageFilter) -> Option<u64> {
        self.queues[&id].messages.ready_after(None).find(|e| self.message_matches(e, filter)).map(|e| e.seq)
    }

    /// One page of an HTTP browse: up to `limit` messages after the cursor that meet the
    /// filter, and the cursor of the last message looked at if there may be more.
    pub(super) fn browse(
        &mut self,
        origin: Origin,
        queue_name: &str,
        request: BrowseRequest,
    ) -> Result<(), EngineError> {
        self.authorize(origin.connection, Access::Read, "queue", queue_name)?;
        let id = self.lookup_queue(origin.connection, queue_name)?;
        let messages = &self.queues[&id].messages;
        let filter = request.filter.as_deref();
        let sections: &[BrowseState] = match request.state {
            BrowseState::All => &[BrowseState::Ready, BrowseState::Delayed, BrowseState::Unacked],
            BrowseState::Ready => &[BrowseState::Ready],
            BrowseState::Delayed => &[BrowseState::Delayed],
            BrowseState::Unacked => &[BrowseState::Unacked],
        };
        let limit = request.limit as usize;
        let mut page = Vec::new();
        let mut scanned = 0;
        let mut last = None;
        let mut exhausted = true;
        'sections: for &section in sections {
            let entries: Box<dyn Iterator<Item = &MessageEntry>> = match (section, request.after) {
                (BrowseState::Ready, Some(BrowseCursor::Ready { priority, seq })) => {
                    Box::new(messages.ready_after(Some((priority, seq))))
                }
                (BrowseState::Ready, None) => Box::new(messages.ready_after(None)),
                (BrowseState::Ready, Some(_)) => continue, // the cursor is past this section
                (BrowseState::Delayed, Some(BrowseCursor::Unacked { .. })) => continue,
                (BrowseState::Delayed, after) => Box::new(after_seq(messages.delayed_sorted(), after, section)),
                (_, after) => Box::new(after_seq(messages.unacked_sorted(), after, section)),
            };
            for entry in entries {
                if page.len() == limit || scanned == PAGE_SCAN_MAX {
                    exhausted = false;
                    break 'sections;
                }
                scanned += 1;
                last = Some(cursor_of(section, entry));
                let Some(message) = self.peek_message(entry) else { continue };
                if filter.is_none_or(|f| f.matches(&message)) {
                    page.push(BrowsedMessage {
                        state: section,
                        seq: entry.seq,
                        priority: entry.priority,
                        delivery_count: entry.delivery_count,
                        redelivered: entry.is_redelivered(),
                        message,
                    });
                }
            }
        }
        let next = if exhausted { None } else { last };
        self.reply(origin.connection, Event::Browsed { channel: origin.channel, messages: page, next });
        Ok(())
    }
}

/// Entries sorted by seq, after the cursor when it points into this section.
fn after_seq(
    entries: Vec<&MessageEntry>,
    after: Option<BrowseCursor>,
    section: BrowseState,
) -> impl Iterator<Item = &MessageEntry> {
    let start = match (section, after) {
        (BrowseState::Delayed, Some(BrowseCursor::Delayed { seq }))
        | (BrowseState::Unacked, Some(BrowseCursor::Unacked { seq })) => entries.partition_point(|e| e.seq <= seq),
        _ => 0,
    };
    entries.into_iter().skip(start)
}

fn cursor_of(section: BrowseState, entry: &MessageEntry) -> BrowseCursor {
    match section {
        BrowseState::Ready | BrowseState::All => BrowseCursor::Ready { priority: entry.priority, seq: entry.seq },
        BrowseState::Delayed => BrowseCursor::Delayed { seq: entry.seq },
        BrowseState::Unacked => BrowseCursor::Unacked { seq: entry.seq },
    }
}

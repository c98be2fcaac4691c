//! Moving messages between queues, and redriving dead letters to where they came from
//! (SPEC.md section 5, "move / redrive from a dead-letter queue back to its source"); and
//! removing chosen messages (deleting one message, cancelling a scheduled one).
//!
//! A move takes ready messages from the source in delivery order (those meeting the filter,
//! if one is given) and publishes each, as the broker, through the default exchange to the
//! target queue: a named one, or for a redrive the queue named by the message's
//! `x-first-death-queue` header (RabbitMQ writes it on every dead-lettered message, Weir too).
//! A message with no such header, or whose queue no longer exists, is skipped and stays.
//!
//! Each message's arrival in the target and its removal from the source are ONE log record
//! (the transaction container), so a crash in the middle of a move can neither lose nor
//! duplicate a message. Properties and headers go unchanged (the `x-death` history too);
//! the message is new to the target: not redelivered, delivery count 0, its `expiration`
//! counting again from the move. A target that is full and turns new messages away
//! (`reject-publish`, `reject-publish-dlx`, `drop-new`) stops the move (nothing more is taken);
//! one that makes room (`drop-head`, `drop-oldest`, `drop-lowest-priority`) drops its own as usual.
//!
//! One command moves at most [`MOVE_BATCH_MAX`] messages and looks at no more than
//! [`SCAN_MAX`] of them, so the engine is never held for long; callers go on from the
//! answer's `next` until there is none.

use weir_log::Storage;

use crate::api::{Event, MoveRequest, Origin, MOVE_BATCH_MAX};
use crate::error::{EngineError, ErrorKind};
use crate::filter::MessageFilter;
use crate::properties;
use crate::security::Access;

use super::{error, Broker};

/// The most messages one move command looks at.
const SCAN_MAX: usize = 16_384;
/// Header naming the queue a message was first dead-lettered from.
const FIRST_DEATH_QUEUE: &str = "x-first-death-queue";

impl<S: Storage> Broker<S> {
    pub(super) fn move_messages(
        &mut self,
        origin: Origin,
        source_name: &str,
        request: MoveRequest,
    ) -> Result<(), EngineError> {
        self.authorize(origin.connection, Access::Read, "queue", source_name)?;
        let source = self.lookup_queue(origin.connection, source_name)?;
        let vhost = self.queues[&source].vhost.clone();
        // Every message is published through the default exchange.
        self.authorize(origin.connection, Access::Write, "exchange", "")?;
        if let Some(target) = &request.target {
            let target_id = self.lookup_queue(origin.connection, target)?;
            if target_id == source {
                return Err(error(ErrorKind::PreconditionFailed, format!("cannot move queue '{target}' into itself")));
            }
        }
        let count = request.count.min(MOVE_BATCH_MAX);
        let (mut moved, mut skipped, mut scanned) = (0u32, 0u32, 0usize);
        let mut cursor = request.after;
        let mut target_full = false;
        let done = loop {
            if moved == count {
                break false;
            }
            if scanned == SCAN_MAX {
                break false;
            }
            let Some(entry) = self.queues[&source].messages.ready_after(cursor).next().copied() else {
                break true;
            };
            scanned += 1;
            let before = cursor;
            cursor = Some((entry.priority, entry.seq));
            let Some(message) = self.load_message(source, &entry, false) else { continue };
            if request.filter.as_deref().is_some_and(|f| !f.matches(&message)) {
                continue;
            }
            let properties = weir_amqp_codec::decode_properties(&message.raw_properties).unwrap_or_default();
            let target_name = match &request.target {
                Some(name) => Some(name.clone()),
                None => properties::header_text(&properties, FIRST_DEATH_QUEUE).map(str::to_string),
            };
            let target = target_name.and_then(|name| self.vhosts.get(&vhost)?.queues.get(&name).copied());
            let Some(target) = target.filter(|&t| t != source) else {
                skipped += 1;
                continue;
            };
            // Checked before the republish: a refused copy could be dead-lettered elsewhere.
            if self.queues[&target].turns_away(entry.size_bytes) {
                // Not taken: the next call starts at this message again.
                cursor = before;
                target_full = true;
                break false;
            }
            let target_name = self.queues[&target].name.clone();
            let expiration_ms = properties.expiration().as_ref().and_then(|e| e.as_str().parse().ok());
            let result = self.atomically(|broker| {
                // Only once the copy is in the target does the original leave.
                let taken = broker.republish(&vhost, "", &target_name, &properties, &message, expiration_ms)?;
                if taken == 0 {
                    return Ok(false);
                }
                let entry = broker.queues.get_mut(&source).and_then(|q| q.messages.remove_ready(entry.seq));
                if let Some(entry) = entry {
                    broker.drop_entry(source, &entry);
                }
                Ok::<bool, EngineError>(true)
            })?;
            if !result? {
                // The target turned it away after all (a limit this check did not foresee).
                cursor = before;
                target_full = true;
                break false;
            }
            moved += 1;
        };
        self.mark_dirty(source);
        let next = if done { None } else { cursor };
        let event = Event::Moved { channel: origin.channel, moved, skipped, next, target_full };
        self.reply(origin.connection, event);
        Ok(())
    }

    /// Remove up to `count` (at most [`MOVE_BATCH_MAX`]) ready or delayed messages of queue
    /// `name` that meet `filter`, looking at no more than [`SCAN_MAX`]; the answer, the number
    /// removed, waits for the fsync of their settlements.
    pub(super) fn remove_messages(
        &mut self,
        origin: Origin,
        name: &str,
        filter: &MessageFilter,
        count: u32,
    ) -> Result<(), EngineError> {
        self.authorize(origin.connection, Access::Read, "queue", name)?;
        let id = self.lookup_queue(origin.connection, name)?;
        let count = count.min(MOVE_BATCH_MAX) as usize;
        let messages = &self.queues[&id].messages;
        let chosen: Vec<u64> = messages
            .ready_after(None)
            .chain(messages.delayed_sorted())
            .take(SCAN_MAX)
            .filter(|entry| self.peek_message(entry).is_some_and(|m| filter.matches(&m)))
            .map(|entry| entry.seq)
            .take(count)
            .collect();
        for seq in &chosen {
            let queue = self.queues.get_mut(&id).expect("looked up");
            let entry = queue.messages.remove_ready(*seq).or_else(|| queue.messages.remove_delayed(*seq));
            if let Some(entry) = entry {
                self.drop_entry(id, &entry);
            }
        }
        self.flush_settles();
        let message_count = chosen.len() as u32;
        self.reply(origin.connection, Event::QueuePurgeOk { channel: origin.channel, message_count });
        Ok(())
    }
}

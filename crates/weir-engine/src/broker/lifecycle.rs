//! How messages leave a queue other than by an ack: expiry (`x-message-ttl`, the
//! `expiration` property), overflow (`x-max-length`, `x-max-length-bytes`, `x-overflow`),
//! rejection without requeue, and dead-lettering to `x-dead-letter-exchange`; plus
//! `x-expires`, which deletes a queue that stayed unused.
//!
//! Timers are data, not tasks: one broker-wide heap of (expires at, queue, message) holds
//! every message with a TTL (24 bytes each); the engine wakes for its earliest entry and runs
//! [`Broker::expire_due`] with the turn's `now` before it dispatches, so an expired message is
//! never delivered. A message that expires while a consumer holds it is not taken back; if it
//! is requeued, it expires then. Entries of messages that left meanwhile are skipped when they
//! come up (lazy deletion).
//!
//! Failed deliveries (retries, `x-delivery-limit`) are in `retry.rs`.
//!
//! Dead-lettering republishes the message to the dead-letter exchange with RabbitMQ's
//! `x-death` history (`properties.rs`) and settles the original, both in ONE log record, so a
//! crash can neither lose nor duplicate it. A missing dead-letter exchange drops the message,
//! as RabbitMQ does; so does a cycle that would dead-letter it to the same queue for the same
//! reason again without a rejection in between.

use std::sync::Arc;

use weir_log::Storage;
use weir_queue::MessageEntry;

use amq_protocol::protocol::BasicProperties;

use crate::api::{Message, Origin, Publish};
use crate::error::EngineError;
use crate::properties::{self, DeathReason};
use crate::queue_config::{Overflow, QueueConfig};

use super::{Broker, QueueId, INTERNAL_CONNECTION};

/// The longest chain of dead-letters one event may cause (a dead-letter overflowing its target,
/// which dead-letters again, …); past it messages are dropped.
const DEAD_LETTER_DEPTH_MAX: u32 = 32;

/// How often unused queues (`x-expires`) are looked for: their deletion may be this late.
pub(crate) const UNUSED_QUEUE_CHECK_MS: u64 = 100;

/// When a message in a queue with `config` expires, given its record's (enqueued at, message
/// expires at or 0) times.
pub(crate) fn message_expiry(config: &QueueConfig, times: Option<(u64, u64)>) -> Option<u64> {
    let (enqueued_at, message_expires_at) = times?;
    let by_queue = config.message_ttl_ms.map(|ttl| enqueued_at.saturating_add(ttl));
    let by_message = (message_expires_at != 0).then_some(message_expires_at);
    match (by_queue, by_message) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<S: Storage> Broker<S> {
    pub(super) fn schedule_expiry(&mut self, queue: QueueId, seq: u64, at: u64) {
        let queues = &self.queues;
        self.expiries.insert((at, queue, seq), |q, s| queues.get(&q).is_some_and(|q| q.messages.contains(s)));
    }

    /// The earliest time something is due: a message expiry, a delayed message's delivery
    /// time, or the next look for unused queues (every [`UNUSED_QUEUE_CHECK_MS`] while any queue has `x-expires`).
    pub(crate) fn next_timer_ms(&self) -> Option<u64> {
        // Queues left to dispatch (a browse that stopped at its scan limit) go on at once.
        if !self.dirty_queues.is_empty() {
            return Some(self.now_ms);
        }
        let queue = self.has_expiring_queues.then_some(self.next_unused_check_ms);
        [self.expiries.next_at(), self.delays.next_at(), self.leases.next_at(), queue].into_iter().flatten().min()
    }

    /// Expire every message and unused queue due at `self.now_ms`.
    pub(crate) fn expire_due(&mut self) {
        let now = self.now_ms;
        while let Some((queue_id, seq)) = self.expiries.pop_due(now) {
            let Some(queue) = self.queues.get_mut(&queue_id) else { continue };
            if let Some(entry) = queue.messages.remove_ready(seq).or_else(|| queue.messages.remove_delayed(seq)) {
                self.dead_letter(queue_id, entry, DeathReason::Expired);
            } else if queue.messages.is_unacked(seq) {
                queue.expired_unacked.insert(seq);
            }
        }
        if !self.has_expiring_queues || now < self.next_unused_check_ms {
            return;
        }
        // Looking at every queue costs O(queues): do it at most every UNUSED_QUEUE_CHECK_MS.
        self.next_unused_check_ms = now.saturating_add(UNUSED_QUEUE_CHECK_MS);
        self.has_expiring_queues = self.queues.values().any(|q| q.config.expires_ms.is_some());
        let unused: Vec<QueueId> = self
            .queues
            .values()
            .filter(|q| q.consumers.is_empty())
            .filter(|q| q.config.expires_ms.is_some_and(|ms| q.last_used_ms.saturating_add(ms) <= now))
            .map(|q| q.id)
            .collect();
        for id in unused {
            tracing::info!(queue = self.queues[&id].name, "deleting queue unused for its x-expires time");
            self.delete_queue(id);
        }
    }

    /// `entry` has left `queue_id`: dead-letter it if the queue has a dead-letter exchange,
    /// else drop it. Either way the original is settled.
    pub(super) fn dead_letter(&mut self, queue_id: QueueId, entry: MessageEntry, reason: DeathReason) {
        // Its depth changed: dispatch and the capacity watermarks look at it again.
        self.mark_dirty(queue_id);
        // A dead-letter can overflow its target, which dead-letters again: bound the chain
        // (each hop is a nested call), dropping what goes past it.
        let too_deep = self.dead_letter_depth >= DEAD_LETTER_DEPTH_MAX;
        if too_deep {
            tracing::warn!(queue_id, seq = entry.seq, "dead-letter chain too long: message dropped");
        }
        self.dead_letter_depth += 1;
        let mut has_target = false;
        if let Some(queue) = self.queues.get_mut(&queue_id) {
            queue.expired_unacked.remove(&entry.seq);
            // A message out of deliveries always has somewhere to go (at worst the vhost's
            // error queue).
            has_target = queue.config.dead_letter_exchange.is_some() || reason == DeathReason::DeliveryLimit;
            queue.counters.expired += u64::from(reason == DeathReason::Expired);
        }
        let mut sent = false;
        if has_target && !too_deep {
            // An unreadable body is reported and forgotten by load_message: it counts as dropped.
            if let Some(message) = self.load_message(queue_id, &entry, true) {
                let result = self.atomically(|broker| {
                    sent = broker.republish_dead(queue_id, &message, reason);
                    broker.drop_entry(queue_id, &entry);
                });
                if let Err(e) = result {
                    tracing::error!(queue_id, seq = entry.seq, "dead-lettering failed: {e}");
                }
            }
        } else {
            self.drop_entry(queue_id, &entry);
        }
        if let Some(queue) = self.queues.get_mut(&queue_id) {
            *if sent { &mut queue.counters.dead_lettered } else { &mut queue.counters.dropped } += 1;
        }
        self.dead_letter_depth -= 1;
    }

    /// Publish a copy of `message` to where `queue_id`'s dead messages go (see
    /// [`Broker::death_target`]), with its death recorded. Used for messages that were in the
    /// queue and for ones it refused (`reject-publish-dlx`). False when it was not handed on:
    /// no such exchange, a dead-letter cycle, or the publish failed.
    pub(super) fn republish_dead(&mut self, queue_id: QueueId, message: &Message, reason: DeathReason) -> bool {
        let decoded = weir_amqp_codec::decode_properties(&message.raw_properties).unwrap_or_default();
        let Some((exchange, routing_key)) = self.death_target(queue_id, message, &decoded, reason) else {
            return false;
        };
        let Some(queue) = self.queues.get(&queue_id) else { return false };
        let (queue_name, vhost) = (queue.name.clone(), queue.vhost.clone());
        // A cycle (RabbitMQ's rule): the message would reach a queue it already died in, and
        // no consumer rejected it on the way. Checked across queues, so two queues that
        // dead-letter into each other stop after one round.
        if reason != DeathReason::Rejected {
            let (died_in, rejected) = properties::death_history(&decoded);
            let cycle = !rejected
                && !died_in.is_empty()
                && self.vhosts.get(&vhost).is_some_and(|v| {
                    (exchange.is_empty() || v.exchanges.contains_key(&exchange))
                        && v.route(&exchange, &routing_key, &[])
                            .iter()
                            .any(|id| self.queues.get(id).is_some_and(|q| died_in.contains(&q.name)))
                });
            if cycle {
                tracing::debug!(queue = queue_name, "dead-letter cycle: message dropped");
                return false;
            }
        }
        if !exchange.is_empty() && !self.vhosts.get(&vhost).is_some_and(|v| v.exchanges.contains_key(&exchange)) {
            return false; // RabbitMQ drops a message whose dead-letter exchange does not exist
        }
        let decoded =
            properties::with_death(decoded, &queue_name, reason, &message.exchange, &message.routing_key, self.now_ms);
        match self.republish(&vhost, &exchange, &routing_key, &decoded, message, None) {
            Ok(taken) => taken > 0,
            Err(e) => {
                tracing::warn!(queue = queue_name, "dead-lettered message not routed: {e}");
                false
            }
        }
    }

    /// Publish `message`'s body with `properties` as the broker itself (never delayed again,
    /// no permission check, no confirm, no deduplication, no vhost quota), persistent if the
    /// properties say so. Returns how many queues took it.
    pub(super) fn republish(
        &mut self,
        vhost: &str,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        message: &Message,
        expiration_ms: Option<u64>,
    ) -> Result<usize, EngineError> {
        let copy = Message {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            raw_properties: weir_amqp_codec::encode_properties(properties),
            body: message.body.clone(),
        };
        let publish = Publish {
            origin: Origin { connection: INTERNAL_CONNECTION, channel: 0, method: 0 },
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            mandatory: false,
            persistent: *properties.delivery_mode() == Some(2),
            confirm: None,
            headers: properties.headers().as_ref().map(properties::table_to_arguments).unwrap_or_default(),
            expiration_ms,
            direct_reply_to: false,
            cc: Vec::new(),
            // A recipient list chose among the queues of the first publish, not of this one.
            recipients: None,
            message: Arc::new(copy),
        };
        self.publish_in(vhost, publish)
    }

    /// Drop (or dead-letter) ready messages while `queue_id` is over its limits, chosen by its
    /// `x-overflow`: the least recently received (`drop-head`, the default), the oldest by
    /// `timestamp` (`drop-oldest`), or the oldest of the lowest priority (`drop-lowest-priority`).
    pub(super) fn enforce_max_length(&mut self, queue_id: QueueId) {
        loop {
            let Some(queue) = self.queues.get(&queue_id) else { return };
            let stats = queue.messages.stats();
            if !queue.config.over_limit(stats.ready_messages, stats.ready_bytes) {
                return;
            }
            let overflow = queue.config.overflow;
            let oldest = (overflow == Overflow::DropOldest).then(|| self.longest_lived(queue_id)).flatten();
            let messages = &mut self.queues.get_mut(&queue_id).expect("present").messages;
            let taken = match overflow {
                Overflow::DropLowestPriority => messages.take_lowest_priority(),
                Overflow::DropOldest => oldest.and_then(|seq| messages.remove_ready(seq)),
                _ => messages.take_oldest(),
            };
            let Some(entry) = taken else { return };
            self.dead_letter(queue_id, entry, DeathReason::MaxLength);
        }
    }

    /// The ready message of `queue_id` with the oldest `timestamp` property (one without a
    /// timestamp counts as newest), the least recently received among equals. Looks at every
    /// ready message: `drop-oldest` costs a scan of the queue per message dropped.
    fn longest_lived(&self, queue_id: QueueId) -> Option<u64> {
        self.queues[&queue_id]
            .messages
            .ready_after(None)
            .map(|entry| {
                let born = self
                    .peek_message(entry)
                    .and_then(|m| properties::raw_timestamp(&m.raw_properties))
                    .unwrap_or(u64::MAX);
                (born, entry.seq)
            })
            .min()
            .map(|(_, seq)| seq)
    }
}

//! Failed deliveries: what happens to a message a consumer took and gave back without an ack
//! (a nack or reject with requeue, its channel or connection closing, `basic.recover`, a
//! transaction rolled back and then its channel closed, a lease that ran out).
//!
//! A queue's retry policy (`x-delivery-limit`, `x-retry-delay`, `x-retry-backoff`,
//! `x-retry-delay-max`; `queue_config.rs`) decides:
//! - a message delivered `x-delivery-limit` times leaves for its *failure target*: the queue
//!   named by its `x-failure-queue` header (Tuxedo's failure queue) if that queue exists and is
//!   not this one, else the queue's dead-letter exchange, else the vhost's error queue
//!   [`ERROR_QUEUE`] (created, durable, when first needed). It carries `x-death` with reason
//!   `delivery_limit`, as RabbitMQ's quorum queues write it;
//! - otherwise, with a retry delay, it waits as a delayed message (counted as delayed, not
//!   delivered) for `x-retry-delay` (× 2^(n-1) with `exponential` backoff, up to
//!   `x-retry-delay-max`), then returns to its place in the order;
//! - otherwise it is ready again at once, in its place, marked redelivered (RabbitMQ).
//!
//! Durability: deliveries are not logged, but in a queue with a retry policy each failure of a
//! persistent message is (`KIND_RETRY`: its delivery count and when it may go again), so
//! neither the count nor the wait is forgotten by a crash: a poison message cannot loop for
//! ever by crashing the broker, and a restart does not skip a backoff. A message that was
//! being delivered when the broker stopped has not failed: its count stays what was logged.

use weir_log::Storage;

use crate::api::Message;
use crate::properties::{self, DeathReason};
use crate::records::{self, RetryRecord};

use amq_protocol::protocol::BasicProperties;

use super::{Broker, QueueDeclare, QueueId, INTERNAL_CONNECTION};

/// Message header naming the queue a message goes to when it runs out of deliveries.
pub(crate) const FAILURE_QUEUE_HEADER: &str = "x-failure-queue";
/// Each vhost's error queue: where a message out of deliveries goes when it names no failure
/// queue and its queue has no dead-letter exchange.
pub const ERROR_QUEUE: &str = "weir.error";

impl<S: Storage> Broker<S> {
    /// An unacked message comes back without an ack. If its time to live ran out meanwhile it
    /// expires now; if it has used its deliveries it goes to its failure target; else it is
    /// ready again, at once or after its retry delay.
    pub(super) fn requeue_entry(&mut self, queue_id: QueueId, seq: u64) {
        let now = self.now_ms;
        let Some(queue) = self.queues.get_mut(&queue_id) else { return };
        queue.leases.remove(&seq);
        let Some(entry) = queue.messages.unacked_entry(seq).copied() else { return };
        if queue.expired_unacked.contains(&seq) {
            let entry = queue.messages.settle(seq).expect("unacked");
            self.dead_letter(queue_id, entry, DeathReason::Expired);
            return;
        }
        let retry = queue.config.retry;
        if retry.delivery_limit.is_some_and(|limit| entry.delivery_count >= limit) {
            let entry = queue.messages.settle(seq).expect("unacked");
            self.dead_letter(queue_id, entry, DeathReason::DeliveryLimit);
            return;
        }
        let delay_ms = retry.delay_after(entry.delivery_count);
        let retry_at_ms = if delay_ms > 0 {
            queue.messages.defer(seq);
            let at = now.saturating_add(delay_ms);
            self.schedule_delay(queue_id, seq, at);
            at
        } else {
            queue.messages.requeue(seq);
            self.mark_dirty(queue_id);
            0
        };
        if retry.is_active() && entry.is_persistent() {
            let record = RetryRecord { queue_id, seq, delivery_count: entry.delivery_count, retry_at_ms };
            if let Err(e) = self.append_with(records::KIND_RETRY, |w| records::encode_retry(w, &record)) {
                // The log refuses writes (and says why elsewhere): the count lives on in memory.
                tracing::warn!(queue_id, seq, "failed delivery not logged: {e}");
            }
        }
    }

    /// Where a dead message of `queue_id` goes, as (exchange, routing key): its dead-letter
    /// exchange; for a message out of deliveries first its `x-failure-queue` and last the
    /// vhost's error queue. `None`: nowhere (it is dropped).
    pub(super) fn death_target(
        &mut self,
        queue_id: QueueId,
        message: &Message,
        properties: &BasicProperties,
        reason: DeathReason,
    ) -> Option<(String, String)> {
        let queue = self.queues.get(&queue_id)?;
        let vhost = queue.vhost.clone();
        if reason == DeathReason::DeliveryLimit {
            let named = properties::header_text(properties, FAILURE_QUEUE_HEADER).map(str::to_string);
            let exists = |name: &String| {
                *name != queue.name && self.vhosts.get(&vhost).is_some_and(|v| v.queues.contains_key(name))
            };
            if let Some(name) = named.filter(exists) {
                return Some((String::new(), name));
            }
        }
        if let Some(exchange) = queue.config.dead_letter_exchange.clone() {
            let routing_key =
                queue.config.dead_letter_routing_key.clone().unwrap_or_else(|| message.routing_key.clone());
            return Some((exchange, routing_key));
        }
        if reason != DeathReason::DeliveryLimit {
            return None;
        }
        self.ensure_error_queue(&vhost).then(|| (String::new(), ERROR_QUEUE.to_string()))
    }

    /// Create `vhost`'s error queue if it does not exist. False if it cannot be (the log
    /// refuses writes, or the vhost's queue limit is reached).
    fn ensure_error_queue(&mut self, vhost: &str) -> bool {
        if self.vhosts.get(vhost).is_some_and(|v| v.queues.contains_key(ERROR_QUEUE)) {
            return true;
        }
        let declare = QueueDeclare {
            name: ERROR_QUEUE.to_string(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: Vec::new(),
        };
        match self.create_queue(INTERNAL_CONNECTION, vhost, ERROR_QUEUE.to_string(), &declare) {
            Ok(_) => {
                tracing::info!(vhost, "created the vhost's error queue '{ERROR_QUEUE}'");
                true
            }
            Err(e) => {
                tracing::error!(vhost, "cannot create the error queue '{ERROR_QUEUE}': {e}");
                false
            }
        }
    }
}

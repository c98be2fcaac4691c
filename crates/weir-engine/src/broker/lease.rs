//! Leases (visibility timeouts): a consumer with argument `x-lease-ms` holds each message it
//! is given for at most that long. A delivery still unacked when its lease runs out is taken
//! back and treated as a failed delivery (`retry.rs`: it counts against `x-delivery-limit`
//! and waits out `x-retry-delay`), so a consumer that hangs without closing its connection
//! cannot sit on a message for ever (SQS's visibility timeout, AQ's and MQ's expiry of a
//! browse lock).
//!
//! The consumer's delivery tag stays valid after its lease lapsed: acking, nacking or
//! rejecting it then changes nothing in the queue (the message went back; another consumer
//! may hold it now) and only frees the consumer's prefetch. Considered: closing the channel
//! with 406 as RabbitMQ's `consumer_timeout` does — that also takes back every other message
//! the channel holds, and a slow consumer that was about to ack would see its channel die.
//!
//! Timers are data: one broker-wide heap of (lapses at, queue, message), entries skipped when
//! the message was settled meanwhile (its lease is gone from the queue's lease table).
//! Leases are not logged: after a restart nothing is delivered, so nothing is leased.

use weir_log::Storage;

use crate::api::{ArgValue, ChannelId, ConnectionId};
use crate::error::{EngineError, ErrorKind};

use super::{Broker, QueueId};

/// Consumer argument: how long each delivery may stay unacked, in milliseconds.
pub(crate) const LEASE_ARGUMENT: &str = "x-lease-ms";
/// The longest lease: a week (a longer one is not a lease).
pub(crate) const LEASE_MS_MAX: i64 = 7 * 24 * 3600 * 1000;

/// Who holds a leased message: the delivery tag on its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub connection: ConnectionId,
    pub channel: ChannelId,
    pub delivery_tag: u64,
}

/// `x-lease-ms`, if given: a positive integer up to [`LEASE_MS_MAX`], else 406.
pub(crate) fn lease_argument(arguments: &[(String, ArgValue)]) -> Result<Option<u64>, EngineError> {
    match arguments.iter().find(|(key, _)| key == LEASE_ARGUMENT).map(|(_, value)| value) {
        None => Ok(None),
        Some(ArgValue::Int(ms)) if (1..=LEASE_MS_MAX).contains(ms) => Ok(Some(*ms as u64)),
        Some(other) => Err(EngineError::new(
            ErrorKind::PreconditionFailed,
            format!("invalid arg '{LEASE_ARGUMENT}' for consumer: {other:?} is not 1 to {LEASE_MS_MAX} ms"),
        )),
    }
}

impl<S: Storage> Broker<S> {
    /// `holder` now holds message `seq` of `queue_id` until `now + lease_ms`.
    pub(super) fn lease(&mut self, queue_id: QueueId, seq: u64, holder: Holder, lease_ms: u64) {
        let Some(queue) = self.queues.get_mut(&queue_id) else { return };
        queue.leases.insert(seq, holder);
        let at = self.now_ms.saturating_add(lease_ms);
        let queues = &self.queues;
        self.leases.insert((at, queue_id, seq), |q, s| queues.get(&q).is_some_and(|q| q.leases.contains_key(&s)));
    }

    /// Take back every delivery whose lease ran out by `self.now_ms`.
    pub(crate) fn lapse_leases(&mut self) {
        while let Some((queue_id, seq)) = self.leases.pop_due(self.now_ms) {
            let Some(holder) = self.queues.get_mut(&queue_id).and_then(|q| q.leases.remove(&seq)) else { continue };
            let unacked = self
                .connections
                .get_mut(&holder.connection)
                .and_then(|c| c.channels.get_mut(&holder.channel))
                .and_then(|c| c.unacked.get_mut(&holder.delivery_tag))
                .filter(|u| u.queue == queue_id && u.seq == seq);
            let Some(unacked) = unacked else { continue };
            unacked.lapsed = true;
            tracing::debug!(queue_id, seq, "lease ran out: the delivery is taken back");
            self.requeue_entry(queue_id, seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_argument_is_a_positive_bounded_integer() {
        let arg = |value: ArgValue| lease_argument(&[(LEASE_ARGUMENT.to_string(), value)]);
        assert_eq!(lease_argument(&[]).unwrap(), None);
        assert_eq!(arg(ArgValue::Int(1500)).unwrap(), Some(1500));
        for bad in [ArgValue::Int(0), ArgValue::Int(-1), ArgValue::Int(LEASE_MS_MAX + 1), ArgValue::Str("5".into())] {
            assert_eq!(arg(bad).unwrap_err().kind, ErrorKind::PreconditionFailed);
        }
    }
}

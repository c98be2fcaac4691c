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
//! The HTTP API's lease-then-ack get hands a message to no channel: the broker holds it under
//! a lease token (`Command::Hold`), which the client settles or renews later
//! (`Command::SettleLease`) — SQS's receipt handle. A token lease that runs out is taken back
//! the same way.
//!
//! Timers are data: one broker-wide heap of (lapses at, queue, message), entries skipped when
//! the message was settled meanwhile (its lease is gone from the queue's lease table) or the
//! lease was renewed (its time in the table is later). Leases are not logged: after a restart
//! nothing is delivered, so nothing is leased, and lease tokens are unknown (404).

use std::hash::BuildHasher;

use weir_log::Storage;

use crate::api::{ArgValue, ChannelId, ConnectionId, Event, Origin};
use crate::error::{EngineError, ErrorKind};
use crate::properties::DeathReason;
use crate::security::Access;

use super::{Broker, QueueId};

/// Consumer argument: how long each delivery may stay unacked, in milliseconds.
pub(crate) const LEASE_ARGUMENT: &str = "x-lease-ms";
/// The longest lease: a week (a longer one is not a lease).
pub(crate) const LEASE_MS_MAX: i64 = 7 * 24 * 3600 * 1000;

/// Who holds a leased message: a delivery tag on a channel, or a lease token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    Channel { connection: ConnectionId, channel: ChannelId, delivery_tag: u64 },
    Token(u64),
}

/// A leased message's holder and when its lease runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    pub holder: Holder,
    pub until_ms: u64,
}

/// What a lease token's holder does with its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// Done with it: it leaves the queue.
    Ack,
    /// Give it back as a failed delivery (retry policy applies).
    Requeue,
    /// Give it up: dead-lettered (reason `rejected`) or dropped, as a reject without requeue.
    Reject,
    /// Keep it this many more milliseconds from now.
    Renew(u64),
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
    /// `holder` now holds message `seq` of `queue_id` until `now + lease_ms`; returns that
    /// time.
    pub(super) fn lease(&mut self, queue_id: QueueId, seq: u64, holder: Holder, lease_ms: u64) -> u64 {
        let until_ms = self.now_ms.saturating_add(lease_ms);
        let Some(queue) = self.queues.get_mut(&queue_id) else { return until_ms };
        queue.leases.insert(seq, Lease { holder, until_ms });
        let queues = &self.queues;
        self.leases.insert((until_ms, queue_id, seq), |q, s| queues.get(&q).is_some_and(|q| q.leases.contains_key(&s)));
        until_ms
    }

    /// Take back every delivery whose lease ran out by `self.now_ms`.
    pub(crate) fn lapse_leases(&mut self) {
        let now = self.now_ms;
        while let Some((queue_id, seq)) = self.leases.pop_due(now) {
            let Some(queue) = self.queues.get_mut(&queue_id) else { continue };
            // Renewed since this timer was set: a later one stands for it.
            let Some(lease) = queue.leases.get(&seq).copied().filter(|l| l.until_ms <= now) else { continue };
            queue.leases.remove(&seq);
            match lease.holder {
                Holder::Channel { connection, channel, delivery_tag } => {
                    let unacked = self
                        .connections
                        .get_mut(&connection)
                        .and_then(|c| c.channels.get_mut(&channel))
                        .and_then(|c| c.unacked.get_mut(&delivery_tag))
                        .filter(|u| u.queue == queue_id && u.seq == seq);
                    let Some(unacked) = unacked else { continue };
                    unacked.lapsed = true;
                    if let Some((tag, consumer_id)) = unacked.consumer.clone() {
                        let consumer = self
                            .connections
                            .get_mut(&connection)
                            .and_then(|c| c.channels.get_mut(&channel))
                            .and_then(|c| c.consumers.get_mut(&tag))
                            .filter(|c| c.id == consumer_id);
                        if let Some(consumer) = consumer {
                            consumer.lapsed += 1;
                        }
                    }
                }
                Holder::Token(token) => {
                    self.lease_tokens.remove(&token);
                }
            }
            tracing::debug!(queue_id, seq, "lease ran out: the delivery is taken back");
            self.requeue_entry(queue_id, seq);
        }
    }

    /// Move an unacked `basic.get` delivery of this channel to a lease token the broker holds
    /// (the HTTP API's lease-then-ack); answered with [`Event::Held`].
    pub(super) fn hold(&mut self, origin: Origin, delivery_tag: u64, lease_ms: u64) -> Result<(), EngineError> {
        if !(1..=LEASE_MS_MAX as u64).contains(&lease_ms) {
            return Err(EngineError::new(ErrorKind::PreconditionFailed, format!("a lease is 1 to {LEASE_MS_MAX} ms")));
        }
        let channel = self.channel_mut(origin)?;
        let held = channel.unacked.get(&delivery_tag).filter(|u| u.consumer.is_none()).and_then(|u| u.held());
        let Some((queue_id, seq)) = held else {
            return Err(EngineError::new(
                ErrorKind::PreconditionFailed,
                format!("delivery tag {delivery_tag} is not a message this channel took with a get"),
            ));
        };
        channel.unacked.remove(&delivery_tag);
        let token = loop {
            self.lease_token_count += 1;
            let token = self.lease_token_key.hash_one(self.lease_token_count);
            if !self.lease_tokens.contains_key(&token) {
                break token;
            }
        };
        self.lease_tokens.insert(token, (queue_id, seq));
        let until_ms = self.lease(queue_id, seq, Holder::Token(token), lease_ms);
        self.reply(origin.connection, Event::Held { channel: origin.channel, token, until_ms });
        Ok(())
    }

    /// Settle or renew the message held under lease `token`. 404 if the token is unknown (it
    /// was settled, ran out, or the broker restarted) or its queue is in another vhost.
    pub(super) fn settle_lease(&mut self, origin: Origin, token: u64, action: LeaseAction) -> Result<(), EngineError> {
        let vhost = self.vhost_of(origin.connection)?.to_string();
        let unknown = || {
            EngineError::new(
                ErrorKind::NotFound,
                format!("no lease {token} (settled, run out, or from before a restart)"),
            )
        };
        let (queue_id, seq) = *self.lease_tokens.get(&token).ok_or_else(unknown)?;
        let queue = self.queues.get(&queue_id).filter(|q| q.vhost == vhost).ok_or_else(unknown)?;
        let name = queue.name.clone();
        self.authorize(origin.connection, Access::Read, "queue", &name)?;
        let mut until_ms = 0;
        match action {
            LeaseAction::Renew(lease_ms) => {
                if !(1..=LEASE_MS_MAX as u64).contains(&lease_ms) {
                    return Err(EngineError::new(
                        ErrorKind::PreconditionFailed,
                        format!("a lease is 1 to {LEASE_MS_MAX} ms"),
                    ));
                }
                until_ms = self.lease(queue_id, seq, Holder::Token(token), lease_ms);
            }
            LeaseAction::Requeue => {
                self.lease_tokens.remove(&token);
                self.requeue_entry(queue_id, seq);
            }
            LeaseAction::Ack | LeaseAction::Reject => {
                self.lease_tokens.remove(&token);
                let queue = self.queues.get_mut(&queue_id).expect("found above");
                queue.leases.remove(&seq);
                if let Some(entry) = queue.messages.settle(seq) {
                    if action == LeaseAction::Ack {
                        queue.counters.acked += 1;
                        queue.expired_unacked.remove(&seq);
                        self.drop_entry(queue_id, &entry);
                    } else {
                        self.dead_letter(queue_id, entry, DeathReason::Rejected);
                    }
                }
                self.flush_settles();
            }
        }
        self.mark_dirty(queue_id);
        self.reply(origin.connection, Event::Held { channel: origin.channel, token, until_ms });
        Ok(())
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

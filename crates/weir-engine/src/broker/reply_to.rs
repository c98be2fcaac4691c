//! Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to`): RPC replies that go straight to the
//! requesting channel's consumer, with no queue and no persistence.
//!
//! - `basic.consume` on the pseudo-queue `amq.rabbitmq.reply-to` must be `no_ack` (406
//!   "reply consumer cannot acknowledge"); one per channel.
//! - A publish whose `reply_to` is the pseudo-queue gets it rewritten to this channel's reply
//!   address `amq.rabbitmq.reply-to.<connection>.<channel>.<token>` (406 "fast reply consumer
//!   does not exist" without the consumer).
//! - A publish to the default exchange with a reply address as routing key is delivered to
//!   that consumer at once, if it still exists (the token guards against a reused channel
//!   number); otherwise it is dropped, or returned when mandatory.
//! - `queue.declare` of either name acts as passive: `(name, 0, 1)` when it resolves, else 404.

use std::sync::Arc;

use weir_log::Storage;

use crate::api::{ConnectionId, Event, Message, Origin, Publish};
use crate::error::{EngineError, ErrorKind};

use super::{error, no_queue, Broker, ChannelId};

pub(crate) use crate::properties::DIRECT_REPLY_TO as REPLY_TO;
const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// A channel's reply consumer.
#[derive(Clone, Debug)]
pub(crate) struct ReplyConsumer {
    pub tag: Arc<str>,
    pub token: u64,
}

pub(crate) fn is_reply_name(name: &str) -> bool {
    name == REPLY_TO || name.starts_with(REPLY_TO_PREFIX)
}

fn parse_address(routing_key: &str) -> Option<(ConnectionId, ChannelId, u64)> {
    let mut parts = routing_key.strip_prefix(REPLY_TO_PREFIX)?.split('.');
    let address = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then_some(address)
}

impl<S: Storage> Broker<S> {
    pub(super) fn consume_reply_to(
        &mut self,
        origin: Origin,
        consumer_tag: String,
        no_ack: bool,
        no_wait: bool,
    ) -> Result<(), EngineError> {
        if !no_ack {
            return Err(error(ErrorKind::PreconditionFailed, "reply consumer cannot acknowledge".into()));
        }
        self.next_reply_token =
            self.next_reply_token.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let token = self.next_reply_token >> 16;
        let channel = self.channel_mut(origin)?;
        if channel.reply_consumer.is_some() {
            return Err(error(ErrorKind::PreconditionFailed, "reply consumer already set".into()));
        }
        let tag = channel.consumer_tag(origin, &consumer_tag);
        channel.reply_consumer = Some(ReplyConsumer { tag: Arc::clone(&tag), token });
        if !no_wait {
            self.reply(origin.connection, Event::ConsumeOk { channel: origin.channel, consumer_tag: tag.to_string() });
        }
        Ok(())
    }

    /// Rewrite a publish's `reply_to` from the pseudo-queue to this channel's reply address.
    pub(super) fn with_reply_address(&mut self, mut publish: Publish) -> Result<Publish, EngineError> {
        let origin = publish.origin;
        let token = self
            .channel_mut(origin)?
            .reply_consumer
            .as_ref()
            .map(|c| c.token)
            .ok_or_else(|| error(ErrorKind::PreconditionFailed, "fast reply consumer does not exist".into()))?;
        let address = format!("{REPLY_TO_PREFIX}{}.{}.{token}", origin.connection, origin.channel);
        let properties = weir_amqp_codec::decode_properties(&publish.message.raw_properties)
            .map_err(|e| error(ErrorKind::PreconditionFailed, format!("unreadable properties: {e}")))?
            .with_reply_to(address.as_str().into());
        publish.message = Arc::new(Message {
            raw_properties: weir_amqp_codec::encode_properties(&properties),
            ..(*publish.message).clone()
        });
        Ok(publish)
    }

    /// A publish to a reply address: deliver it to the reply consumer, or drop (return) it.
    pub(super) fn deliver_reply(&mut self, publish: Publish) {
        let target = parse_address(&publish.routing_key).and_then(|(connection, channel, token)| {
            let state = self.connections.get_mut(&connection)?.channels.get_mut(&channel)?;
            let consumer = state.reply_consumer.as_ref().filter(|c| c.token == token)?.clone();
            let delivery_tag = state.next_delivery_tag;
            state.next_delivery_tag += 1;
            Some((connection, channel, consumer.tag, delivery_tag))
        });
        match target {
            Some((connection, channel, consumer_tag, delivery_tag)) => {
                if let Some(sink) = self.sinks.get(&connection) {
                    sink.shared.reserve_delivery();
                }
                let event = Event::Deliver {
                    channel,
                    consumer_tag,
                    delivery_tag,
                    redelivered: false,
                    message: publish.message,
                };
                self.outbox.push(connection, event);
            }
            None if publish.mandatory => {
                let origin = publish.origin;
                self.outbox
                    .push(origin.connection, Event::Returned { channel: origin.channel, message: publish.message });
            }
            None => {}
        }
        if let Some(sequence) = publish.confirm {
            let origin = publish.origin;
            self.reply(origin.connection, Event::ConfirmAck { channel: origin.channel, sequence, multiple: false });
        }
    }

    /// `queue.declare` of a reply name: passive, `(name, 0, 1)` when it resolves.
    pub(super) fn declare_reply_name(&mut self, origin: Origin, name: &str, no_wait: bool) -> Result<(), EngineError> {
        let resolves = if name == REPLY_TO {
            self.channel_mut(origin)?.reply_consumer.is_some()
        } else {
            parse_address(name).is_some_and(|(connection, channel, token)| {
                self.connections
                    .get(&connection)
                    .and_then(|c| c.channels.get(&channel))
                    .and_then(|c| c.reply_consumer.as_ref())
                    .is_some_and(|c| c.token == token)
            })
        };
        if !resolves {
            let vhost = self.vhost_of(origin.connection)?.to_string();
            return Err(no_queue(name, &vhost));
        }
        if !no_wait {
            let event = Event::QueueDeclareOk {
                channel: origin.channel,
                queue: name.to_string(),
                message_count: 0,
                consumer_count: 1,
            };
            self.reply(origin.connection, event);
        }
        Ok(())
    }
}

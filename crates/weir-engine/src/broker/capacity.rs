//! Capacity watermarks (Tuxedo's queue space thresholds): a queue with `x-capacity-high` (and
//! `x-capacity-low`), percentages of its `x-max-length` / `x-max-length-bytes`, reports when it
//! fills past the high mark and when it drains back to the low one, by publishing an event on
//! the vhost's `weir.events` topic exchange with routing key `queue.capacity.high` or
//! `queue.capacity.low` and a JSON body. Bind a queue to watch them.
//!
//! One event per crossing: after a high event the next one is low, and the other way round
//! (the low mark defaults to the high one). The fill is the larger of the message and byte
//! fractions of the ready messages, the ones the limits count. It is looked at after each
//! engine turn's dispatch for the queues touched in the turn. Events are transient messages
//! published by the broker; the state (above or below) is not logged: after a restart a queue
//! above its high mark reports it again.

use bytes::Bytes;
use weir_log::Storage;

use amq_protocol::protocol::BasicProperties;

use crate::api::Message;
use crate::topology::EVENTS_EXCHANGE;

use super::{Broker, QueueId};

impl<S: Storage> Broker<S> {
    /// Publish an event if queue `id` crossed one of its watermarks.
    pub(super) fn check_capacity(&mut self, id: QueueId) {
        let Some(queue) = self.queues.get(&id) else { return };
        let Some(marks) = queue.config.capacity else { return };
        let stats = queue.messages.stats();
        let percent = |used: u64, limit: Option<u64>| match limit {
            Some(0) => 100,
            Some(limit) => used.saturating_mul(100) / limit,
            None => 0,
        };
        let fill = percent(stats.ready_messages, queue.config.max_length)
            .max(percent(stats.ready_bytes, queue.config.max_length_bytes));
        let (high, low) = (u64::from(marks.high_percent), u64::from(marks.low_percent));
        // Drained: down to the low mark, or below the high one when they are the same.
        let drained = if low < high { fill <= low } else { fill < high };
        let crossed = match queue.above_high {
            false if fill >= high => "high",
            true if drained => "low",
            _ => return,
        };
        let body = format!(
            "{{\"event\":\"queue.capacity.{crossed}\",\"vhost\":{},\"queue\":{},\"percent\":{fill},\
             \"messages_ready\":{},\"bytes_ready\":{},\"max_length\":{},\"max_length_bytes\":{},\"at_ms\":{}}}",
            json_string(&queue.vhost),
            json_string(&queue.name),
            stats.ready_messages,
            stats.ready_bytes,
            queue.config.max_length.map_or("null".to_string(), |n| n.to_string()),
            queue.config.max_length_bytes.map_or("null".to_string(), |n| n.to_string()),
            self.now_ms,
        );
        let vhost = queue.vhost.clone();
        self.queues.get_mut(&id).expect("present").above_high = crossed == "high";
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(1)
            .with_timestamp(self.now_ms / 1000)
            .with_app_id("weir".into());
        let event = Message {
            exchange: EVENTS_EXCHANGE.to_string(),
            routing_key: format!("queue.capacity.{crossed}"),
            raw_properties: Bytes::new(),
            body: Bytes::from(body),
        };
        let routing_key = event.routing_key.clone();
        if let Err(e) = self.republish(&vhost, EVENTS_EXCHANGE, &routing_key, &properties, &event, None) {
            tracing::warn!(vhost, "capacity event not published: {e}");
        }
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_json() {
        assert_eq!(json_string("a\"b\\c\nd"), r#""a\"b\\c\u000ad""#);
    }
}

//! Events waiting to leave the engine, per connection, in order.
//!
//! The durability rule lives here. An event that reports something durable (a publisher
//! confirm, a `declare-ok` for a durable queue…) is *gated*: it may only leave after the
//! batch's fsync returned. To keep each connection's events in order, everything queued for a
//! connection after its first gated event waits too. Events queued before it (and everything
//! for connections with nothing gated) leave at once, before the fsync, so deliveries of
//! messages need not wait for the disk.
//!
//! If the fsync fails, gated confirms become nacks and other gated replies become channel
//! errors: nothing is ever reported durable that might not be.

use std::collections::HashMap;

use crate::api::{ConnectionId, Event, EventSink};
use crate::error::{EngineError, ErrorKind};

#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    /// Index of the first gated event, if any.
    gated_from: Option<usize>,
}

#[derive(Default)]
pub(crate) struct Outbox {
    pending: HashMap<ConnectionId, Pending>,
}

impl Outbox {
    /// Queue an event that does not itself need the fsync.
    pub fn push(&mut self, connection: ConnectionId, event: Event) {
        self.pending.entry(connection).or_default().events.push(event);
    }

    /// Queue an event that may only leave after the fsync.
    pub fn push_gated(&mut self, connection: ConnectionId, event: Event) {
        let pending = self.pending.entry(connection).or_default();
        if pending.gated_from.is_none() {
            pending.gated_from = Some(pending.events.len());
        }
        pending.events.push(event);
    }

    /// Send everything that does not wait for the fsync.
    pub fn send_ungated(&mut self, sinks: &HashMap<ConnectionId, EventSink>) {
        self.pending.retain(|connection, pending| {
            let cut = pending.gated_from.unwrap_or(pending.events.len());
            if cut > 0 {
                let rest = pending.events.split_off(cut);
                let ready = std::mem::replace(&mut pending.events, rest);
                send(sinks, *connection, ready);
                pending.gated_from = pending.gated_from.map(|_| 0);
            }
            !pending.events.is_empty()
        });
    }

    /// The fsync returned: send the rest; on failure turn durable promises into refusals.
    pub fn send_after_commit(&mut self, sinks: &HashMap<ConnectionId, EventSink>, failure: Option<&str>) {
        for (connection, mut pending) in self.pending.drain() {
            if let (Some(reason), Some(from)) = (failure, pending.gated_from) {
                for event in &mut pending.events[from..] {
                    *event = refuse(event.clone(), reason);
                }
            }
            send(sinks, connection, pending.events);
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// What a gated event becomes when the fsync failed.
fn refuse(event: Event, reason: &str) -> Event {
    let error = || EngineError::new(ErrorKind::InternalError, format!("log write failed: {reason}"));
    match event {
        Event::ConfirmAck { channel, sequence, multiple } => Event::ConfirmNack { channel, sequence, multiple },
        // Every reply that reports a durable change (tx.commit-ok included) becomes an error.
        Event::QueueDeclareOk { channel, .. }
        | Event::QueueDeleteOk { channel, .. }
        | Event::QueuePurgeOk { channel, .. }
        | Event::ExchangeDeclareOk { channel }
        | Event::ExchangeDeleteOk { channel }
        | Event::BindOk { channel, .. }
        | Event::UnbindOk { channel, .. }
        | Event::TxCommitOk { channel }
        | Event::AdminDone { channel } => Event::ChannelError { channel, method: 0, error: error() },
        other => other,
    }
}

/// Send one connection's events, merging runs of consecutive confirms on a channel into one
/// `multiple` confirm. That is exact: each publish gets exactly one confirm event, in
/// publish order, so a run of acks for sequences s..=t on a channel acks all of them and
/// everything before s was answered earlier.
fn send(sinks: &HashMap<ConnectionId, EventSink>, connection: ConnectionId, events: Vec<Event>) {
    let Some(sink) = sinks.get(&connection) else {
        return; // the connection is gone; nothing to tell it
    };
    let mut merged: Vec<Event> = Vec::with_capacity(events.len());
    for event in events {
        if let Event::ConfirmAck { channel, sequence, .. } = event {
            if let Some(Event::ConfirmAck { channel: last_channel, sequence: last, multiple }) = merged.last_mut() {
                if *last_channel == channel && *last + 1 == sequence {
                    *last = sequence;
                    *multiple = true;
                    continue;
                }
            }
        }
        merged.push(event);
    }
    // A closed receiver means the connection task ended; its Disconnect is on the way.
    let _ = sink.sender.send(merged);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sink() -> (EventSink, flume::Receiver<Vec<Event>>) {
        let (sender, receiver) = flume::unbounded();
        (EventSink { sender, shared: Arc::default() }, receiver)
    }

    #[test]
    fn gated_events_wait_and_keep_order() {
        let (s, rx) = sink();
        let sinks = HashMap::from([(1, s)]);
        let mut outbox = Outbox::default();
        outbox.push(1, Event::QosOk { channel: 1 });
        outbox.push_gated(1, Event::ConfirmAck { channel: 1, sequence: 1, multiple: false });
        outbox.push(1, Event::GetEmpty { channel: 1 });
        outbox.send_ungated(&sinks);
        let first = rx.try_recv().unwrap();
        assert!(matches!(first.as_slice(), [Event::QosOk { .. }]));
        assert!(rx.try_recv().is_err(), "gated events and those behind them wait");
        outbox.send_after_commit(&sinks, None);
        let rest = rx.try_recv().unwrap();
        assert!(matches!(rest.as_slice(), [Event::ConfirmAck { .. }, Event::GetEmpty { .. }]));
        assert!(outbox.is_empty());
    }

    #[test]
    fn consecutive_confirms_merge_into_multiple() {
        let (s, rx) = sink();
        let sinks = HashMap::from([(1, s)]);
        let mut outbox = Outbox::default();
        for sequence in 1..=3 {
            outbox.push_gated(1, Event::ConfirmAck { channel: 1, sequence, multiple: false });
        }
        outbox.push_gated(1, Event::ConfirmAck { channel: 2, sequence: 1, multiple: false });
        outbox.send_after_commit(&sinks, None);
        let got = rx.try_recv().unwrap();
        assert!(matches!(
            got.as_slice(),
            [
                Event::ConfirmAck { channel: 1, sequence: 3, multiple: true },
                Event::ConfirmAck { channel: 2, sequence: 1, multiple: false }
            ]
        ));
    }

    #[test]
    fn failed_fsync_turns_durable_replies_into_errors() {
        let (s, rx) = sink();
        let sinks = HashMap::from([(1, s)]);
        let mut outbox = Outbox::default();
        outbox.push_gated(1, Event::TxCommitOk { channel: 2 });
        outbox.push_gated(1, Event::BindOk { channel: 2, to_exchange: false });
        outbox.push_gated(1, Event::QosOk { channel: 2 });
        outbox.send_after_commit(&sinks, Some("EIO"));
        let got = rx.try_recv().unwrap();
        assert!(matches!(
            got.as_slice(),
            [Event::ChannelError { channel: 2, .. }, Event::ChannelError { channel: 2, .. }, Event::QosOk { .. }]
        ));
    }

    #[test]
    fn failed_fsync_turns_confirms_into_nacks() {
        let (s, rx) = sink();
        let sinks = HashMap::from([(1, s)]);
        let mut outbox = Outbox::default();
        outbox.push_gated(1, Event::ConfirmAck { channel: 1, sequence: 1, multiple: false });
        outbox.send_after_commit(&sinks, Some("EIO"));
        let got = rx.try_recv().unwrap();
        assert!(matches!(got.as_slice(), [Event::ConfirmNack { sequence: 1, .. }]));
    }
}

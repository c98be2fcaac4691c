//! A minimal protocol layer over the engine's command API, for engine-level tests: one
//! connection, any number of channels, synchronous request/response. It plays what
//! `weir-amqp` does, without sockets, so tests can run the real engine on a simulated disk.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_engine::{Command, ConnectionShared, EngineHandle, Event, EventSink, Message, Origin, Publish, QueueDeclare};

/// How long a test waits for an engine event before it calls the engine stuck.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    handle: EngineHandle,
    connection: u64,
    events: flume::Receiver<Vec<Event>>,
    pending: VecDeque<Event>,
    next_confirm: u64,
}

impl Client {
    /// Connect to vhost `/` and open channel 1.
    pub fn connect(handle: EngineHandle) -> Client {
        let (sender, events) = flume::unbounded();
        let connection = handle.connection_id();
        let sink = EventSink { sender, shared: Arc::new(ConnectionShared::default()) };
        handle
            .send_blocking(Command::Connect {
                connection,
                vhost: "/".into(),
                info: weir_engine::ConnectionInfo { user: "guest".into(), ..Default::default() },
                sink,
            })
            .unwrap();
        let mut client = Client { handle, connection, events, pending: VecDeque::new(), next_confirm: 1 };
        assert!(matches!(client.next_event(), Event::ConnectionOpened));
        client.open_channel(1);
        client
    }

    pub fn origin(&self, channel: u16) -> Origin {
        Origin { connection: self.connection, channel, method: 0 }
    }

    pub fn open_channel(&mut self, channel: u16) {
        self.handle.send_blocking(Command::ChannelOpen { origin: self.origin(channel) }).unwrap();
    }

    pub fn next_event(&mut self) -> Event {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            let batch = self.events.recv_timeout(EVENT_TIMEOUT).expect("an event from the engine");
            self.pending.extend(batch);
        }
    }

    pub fn declare(&mut self, name: &str) {
        let declare = QueueDeclare {
            name: name.into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: Vec::new(),
        };
        self.handle.send_blocking(Command::QueueDeclare { origin: self.origin(1), declare, no_wait: false }).unwrap();
        assert!(matches!(self.next_event(), Event::QueueDeclareOk { .. }));
    }

    fn publish_command(&self, channel: u16, queue: &str, body: Vec<u8>, confirm: Option<u64>) -> Command {
        let message = Arc::new(Message {
            exchange: String::new(),
            routing_key: queue.into(),
            raw_properties: Bytes::from_static(&[0x10, 0x00, 0x02]), // delivery-mode 2
            body: Bytes::from(body),
        });
        Command::Publish(Box::new(Publish {
            origin: self.origin(channel),
            exchange: String::new(),
            routing_key: queue.into(),
            mandatory: false,
            persistent: true,
            confirm,
            headers: Vec::new(),
            expiration_ms: None,
            direct_reply_to: false,
            cc: Vec::new(),
            recipients: None,
            message,
        }))
    }

    /// Publish persistent on channel 1 and wait for the confirm.
    pub fn publish(&mut self, queue: &str, body: Vec<u8>) {
        let sequence = self.next_confirm;
        self.next_confirm += 1;
        self.handle.send_blocking(self.publish_command(1, queue, body, Some(sequence))).unwrap();
        match self.next_event() {
            Event::ConfirmAck { sequence: acked, .. } => assert_eq!(acked, sequence),
            other => panic!("expected a confirm, got {other:?}"),
        }
    }

    /// Publish persistent on channel 1: true if confirmed, false if nacked (the log refused it).
    pub fn try_publish(&mut self, queue: &str, body: Vec<u8>) -> bool {
        let sequence = self.next_confirm;
        self.next_confirm += 1;
        self.handle.send_blocking(self.publish_command(1, queue, body, Some(sequence))).unwrap();
        match self.next_event() {
            Event::ConfirmAck { sequence: acked, .. } => {
                assert_eq!(acked, sequence);
                true
            }
            Event::ConfirmNack { sequence: nacked, .. } => {
                assert_eq!(nacked, sequence);
                false
            }
            other => panic!("expected a confirm, got {other:?}"),
        }
    }

    /// Commit: true on tx.commit-ok, false if the engine refused it (the channel is then closed
    /// by the protocol layer; this client just stops using it).
    pub fn try_tx_commit(&mut self, channel: u16) -> bool {
        self.handle.send_blocking(Command::TxCommit { origin: self.origin(channel) }).unwrap();
        match self.next_event() {
            Event::TxCommitOk { .. } => true,
            Event::ChannelError { .. } => false,
            other => panic!("expected tx.commit-ok or an error, got {other:?}"),
        }
    }

    /// Publish persistent on a transactional `channel` (no confirm; the commit answers).
    pub fn publish_in_tx(&mut self, channel: u16, queue: &str, body: Vec<u8>) {
        self.handle.send_blocking(self.publish_command(channel, queue, body, None)).unwrap();
    }

    pub fn tx_select(&mut self, channel: u16) {
        self.handle.send_blocking(Command::TxSelect { origin: self.origin(channel) }).unwrap();
        assert!(matches!(self.next_event(), Event::TxSelectOk { .. }));
    }

    pub fn tx_commit(&mut self, channel: u16) {
        self.handle.send_blocking(Command::TxCommit { origin: self.origin(channel) }).unwrap();
        match self.next_event() {
            Event::TxCommitOk { .. } => {}
            other => panic!("expected tx.commit-ok, got {other:?}"),
        }
    }

    /// `basic.get` with auto-ack on channel 1: the body, if any.
    pub fn get(&mut self, queue: &str) -> Option<Bytes> {
        self.handle
            .send_blocking(Command::Get { origin: self.origin(1), queue: queue.into(), no_ack: true, filter: None })
            .unwrap();
        match self.next_event() {
            Event::GetOk { message, .. } => Some(message.body.clone()),
            Event::GetEmpty { .. } => None,
            other => panic!("expected get-ok or get-empty, got {other:?}"),
        }
    }
}

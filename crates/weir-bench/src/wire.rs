//! The client side of AMQP 0-9-1 as pure functions: the methods the benchmark sends, tune
//! negotiation, and the pre-encoded publish template.
//!
//! Sans-IO like `weir-amqp-codec` underneath it: nothing here touches a socket or a clock, so
//! every byte the benchmark sends can be checked in a unit test. Methods are built with
//! `amq-protocol`'s types and framed by the codec; the publish hot path never builds a
//! method: [`PublishTemplate`] holds the complete frames of one message, and a publisher
//! copies it and patches the 8-byte timestamp (one `memcpy` per message, no allocation).

use bytes::BytesMut;
use weir_amqp_codec::amq_protocol::protocol::{basic, channel, confirm, connection, queue, AMQPClass, BasicProperties};
use weir_amqp_codec::amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use weir_amqp_codec::{encode_method, encode_properties, encode_publish, outbound_body_chunk_size_max, FRAME_OVERHEAD};

use crate::body::{filler_body, BODY_TIMESTAMP_SIZE};

/// The one channel every benchmark connection uses.
pub const CHANNEL: u16 = 1;
/// Largest frame the benchmark asks for; the broker's `tune` may lower it.
pub const CLIENT_FRAME_MAX: u32 = 131_072;
/// Channels the benchmark asks for when the broker allows any number (it uses one).
pub const CLIENT_CHANNEL_MAX: u16 = 16;
/// Heartbeat interval sent in `tune-ok`: 0 turns heartbeats off. A benchmark connection is
/// never idle for long, and not having to send heartbeats keeps the writer simple.
pub const CLIENT_HEARTBEAT_S: u16 = 0;
/// delivery-mode of a transient message.
pub const DELIVERY_MODE_TRANSIENT: u8 = 1;
/// delivery-mode of a persistent message.
pub const DELIVERY_MODE_PERSISTENT: u8 = 2;
/// Reply code of a normal `connection.close`.
pub const REPLY_SUCCESS: u16 = 200;
/// SASL mechanism the benchmark authenticates with.
pub const MECHANISM_PLAIN: &str = "PLAIN";
/// The publish placeholder timestamp; `PublishTemplate::new` checks it lands where expected.
const TIMESTAMP_PLACEHOLDER: u64 = 0x5745_4952_5F54_5321; // "WEIR_TS!"

/// Appends `method` on `channel` to `out`.
pub fn put_method(out: &mut BytesMut, channel: u16, method: AMQPClass) {
    encode_method(out, channel, &method);
}

/// `connection.start-ok` answering with PLAIN credentials.
#[must_use]
pub fn start_ok(user: &str, password: &str, connection_name: &str) -> AMQPClass {
    let mut properties = FieldTable::default();
    properties.insert("product".into(), AMQPValue::LongString(LongString::from("weir-bench")));
    properties.insert("version".into(), AMQPValue::LongString(LongString::from(env!("CARGO_PKG_VERSION"))));
    properties.insert("connection_name".into(), AMQPValue::LongString(LongString::from(connection_name)));
    let response = format!("\0{user}\0{password}");
    AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
        client_properties: properties,
        mechanism: ShortString::from(MECHANISM_PLAIN),
        response: LongString::from(response.as_str()),
        locale: ShortString::from("en_US"),
    }))
}

/// True if the `mechanisms` of `connection.start` (space-separated) offer PLAIN.
#[must_use]
pub fn offers_plain(mechanisms: &[u8]) -> bool {
    mechanisms.split(|&byte| byte == b' ').any(|mechanism| mechanism == MECHANISM_PLAIN.as_bytes())
}

/// The `tune-ok` for the broker's `tune`: the smaller frame-max (0 means "no limit"),
/// channel-max likewise, heartbeats off.
#[must_use]
pub fn tune_ok(tune: &connection::Tune) -> connection::TuneOk {
    let frame_max = match tune.frame_max {
        0 => CLIENT_FRAME_MAX,
        offered => offered.min(CLIENT_FRAME_MAX),
    };
    let channel_max = match tune.channel_max {
        0 => CLIENT_CHANNEL_MAX,
        offered => offered.min(CLIENT_CHANNEL_MAX),
    };
    connection::TuneOk { channel_max, frame_max, heartbeat: CLIENT_HEARTBEAT_S }
}

/// `connection.open` of `vhost`.
#[must_use]
pub fn connection_open(vhost: &str) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open { virtual_host: ShortString::from(vhost) }))
}

/// A normal `connection.close` (200).
#[must_use]
pub fn connection_close() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: REPLY_SUCCESS,
        reply_text: ShortString::from("weir-bench done"),
        class_id: 0,
        method_id: 0,
    }))
}

/// `connection.close-ok`, the answer to a broker's `connection.close`.
#[must_use]
pub fn connection_close_ok() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}))
}

/// `channel.open`.
#[must_use]
pub fn channel_open() -> AMQPClass {
    AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}))
}

/// `queue.declare` of `name`: durable or transient, never exclusive or auto-delete (the
/// queues outlive the connections: publishers and consumers connect separately).
#[must_use]
pub fn queue_declare(name: &str, durable: bool, passive: bool) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: ShortString::from(name),
        passive,
        durable,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

/// `queue.purge` of `name`.
#[must_use]
pub fn queue_purge(name: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge { queue: ShortString::from(name), nowait: false }))
}

/// `basic.qos` with a per-consumer prefetch count.
#[must_use]
pub fn basic_qos(prefetch: u16) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: prefetch, global: false }))
}

/// `basic.consume` from `queue`.
#[must_use]
pub fn basic_consume(queue: &str, consumer_tag: &str, no_ack: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
        queue: ShortString::from(queue),
        consumer_tag: ShortString::from(consumer_tag),
        no_local: false,
        no_ack,
        exclusive: false,
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

/// `basic.ack` from a consumer.
#[must_use]
pub fn basic_ack(delivery_tag: u64, multiple: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag, multiple }))
}

/// `confirm.select`.
#[must_use]
pub fn confirm_select() -> AMQPClass {
    AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false }))
}

/// The complete frames (`basic.publish`, content header, body frames) of one message to the
/// default exchange, with the body's timestamp at a known offset.
#[derive(Clone, Debug)]
pub struct PublishTemplate {
    frames: Vec<u8>,
    timestamp_offset: usize,
}

impl PublishTemplate {
    /// The frames of a message of `body_size` bytes for `routing_key` (a queue name), with
    /// delivery-mode 2 if `persistent`, split for `frame_max`.
    #[must_use]
    pub fn new(routing_key: &str, body_size: usize, persistent: bool, frame_max: u32) -> PublishTemplate {
        let mut body = filler_body(body_size);
        crate::body::write_timestamp(&mut body, TIMESTAMP_PLACEHOLDER);
        let delivery_mode = if persistent { DELIVERY_MODE_PERSISTENT } else { DELIVERY_MODE_TRANSIENT };
        let properties = encode_properties(&BasicProperties::default().with_delivery_mode(delivery_mode));
        let mut frames = BytesMut::new();
        encode_publish(&mut frames, CHANNEL, "", routing_key, false, false, &properties, &body, frame_max);
        // The body frames are last: each adds FRAME_OVERHEAD to its chunk, and the first one
        // starts with the timestamp right after its 7-byte header.
        let body_frames = body_size.div_ceil(outbound_body_chunk_size_max(frame_max));
        let body_frames_size = body_size + body_frames * FRAME_OVERHEAD;
        let timestamp_offset = frames.len() - body_frames_size + weir_amqp_codec::FRAME_HEADER_SIZE;
        let frames = frames.to_vec();
        assert_eq!(
            frames[timestamp_offset..timestamp_offset + BODY_TIMESTAMP_SIZE],
            TIMESTAMP_PLACEHOLDER.to_be_bytes(),
            "publish template: timestamp not where the framing rules put it"
        );
        PublishTemplate { frames, timestamp_offset }
    }

    /// Bytes one message takes on the wire.
    #[must_use]
    pub fn size_bytes(&self) -> usize {
        self.frames.len()
    }

    /// Appends one message stamped `timestamp_ns` to `out`.
    pub fn append(&self, out: &mut BytesMut, timestamp_ns: u64) {
        let start = out.len();
        out.extend_from_slice(&self.frames);
        let at = start + self.timestamp_offset;
        out[at..at + BODY_TIMESTAMP_SIZE].copy_from_slice(&timestamp_ns.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use weir_amqp_codec::{decode_frame, Assembled, ContentAssembler, Frame, FRAME_MIN_SIZE};

    use super::*;
    use crate::body::read_timestamp;

    /// Decodes every message in `bytes` as the broker would.
    fn decode_messages(bytes: &[u8], frame_max: u32) -> Vec<weir_amqp_codec::Content> {
        let mut buf = BytesMut::from(bytes);
        let mut assembler = ContentAssembler::new(u64::MAX >> 1);
        let mut messages = Vec::new();
        while let Some(frame) = decode_frame(&mut buf, frame_max).expect("well-formed frames") {
            if let Assembled::Content(content) = assembler.on_frame(frame).expect("valid content") {
                messages.push(content);
            }
        }
        assert!(buf.is_empty(), "trailing bytes");
        messages
    }

    #[test]
    fn template_stamps_each_message_and_the_broker_reads_it_back() {
        let template = PublishTemplate::new("q-0", 16, true, CLIENT_FRAME_MAX);
        let mut out = BytesMut::new();
        template.append(&mut out, 11);
        template.append(&mut out, 22);
        assert_eq!(out.len(), 2 * template.size_bytes());
        let messages = decode_messages(&out, CLIENT_FRAME_MAX);
        assert_eq!(messages.len(), 2);
        assert_eq!(read_timestamp(&messages[0].body), Some(11));
        assert_eq!(read_timestamp(&messages[1].body), Some(22));
        assert_eq!(messages[0].publish.routing_key.as_str(), "q-0");
        assert_eq!(messages[0].properties.delivery_mode(), &Some(DELIVERY_MODE_PERSISTENT));
        assert_eq!(messages[0].body.len(), 16);
    }

    #[test]
    fn template_for_a_body_larger_than_a_frame_splits_it() {
        let size = 3 * 4096 + 5;
        let template = PublishTemplate::new("q", size, false, FRAME_MIN_SIZE);
        let mut out = BytesMut::new();
        template.append(&mut out, 7);
        let messages = decode_messages(&out, FRAME_MIN_SIZE);
        assert_eq!(messages[0].body.len(), size);
        assert_eq!(read_timestamp(&messages[0].body), Some(7));
        assert_eq!(messages[0].properties.delivery_mode(), &Some(DELIVERY_MODE_TRANSIENT));
    }

    #[test]
    fn tune_takes_the_smaller_limits_and_turns_heartbeats_off() {
        let offered = connection::Tune { channel_max: 2047, frame_max: 1 << 20, heartbeat: 60 };
        let answer = tune_ok(&offered);
        assert_eq!(answer.frame_max, CLIENT_FRAME_MAX);
        assert_eq!(answer.channel_max, CLIENT_CHANNEL_MAX);
        assert_eq!(answer.heartbeat, 0);
        let unlimited = connection::Tune { channel_max: 0, frame_max: 0, heartbeat: 0 };
        assert_eq!(tune_ok(&unlimited).frame_max, CLIENT_FRAME_MAX);
        let small = connection::Tune { channel_max: 1, frame_max: 4096, heartbeat: 0 };
        assert_eq!((tune_ok(&small).frame_max, tune_ok(&small).channel_max), (4096, 1));
    }

    #[test]
    fn plain_is_found_among_mechanisms() {
        assert!(offers_plain(b"AMQPLAIN PLAIN"));
        assert!(offers_plain(b"PLAIN"));
        assert!(!offers_plain(b"AMQPLAIN EXTERNAL"));
    }

    #[test]
    fn start_ok_carries_the_plain_response() {
        let AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok)) = start_ok("u", "p", "test") else {
            panic!("not a start-ok");
        };
        assert_eq!(start_ok.response.as_bytes(), b"\0u\0p");
        assert_eq!(start_ok.mechanism.as_str(), "PLAIN");
    }

    #[test]
    fn methods_frame_and_decode() {
        let mut out = BytesMut::new();
        put_method(&mut out, CHANNEL, queue_declare("q", true, false));
        put_method(&mut out, CHANNEL, basic_ack(42, true));
        let Some(Frame::Method { method, .. }) = decode_frame(&mut out, FRAME_MIN_SIZE).unwrap() else {
            panic!("no method");
        };
        assert!(matches!(method, AMQPClass::Queue(queue::AMQPMethod::Declare(d)) if d.durable));
        let Some(Frame::Method { method, .. }) = decode_frame(&mut out, FRAME_MIN_SIZE).unwrap() else {
            panic!("no method");
        };
        assert!(matches!(
            method,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: 42, multiple: true }))
        ));
    }
}

//! Property tests of the hand-written hot paths against `amq-protocol`'s parser and
//! generator: what Weir writes by hand, `amq-protocol` (as used by lapin) reads back to the
//! same values; what `amq-protocol` writes, Weir's fast decoders read to the same values.
//!
//! Bodies are sized around the frame-max boundaries (empty, one byte, chunk - 1, chunk,
//! chunk + 1, several chunks). A failure prints the minimal failing case; its seed is kept in
//! `hot_path.proptest-regressions` beside this file and replays first on the next run.

mod common;

use bytes::BytesMut;
use common::{decode_all, raw_frame};
use proptest::prelude::*;
use weir_amqp_codec::amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use weir_amqp_codec::amq_protocol::protocol::{basic, AMQPClass, BasicProperties};
use weir_amqp_codec::amq_protocol::types::{AMQPValue, FieldTable};
use weir_amqp_codec::{
    encode_confirm_ack, encode_confirm_nack, encode_deliver, encode_get_ok, encode_properties, encode_publish,
    encode_return, outbound_body_chunk_size_max, Assembled, ContentAssembler, Frame, ReplyCode, FRAME_OVERHEAD,
    MESSAGE_SIZE_MAX_DEFAULT,
};

fn short_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._#*-]{0,255}",
        "\\PC{0,60}", // any printable unicode: up to 240 bytes
        Just(String::new()),
        Just("a".repeat(255)),
    ]
}

fn frame_max() -> impl Strategy<Value = u32> {
    prop_oneof![Just(4096u32), Just(8192), Just(131_072), 4096u32..20_000]
}

/// A body length picked around the chunk boundaries of `frame_max`.
fn body_for(frame_max: u32) -> impl Strategy<Value = Vec<u8>> {
    let chunk = outbound_body_chunk_size_max(frame_max);
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(chunk - 1),
        Just(chunk),
        Just(chunk + 1),
        Just(2 * chunk),
        Just(2 * chunk + 1),
        0..3 * chunk,
    ]
    .prop_flat_map(|length| proptest::collection::vec(any::<u8>(), length))
}

fn properties() -> impl Strategy<Value = BasicProperties> {
    (
        proptest::option::of("[a-z/]{1,30}"),
        proptest::option::of(1u8..=2),
        proptest::option::of(any::<u8>()),
        proptest::option::of("\\PC{0,20}"),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(content_type, delivery_mode, priority, correlation_id, timestamp, header)| {
            let mut properties = BasicProperties::default();
            if let Some(value) = content_type {
                properties = properties.with_content_type(value.into());
            }
            if let Some(value) = delivery_mode {
                properties = properties.with_delivery_mode(value);
            }
            if let Some(value) = priority {
                properties = properties.with_priority(value);
            }
            if let Some(value) = correlation_id {
                properties = properties.with_correlation_id(value.into());
            }
            if let Some(value) = timestamp {
                properties = properties.with_timestamp(value);
            }
            if let Some(value) = header {
                let mut headers = FieldTable::default();
                headers.insert("x-value".into(), AMQPValue::LongLongInt(value));
                properties = properties.with_headers(headers);
            }
            properties
        })
}

/// Parses every frame of `bytes` with amq-protocol and returns (frame, encoded size).
fn amq_protocol_frames(bytes: &[u8]) -> Vec<(AMQPFrame, usize)> {
    let mut rest = bytes;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let (next, frame) = parse_frame(rest).expect("amq-protocol parses Weir's output");
        frames.push((frame, rest.len() - next.len()));
        rest = next;
    }
    frames
}

/// Checks the content frames after the method frame.
fn assert_content(
    frames: &[(AMQPFrame, usize)],
    channel: u16,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
) {
    let (AMQPFrame::Header(header_channel, header), _) = &frames[0] else {
        panic!("expected a header frame, got {:?}", frames[0].0);
    };
    assert_eq!(*header_channel, channel);
    assert_eq!(header.class_id, 60);
    assert_eq!(header.body_size, body.len() as u64);
    assert_eq!(&header.properties, properties);
    let chunk = outbound_body_chunk_size_max(frame_max);
    let bodies = &frames[1..];
    assert_eq!(bodies.len(), body.len().div_ceil(chunk), "body frame count");
    let mut joined = Vec::new();
    for (frame, size) in bodies {
        let AMQPFrame::Body(body_channel, fragment) = frame else {
            panic!("expected a body frame, got {frame:?}");
        };
        assert_eq!(*body_channel, channel);
        assert!(!fragment.is_empty());
        assert!(*size <= frame_max as usize, "body frame of {size} bytes");
        assert_eq!(*size, fragment.len() + FRAME_OVERHEAD);
        joined.extend_from_slice(fragment);
    }
    assert_eq!(joined, body);
}

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn deliver_is_read_back_by_amq_protocol(
        channel in 1u16..,
        consumer_tag in short_string(),
        delivery_tag in any::<u64>(),
        redelivered in any::<bool>(),
        exchange in short_string(),
        routing_key in short_string(),
        properties in properties(),
        (frame_max, body) in frame_max().prop_flat_map(|max| (Just(max), body_for(max))),
    ) {
        let raw_properties = encode_properties(&properties);
        let mut out = BytesMut::new();
        encode_deliver(&mut out, channel, &consumer_tag, delivery_tag, redelivered, &exchange,
            &routing_key, &raw_properties, &body, frame_max);
        let frames = amq_protocol_frames(&out);
        let expected = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: consumer_tag.as_str().into(),
            delivery_tag,
            redelivered,
            exchange: exchange.as_str().into(),
            routing_key: routing_key.as_str().into(),
        }));
        prop_assert_eq!(&frames[0].0, &AMQPFrame::Method(channel, expected));
        assert_content(&frames[1..], channel, &properties, &body, frame_max);
    }

    #[test]
    fn get_ok_is_read_back_by_amq_protocol(
        channel in 1u16..,
        delivery_tag in any::<u64>(),
        redelivered in any::<bool>(),
        exchange in short_string(),
        routing_key in short_string(),
        message_count in any::<u32>(),
        properties in properties(),
        (frame_max, body) in frame_max().prop_flat_map(|max| (Just(max), body_for(max))),
    ) {
        let raw_properties = encode_properties(&properties);
        let mut out = BytesMut::new();
        encode_get_ok(&mut out, channel, delivery_tag, redelivered, &exchange, &routing_key,
            message_count, &raw_properties, &body, frame_max);
        let frames = amq_protocol_frames(&out);
        let expected = AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
            delivery_tag,
            redelivered,
            exchange: exchange.as_str().into(),
            routing_key: routing_key.as_str().into(),
            message_count,
        }));
        prop_assert_eq!(&frames[0].0, &AMQPFrame::Method(channel, expected));
        assert_content(&frames[1..], channel, &properties, &body, frame_max);
    }

    #[test]
    fn return_is_read_back_by_amq_protocol(
        channel in 1u16..,
        no_consumers in any::<bool>(),
        exchange in short_string(),
        routing_key in short_string(),
        properties in properties(),
        (frame_max, body) in frame_max().prop_flat_map(|max| (Just(max), body_for(max))),
    ) {
        let reply = if no_consumers { ReplyCode::NoConsumers } else { ReplyCode::NoRoute };
        let raw_properties = encode_properties(&properties);
        let mut out = BytesMut::new();
        encode_return(&mut out, channel, reply, reply.name(), &exchange, &routing_key,
            &raw_properties, &body, frame_max);
        let frames = amq_protocol_frames(&out);
        let expected = AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
            reply_code: reply.code(),
            reply_text: reply.name().into(),
            exchange: exchange.as_str().into(),
            routing_key: routing_key.as_str().into(),
        }));
        prop_assert_eq!(&frames[0].0, &AMQPFrame::Method(channel, expected));
        assert_content(&frames[1..], channel, &properties, &body, frame_max);
    }

    #[test]
    fn confirms_are_read_back_by_amq_protocol(
        channel in 1u16..,
        delivery_tag in any::<u64>(),
        multiple in any::<bool>(),
        requeue in any::<bool>(),
    ) {
        let mut out = BytesMut::new();
        encode_confirm_ack(&mut out, channel, delivery_tag, multiple);
        encode_confirm_nack(&mut out, channel, delivery_tag, multiple, requeue);
        let frames = amq_protocol_frames(&out);
        prop_assert_eq!(frames.len(), 2);
        prop_assert_eq!(&frames[0].0, &AMQPFrame::Method(channel, AMQPClass::Basic(
            basic::AMQPMethod::Ack(basic::Ack { delivery_tag, multiple }))));
        prop_assert_eq!(&frames[1].0, &AMQPFrame::Method(channel, AMQPClass::Basic(
            basic::AMQPMethod::Nack(basic::Nack { delivery_tag, multiple, requeue }))));
    }

    /// Publish, written by hand, decoded by Weir and assembled: the message comes back
    /// whole, with a zero-copy body when it fits one frame.
    #[test]
    fn publish_decodes_and_assembles(
        channel in 1u16..,
        exchange in short_string(),
        routing_key in short_string(),
        mandatory in any::<bool>(),
        properties in properties(),
        (frame_max, body) in frame_max().prop_flat_map(|max| (Just(max), body_for(max))),
    ) {
        let raw_properties = encode_properties(&properties);
        let mut out = BytesMut::new();
        encode_publish(&mut out, channel, &exchange, &routing_key, mandatory, false,
            &raw_properties, &body, frame_max);
        let frames = decode_all(&out, frame_max).expect("Weir decodes its own publish");
        let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
        let mut contents = Vec::new();
        for frame in frames {
            prop_assert_eq!(frame.channel(), channel);
            match assembler.on_frame(frame).expect("well-formed content assembles") {
                Assembled::Content(content) => contents.push(content),
                Assembled::Pending => {}
                Assembled::Method(method) => prop_assert!(false, "unexpected {:?}", method),
            }
        }
        prop_assert_eq!(contents.len(), 1);
        let content = &contents[0];
        prop_assert_eq!(content.publish.exchange.as_str(), exchange.as_str());
        prop_assert_eq!(content.publish.routing_key.as_str(), routing_key.as_str());
        prop_assert_eq!(content.publish.mandatory, mandatory);
        prop_assert_eq!(&content.properties, &properties);
        prop_assert_eq!(&content.raw_properties[..], &raw_properties[..]);
        prop_assert_eq!(&content.body[..], &body[..]);
        prop_assert!(assembler.is_idle());
    }

    /// The fast decoders (publish, ack, reject, nack) agree with amq-protocol on any flag
    /// octet, including bits no flag uses.
    #[test]
    fn fast_decoders_agree_with_amq_protocol(
        channel in 0u16..,
        delivery_tag in any::<u64>(),
        flags in any::<u8>(),
        exchange in short_string(),
        routing_key in short_string(),
    ) {
        let mut payloads = Vec::new();
        for method_id in [80u16, 90, 120] {
            let mut payload = vec![0, 60];
            payload.extend_from_slice(&method_id.to_be_bytes());
            payload.extend_from_slice(&delivery_tag.to_be_bytes());
            payload.push(flags);
            payloads.push(payload);
        }
        let mut publish = vec![0, 60, 0, 40, 0, 0];
        publish.push(u8::try_from(exchange.len()).unwrap());
        publish.extend_from_slice(exchange.as_bytes());
        publish.push(u8::try_from(routing_key.len()).unwrap());
        publish.extend_from_slice(routing_key.as_bytes());
        publish.push(flags);
        payloads.push(publish);
        for payload in payloads {
            let frame = raw_frame(1, channel, &payload);
            let (_, AMQPFrame::Method(_, expected)) = parse_frame(&frame[..]).unwrap() else {
                panic!("amq-protocol did not parse a method");
            };
            let decoded = decode_all(&frame, 131_072).unwrap();
            let [Frame::Method { method, .. }] = &decoded[..] else { panic!("{decoded:?}") };
            prop_assert_eq!(method, &expected);
        }
    }

    /// Methods generated by amq-protocol decode to the same values through the fast paths.
    #[test]
    fn amq_protocol_publish_and_acks_decode(
        delivery_tag in any::<u64>(),
        multiple in any::<bool>(),
        requeue in any::<bool>(),
        exchange in short_string(),
        routing_key in short_string(),
        mandatory in any::<bool>(),
        immediate in any::<bool>(),
    ) {
        let methods = [
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.as_str().into(),
                routing_key: routing_key.as_str().into(),
                mandatory,
                immediate,
            })),
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag, multiple })),
            AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject { delivery_tag, requeue })),
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag,
                multiple,
                requeue,
            })),
        ];
        for method in methods {
            let frame = AMQPFrame::Method(1, method.clone());
            let generated = gen_frame(&frame)(WriteContext::from(Vec::new()));
            let bytes = generated.unwrap().into_inner().0;
            let decoded = decode_all(&bytes, 4096).unwrap();
            let [Frame::Method { method: got, .. }] = &decoded[..] else { panic!("{decoded:?}") };
            prop_assert_eq!(got, &method);
        }
    }
}

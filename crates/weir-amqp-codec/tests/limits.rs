//! Every limit and every rejection path of the decoder, each at its boundary, named after
//! the path it proves.
//!
//! The hostile deep-nesting tests run in a thread with a 256 KiB stack: `amq-protocol` alone
//! would overflow far larger stacks on such input (trap #1), so passing there shows the scan
//! is not recursive. The accepted maximum (64 levels, which `amq-protocol` then parses
//! recursively) is decoded on a 1 MiB stack, half a tokio worker's default. Measured stack
//! for decoding a 64-deep `queue.declare`: ~127 KiB in release, ~551 KiB in the dev profile
//! (dependencies at opt-level 1).

mod common;

use bytes::BytesMut;
use common::{
    content_header_payload_with_headers, decode_all, nested_array_entries, nested_table_entries, queue_declare_payload,
    raw_frame,
};
use weir_amqp_codec::amq_protocol::protocol::{queue, AMQPClass};
use weir_amqp_codec::amq_protocol::types::AMQPValue;
use weir_amqp_codec::{
    decode_frame, decode_properties, encode_heartbeat, encode_publish, Frame, ReplyCode, FIELD_TABLE_DEPTH_MAX,
    FRAME_HEADER_SIZE, FRAME_MIN_SIZE,
};

/// Stack for the hostile deep-nesting tests: far below what recursion over 10 000 levels needs.
const SMALL_STACK_BYTES: usize = 256 * 1024;
/// Stack for decoding the deepest accepted nesting: half of tokio's 2 MiB worker stack.
const WORKER_HALF_STACK_BYTES: usize = 1024 * 1024;
/// Nesting depth of the hostile inputs.
const HOSTILE_DEPTH: usize = 10_000;

fn decode_one(bytes: &[u8], frame_max: u32) -> Result<Option<Frame>, weir_amqp_codec::FrameError> {
    decode_frame(&mut BytesMut::from(bytes), frame_max)
}

fn run_with_stack(stack_bytes: usize, test: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(stack_bytes)
        .spawn(test)
        .expect("spawn test thread")
        .join()
        .expect("test thread must not fail or overflow its stack");
}

/// A body frame whose payload is exactly `payload_size` bytes.
fn body_frame(payload_size: usize) -> Vec<u8> {
    raw_frame(3, 1, &vec![0xAB; payload_size])
}

#[test]
fn payload_of_frame_max_minus_8_is_accepted() {
    for frame_max in [FRAME_MIN_SIZE, 131_072] {
        let frame = body_frame(frame_max as usize - 8);
        assert_eq!(frame.len(), frame_max as usize);
        assert!(matches!(decode_one(&frame, frame_max), Ok(Some(Frame::Body { .. }))));
    }
}

/// RabbitMQ's 8-byte fudge: a payload of exactly frame_max passes, one more does not.
#[test]
fn payload_of_frame_max_is_accepted_and_frame_max_plus_1_rejected_from_the_header_alone() {
    for frame_max in [FRAME_MIN_SIZE, 131_072] {
        let accepted = body_frame(frame_max as usize);
        assert!(matches!(decode_one(&accepted, frame_max), Ok(Some(Frame::Body { .. }))));

        let rejected = body_frame(frame_max as usize + 1);
        let error = decode_one(&rejected[..FRAME_HEADER_SIZE], frame_max).unwrap_err();
        assert_eq!(error.code, ReplyCode::FrameError);
        assert_eq!(error.channel, 1);
        assert!(error.is_hard());
    }
}

#[test]
fn huge_declared_size_is_rejected_before_buffering() {
    let header = [1, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF];
    let error = decode_one(&header, 131_072).unwrap_err();
    assert_eq!(error.code, ReplyCode::FrameError);
}

#[test]
fn frame_max_below_the_minimum_counts_as_the_minimum() {
    let frame = body_frame(FRAME_MIN_SIZE as usize);
    assert!(matches!(decode_one(&frame, 0), Ok(Some(Frame::Body { .. }))));
    assert!(decode_one(&body_frame(FRAME_MIN_SIZE as usize + 1), 0).is_err());
}

#[test]
fn bad_frame_end_is_a_frame_error() {
    let mut frame = raw_frame(3, 2, b"abc");
    *frame.last_mut().unwrap() = 0xCD;
    let error = decode_one(&frame, FRAME_MIN_SIZE).unwrap_err();
    assert_eq!((error.code, error.channel), (ReplyCode::FrameError, 2));
}

#[test]
fn unknown_frame_type_is_a_frame_error_from_the_header_alone() {
    for frame_type in [0u8, 4, 7, 9, b'A', 0xFF] {
        let frame = raw_frame(frame_type, 0, b"");
        let error = decode_one(&frame[..FRAME_HEADER_SIZE], FRAME_MIN_SIZE).unwrap_err();
        assert_eq!(error.code, ReplyCode::FrameError, "type {frame_type}");
    }
}

#[test]
fn heartbeat_on_a_channel_is_returned_for_the_connection_to_reject() {
    let frames = decode_all(&raw_frame(8, 5, b""), FRAME_MIN_SIZE).unwrap();
    assert_eq!(frames, [Frame::Heartbeat { channel: 5 }]);
    let mut out = BytesMut::new();
    encode_heartbeat(&mut out);
    assert_eq!(decode_all(&out, FRAME_MIN_SIZE).unwrap(), [Frame::Heartbeat { channel: 0 }]);
}

#[test]
fn unknown_class_or_method_is_not_implemented() {
    for (class_id, method_id) in [(60u16, 41u16), (60, 0), (99, 10), (0, 0), (40, 41)] {
        let mut payload = class_id.to_be_bytes().to_vec();
        payload.extend_from_slice(&method_id.to_be_bytes());
        let error = decode_one(&raw_frame(1, 3, &payload), FRAME_MIN_SIZE).unwrap_err();
        assert_eq!(error.code, ReplyCode::NotImplemented);
        assert_eq!((error.channel, error.class_id, error.method_id), (3, class_id, method_id));
    }
}

#[test]
fn method_payload_shorter_than_its_ids_is_a_frame_error() {
    for payload in [&b""[..], &[0, 60], &[0, 60, 0]] {
        let error = decode_one(&raw_frame(1, 1, payload), FRAME_MIN_SIZE).unwrap_err();
        assert_eq!(error.code, ReplyCode::FrameError);
    }
}

#[test]
fn truncated_method_fields_are_a_syntax_error() {
    // basic.ack missing its flag octet
    let payload = [0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1];
    let error = decode_one(&raw_frame(1, 1, &payload), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(error.code, ReplyCode::SyntaxError);
    assert_eq!((error.class_id, error.method_id), (60, 80));
    assert!(error.text.contains("basic.ack"), "{}", error.text);
}

#[test]
fn trailing_bytes_after_method_fields_are_a_syntax_error() {
    let payload = [0, 90, 0, 10, 0xFF]; // tx.select has no fields
    let error = decode_one(&raw_frame(1, 1, &payload), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(error.code, ReplyCode::SyntaxError);
}

#[test]
fn non_utf8_short_string_is_a_syntax_error() {
    let payload = queue_declare_payload(b"q\xff", &[]);
    let error = decode_one(&raw_frame(1, 1, &payload), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(error.code, ReplyCode::SyntaxError);
    assert_eq!((error.class_id, error.method_id), (50, 10));
    assert!(error.text.contains("'queue'"), "{}", error.text);
}

#[test]
fn non_utf8_table_key_is_a_syntax_error() {
    let payload = queue_declare_payload(b"q", &[2, b'x', 0xC0, b'V']);
    let error = decode_one(&raw_frame(1, 1, &payload), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(error.code, ReplyCode::SyntaxError);
}

#[test]
fn unknown_field_value_tag_is_a_syntax_error() {
    for tag in [b'Z', b'_', 0u8, b'c'] {
        let payload = queue_declare_payload(b"q", &[1, b'k', tag, 0, 0, 0, 0]);
        let error = decode_one(&raw_frame(1, 1, &payload), FRAME_MIN_SIZE).unwrap_err();
        assert_eq!(error.code, ReplyCode::SyntaxError, "tag {tag}");
    }
}

#[test]
fn every_rabbitmq_field_value_tag_is_accepted() {
    let mut entries = Vec::new();
    for (tag, value) in [
        (b't', &[1][..]),
        (b'b', &[0xFF]),
        (b'B', &[0xFF]),
        (b's', &[0xFF, 0xFE]),
        (b'U', &[0, 1]),
        (b'u', &[0xFF, 0xFE]),
        (b'I', &[0xFF, 0, 0, 1]),
        (b'i', &[0xFF, 0, 0, 1]),
        (b'l', &[0xFF; 8]),
        (b'L', &[0, 0, 0, 0, 0, 0, 0, 9]),
        (b'f', &[0x3F, 0xC0, 0, 0]),
        (b'd', &[0x40, 0, 0, 0, 0, 0, 0, 0]),
        (b'D', &[2, 0, 0, 0, 5]),
        (b'T', &[0, 0, 0, 0, 0x65, 0, 0, 0]),
        (b'S', &[0, 0, 0, 2, b'h', 0xFF]),
        (b'x', &[0, 0, 0, 1, 0]),
        (b'A', &[0, 0, 0, 2, b't', 0]),
        (b'F', &[0, 0, 0, 3, 1, b'n', b'V']),
        (b'V', &[]),
    ] {
        entries.extend_from_slice(&[2, b'k', tag, tag]);
        entries.extend_from_slice(value);
    }
    let payload = queue_declare_payload(b"q", &entries);
    let frames = decode_all(&raw_frame(1, 1, &payload), FRAME_MIN_SIZE).unwrap();
    let [Frame::Method { method: AMQPClass::Queue(queue::AMQPMethod::Declare(declare)), .. }] = &frames[..] else {
        panic!("{frames:?}");
    };
    assert!(declare.durable);
    let arguments = declare.arguments.inner();
    assert_eq!(arguments.len(), 19);
    assert_eq!(arguments.get("ks"), Some(&AMQPValue::ShortInt(-2)));
    assert_eq!(arguments.get("kL"), Some(&AMQPValue::LongLongInt(9)));
    assert_eq!(arguments.get("kl"), Some(&AMQPValue::LongLongInt(-1)));
    assert!(matches!(arguments.get("kx"), Some(AMQPValue::ByteArray(_))));
    assert_eq!(arguments.get("kV"), Some(&AMQPValue::Void));
}

fn queue_declare_with_depth(depth: usize) -> Vec<u8> {
    raw_frame(1, 1, &queue_declare_payload(b"q", &nested_table_entries(depth)))
}

fn header_with_depth(depth: usize) -> Vec<u8> {
    raw_frame(2, 1, &content_header_payload_with_headers(0, &nested_table_entries(depth)))
}

#[test]
fn arguments_nested_64_deep_are_accepted_and_65_rejected() {
    let frame_max = 131_072;
    let frames = decode_all(&queue_declare_with_depth(FIELD_TABLE_DEPTH_MAX), frame_max).unwrap();
    assert!(matches!(frames[..], [Frame::Method { class_id: 50, .. }]));
    let error = decode_one(&queue_declare_with_depth(FIELD_TABLE_DEPTH_MAX + 1), frame_max).unwrap_err();
    assert_eq!(error.code, ReplyCode::SyntaxError);
    assert_eq!((error.channel, error.class_id, error.method_id), (1, 50, 10));
    assert!(error.text.contains("nested deeper than 64"), "{}", error.text);
}

#[test]
fn arrays_count_towards_the_depth_limit() {
    let frame_max = 131_072;
    let accepted = queue_declare_payload(b"q", &nested_array_entries(FIELD_TABLE_DEPTH_MAX));
    assert!(decode_all(&raw_frame(1, 1, &accepted), frame_max).is_ok());
    let rejected = queue_declare_payload(b"q", &nested_array_entries(FIELD_TABLE_DEPTH_MAX + 1));
    let error = decode_one(&raw_frame(1, 1, &rejected), frame_max).unwrap_err();
    assert_eq!(error.code, ReplyCode::SyntaxError);
}

#[test]
fn headers_nested_64_deep_are_accepted_and_65_rejected() {
    let frame_max = 131_072;
    let frames = decode_all(&header_with_depth(FIELD_TABLE_DEPTH_MAX), frame_max).unwrap();
    assert!(matches!(frames[..], [Frame::Header { .. }]));
    let error = decode_one(&header_with_depth(FIELD_TABLE_DEPTH_MAX + 1), frame_max).unwrap_err();
    assert_eq!(error.code, ReplyCode::SyntaxError);
    assert_eq!(error.channel, 1);
}

#[test]
fn arguments_nested_10000_deep_are_rejected_on_a_small_stack() {
    run_with_stack(SMALL_STACK_BYTES, || {
        let frame = queue_declare_with_depth(HOSTILE_DEPTH);
        let error = decode_one(&frame, u32::MAX).unwrap_err();
        assert_eq!(error.code, ReplyCode::SyntaxError);
        let arrays = raw_frame(1, 1, &queue_declare_payload(b"q", &nested_array_entries(HOSTILE_DEPTH)));
        assert_eq!(decode_one(&arrays, u32::MAX).unwrap_err().code, ReplyCode::SyntaxError);
    });
}

#[test]
fn headers_nested_10000_deep_are_rejected_on_a_small_stack() {
    run_with_stack(SMALL_STACK_BYTES, || {
        let error = decode_one(&header_with_depth(HOSTILE_DEPTH), u32::MAX).unwrap_err();
        assert_eq!(error.code, ReplyCode::SyntaxError);
        let mut raw = (1u16 << 13).to_be_bytes().to_vec();
        let entries = nested_table_entries(HOSTILE_DEPTH);
        raw.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_be_bytes());
        raw.extend_from_slice(&entries);
        assert_eq!(decode_properties(&raw).unwrap_err().code, ReplyCode::SyntaxError);
    });
}

/// The accepted maximum must itself be safe on a worker stack: decode the 64-deep
/// arguments and headers (which `amq-protocol` parses recursively) on half of one.
#[test]
fn depth_limit_is_safe_on_half_a_worker_stack() {
    run_with_stack(WORKER_HALF_STACK_BYTES, || {
        assert!(decode_all(&queue_declare_with_depth(FIELD_TABLE_DEPTH_MAX), 131_072).is_ok());
        assert!(decode_all(&header_with_depth(FIELD_TABLE_DEPTH_MAX), 131_072).is_ok());
    });
}

#[test]
fn content_header_of_another_class_is_unexpected() {
    let mut payload = content_header_payload_with_headers(0, &[]);
    payload[1] = 50;
    let error = decode_one(&raw_frame(2, 1, &payload), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(error.code, ReplyCode::UnexpectedFrame);
}

#[test]
fn content_header_with_weight_is_unexpected() {
    let mut payload = content_header_payload_with_headers(0, &[]);
    payload[3] = 1;
    let error = decode_one(&raw_frame(2, 1, &payload), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(error.code, ReplyCode::UnexpectedFrame);
}

#[test]
fn content_header_shorter_than_its_prefix_is_a_frame_error() {
    let error = decode_one(&raw_frame(2, 1, &[0, 60, 0, 0, 0]), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(error.code, ReplyCode::FrameError);
}

#[test]
fn malformed_properties_are_a_syntax_error() {
    // content-type flag set, length 5, 1 byte present
    let payload = [0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 5, b'a'];
    let error = decode_one(&raw_frame(2, 1, &payload), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(error.code, ReplyCode::SyntaxError);
    // no flags at all
    let error = decode_one(&raw_frame(2, 1, &payload[..12]), FRAME_MIN_SIZE).unwrap_err();
    assert_eq!(error.code, ReplyCode::SyntaxError);
}

#[test]
fn body_and_header_payloads_are_zero_copy() {
    let mut out = BytesMut::new();
    encode_publish(&mut out, 1, "", "q", false, false, &[0x10, 0, 2], b"hello", 4096);
    let mut buf = out.clone();
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let mut pointers = Vec::new();
    while let Some(frame) = decode_frame(&mut buf, 4096).unwrap() {
        match frame {
            Frame::Header { raw_properties, .. } => pointers.push(raw_properties.as_ptr() as usize),
            Frame::Body { payload, .. } => pointers.push(payload.as_ptr() as usize),
            Frame::Method { .. } | Frame::Heartbeat { .. } => {}
        }
    }
    assert_eq!(pointers.len(), 2);
    assert!(pointers.iter().all(|pointer| (start..end).contains(pointer)));
}

/// Every proper prefix of a valid stream decodes the frames it holds and then asks for
/// more: never an error, never a panic.
#[test]
fn truncated_input_returns_none_never_an_error() {
    let mut stream = BytesMut::new();
    encode_publish(&mut stream, 1, "ex", "rk", true, false, &[0x10, 0, 2], &[7; 5000], 4096);
    stream.extend_from_slice(&queue_declare_with_depth(10));
    stream.extend_from_slice(&header_with_depth(3));
    let complete = decode_all(&stream, 131_072).unwrap();
    for cut in 0..stream.len() {
        let mut buf = BytesMut::from(&stream[..cut]);
        let mut decoded = 0;
        loop {
            match decode_frame(&mut buf, 131_072) {
                Ok(Some(_)) => decoded += 1,
                Ok(None) => break,
                Err(error) => panic!("prefix of {cut} bytes: {error}"),
            }
        }
        assert!(decoded < complete.len());
    }
}

//! Outbound framing: methods, heartbeats, content, and the hot paths written by hand.
//!
//! Every function appends complete frames to a `BytesMut`; the I/O task writes it out.
//!
//! Invariants:
//! - Content is one header frame then body frames of at most `frame_max - 8` payload bytes;
//!   **no** body frame when the body is empty (`rabbit_binary_generator:build_content_frames`,
//!   AMQP-NOTES §3.1).
//! - Content properties go out as the raw bytes received (trap #5).
//! - The hot paths (`basic.deliver`, `basic.get-ok`, `basic.return`, publisher-confirm
//!   `basic.ack`/`basic.nack`, and `basic.publish` for clients and benchmarks) are encoded
//!   without building an `AMQPClass` and without heap allocation beyond growing `out`
//!   (trap #8: `amq-protocol` allocates flag-name strings for every bit field).
//! - Output is always well-formed: a `&str` longer than a short string allows is cut at a
//!   character boundary (only a Weir bug can cause that: every name Weir echoes arrived as a
//!   short string), and field tables are made encodable before `amq-protocol` sees them.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{self as amqp, AMQPClass, BasicProperties};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::{BufMut, Bytes, BytesMut};

use crate::decode::{
    FRAME_END, FRAME_HEADER_SIZE, FRAME_MIN_SIZE, FRAME_OVERHEAD, FRAME_TYPE_BODY, FRAME_TYPE_HEADER,
    FRAME_TYPE_HEARTBEAT, FRAME_TYPE_METHOD,
};
use crate::error::{truncate_to_char_boundary, ReplyCode, SHORT_STRING_LENGTH_MAX};
use crate::scan::FIELD_TABLE_DEPTH_MAX;
use crate::schema::{
    CLASS_BASIC, METHOD_BASIC_ACK, METHOD_BASIC_DELIVER, METHOD_BASIC_GET_OK, METHOD_BASIC_NACK, METHOD_BASIC_PUBLISH,
    METHOD_BASIC_RETURN,
};

/// Initial capacity of the scratch buffer `amq-protocol` generates a method into.
const METHOD_SCRATCH_CAPACITY: usize = 256;
/// Content-header payload before the properties: class id, weight, body size.
const CONTENT_HEADER_PREFIX_SIZE: usize = 12;
/// Property flags of a content without properties.
const PROPERTY_FLAGS_NONE: [u8; 2] = [0, 0];

/// Largest outbound body-frame payload for `frame_max` (`frame_max - 8`); a `frame_max`
/// below [`FRAME_MIN_SIZE`], including 0, counts as [`FRAME_MIN_SIZE`].
#[must_use]
pub fn outbound_body_chunk_size_max(frame_max: u32) -> usize {
    // u32 → usize is lossless on every target Weir supports (at least 32-bit).
    frame_max.max(FRAME_MIN_SIZE) as usize - FRAME_OVERHEAD
}

/// Encodes a method frame with `amq-protocol`'s generator. For the hot paths use the
/// dedicated functions below, which do not allocate.
///
/// Field tables holding `AMQPValue::ShortString` (which `amq-protocol` would write with the
/// unreadable tag `_`) are written as long strings, and tables nested deeper than
/// [`FIELD_TABLE_DEPTH_MAX`] are cut there (`Void`), so the output is always readable.
pub fn encode_method(out: &mut BytesMut, channel: u16, method: &AMQPClass) {
    let repaired;
    let method = match method_table(method) {
        Some(table) if !table_is_encodable(table, 1) => {
            let mut copy = method.clone();
            if let Some(table) = method_table_mut(&mut copy) {
                *table = encodable_table(table, 1);
            }
            repaired = copy;
            &repaired
        }
        _ => method,
    };
    let scratch = Vec::with_capacity(METHOD_SCRATCH_CAPACITY);
    let payload = match amqp::gen_class(method)(WriteContext::from(scratch)) {
        Ok(context) => context.into_inner().0,
        // Writing into a Vec cannot fail, and lengths are fixed-size: a Weir bug.
        Err(error) => panic!("amq-protocol failed to generate a method into a Vec: {error:?}"),
    };
    put_frame(out, FRAME_TYPE_METHOD, channel, &payload);
}

/// Encodes a heartbeat frame (channel 0, empty payload).
pub fn encode_heartbeat(out: &mut BytesMut) {
    put_frame(out, FRAME_TYPE_HEARTBEAT, 0, &[]);
}

/// Encodes a basic-class content: one header frame, then the body split into frames of at
/// most `frame_max - 8` bytes; no body frame when `body` is empty.
///
/// `raw_properties` are the property flags and fields exactly as received; empty means "no
/// properties". The header frame is not split (AMQP cannot), so properties larger than the
/// receiving peer's frame-max reach it as an oversize frame, as with RabbitMQ.
pub fn encode_content(out: &mut BytesMut, channel: u16, raw_properties: &[u8], body: &[u8], frame_max: u32) {
    let raw_properties = if raw_properties.is_empty() { &PROPERTY_FLAGS_NONE[..] } else { raw_properties };
    let chunk_size_max = outbound_body_chunk_size_max(frame_max);
    let body_frames = body.len().div_ceil(chunk_size_max);
    out.reserve(
        FRAME_OVERHEAD + CONTENT_HEADER_PREFIX_SIZE + raw_properties.len() + body.len() + body_frames * FRAME_OVERHEAD,
    );
    let header_start = begin_frame(out, FRAME_TYPE_HEADER, channel);
    out.put_u16(CLASS_BASIC);
    out.put_u16(0); // weight
    out.put_u64(body.len() as u64);
    out.put_slice(raw_properties);
    end_frame(out, header_start);
    for chunk in body.chunks(chunk_size_max) {
        put_frame(out, FRAME_TYPE_BODY, channel, chunk);
    }
}

/// Encodes `basic.deliver` and its content.
#[allow(clippy::too_many_arguments)] // mirrors the method's fields; a struct would only move them
pub fn encode_deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let start = begin_method(out, channel, METHOD_BASIC_DELIVER);
    put_short_string(out, consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(redelivered));
    put_short_string(out, exchange);
    put_short_string(out, routing_key);
    end_frame(out, start);
    encode_content(out, channel, raw_properties, body, frame_max);
}

/// Encodes `basic.get-ok` and its content.
#[allow(clippy::too_many_arguments)] // mirrors the method's fields
pub fn encode_get_ok(
    out: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
    message_count: u32,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let start = begin_method(out, channel, METHOD_BASIC_GET_OK);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(redelivered));
    put_short_string(out, exchange);
    put_short_string(out, routing_key);
    out.put_u32(message_count);
    end_frame(out, start);
    encode_content(out, channel, raw_properties, body, frame_max);
}

/// Encodes `basic.return` and the returned content. `reply_code` is 312 NO_ROUTE or 313
/// NO_CONSUMERS; `reply_text` is usually its name.
#[allow(clippy::too_many_arguments)] // mirrors the method's fields
pub fn encode_return(
    out: &mut BytesMut,
    channel: u16,
    reply_code: ReplyCode,
    reply_text: &str,
    exchange: &str,
    routing_key: &str,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let start = begin_method(out, channel, METHOD_BASIC_RETURN);
    out.put_u16(reply_code.code());
    put_short_string(out, reply_text);
    put_short_string(out, exchange);
    put_short_string(out, routing_key);
    end_frame(out, start);
    encode_content(out, channel, raw_properties, body, frame_max);
}

/// Encodes a publisher-confirm `basic.ack` (server to client).
pub fn encode_confirm_ack(out: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool) {
    let start = begin_method(out, channel, METHOD_BASIC_ACK);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(multiple));
    end_frame(out, start);
}

/// Encodes a publisher-confirm `basic.nack` (server to client).
pub fn encode_confirm_nack(out: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool, requeue: bool) {
    let start = begin_method(out, channel, METHOD_BASIC_NACK);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(multiple) | (u8::from(requeue) << 1));
    end_frame(out, start);
}

/// Encodes `basic.publish` and its content: the client side of the hot path, for
/// `weir-bench` and tests.
#[allow(clippy::too_many_arguments)] // mirrors the method's fields
pub fn encode_publish(
    out: &mut BytesMut,
    channel: u16,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
    immediate: bool,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let start = begin_method(out, channel, METHOD_BASIC_PUBLISH);
    out.put_u16(0); // ticket
    put_short_string(out, exchange);
    put_short_string(out, routing_key);
    out.put_u8(u8::from(mandatory) | (u8::from(immediate) << 1));
    end_frame(out, start);
    encode_content(out, channel, raw_properties, body, frame_max);
}

/// The raw property bytes (flags then fields) of `properties`, for messages whose
/// properties the broker builds or changes. Header tables are made encodable as in
/// [`encode_method`].
#[must_use]
pub fn encode_properties(properties: &BasicProperties) -> Bytes {
    let repaired;
    let properties = match properties.headers() {
        Some(headers) if !table_is_encodable(headers, 1) => {
            repaired = properties.clone().with_headers(encodable_table(headers, 1));
            &repaired
        }
        _ => properties,
    };
    let scratch = Vec::with_capacity(METHOD_SCRATCH_CAPACITY);
    let generated = amqp::basic::gen_properties(properties)(WriteContext::from(scratch));
    match generated {
        Ok(context) => Bytes::from(context.into_inner().0),
        // Writing into a Vec cannot fail: a Weir bug.
        Err(error) => panic!("amq-protocol failed to generate properties into a Vec: {error:?}"),
    }
}

/// Writes a frame header with a zero size; returns where the frame starts.
fn begin_frame(out: &mut BytesMut, frame_type: u8, channel: u16) -> usize {
    let start = out.len();
    out.put_u8(frame_type);
    out.put_u16(channel);
    out.put_u32(0);
    start
}

/// Starts a basic-class method frame.
fn begin_method(out: &mut BytesMut, channel: u16, method_id: u16) -> usize {
    let start = begin_frame(out, FRAME_TYPE_METHOD, channel);
    out.put_u16(CLASS_BASIC);
    out.put_u16(method_id);
    start
}

/// Patches the payload size of the frame begun at `start` and writes the end octet.
fn end_frame(out: &mut BytesMut, start: usize) {
    let payload_size = out.len() - start - FRAME_HEADER_SIZE;
    let payload_size =
        u32::try_from(payload_size).unwrap_or_else(|_| panic!("frame payload of {payload_size} bytes exceeds 4 GiB"));
    out[start + 3..start + FRAME_HEADER_SIZE].copy_from_slice(&payload_size.to_be_bytes());
    out.put_u8(FRAME_END);
}

fn put_frame(out: &mut BytesMut, frame_type: u8, channel: u16, payload: &[u8]) {
    out.reserve(FRAME_OVERHEAD + payload.len());
    let start = begin_frame(out, frame_type, channel);
    out.put_slice(payload);
    end_frame(out, start);
}

fn put_short_string(out: &mut BytesMut, text: &str) {
    let text = truncate_to_char_boundary(text, SHORT_STRING_LENGTH_MAX);
    // At most 255 after truncation.
    out.put_u8(text.len() as u8);
    out.put_slice(text.as_bytes());
}

/// The field table of a method, if it has one.
fn method_table(method: &AMQPClass) -> Option<&FieldTable> {
    use amqp::{basic, connection, exchange, queue};
    match method {
        AMQPClass::Connection(connection::AMQPMethod::Start(m)) => Some(&m.server_properties),
        AMQPClass::Connection(connection::AMQPMethod::StartOk(m)) => Some(&m.client_properties),
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) => Some(&m.arguments),
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => Some(&m.arguments),
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => Some(&m.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Declare(m)) => Some(&m.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => Some(&m.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => Some(&m.arguments),
        AMQPClass::Basic(basic::AMQPMethod::Consume(m)) => Some(&m.arguments),
        _ => None,
    }
}

fn method_table_mut(method: &mut AMQPClass) -> Option<&mut FieldTable> {
    use amqp::{basic, connection, exchange, queue};
    match method {
        AMQPClass::Connection(connection::AMQPMethod::Start(m)) => Some(&mut m.server_properties),
        AMQPClass::Connection(connection::AMQPMethod::StartOk(m)) => Some(&mut m.client_properties),
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) => Some(&mut m.arguments),
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => Some(&mut m.arguments),
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => Some(&mut m.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Declare(m)) => Some(&mut m.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => Some(&mut m.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => Some(&mut m.arguments),
        AMQPClass::Basic(basic::AMQPMethod::Consume(m)) => Some(&mut m.arguments),
        _ => None,
    }
}

// The checks below recurse, but only to FIELD_TABLE_DEPTH_MAX levels: they run on tables
// Weir itself built or already depth-checked on the way in, never on raw client bytes.

fn table_is_encodable(table: &FieldTable, depth: usize) -> bool {
    depth <= FIELD_TABLE_DEPTH_MAX && table.into_iter().all(|(_, value)| value_is_encodable(value, depth))
}

fn value_is_encodable(value: &AMQPValue, depth: usize) -> bool {
    match value {
        AMQPValue::ShortString(_) => false,
        AMQPValue::FieldTable(table) => table_is_encodable(table, depth + 1),
        AMQPValue::FieldArray(array) => {
            depth < FIELD_TABLE_DEPTH_MAX && array.as_slice().iter().all(|value| value_is_encodable(value, depth + 1))
        }
        _ => true,
    }
}

fn encodable_table(table: &FieldTable, depth: usize) -> FieldTable {
    let mut repaired = FieldTable::default();
    for (key, value) in table {
        repaired.insert(key.clone(), encodable_value(value, depth));
    }
    repaired
}

fn encodable_value(value: &AMQPValue, depth: usize) -> AMQPValue {
    match value {
        AMQPValue::ShortString(text) => AMQPValue::LongString(LongString::from(text.as_str().as_bytes())),
        AMQPValue::FieldTable(_) | AMQPValue::FieldArray(_) if depth >= FIELD_TABLE_DEPTH_MAX => AMQPValue::Void,
        AMQPValue::FieldTable(table) => AMQPValue::FieldTable(encodable_table(table, depth + 1)),
        AMQPValue::FieldArray(array) => AMQPValue::FieldArray(FieldArray::from(
            array.as_slice().iter().map(|value| encodable_value(value, depth + 1)).collect::<Vec<_>>(),
        )),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_bytes() {
        let mut out = BytesMut::new();
        encode_heartbeat(&mut out);
        assert_eq!(&out[..], &[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    }

    #[test]
    fn empty_body_has_no_body_frame() {
        let mut out = BytesMut::new();
        encode_content(&mut out, 1, &[0, 0], b"", FRAME_MIN_SIZE);
        assert_eq!(&out[..], &[2, 0, 1, 0, 0, 0, 14, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xCE]);
    }

    #[test]
    fn body_is_split_at_frame_max_minus_8() {
        let mut out = BytesMut::new();
        let body = vec![7u8; 4088 * 2 + 1];
        encode_content(&mut out, 3, &[], &body, FRAME_MIN_SIZE);
        let header_frame_size = FRAME_OVERHEAD + 14;
        let bodies = &out[header_frame_size..];
        assert_eq!(bodies.len(), 3 * FRAME_OVERHEAD + body.len());
        assert_eq!(&bodies[3..7], &4088u32.to_be_bytes());
        let third = 2 * (FRAME_OVERHEAD + 4088);
        assert_eq!(&bodies[third + 3..third + 7], &1u32.to_be_bytes());
    }

    #[test]
    fn overlong_short_strings_are_cut_at_a_char_boundary() {
        let mut out = BytesMut::new();
        put_short_string(&mut out, &"é".repeat(200));
        assert_eq!(out[0], 254);
        assert!(std::str::from_utf8(&out[1..]).is_ok());
    }

    #[test]
    fn short_string_values_in_tables_become_long_strings() {
        let mut table = FieldTable::default();
        table.insert("k".into(), AMQPValue::ShortString("v".into()));
        assert!(!table_is_encodable(&table, 1));
        let repaired = encodable_table(&table, 1);
        assert!(table_is_encodable(&repaired, 1));
        assert_eq!(repaired.inner().get("k"), Some(&AMQPValue::LongString("v".into())));
    }
}

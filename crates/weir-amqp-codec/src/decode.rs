//! Inbound framing: the protocol header, and frames from the front of a `BytesMut`.
//!
//! The connection's I/O task reads socket bytes into a `BytesMut` and calls
//! [`decode_frame`] until it returns `Ok(None)`. Decoding is sans-IO and never panics.
//!
//! Invariants:
//! - The 7-octet frame header is checked before waiting for the payload (trap #2): an
//!   oversize frame is rejected with 501 as soon as its header is in the buffer, so a client
//!   cannot make Weir buffer more than `frame_max` bytes per frame.
//! - Class and method ids are read here, not by `amq-protocol` (trap #3), and every method
//!   payload and content-header property list passes the non-recursive scan in `scan.rs`
//!   before `amq-protocol` parses it (trap #1).
//! - `Ok(Some(frame))` consumes exactly that frame's bytes (`split_to`, zero copy). Body
//!   payloads and raw content properties are slices of the input buffer, never copies
//!   (trap #8: `amq-protocol` copies bodies into a `Vec`).
//! - An `Err` leaves the stream in an unknown state: every error `decode_frame` returns is a
//!   hard (connection-level) error and the caller closes the connection.

use amq_protocol::protocol::{self as amqp, AMQPClass, BasicProperties};
use amq_protocol::types::ShortString;
use bytes::{Buf, Bytes, BytesMut};

use crate::error::{FrameError, ReplyCode};
use crate::scan::{scan_field, scan_fields, Cursor, FieldError, ScanError};
use crate::schema::{
    self, MethodSchema, BASIC_PROPERTIES, CLASS_BASIC, METHOD_BASIC_ACK, METHOD_BASIC_NACK, METHOD_BASIC_PUBLISH,
    METHOD_BASIC_REJECT,
};

/// The AMQP 0-9-1 protocol header a client sends first, and the one Weir writes back before
/// closing when the client sent anything else.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// The AMQP 0-9 header, which RabbitMQ accepts and serves as 0-9-1
/// (`rabbit_reader:version_negotiation({1, 1, 0, 9}, …)`); so does Weir.
pub const PROTOCOL_HEADER_0_9: [u8; 8] = *b"AMQP\x01\x01\x00\x09";
/// Smallest frame-max a peer may negotiate, and the limit before `tune-ok`.
/// The spec and RabbitMQ say 4096; `amq-protocol`'s constant says 8192 (trap #7).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Frame header: type (1), channel (2), payload size (4).
pub const FRAME_HEADER_SIZE: usize = 7;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Bytes a frame adds around its payload: header and end octet.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// Slack RabbitMQ allows on inbound frames because clients get frame-max off by 1 or 8
/// (`rabbit_reader` `?FRAME_SIZE_FUDGE`): payloads up to `frame_max` bytes are accepted,
/// although a compliant peer sends at most `frame_max - 8`.
pub const FRAME_SIZE_FUDGE: u32 = FRAME_OVERHEAD as u32;

/// Frame type of a method frame.
pub const FRAME_TYPE_METHOD: u8 = 1;
/// Frame type of a content header frame.
pub const FRAME_TYPE_HEADER: u8 = 2;
/// Frame type of a content body frame.
pub const FRAME_TYPE_BODY: u8 = 3;
/// Frame type of a heartbeat frame.
pub const FRAME_TYPE_HEARTBEAT: u8 = 8;

/// Class id and method id at the start of a method payload.
const METHOD_IDS_SIZE: usize = 4;
/// Class id, weight and body size at the start of a content-header payload.
const CONTENT_HEADER_PREFIX_SIZE: usize = 12;

/// Result of looking at the first bytes of a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolHeaderCheck {
    /// The first [`PROTOCOL_HEADER`]`.len()` bytes are an accepted header; consume them.
    Ok,
    /// Too few bytes to decide; read more.
    Incomplete,
    /// Not AMQP 0-9-1: write [`PROTOCOL_HEADER`] and close (AMQP-NOTES §3.1).
    Mismatch,
}

/// Checks the protocol header at the start of `buf`. Decides as early as possible: `GET /`
/// is a mismatch after one byte.
#[must_use]
pub fn check_protocol_header(buf: &[u8]) -> ProtocolHeaderCheck {
    let seen = buf.len().min(PROTOCOL_HEADER.len());
    let matches = |header: &[u8; 8]| buf[..seen] == header[..seen];
    if !matches(&PROTOCOL_HEADER) && !matches(&PROTOCOL_HEADER_0_9) {
        ProtocolHeaderCheck::Mismatch
    } else if seen < PROTOCOL_HEADER.len() {
        ProtocolHeaderCheck::Incomplete
    } else {
        ProtocolHeaderCheck::Ok
    }
}

/// One decoded frame.
// `Header` is large (`BasicProperties` is ~400 bytes). Boxing it would add a heap allocation
// per message on the publish hot path for a value that lives a few moves; not worth it.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A method, with its ids as read from the wire.
    Method {
        /// Channel the method arrived on.
        channel: u16,
        /// Class id.
        class_id: u16,
        /// Method id.
        method_id: u16,
        /// The decoded method.
        method: AMQPClass,
    },
    /// A content header. Always class 60 (basic) with weight 0: anything else is rejected
    /// by [`decode_frame`] with 505, which is what RabbitMQ answers in every state.
    Header {
        /// Channel the header arrived on.
        channel: u16,
        /// Content class id (always 60).
        class_id: u16,
        /// Declared size of the whole body, in bytes.
        body_size: u64,
        /// Decoded properties.
        properties: BasicProperties,
        /// Property flags and property bytes exactly as received, to forward unchanged
        /// (trap #5: re-encoding a `FieldTable` is not byte-identical).
        raw_properties: Bytes,
    },
    /// A content body fragment: a zero-copy slice of the input buffer.
    Body {
        /// Channel the body arrived on.
        channel: u16,
        /// The fragment.
        payload: Bytes,
    },
    /// A heartbeat. RabbitMQ answers a heartbeat on a channel other than 0 with 505
    /// UNEXPECTED_FRAME when the connection is running and ignores it while closing; that
    /// depends on connection state, so the decoder returns it and the connection layer
    /// decides.
    Heartbeat {
        /// Channel the heartbeat arrived on (0 when the peer is compliant).
        channel: u16,
    },
}

impl Frame {
    /// The channel the frame arrived on.
    #[must_use]
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }
}

/// Largest inbound payload accepted under `frame_max` (see [`FRAME_SIZE_FUDGE`]). A
/// `frame_max` below [`FRAME_MIN_SIZE`], including 0, counts as [`FRAME_MIN_SIZE`]: Weir never
/// negotiates an unlimited frame size.
#[must_use]
pub fn inbound_payload_size_max(frame_max: u32) -> u32 {
    frame_max.max(FRAME_MIN_SIZE) - FRAME_OVERHEAD as u32 + FRAME_SIZE_FUDGE
}

/// Decodes one frame from the front of `buf`.
///
/// `Ok(None)`: more bytes are needed (capacity for the rest of the frame has been reserved).
/// `Ok(Some(frame))`: the frame's bytes were consumed. `frame_max` is the negotiated maximum
/// frame size (4096 before `tune-ok`).
///
/// Errors (all hard, channel set to the frame's):
/// - payload larger than [`inbound_payload_size_max`] → 501, decided from the header alone;
/// - unknown frame type, frame-end octet not 0xCE, heartbeat with a payload, method or
///   content-header payload too short for its ids → 501 (RabbitMQ's `frame_error`);
/// - unknown class or method id → 540 NOT_IMPLEMENTED;
/// - malformed, truncated or trailing method fields or content properties, non-UTF-8 short
///   strings, unknown field-value tags, tables nested deeper than
///   [`crate::FIELD_TABLE_DEPTH_MAX`] → 502 SYNTAX_ERROR;
/// - content header of a class other than 60 or with a non-zero weight → 505.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, FrameError> {
    if buf.len() < FRAME_HEADER_SIZE {
        return Ok(None);
    }
    let frame_type = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let payload_size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    let payload_size_max = inbound_payload_size_max(frame_max);
    if payload_size > payload_size_max {
        return Err(FrameError::new(
            ReplyCode::FrameError,
            format!(
                "frame of type {frame_type} too large: payload of {payload_size} bytes, \
                 negotiated frame_max allows {}",
                frame_max.max(FRAME_MIN_SIZE) - FRAME_OVERHEAD as u32
            ),
        )
        .on_channel(channel));
    }
    if !matches!(frame_type, FRAME_TYPE_METHOD | FRAME_TYPE_HEADER | FRAME_TYPE_BODY | FRAME_TYPE_HEARTBEAT) {
        return Err(
            FrameError::new(ReplyCode::FrameError, format!("unknown frame type {frame_type}")).on_channel(channel)
        );
    }
    // Cannot overflow: payload_size is at most frame_max, a u32, and usize is at least 32
    // bits on every target Weir builds for; checked anyway.
    let payload_size = usize::try_from(payload_size)
        .map_err(|_| FrameError::new(ReplyCode::FrameError, "frame size exceeds address space").on_channel(channel))?;
    let frame_size = FRAME_OVERHEAD + payload_size;
    if buf.len() < frame_size {
        buf.reserve(frame_size - buf.len());
        return Ok(None);
    }
    let end_octet = buf[frame_size - 1];
    if end_octet != FRAME_END {
        return Err(FrameError::new(
            ReplyCode::FrameError,
            format!("invalid frame end octet 0x{end_octet:02x}, expected 0x{FRAME_END:02x}"),
        )
        .on_channel(channel));
    }
    let mut frame = buf.split_to(frame_size);
    frame.truncate(frame_size - 1);
    frame.advance(FRAME_HEADER_SIZE);
    let decoded = match frame_type {
        FRAME_TYPE_METHOD => decode_method(channel, &frame),
        FRAME_TYPE_HEADER => decode_content_header(channel, frame.freeze()),
        FRAME_TYPE_BODY => Ok(Frame::Body { channel, payload: frame.freeze() }),
        FRAME_TYPE_HEARTBEAT if payload_size == 0 => Ok(Frame::Heartbeat { channel }),
        // A heartbeat with a payload (other frame types were rejected above): RabbitMQ's
        // `analyze_frame` only matches an empty heartbeat, anything else is a frame error.
        _ => Err(FrameError::new(
            ReplyCode::FrameError,
            format!("heartbeat frame with a payload of {payload_size} bytes"),
        )),
    };
    decoded.map(Some).map_err(|error| error.on_channel(channel))
}

/// Decodes a method payload: ids, then the scan, then the fields.
fn decode_method(channel: u16, payload: &[u8]) -> Result<Frame, FrameError> {
    if payload.len() < METHOD_IDS_SIZE {
        return Err(FrameError::new(
            ReplyCode::FrameError,
            format!("method frame payload of {} bytes is too short", payload.len()),
        ));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    let schema = schema::lookup(class_id, method_id).ok_or_else(|| {
        let text = if schema::class_is_known(class_id) {
            format!("unknown method {method_id} in class {class_id}")
        } else {
            format!("unknown class {class_id} (method {method_id})")
        };
        FrameError::new(ReplyCode::NotImplemented, text).for_method(class_id, method_id)
    })?;
    let fields = &payload[METHOD_IDS_SIZE..];
    scan_fields(fields, schema.fields).map_err(|error| field_syntax_error(schema, error))?;
    let method =
        parse_scanned_method(schema, payload, fields).map_err(|error| error.for_method(class_id, method_id))?;
    Ok(Frame::Method { channel, class_id, method_id, method })
}

fn field_syntax_error(schema: &MethodSchema, error: FieldError) -> FrameError {
    let text = if error.field.is_empty() {
        format!("{}: {}", schema.name, error.error.describe())
    } else {
        format!("{}: field '{}': {}", schema.name, error.field, error.error.describe())
    };
    FrameError::new(ReplyCode::SyntaxError, text).for_method(schema.class_id, schema.method_id)
}

/// Builds the method of a payload that passed the scan. The hottest client methods are read
/// directly (no nom, no flag-name strings); the rest go through `amq-protocol`.
fn parse_scanned_method(schema: &MethodSchema, payload: &[u8], fields: &[u8]) -> Result<AMQPClass, FrameError> {
    use amqp::basic;
    let mut cursor = Cursor::new(fields);
    let fast = match (schema.class_id, schema.method_id) {
        (CLASS_BASIC, METHOD_BASIC_PUBLISH) => {
            Some(read_publish(&mut cursor).map(|publish| AMQPClass::Basic(basic::AMQPMethod::Publish(publish))))
        }
        (CLASS_BASIC, METHOD_BASIC_ACK) => Some(read_tag_and_flags(&mut cursor).map(|(delivery_tag, flags)| {
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag, multiple: flags & 1 != 0 }))
        })),
        (CLASS_BASIC, METHOD_BASIC_REJECT) => Some(read_tag_and_flags(&mut cursor).map(|(delivery_tag, flags)| {
            AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject { delivery_tag, requeue: flags & 1 != 0 }))
        })),
        (CLASS_BASIC, METHOD_BASIC_NACK) => Some(read_tag_and_flags(&mut cursor).map(|(delivery_tag, flags)| {
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag,
                multiple: flags & 1 != 0,
                requeue: flags & 2 != 0,
            }))
        })),
        _ => None,
    };
    // The scan accepted the payload, so a failure here means the scan and the parser
    // disagree: a Weir bug, reported as 541 (tests assert it never happens).
    let internal = |detail: &str| {
        FrameError::new(ReplyCode::InternalError, format!("{}: could not be decoded ({detail})", schema.name))
    };
    match fast {
        Some(result) => result.map_err(|error| internal(&error.describe())),
        None => match amqp::parse_class(payload) {
            Ok(([], method)) => Ok(method),
            Ok(_) => Err(internal("trailing bytes")),
            Err(_) => Err(internal("rejected by the amq-protocol parser")),
        },
    }
}

fn read_publish(cursor: &mut Cursor<'_>) -> Result<amqp::basic::Publish, ScanError> {
    let _ticket = cursor.u16()?;
    let exchange = ShortString::from(cursor.short_string()?);
    let routing_key = ShortString::from(cursor.short_string()?);
    let flags = cursor.u8()?;
    Ok(amqp::basic::Publish { exchange, routing_key, mandatory: flags & 1 != 0, immediate: flags & 2 != 0 })
}

fn read_tag_and_flags(cursor: &mut Cursor<'_>) -> Result<(u64, u8), ScanError> {
    Ok((cursor.u64()?, cursor.u8()?))
}

/// Decodes a content-header payload; `payload` is a slice of the input buffer.
fn decode_content_header(channel: u16, payload: Bytes) -> Result<Frame, FrameError> {
    if payload.len() < CONTENT_HEADER_PREFIX_SIZE {
        return Err(FrameError::new(
            ReplyCode::FrameError,
            format!("content header payload of {} bytes is too short", payload.len()),
        ));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let weight = u16::from_be_bytes([payload[2], payload[3]]);
    let mut body_size = [0u8; 8];
    body_size.copy_from_slice(&payload[4..CONTENT_HEADER_PREFIX_SIZE]);
    let body_size = u64::from_be_bytes(body_size);
    if class_id != CLASS_BASIC {
        return Err(FrameError::new(
            ReplyCode::UnexpectedFrame,
            format!("content header for class {class_id}; only class {CLASS_BASIC} has content"),
        ));
    }
    if weight != 0 {
        return Err(FrameError::new(
            ReplyCode::UnexpectedFrame,
            format!("content header with weight {weight}; weight must be 0"),
        )
        .for_method(CLASS_BASIC, METHOD_BASIC_PUBLISH));
    }
    let raw_properties = payload.slice(CONTENT_HEADER_PREFIX_SIZE..);
    let properties = decode_properties(&raw_properties)?;
    Ok(Frame::Header { channel, class_id, body_size, properties, raw_properties })
}

/// Decodes basic-class content properties (flags then fields, as in a content header).
///
/// The properties are scanned first (depth, tags, UTF-8, lengths; trailing bytes rejected),
/// then parsed by `amq-protocol`. Errors are 502 SYNTAX_ERROR (541 only if the scan and
/// `amq-protocol` disagree, which is a Weir bug), attributed to
/// `basic.publish`, the only method a client sends content with. Flag bits 1 and 0
/// (continuation) are ignored, as `amq-protocol` and RabbitMQ ignore them.
pub fn decode_properties(raw: &[u8]) -> Result<BasicProperties, FrameError> {
    let syntax_error =
        |text: String| FrameError::new(ReplyCode::SyntaxError, text).for_method(CLASS_BASIC, METHOD_BASIC_PUBLISH);
    let mut cursor = Cursor::new(raw);
    let flags = cursor.u16().map_err(|_| syntax_error("content header has no property flags".to_owned()))?;
    for (index, (name, kind)) in BASIC_PROPERTIES.iter().enumerate() {
        if flags & (1 << (15 - index)) != 0 {
            scan_field(&mut cursor, *kind)
                .map_err(|error| syntax_error(format!("content header property '{name}': {}", error.describe())))?;
        }
    }
    if !cursor.is_empty() {
        return Err(syntax_error(format!("content header properties: {}", ScanError::TrailingBytes.describe())));
    }
    if flags & PROPERTY_FLAGS_USED == 0 {
        return Ok(BasicProperties::default());
    }
    match amqp::basic::parse_properties(raw) {
        Ok(([], properties)) => Ok(properties),
        // Scanned but not parsed: the scan and the parser disagree, a Weir bug (see above).
        _ => Err(FrameError::new(ReplyCode::InternalError, "content header properties could not be decoded")
            .for_method(CLASS_BASIC, METHOD_BASIC_PUBLISH)),
    }
}

/// Flag bits 15..=2, one per basic property.
const PROPERTY_FLAGS_USED: u16 = 0xFFFC;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_header_checks() {
        assert_eq!(check_protocol_header(b""), ProtocolHeaderCheck::Incomplete);
        assert_eq!(check_protocol_header(b"AMQ"), ProtocolHeaderCheck::Incomplete);
        assert_eq!(check_protocol_header(&PROTOCOL_HEADER), ProtocolHeaderCheck::Ok);
        assert_eq!(check_protocol_header(&PROTOCOL_HEADER_0_9), ProtocolHeaderCheck::Ok);
        assert_eq!(check_protocol_header(b"AMQP\x00\x00\x09\x01\x01\x00"), ProtocolHeaderCheck::Ok);
        assert_eq!(check_protocol_header(b"G"), ProtocolHeaderCheck::Mismatch);
        assert_eq!(check_protocol_header(b"AMQP\x00\x00\x09\x02"), ProtocolHeaderCheck::Mismatch);
        assert_eq!(check_protocol_header(b"AMQP\x00\x01"), ProtocolHeaderCheck::Mismatch);
    }

    #[test]
    fn heartbeat_decodes_and_is_consumed() {
        let mut buf = BytesMut::from(&[8, 0, 0, 0, 0, 0, 0, 0xCE, 8][..]);
        assert_eq!(decode_frame(&mut buf, FRAME_MIN_SIZE), Ok(Some(Frame::Heartbeat { channel: 0 })));
        assert_eq!(&buf[..], &[8]);
        assert_eq!(decode_frame(&mut buf, FRAME_MIN_SIZE), Ok(None));
    }

    #[test]
    fn heartbeat_with_payload_is_a_frame_error() {
        let mut buf = BytesMut::from(&[8, 0, 0, 0, 0, 0, 1, 0, 0xCE][..]);
        let error = decode_frame(&mut buf, FRAME_MIN_SIZE).unwrap_err();
        assert_eq!(error.code, ReplyCode::FrameError);
    }

    #[test]
    fn empty_properties_decode_to_default() {
        assert_eq!(decode_properties(&[0, 0]), Ok(BasicProperties::default()));
        assert_eq!(decode_properties(&[]).unwrap_err().code, ReplyCode::SyntaxError);
        assert_eq!(decode_properties(&[0, 0, 1]).unwrap_err().code, ReplyCode::SyntaxError);
    }

    #[test]
    fn inbound_limit_includes_rabbitmq_fudge_and_floor() {
        assert_eq!(inbound_payload_size_max(131_072), 131_072);
        assert_eq!(inbound_payload_size_max(0), FRAME_MIN_SIZE);
        assert_eq!(inbound_payload_size_max(100), FRAME_MIN_SIZE);
    }
}

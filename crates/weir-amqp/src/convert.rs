//! Conversions between AMQP types and the engine's protocol-neutral ones, and the one table
//! that maps engine error kinds to AMQP reply codes.

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use weir_amqp_codec::ReplyCode;
use weir_engine::{ArgValue, ErrorKind};

/// The reply code RabbitMQ sends for each kind of engine error. One row per kind; a code is
/// never reused for another meaning.
pub fn reply_code(kind: ErrorKind) -> ReplyCode {
    match kind {
        ErrorKind::NotFound => ReplyCode::NotFound,
        ErrorKind::AccessRefused => ReplyCode::AccessRefused,
        ErrorKind::ResourceLocked => ReplyCode::ResourceLocked,
        ErrorKind::PreconditionFailed => ReplyCode::PreconditionFailed,
        ErrorKind::NotAllowed => ReplyCode::NotAllowed,
        ErrorKind::InternalError => ReplyCode::InternalError,
        ErrorKind::ResourceError => ReplyCode::ResourceError,
        ErrorKind::CommandInvalid => ReplyCode::CommandInvalid,
    }
}

/// Queue arguments as the engine stores them: sorted by key (a `FieldTable` is a BTreeMap).
pub fn arguments(table: &FieldTable) -> Vec<(String, ArgValue)> {
    table.inner().iter().map(|(key, value)| (key.as_str().to_string(), arg_value(value))).collect()
}

fn arg_value(value: &AMQPValue) -> ArgValue {
    match value {
        AMQPValue::Boolean(b) => ArgValue::Bool(*b),
        AMQPValue::ShortShortInt(v) => ArgValue::Int(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => ArgValue::Int(i64::from(*v)),
        AMQPValue::ShortInt(v) => ArgValue::Int(i64::from(*v)),
        AMQPValue::ShortUInt(v) => ArgValue::Int(i64::from(*v)),
        AMQPValue::LongInt(v) => ArgValue::Int(i64::from(*v)),
        AMQPValue::LongUInt(v) => ArgValue::Int(i64::from(*v)),
        AMQPValue::LongLongInt(v) => ArgValue::Int(*v),
        AMQPValue::Timestamp(v) => ArgValue::Int(*v as i64),
        AMQPValue::Float(v) => ArgValue::Float(f64::from(*v)),
        AMQPValue::Double(v) => ArgValue::Float(*v),
        AMQPValue::ShortString(s) => ArgValue::Str(s.as_str().to_string()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => ArgValue::Str(text.to_string()),
            Err(_) => ArgValue::Bytes(s.as_bytes().to_vec()),
        },
        AMQPValue::ByteArray(b) => ArgValue::Bytes(b.as_slice().to_vec()),
        AMQPValue::Void => ArgValue::Void,
        // Nested values are kept in a readable form; no queue argument uses them yet.
        other => ArgValue::Str(format!("{other:?}")),
    }
}

/// A short string from text that may be longer than 255 bytes (reply texts, names built
/// from client input): cut at a character boundary.
pub fn short(text: &str) -> ShortString {
    ShortString::from(weir_amqp_codec::truncate_to_char_boundary(text, 255))
}

//! Conversions between AMQP types and the engine's protocol-neutral ones, and the one table
//! that maps engine error kinds to AMQP reply codes.

use amq_protocol::types::{FieldTable, ShortString};
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
        ErrorKind::ConnectionForced => ReplyCode::ConnectionForced,
    }
}

/// Queue, binding and header arguments as the engine stores them (sorted by key).
pub fn arguments(table: &FieldTable) -> Vec<(String, ArgValue)> {
    weir_engine::properties::table_to_arguments(table)
}

/// A short string from text that may be longer than 255 bytes (reply texts, names built
/// from client input): cut at a character boundary.
pub fn short(text: &str) -> ShortString {
    ShortString::from(weir_amqp_codec::truncate_to_char_boundary(text, 255))
}

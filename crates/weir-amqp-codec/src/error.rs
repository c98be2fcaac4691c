//! AMQP reply codes and the codec's error type.
//!
//! Every error the codec reports to the world is a [`FrameError`]: the reply code RabbitMQ
//! would send, the reply text, and the channel / class / method the failure concerns, so the
//! connection layer can build `connection.close` or `channel.close` without guessing.
//!
//! Invariants:
//! - [`ReplyCode`] is the one table of wire-facing codes; a code is never reused for another
//!   meaning (STYLE.md §4).
//! - [`ReplyCode::is_hard`] follows the spec's error class, as RabbitMQ's
//!   `rabbit_binary_generator:map_exception` does: hard → `connection.close` on channel 0,
//!   soft → `channel.close` (AMQP-NOTES §3.1 "Exception scope").
//! - [`FrameError::reply_text`] is at most [`SHORT_STRING_LENGTH_MAX`] bytes of valid UTF-8,
//!   so it always fits the `reply-text` short string.

use std::fmt;

/// Longest AMQP short string, in bytes (the length prefix is one octet).
pub const SHORT_STRING_LENGTH_MAX: usize = 255;

/// Length RabbitMQ cuts an over-long reply text to before appending [`REPLY_TEXT_ELLIPSIS`]
/// (`rabbit_binary_generator:amqp_exception_explanation`).
const REPLY_TEXT_TRUNCATED_LENGTH: usize = SHORT_STRING_LENGTH_MAX - REPLY_TEXT_ELLIPSIS.len();
const REPLY_TEXT_ELLIPSIS: &str = "...";

/// AMQP 0-9-1 reply codes, with the numeric values of the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ReplyCode {
    /// 311, soft.
    ContentTooLarge = 311,
    /// 312, soft; used only in `basic.return`.
    NoRoute = 312,
    /// 313, soft; used only in `basic.return`.
    NoConsumers = 313,
    /// 320, hard.
    ConnectionForced = 320,
    /// 402, hard.
    InvalidPath = 402,
    /// 403, soft.
    AccessRefused = 403,
    /// 404, soft.
    NotFound = 404,
    /// 405, soft.
    ResourceLocked = 405,
    /// 406, soft.
    PreconditionFailed = 406,
    /// 501, hard: a frame that cannot be framed (size, end octet, type).
    FrameError = 501,
    /// 502, hard: a frame with illegal field values.
    SyntaxError = 502,
    /// 503, hard.
    CommandInvalid = 503,
    /// 504, hard.
    ChannelError = 504,
    /// 505, hard: a frame that is not allowed in the current state.
    UnexpectedFrame = 505,
    /// 506, hard.
    ResourceError = 506,
    /// 530, hard.
    NotAllowed = 530,
    /// 540, hard.
    NotImplemented = 540,
    /// 541, hard.
    InternalError = 541,
}

impl ReplyCode {
    /// Every reply code, in numeric order.
    pub const ALL: [ReplyCode; 18] = [
        ReplyCode::ContentTooLarge,
        ReplyCode::NoRoute,
        ReplyCode::NoConsumers,
        ReplyCode::ConnectionForced,
        ReplyCode::InvalidPath,
        ReplyCode::AccessRefused,
        ReplyCode::NotFound,
        ReplyCode::ResourceLocked,
        ReplyCode::PreconditionFailed,
        ReplyCode::FrameError,
        ReplyCode::SyntaxError,
        ReplyCode::CommandInvalid,
        ReplyCode::ChannelError,
        ReplyCode::UnexpectedFrame,
        ReplyCode::ResourceError,
        ReplyCode::NotAllowed,
        ReplyCode::NotImplemented,
        ReplyCode::InternalError,
    ];

    /// The numeric code sent on the wire.
    #[must_use]
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The reply code with this numeric value, if it is one of the spec's.
    #[must_use]
    pub fn from_code(code: u16) -> Option<ReplyCode> {
        ReplyCode::ALL.into_iter().find(|reply| reply.code() == code)
    }

    /// True for connection-level ("hard") errors, answered with `connection.close`;
    /// false for channel-level ("soft") errors, answered with `channel.close`.
    #[must_use]
    pub fn is_hard(self) -> bool {
        match self {
            ReplyCode::ContentTooLarge
            | ReplyCode::NoRoute
            | ReplyCode::NoConsumers
            | ReplyCode::AccessRefused
            | ReplyCode::NotFound
            | ReplyCode::ResourceLocked
            | ReplyCode::PreconditionFailed => false,
            ReplyCode::ConnectionForced
            | ReplyCode::InvalidPath
            | ReplyCode::FrameError
            | ReplyCode::SyntaxError
            | ReplyCode::CommandInvalid
            | ReplyCode::ChannelError
            | ReplyCode::UnexpectedFrame
            | ReplyCode::ResourceError
            | ReplyCode::NotAllowed
            | ReplyCode::NotImplemented
            | ReplyCode::InternalError => true,
        }
    }

    /// The name as RabbitMQ writes it at the start of reply texts, e.g. `NOT_FOUND`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ReplyCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            ReplyCode::NoRoute => "NO_ROUTE",
            ReplyCode::NoConsumers => "NO_CONSUMERS",
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::InvalidPath => "INVALID_PATH",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

/// A protocol error with everything needed to answer it the way RabbitMQ does.
///
/// `channel` is the channel the offending frame arrived on. For hard errors the close goes
/// out on channel 0 regardless; `channel` is then informative (RabbitMQ logs it).
/// `class_id`/`method_id` name the method the failure concerns, or are 0 when none does
/// (RabbitMQ's `none`), and go into the `close` method.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} - {text}", code.name())]
pub struct FrameError {
    /// The reply code to send.
    pub code: ReplyCode,
    /// Human-readable explanation, without the `NAME - ` prefix.
    pub text: String,
    /// Channel of the offending frame.
    pub channel: u16,
    /// Class of the method concerned, 0 if none.
    pub class_id: u16,
    /// Method concerned, 0 if none.
    pub method_id: u16,
}

impl FrameError {
    /// An error on channel 0 that concerns no method.
    pub fn new(code: ReplyCode, text: impl Into<String>) -> FrameError {
        FrameError { code, text: text.into(), channel: 0, class_id: 0, method_id: 0 }
    }

    /// The same error, attributed to `channel`.
    #[must_use]
    pub fn on_channel(mut self, channel: u16) -> FrameError {
        self.channel = channel;
        self
    }

    /// The same error, attributed to the method `class_id`.`method_id`.
    #[must_use]
    pub fn for_method(mut self, class_id: u16, method_id: u16) -> FrameError {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// True if the error closes the connection rather than the channel.
    #[must_use]
    pub fn is_hard(&self) -> bool {
        self.code.is_hard()
    }

    /// The `reply-text` to send: `NAME - text`, cut like RabbitMQ does to fit a short
    /// string (252 bytes then `...`), always at a UTF-8 character boundary.
    #[must_use]
    pub fn reply_text(&self) -> String {
        let complete = format!("{} - {}", self.code.name(), self.text);
        if complete.len() <= SHORT_STRING_LENGTH_MAX {
            return complete;
        }
        let mut cut = truncate_to_char_boundary(&complete, REPLY_TEXT_TRUNCATED_LENGTH).to_owned();
        cut.push_str(REPLY_TEXT_ELLIPSIS);
        cut
    }
}

/// The longest prefix of `text` that is at most `length_max` bytes and ends on a character
/// boundary.
#[must_use]
pub fn truncate_to_char_boundary(text: &str, length_max: usize) -> &str {
    if text.len() <= length_max {
        return text;
    }
    let mut end = length_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_from_code() {
        for reply in ReplyCode::ALL {
            assert_eq!(ReplyCode::from_code(reply.code()), Some(reply));
        }
        assert_eq!(ReplyCode::from_code(200), None);
        assert_eq!(ReplyCode::from_code(0), None);
    }

    #[test]
    fn hard_and_soft_follow_the_spec_classes() {
        let soft: Vec<u16> = ReplyCode::ALL.into_iter().filter(|reply| !reply.is_hard()).map(ReplyCode::code).collect();
        assert_eq!(soft, [311, 312, 313, 403, 404, 405, 406]);
    }

    #[test]
    fn names_match_rabbitmq_reply_texts() {
        assert_eq!(ReplyCode::NotFound.name(), "NOT_FOUND");
        assert_eq!(ReplyCode::PreconditionFailed.name(), "PRECONDITION_FAILED");
        assert_eq!(ReplyCode::UnexpectedFrame.name(), "UNEXPECTED_FRAME");
    }

    #[test]
    fn reply_text_is_prefixed_and_display_matches() {
        let error = FrameError::new(ReplyCode::NotFound, "no queue 'q' in vhost '/'");
        assert_eq!(error.reply_text(), "NOT_FOUND - no queue 'q' in vhost '/'");
        assert_eq!(error.to_string(), error.reply_text());
    }

    #[test]
    fn long_reply_text_is_cut_like_rabbitmq_at_a_char_boundary() {
        let name = "é".repeat(200);
        let error = FrameError::new(ReplyCode::NotFound, format!("no queue '{name}'"));
        let text = error.reply_text();
        assert!(text.len() <= SHORT_STRING_LENGTH_MAX);
        assert!(text.ends_with("..."));
        assert!(text.starts_with("NOT_FOUND - no queue 'é"));
    }

    #[test]
    fn truncate_never_splits_a_character() {
        assert_eq!(truncate_to_char_boundary("aé", 2), "a");
        assert_eq!(truncate_to_char_boundary("aé", 3), "aé");
        assert_eq!(truncate_to_char_boundary("", 0), "");
    }
}

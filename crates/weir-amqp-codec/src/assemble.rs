//! Per-channel content assembly: `basic.publish`, then a content header, then body frames.
//!
//! Follows RabbitMQ's `rabbit_command_assembler.erl`. The connection layer keeps one
//! [`ContentAssembler`] per channel; frames of other channels may interleave freely.
//!
//! Invariants:
//! - Between `basic.publish` and the last body byte, only this publish's header and body
//!   frames are accepted on the channel; anything else → 505 UNEXPECTED_FRAME.
//! - A header or body frame while idle → 505 ("expected method frame").
//! - A body frame larger than what remains of the declared size → 501 FRAME_ERROR.
//! - A declared body size above [`MESSAGE_SIZE_LIMIT`] → 501 (RabbitMQ's `?MAX_MSG_SIZE`);
//!   above the configured maximum → 406 PRECONDITION_FAILED, decided from the header, before
//!   any body byte is buffered (RabbitMQ decides after assembly; same reply code and text).
//! - A single-frame body is the received slice, zero copy; a multi-frame body is copied
//!   once into one buffer that grows with the data received, never preallocated beyond
//!   [`BODY_PREALLOCATION_MAX`], so a declared size alone cannot make Weir allocate.
//! - After any error the assembler is idle again. The caller closes the channel (406) or the
//!   connection (501/505), and per AMQP-NOTES §3.1 drops further frames of a closing channel.

use amq_protocol::protocol::basic::{self, Publish};
use amq_protocol::protocol::{AMQPClass, BasicProperties};
use bytes::{Bytes, BytesMut};

use crate::decode::Frame;
use crate::error::{FrameError, ReplyCode};
use crate::schema::{CLASS_BASIC, METHOD_BASIC_PUBLISH};

/// Absolute maximum message body size, in bytes: RabbitMQ's `?MAX_MSG_SIZE` (512 MiB).
/// Larger declared sizes are a 501 FRAME_ERROR whatever the configuration.
pub const MESSAGE_SIZE_LIMIT: u64 = 512 * 1024 * 1024;
/// RabbitMQ's default `max_message_size` (128 MiB).
pub const MESSAGE_SIZE_MAX_DEFAULT: u64 = 128 * 1024 * 1024;
/// Most bytes reserved up front for a multi-frame body; beyond this the buffer grows as body
/// frames arrive.
pub const BODY_PREALLOCATION_MAX: usize = 1024 * 1024;

/// A complete published message.
#[derive(Clone, Debug, PartialEq)]
pub struct Content {
    /// The `basic.publish` that started it.
    pub publish: Publish,
    /// Decoded properties.
    pub properties: BasicProperties,
    /// Properties exactly as received, to forward unchanged.
    pub raw_properties: Bytes,
    /// The whole body.
    pub body: Bytes,
}

/// What [`ContentAssembler::on_frame`] produced.
// Large `Content` variant on purpose: it is moved once to the channel; boxing would cost an
// allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Assembled {
    /// A method without content, ready for the channel to handle.
    Method(AMQPClass),
    /// A complete message.
    Content(Content),
    /// The frame was absorbed into a content still being assembled.
    Pending,
}

// One per channel, mostly `Idle`; a boxed `ExpectBody` would allocate per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum State {
    Idle,
    ExpectHeader { publish: Publish },
    ExpectBody { publish: Publish, properties: BasicProperties, raw_properties: Bytes, remaining: u64, body: Body },
}

/// Body fragments received so far.
#[derive(Debug)]
enum Body {
    Empty,
    /// One fragment: kept as the received slice.
    Single(Bytes),
    /// Several fragments, concatenated.
    Joined(BytesMut),
}

impl Body {
    /// Appends `fragment`; `remaining` is what was still expected including `fragment`.
    fn push(self, fragment: Bytes, remaining: u64) -> Body {
        match self {
            Body::Empty => Body::Single(fragment),
            Body::Single(first) => {
                let expected_total = (first.len() as u64).saturating_add(remaining);
                let capacity = usize::try_from(expected_total)
                    .unwrap_or(usize::MAX)
                    .min(BODY_PREALLOCATION_MAX)
                    .max(first.len() + fragment.len());
                let mut joined = BytesMut::with_capacity(capacity);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&fragment);
                Body::Joined(joined)
            }
            Body::Joined(mut joined) => {
                joined.extend_from_slice(&fragment);
                Body::Joined(joined)
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::Single(bytes) => bytes,
            Body::Joined(joined) => joined.freeze(),
        }
    }
}

/// Assembles `basic.publish` + header + bodies on one channel.
#[derive(Debug)]
pub struct ContentAssembler {
    message_size_max: u64,
    state: State,
}

impl ContentAssembler {
    /// An idle assembler refusing bodies larger than `max_message_size` bytes (capped at
    /// [`MESSAGE_SIZE_LIMIT`], as RabbitMQ caps its setting).
    #[must_use]
    pub fn new(max_message_size: u64) -> ContentAssembler {
        ContentAssembler { message_size_max: max_message_size.min(MESSAGE_SIZE_LIMIT), state: State::Idle }
    }

    /// True when no content is being assembled.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Drops any partial content (channel closed).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// Feeds any frame of this channel: the single entry point for the connection layer.
    /// A method without content comes back as [`Assembled::Method`]; `basic.publish` starts
    /// a content; headers and bodies continue it. A heartbeat (only valid on channel 0) is
    /// 505.
    pub fn on_frame(&mut self, frame: Frame) -> Result<Assembled, FrameError> {
        let channel = frame.channel();
        let result = match frame {
            Frame::Method { method: AMQPClass::Basic(basic::AMQPMethod::Publish(publish)), .. } => {
                self.start(publish).map(|()| Assembled::Pending)
            }
            Frame::Method { class_id, method_id, method, .. } => {
                self.on_method(class_id, method_id).map(|()| Assembled::Method(method))
            }
            Frame::Header { class_id, body_size, properties, raw_properties, .. } => {
                self.on_header(class_id, body_size, properties, raw_properties).map(pending_or_content)
            }
            Frame::Body { payload, .. } => self.on_body(payload).map(pending_or_content),
            Frame::Heartbeat { .. } => {
                self.reset();
                Err(FrameError::new(ReplyCode::UnexpectedFrame, format!("heartbeat frame on channel {channel}")))
            }
        };
        result.map_err(|error| error.on_channel(channel))
    }

    /// Checks that a method other than `basic.publish` may arrive now: only while idle.
    pub fn on_method(&mut self, class_id: u16, method_id: u16) -> Result<(), FrameError> {
        let _ = (class_id, method_id); // RabbitMQ's text names the expected frame, not these.
        match &self.state {
            State::Idle => Ok(()),
            State::ExpectHeader { .. } => Err(self.fail(&format!(
                "expected content header for class {CLASS_BASIC}, \
                 got non content header frame instead"
            ))),
            State::ExpectBody { .. } => Err(self.fail("expected content body, got non content body frame instead")),
        }
    }

    /// Starts a content after `basic.publish`. Fails with 505 unless idle.
    pub fn start(&mut self, publish: Publish) -> Result<(), FrameError> {
        self.on_method(CLASS_BASIC, METHOD_BASIC_PUBLISH)?;
        self.state = State::ExpectHeader { publish };
        Ok(())
    }

    /// Takes the content header. `Some` when the body is empty (no body frame follows).
    pub fn on_header(
        &mut self,
        class_id: u16,
        body_size: u64,
        properties: BasicProperties,
        raw_properties: Bytes,
    ) -> Result<Option<Content>, FrameError> {
        let publish = match std::mem::replace(&mut self.state, State::Idle) {
            State::ExpectHeader { publish } => publish,
            State::Idle => {
                return Err(unexpected_while_idle());
            }
            State::ExpectBody { .. } => {
                return Err(publish_error(
                    ReplyCode::UnexpectedFrame,
                    "expected content body, got non content body frame instead".to_owned(),
                ));
            }
        };
        if class_id != CLASS_BASIC {
            return Err(publish_error(
                ReplyCode::UnexpectedFrame,
                format!(
                    "expected content header for class {CLASS_BASIC}, \
                     got one for class {class_id} instead"
                ),
            ));
        }
        if body_size > MESSAGE_SIZE_LIMIT {
            return Err(publish_error(
                ReplyCode::FrameError,
                format!(
                    "content body size {body_size} exceeds maximum allowed size \
                     {MESSAGE_SIZE_LIMIT}"
                ),
            ));
        }
        if body_size > self.message_size_max {
            return Err(publish_error(
                ReplyCode::PreconditionFailed,
                format!("message size {body_size} is larger than configured max size {}", self.message_size_max),
            ));
        }
        if body_size == 0 {
            return Ok(Some(Content { publish, properties, raw_properties, body: Bytes::new() }));
        }
        self.state = State::ExpectBody { publish, properties, raw_properties, remaining: body_size, body: Body::Empty };
        Ok(None)
    }

    /// Takes a body frame. `Some` when the declared size is complete.
    pub fn on_body(&mut self, payload: Bytes) -> Result<Option<Content>, FrameError> {
        let (publish, properties, raw_properties, remaining, body) =
            match std::mem::replace(&mut self.state, State::Idle) {
                State::ExpectBody { publish, properties, raw_properties, remaining, body } => {
                    (publish, properties, raw_properties, remaining, body)
                }
                State::Idle => return Err(unexpected_while_idle()),
                State::ExpectHeader { .. } => {
                    return Err(publish_error(
                        ReplyCode::UnexpectedFrame,
                        format!(
                            "expected content header for class {CLASS_BASIC}, \
                             got non content header frame instead"
                        ),
                    ));
                }
            };
        let fragment_size = payload.len() as u64;
        if fragment_size > remaining {
            return Err(publish_error(
                ReplyCode::FrameError,
                "content body frame exceeds remaining content size".to_owned(),
            ));
        }
        let body = body.push(payload, remaining);
        let remaining = remaining - fragment_size;
        if remaining == 0 {
            return Ok(Some(Content { publish, properties, raw_properties, body: body.into_bytes() }));
        }
        self.state = State::ExpectBody { publish, properties, raw_properties, remaining, body };
        Ok(None)
    }

    /// Resets and builds the 505 for a frame that breaks a content in progress.
    fn fail(&mut self, text: &str) -> FrameError {
        self.reset();
        publish_error(ReplyCode::UnexpectedFrame, text.to_owned())
    }
}

fn pending_or_content(content: Option<Content>) -> Assembled {
    content.map_or(Assembled::Pending, Assembled::Content)
}

fn publish_error(code: ReplyCode, text: String) -> FrameError {
    FrameError::new(code, text).for_method(CLASS_BASIC, METHOD_BASIC_PUBLISH)
}

fn unexpected_while_idle() -> FrameError {
    FrameError::new(ReplyCode::UnexpectedFrame, "expected method frame, got non method frame instead")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish() -> Publish {
        Publish { exchange: "".into(), routing_key: "q".into(), mandatory: false, immediate: false }
    }

    fn header(assembler: &mut ContentAssembler, size: u64) -> Result<Option<Content>, FrameError> {
        assembler.on_header(CLASS_BASIC, size, BasicProperties::default(), Bytes::from_static(&[0, 0]))
    }

    #[test]
    fn single_frame_body_is_zero_copy() {
        let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
        assembler.start(publish()).unwrap();
        assert_eq!(header(&mut assembler, 3), Ok(None));
        let payload = Bytes::from_static(b"abc");
        let content = assembler.on_body(payload.clone()).unwrap().unwrap();
        assert_eq!(content.body.as_ptr(), payload.as_ptr());
        assert!(assembler.is_idle());
    }

    #[test]
    fn multi_frame_body_preallocation_is_bounded() {
        let mut assembler = ContentAssembler::new(MESSAGE_SIZE_LIMIT);
        assembler.start(publish()).unwrap();
        header(&mut assembler, MESSAGE_SIZE_LIMIT).unwrap();
        assembler.on_body(Bytes::from_static(b"a")).unwrap();
        assembler.on_body(Bytes::from_static(b"b")).unwrap();
        match &assembler.state {
            State::ExpectBody { body: Body::Joined(joined), .. } => {
                assert!(joined.capacity() <= 2 * BODY_PREALLOCATION_MAX)
            }
            other => panic!("unexpected state {other:?}"),
        }
    }

    #[test]
    fn body_beyond_hard_limit_is_a_frame_error() {
        let mut assembler = ContentAssembler::new(u64::MAX);
        assembler.start(publish()).unwrap();
        let error = header(&mut assembler, MESSAGE_SIZE_LIMIT + 1).unwrap_err();
        assert_eq!(error.code, ReplyCode::FrameError);
        assert!(assembler.is_idle());
    }

    #[test]
    fn start_while_assembling_is_unexpected() {
        let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
        assembler.start(publish()).unwrap();
        let error = assembler.start(publish()).unwrap_err();
        assert_eq!(error.code, ReplyCode::UnexpectedFrame);
        assert_eq!((error.class_id, error.method_id), (60, 40));
        assert!(assembler.is_idle());
    }
}

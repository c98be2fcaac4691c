//! weir-amqp-codec: AMQP 0-9-1 frames as pure functions over bytes.
//!
//! The broker's tokio adapter reads socket bytes into a `BytesMut` and calls
//! [`decode_frame`], which returns typed [`Frame`]s or a [`FrameError`] carrying the reply
//! code RabbitMQ would send. Outbound frames are appended to a `BytesMut` by the `encode_*`
//! functions. [`ContentAssembler`] turns `basic.publish` + header + bodies into a
//! [`Content`], and [`parse_plain`]/[`parse_amqplain`] read SASL responses.
//!
//! Method and property types are `amq-protocol`'s (re-exported as [`amq_protocol`]), but
//! this crate does the framing, id lookup, size checks and a non-recursive validation of
//! every payload itself before `amq-protocol` parses it, because `amq-protocol` recurses
//! into field tables without limit, reports opaque errors and does not enforce frame sizes
//! (the traps in AMQP-NOTES §1.1).
//!
//! Invariants, for every function here:
//! - Sans-IO: no sockets, no clocks, no threads; everything is fuzzable.
//! - Never panics and never recurses on client input: hostile bytes produce a `FrameError`.
//!   Stack use is bounded by [`FIELD_TABLE_DEPTH_MAX`].
//! - Every limit is a named constant: [`FRAME_MIN_SIZE`], [`FRAME_SIZE_FUDGE`],
//!   [`FIELD_TABLE_DEPTH_MAX`], [`MESSAGE_SIZE_LIMIT`], [`BODY_PREALLOCATION_MAX`],
//!   [`SHORT_STRING_LENGTH_MAX`].
//! - Bodies and raw content properties are zero-copy slices of the input buffer.

mod assemble;
mod decode;
mod encode;
mod error;
mod sasl;
mod scan;
mod schema;

pub use amq_protocol;

pub use assemble::{
    Assembled, Content, ContentAssembler, BODY_PREALLOCATION_MAX, MESSAGE_SIZE_LIMIT, MESSAGE_SIZE_MAX_DEFAULT,
};
pub use decode::{
    check_protocol_header, decode_frame, decode_properties, inbound_payload_size_max, Frame, ProtocolHeaderCheck,
    FRAME_END, FRAME_HEADER_SIZE, FRAME_MIN_SIZE, FRAME_OVERHEAD, FRAME_SIZE_FUDGE, FRAME_TYPE_BODY, FRAME_TYPE_HEADER,
    FRAME_TYPE_HEARTBEAT, FRAME_TYPE_METHOD, PROTOCOL_HEADER, PROTOCOL_HEADER_0_9,
};
pub use encode::{
    encode_confirm_ack, encode_confirm_nack, encode_content, encode_deliver, encode_get_ok, encode_heartbeat,
    encode_method, encode_properties, encode_publish, encode_return, outbound_body_chunk_size_max,
};
pub use error::{truncate_to_char_boundary, FrameError, ReplyCode, SHORT_STRING_LENGTH_MAX};
pub use sasl::{parse_amqplain, parse_plain, Credentials};
pub use scan::FIELD_TABLE_DEPTH_MAX;
pub use schema::method_name;

/// Frame-max the fuzz target and its CI twin decode with (Celery's negotiated value).
#[doc(hidden)]
pub const FUZZ_FRAME_MAX: u32 = 131_072;
/// Message-size limit the fuzz target's assembler uses.
#[doc(hidden)]
pub const FUZZ_MESSAGE_SIZE_MAX: u64 = 1024 * 1024;

/// Everything the fuzz target runs on one input, shared with the proptest that runs the same
/// path in CI (`tests/fuzz_path.rs`): decode frames until the input is used up or an error,
/// feed channel frames to one assembler per channel, and parse the input as properties and
/// as SASL responses. Must never panic.
#[doc(hidden)]
pub fn fuzz_one_input(data: &[u8]) {
    use std::collections::HashMap;

    let mut buf = bytes::BytesMut::from(data);
    let mut assemblers: HashMap<u16, ContentAssembler> = HashMap::new();
    while let Ok(Some(frame)) = decode_frame(&mut buf, FUZZ_FRAME_MAX) {
        let channel = frame.channel();
        if channel == 0 {
            continue;
        }
        let assembler = assemblers.entry(channel).or_insert_with(|| ContentAssembler::new(FUZZ_MESSAGE_SIZE_MAX));
        if let Ok(Assembled::Content(content)) = assembler.on_frame(frame) {
            // Re-encode what was accepted: must not panic either.
            let mut out = bytes::BytesMut::new();
            encode_deliver(
                &mut out,
                channel,
                "ctag",
                1,
                false,
                content.publish.exchange.as_str(),
                content.publish.routing_key.as_str(),
                &content.raw_properties,
                &content.body,
                FRAME_MIN_SIZE,
            );
            let _ = encode_properties(&content.properties);
        }
    }
    if let Ok(properties) = decode_properties(data) {
        let _ = encode_properties(&properties);
    }
    let _ = parse_plain(data);
    let _ = parse_amqplain(data);
}

//! Content assembly over decoded frames, as the connection layer drives it: one
//! [`ContentAssembler`] per channel, frames of other channels interleaved, and each way a
//! client can break a content in progress.

mod common;

use bytes::{Bytes, BytesMut};
use common::{decode_all, raw_frame};
use weir_amqp_codec::amq_protocol::protocol::{basic, AMQPClass, BasicProperties};
use weir_amqp_codec::{
    encode_method, encode_properties, encode_publish, Assembled, Content, ContentAssembler, Frame, ReplyCode,
    FRAME_MIN_SIZE, MESSAGE_SIZE_MAX_DEFAULT,
};

fn publish_frames(channel: u16, body: &[u8], frame_max: u32) -> Vec<Frame> {
    let properties = BasicProperties::default().with_content_type("text/plain".into()).with_delivery_mode(2);
    let mut out = BytesMut::new();
    encode_publish(
        &mut out,
        channel,
        "amq.direct",
        "key",
        false,
        false,
        &encode_properties(&properties),
        body,
        frame_max,
    );
    decode_all(&out, frame_max).unwrap()
}

fn ack_frame(channel: u16) -> Frame {
    let mut out = BytesMut::new();
    let ack = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: 1, multiple: false }));
    encode_method(&mut out, channel, &ack);
    decode_all(&out, FRAME_MIN_SIZE).unwrap().remove(0)
}

/// Feeds frames, returning completed contents; panics on errors.
fn feed(assembler: &mut ContentAssembler, frames: Vec<Frame>) -> Vec<Content> {
    let mut contents = Vec::new();
    for frame in frames {
        if let Assembled::Content(content) = assembler.on_frame(frame).unwrap() {
            contents.push(content);
        }
    }
    contents
}

#[test]
fn multi_frame_content_is_assembled() {
    let body: Vec<u8> = (0..10_000u32).map(|index| index as u8).collect();
    let frames = publish_frames(1, &body, FRAME_MIN_SIZE);
    assert_eq!(frames.len(), 2 + 3); // method, header, 3 bodies of ≤ 4088
    let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    let contents = feed(&mut assembler, frames);
    assert_eq!(contents.len(), 1);
    assert_eq!(&contents[0].body[..], &body[..]);
    assert_eq!(contents[0].publish.exchange.as_str(), "amq.direct");
    assert_eq!(contents[0].properties.delivery_mode(), &Some(2));
    assert!(assembler.is_idle());
}

#[test]
fn empty_body_completes_on_the_header() {
    let frames = publish_frames(1, b"", FRAME_MIN_SIZE);
    assert_eq!(frames.len(), 2);
    let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    assert_eq!(assembler.on_frame(frames[0].clone()), Ok(Assembled::Pending));
    let Ok(Assembled::Content(content)) = assembler.on_frame(frames[1].clone()) else {
        panic!("empty body must complete on the header");
    };
    assert!(content.body.is_empty());
    assert!(assembler.is_idle());
}

#[test]
fn other_channels_may_interleave() {
    let first = publish_frames(1, &[1; 9000], FRAME_MIN_SIZE);
    let second = publish_frames(2, &[2; 9000], FRAME_MIN_SIZE);
    let mut one = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    let mut two = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    let mut done = Vec::new();
    for (a, b) in first.into_iter().zip(second) {
        for frame in [a, b] {
            let assembler = if frame.channel() == 1 { &mut one } else { &mut two };
            if let Assembled::Content(content) = assembler.on_frame(frame).unwrap() {
                done.push(content.body[0]);
            }
        }
    }
    assert_eq!(done, [1, 2]);
}

#[test]
fn method_between_header_and_body_is_unexpected_frame() {
    let frames = publish_frames(1, b"hello", FRAME_MIN_SIZE);
    let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    feed(&mut assembler, frames[..2].to_vec());
    let error = assembler.on_frame(ack_frame(1)).unwrap_err();
    assert_eq!(error.code, ReplyCode::UnexpectedFrame);
    assert_eq!((error.channel, error.class_id, error.method_id), (1, 60, 40));
    assert!(error.is_hard());
    assert!(assembler.is_idle());
}

#[test]
fn method_between_publish_and_header_is_unexpected_frame() {
    let frames = publish_frames(1, b"hello", FRAME_MIN_SIZE);
    let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    feed(&mut assembler, frames[..1].to_vec());
    let error = assembler.on_frame(ack_frame(1)).unwrap_err();
    assert_eq!(error.code, ReplyCode::UnexpectedFrame);
    assert!(error.text.contains("expected content header"), "{}", error.text);
}

#[test]
fn second_publish_before_the_body_is_unexpected_frame() {
    let frames = publish_frames(1, b"hello", FRAME_MIN_SIZE);
    let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    feed(&mut assembler, frames[..2].to_vec());
    let error = assembler.on_frame(frames[0].clone()).unwrap_err();
    assert_eq!(error.code, ReplyCode::UnexpectedFrame);
}

#[test]
fn header_or_body_without_publish_is_unexpected_frame() {
    let frames = publish_frames(1, b"hello", FRAME_MIN_SIZE);
    for frame in [frames[1].clone(), frames[2].clone()] {
        let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
        let error = assembler.on_frame(frame).unwrap_err();
        assert_eq!(error.code, ReplyCode::UnexpectedFrame);
        assert_eq!((error.class_id, error.method_id), (0, 0));
    }
}

#[test]
fn header_twice_is_unexpected_frame() {
    let frames = publish_frames(1, b"hello", FRAME_MIN_SIZE);
    let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    feed(&mut assembler, frames[..2].to_vec());
    let error = assembler.on_frame(frames[1].clone()).unwrap_err();
    assert_eq!(error.code, ReplyCode::UnexpectedFrame);
}

#[test]
fn heartbeat_on_a_channel_is_unexpected_frame() {
    let frames = decode_all(&raw_frame(8, 4, b""), FRAME_MIN_SIZE).unwrap();
    let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    let error = assembler.on_frame(frames[0].clone()).unwrap_err();
    assert_eq!((error.code, error.channel), (ReplyCode::UnexpectedFrame, 4));
}

#[test]
fn body_larger_than_declared_is_a_frame_error() {
    let frames = publish_frames(1, b"hello", FRAME_MIN_SIZE);
    let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    feed(&mut assembler, frames[..2].to_vec());
    let error = assembler.on_body(Bytes::from_static(b"hello!")).unwrap_err();
    assert_eq!(error.code, ReplyCode::FrameError);
    assert!(assembler.is_idle());
}

#[test]
fn oversize_message_is_precondition_failed_before_any_body() {
    let body = vec![0u8; 1001];
    let frames = publish_frames(3, &body, FRAME_MIN_SIZE);
    let mut assembler = ContentAssembler::new(1000);
    assembler.on_frame(frames[0].clone()).unwrap();
    let error = assembler.on_frame(frames[1].clone()).unwrap_err();
    assert_eq!(error.code, ReplyCode::PreconditionFailed);
    assert!(!error.is_hard());
    assert_eq!((error.channel, error.class_id, error.method_id), (3, 60, 40));
    assert_eq!(error.text, "message size 1001 is larger than configured max size 1000");
    assert!(assembler.is_idle());
}

#[test]
fn message_of_exactly_the_maximum_is_accepted() {
    let body = vec![9u8; 1000];
    let mut assembler = ContentAssembler::new(1000);
    let contents = feed(&mut assembler, publish_frames(1, &body, FRAME_MIN_SIZE));
    assert_eq!(contents.len(), 1);
}

#[test]
fn methods_pass_through_while_idle() {
    let mut assembler = ContentAssembler::new(MESSAGE_SIZE_MAX_DEFAULT);
    assert!(matches!(
        assembler.on_frame(ack_frame(1)),
        Ok(Assembled::Method(AMQPClass::Basic(basic::AMQPMethod::Ack(_))))
    ));
}

//! The fuzz target's path (`fuzz/fuzz_targets/amqp_frame_decode.rs` calls
//! [`fuzz_one_input`]) run under proptest in CI: random bytes, and random mutations of valid
//! streams, which reach much deeper than random bytes do. Must never panic.
//!
//! Also checks that decoding is independent of how the bytes arrive: feeding a valid stream
//! in arbitrary pieces yields the same frames as feeding it whole.
//!
//! A failure prints the minimal failing input; its seed is kept in
//! `fuzz_path.proptest-regressions` beside this file and replays first next time.

mod common;

use bytes::BytesMut;
use common::{
    content_header_payload_with_headers, decode_all, nested_table_entries, queue_declare_payload, raw_frame,
    sample_table,
};
use proptest::prelude::*;
use weir_amqp_codec::amq_protocol::protocol::{basic, queue, AMQPClass, BasicProperties};
use weir_amqp_codec::{
    decode_frame, encode_confirm_ack, encode_deliver, encode_heartbeat, encode_method, encode_properties,
    encode_publish, fuzz_one_input, ReplyCode, FUZZ_FRAME_MAX,
};

/// A valid stream touching every frame type and the table scanner.
fn valid_stream() -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_heartbeat(&mut out);
    let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: "q".into(),
        durable: true,
        arguments: sample_table(),
        ..Default::default()
    }));
    encode_method(&mut out, 1, &declare);
    let properties = BasicProperties::default()
        .with_headers(sample_table())
        .with_content_type("application/json".into())
        .with_priority(3);
    let raw = encode_properties(&properties);
    encode_publish(&mut out, 1, "ex", "rk", true, false, &raw, &[5; 6000], 4096);
    encode_publish(&mut out, 2, "", "q", false, false, &[0, 0], b"", 4096);
    encode_deliver(&mut out, 1, "ctag", 9, true, "ex", "rk", &raw, b"hi", 4096);
    encode_confirm_ack(&mut out, 1, 9, true);
    let consume = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
        queue: "q".into(),
        consumer_tag: "c".into(),
        arguments: sample_table(),
        ..Default::default()
    }));
    encode_method(&mut out, 3, &consume);
    out.extend_from_slice(&raw_frame(1, 1, &queue_declare_payload(b"deep", &nested_table_entries(40))));
    out.extend_from_slice(&raw_frame(2, 1, &content_header_payload_with_headers(0, &nested_table_entries(30))));
    out.to_vec()
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, length: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), prop_oneof![any::<u8>(), Just(0xFF), Just(0), Just(b'F'), Just(b'A')])
            .prop_map(|(at, value)| Mutation::Set { at, value }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(at, length)| Mutation::Remove { at, length }),
    ]
}

fn apply(stream: &mut Vec<u8>, mutation: &Mutation) {
    if stream.is_empty() {
        return;
    }
    match mutation {
        Mutation::Flip { at, bit } => {
            let at = at % stream.len();
            stream[at] ^= 1 << bit;
        }
        Mutation::Set { at, value } => {
            let at = at % stream.len();
            stream[at] = *value;
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (stream.len() + 1);
            stream.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, length } => {
            let at = at % stream.len();
            let end = (at + length).min(stream.len());
            stream.drain(at..end);
        }
    }
}

#[test]
fn valid_stream_decodes_completely() {
    let frames = decode_all(&valid_stream(), FUZZ_FRAME_MAX).unwrap();
    assert!(frames.len() > 10);
    fuzz_one_input(&valid_stream());
}

proptest! {
    #![proptest_config(common::proptest_config(2_000))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzz_one_input(&data);
    }

    #[test]
    fn random_frames_never_panic(
        frame_type in prop_oneof![Just(1u8), Just(2), Just(3), Just(8), any::<u8>()],
        channel in 0u16..4,
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        // A well-framed random payload gets past framing into the method/property scan.
        fuzz_one_input(&raw_frame(frame_type, channel, &payload));
        let mut method = vec![0, 50, 0, 10];
        method.extend_from_slice(&payload);
        fuzz_one_input(&raw_frame(1, channel, &method));
    }

    /// What the non-recursive scan accepts, `amq-protocol` must parse: a disagreement is
    /// reported as 541 INTERNAL_ERROR and must never happen.
    #[test]
    fn scan_and_amq_protocol_agree_on_mutated_streams(
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut stream = valid_stream();
        for mutation in &mutations {
            apply(&mut stream, mutation);
        }
        let mut buf = BytesMut::from(&stream[..]);
        loop {
            match decode_frame(&mut buf, FUZZ_FRAME_MAX) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(error) => {
                    prop_assert_ne!(error.code, ReplyCode::InternalError, "{}", error);
                    break;
                }
            }
        }
    }

    #[test]
    fn mutated_valid_streams_never_panic(
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let mut stream = valid_stream();
        for mutation in &mutations {
            apply(&mut stream, mutation);
        }
        fuzz_one_input(&stream);
    }
}

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn decoding_does_not_depend_on_how_bytes_arrive(
        cuts in proptest::collection::vec(1usize..700, 1..40),
    ) {
        let stream = valid_stream();
        let whole = decode_all(&stream, FUZZ_FRAME_MAX).unwrap();
        let mut buf = BytesMut::new();
        let mut pieces = Vec::new();
        let mut offset = 0;
        let mut cut_index = 0;
        while offset < stream.len() {
            let length = cuts[cut_index % cuts.len()].min(stream.len() - offset);
            cut_index += 1;
            buf.extend_from_slice(&stream[offset..offset + length]);
            offset += length;
            while let Some(frame) = decode_frame(&mut buf, FUZZ_FRAME_MAX).unwrap() {
                pieces.push(frame);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(pieces, whole);
    }
}

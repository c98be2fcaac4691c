//! Helpers shared by the integration tests: raw frame builders, sample tables with every
//! field-value type, deeply nested tables built without recursion, and a decode-all loop.
//!
//! Invariant: nothing here recurses over nesting depth, so the 10 000-level tests prove the
//! codec's stack use, not the helpers'.

#![allow(dead_code)] // each test binary uses a different subset

use bytes::BytesMut;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use weir_amqp_codec::amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use weir_amqp_codec::{decode_frame, Frame, FrameError, FRAME_END};

/// A complete frame around `payload`.
pub fn raw_frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![frame_type];
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(payload);
    frame.push(FRAME_END);
    frame
}

/// Decodes every frame in `bytes`; fails the test on leftovers.
pub fn decode_all(bytes: &[u8], frame_max: u32) -> Result<Vec<Frame>, FrameError> {
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decode_frame(&mut buf, frame_max)? {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "{} undecoded bytes left", buf.len());
    Ok(frames)
}

/// A table holding one value of every field-value type, including nested tables and arrays.
pub fn sample_table() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("count".into(), AMQPValue::LongLongInt(3));
    inner.insert("reason".into(), AMQPValue::LongString("expired".into()));
    let array = FieldArray::from(vec![
        AMQPValue::FieldTable(inner.clone()),
        AMQPValue::LongInt(-7),
        AMQPValue::Void,
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)])),
    ]);
    let mut table = FieldTable::default();
    table.insert("bool".into(), AMQPValue::Boolean(true));
    table.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    table.insert("u8".into(), AMQPValue::ShortShortUInt(200));
    table.insert("i16".into(), AMQPValue::ShortInt(-300));
    table.insert("u16".into(), AMQPValue::ShortUInt(60_000));
    table.insert("i32".into(), AMQPValue::LongInt(-70_000));
    table.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    table.insert("i64".into(), AMQPValue::LongLongInt(-5_000_000_000));
    table.insert("f32".into(), AMQPValue::Float(1.5));
    table.insert("f64".into(), AMQPValue::Double(-2.25));
    table.insert("decimal".into(), AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 12_345 }));
    table.insert("long-string".into(), AMQPValue::LongString("héllo".into()));
    table.insert("array".into(), AMQPValue::FieldArray(array));
    table.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    table.insert("table".into(), AMQPValue::FieldTable(inner));
    table.insert("bytes".into(), AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 255])));
    table.insert("void".into(), AMQPValue::Void);
    table.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(b"dlx".to_vec())));
    table
}

/// Field-table entries (no length prefix) nesting `depth` tables, the outermost counting as
/// 1: `{"k": {"k": … {}}}`. Built inside-out with a loop.
pub fn nested_table_entries(depth: usize) -> Vec<u8> {
    let mut entries: Vec<u8> = Vec::new();
    for _ in 1..depth {
        let mut outer = Vec::with_capacity(entries.len() + 7);
        outer.extend_from_slice(&[1, b'k', b'F']);
        outer.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_be_bytes());
        outer.extend_from_slice(&entries);
        entries = outer;
    }
    entries
}

/// Like [`nested_table_entries`] but alternating arrays and tables: arrays count too.
pub fn nested_array_entries(depth: usize) -> Vec<u8> {
    // Innermost container (level `depth`) is an empty table or array; walking outwards, the
    // container at level n is an array when n is even.
    let mut value: Vec<u8> = Vec::new();
    let mut value_is_array = depth.is_multiple_of(2);
    for level in (1..depth).rev() {
        let tag = if value_is_array { b'A' } else { b'F' };
        let mut entry = Vec::with_capacity(value.len() + 7);
        let container_is_array = level.is_multiple_of(2);
        if !container_is_array {
            entry.extend_from_slice(&[1, b'k']);
        }
        entry.push(tag);
        entry.extend_from_slice(&u32::try_from(value.len()).unwrap().to_be_bytes());
        entry.extend_from_slice(&value);
        value = entry;
        value_is_array = container_is_array;
    }
    value
}

/// A `queue.declare` method payload (ids included) whose arguments table holds `entries`.
pub fn queue_declare_payload(queue: &[u8], arguments_entries: &[u8]) -> Vec<u8> {
    let mut payload = vec![0, 50, 0, 10, 0, 0];
    payload.push(u8::try_from(queue.len()).unwrap());
    payload.extend_from_slice(queue);
    payload.push(0b0000_0010); // durable
    payload.extend_from_slice(&u32::try_from(arguments_entries.len()).unwrap().to_be_bytes());
    payload.extend_from_slice(arguments_entries);
    payload
}

/// A content-header payload (class 60) whose only property is a headers table holding
/// `entries`.
pub fn content_header_payload_with_headers(body_size: u64, entries: &[u8]) -> Vec<u8> {
    let mut payload = vec![0, 60, 0, 0];
    payload.extend_from_slice(&body_size.to_be_bytes());
    payload.extend_from_slice(&(1u16 << 13).to_be_bytes());
    payload.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_be_bytes());
    payload.extend_from_slice(entries);
    payload
}

/// Proptest configuration for `cases` cases. A failing case's seed is saved beside the test
/// file (`<test>.proptest-regressions`) and replayed first on the next run; the failure
/// message prints the minimal failing input.
pub fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

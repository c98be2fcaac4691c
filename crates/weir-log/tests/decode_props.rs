//! Property tests over the record decoder and recovery with arbitrary and mutated bytes: the
//! same code path the `log_record_decode` fuzz target drives, run in CI. Nothing here may
//! panic; whatever decodes must be self-consistent.

use proptest::prelude::*;
use weir_log::{
    decode_record, encode_record_into, Log, LogConfig, SegmentHeader, SimStorage, FIRST_USER_KIND, RECORD_HEADER_BYTES,
};

/// Anything `decode_record` accepts re-encodes to exactly the bytes it came from.
fn assert_self_consistent(buf: &[u8]) {
    if let Ok(record) = decode_record(buf, None) {
        let mut again = Vec::new();
        encode_record_into(&mut again, record.lsn, record.segment, record.kind, record.version, record.payload);
        let used = RECORD_HEADER_BYTES + record.payload.len();
        assert_eq!(&again[..used], &buf[..used]);
        assert!(record.kind >= FIRST_USER_KIND);
    }
    let _ = decode_record(buf, Some(1));
    let _ = SegmentHeader::decode(buf);
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { len: usize },
    Extend { bytes: Vec<u8> },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(|bytes| Mutation::Extend { bytes }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
    ]
}

fn apply(buf: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Flip { at, mask } if !buf.is_empty() => {
            let at = at % buf.len();
            buf[at] ^= mask;
        }
        Mutation::Truncate { len } => buf.truncate(len % (buf.len() + 1)),
        Mutation::Extend { bytes } => buf.extend_from_slice(bytes),
        Mutation::Overwrite { at, bytes } if !buf.is_empty() => {
            let at = at % buf.len();
            for (i, byte) in bytes.iter().enumerate() {
                if let Some(slot) = buf.get_mut(at + i) {
                    *slot = *byte;
                }
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
        assert_self_consistent(&buf);
    }

    #[test]
    fn decoder_handles_mutated_records(
        lsn in 1u64..,
        segment in any::<u32>(),
        kind in FIRST_USER_KIND..,
        version in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut buf = Vec::new();
        encode_record_into(&mut buf, lsn, segment, kind, version, &payload);
        let original = buf.clone();
        for mutation in &mutations {
            apply(&mut buf, mutation);
        }
        assert_self_consistent(&buf);
        let covered = RECORD_HEADER_BYTES + payload.len();
        if buf.len() >= covered && buf[..covered] == original[..covered] {
            let record = decode_record(&buf, Some(lsn)).expect("untouched record decodes");
            prop_assert_eq!(record.payload, &payload[..]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Recovery over a segment file with random damage never panics and never replays a record
    /// whose bytes differ from what was written.
    #[test]
    fn open_never_panics_on_damaged_segments(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..60),
        damage in proptest::collection::vec((0u64..16384, 1u8..), 0..6),
    ) {
        let storage = SimStorage::new();
        let config = LogConfig::with_segment_size(16384);
        let (mut log, _) = Log::open(storage.clone(), config.clone(), 0, &mut |_| Ok(())).expect("open");
        for payload in &records {
            log.append(0x20, 0, payload).expect("append");
        }
        log.commit().expect("commit");
        drop(log);
        for name in storage.file_names() {
            if name.starts_with("seg-") {
                for (offset, mask) in &damage {
                    let _ = storage.corrupt_byte(&name, *offset, *mask);
                }
            }
        }
        let mut replayed = Vec::new();
        let (_, report) = Log::open(storage.clone(), config, 0, &mut |view| {
            replayed.push((view.lsn, view.payload.to_vec()));
            Ok(())
        }).expect("open after damage");
        for (lsn, payload) in &replayed {
            prop_assert_eq!(payload, &records[(*lsn - 1) as usize]);
        }
        if damage.is_empty() {
            prop_assert!(report.is_clean());
            prop_assert_eq!(replayed.len(), records.len());
        }
    }
}

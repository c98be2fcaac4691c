//! Fuzz target: arbitrary bytes into the log record decoder (and the segment header decoder).
//! The decoder must never panic, and anything it accepts must re-encode to the same bytes.
//! Every crash found here becomes a named regression test in crates/weir-log.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_log::{decode_record, encode_record_into, SegmentHeader, RECORD_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses whether to pass an expected LSN, so both paths are fuzzed.
    let (expected, buf) = match data.split_first() {
        Some((&selector, rest)) if selector & 1 == 1 && rest.len() >= 8 => {
            let mut lsn = [0u8; 8];
            lsn.copy_from_slice(&rest[..8]);
            (Some(u64::from_le_bytes(lsn)), &rest[8..])
        }
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    if let Ok(record) = decode_record(buf, expected) {
        let mut again = Vec::new();
        encode_record_into(&mut again, record.lsn, record.segment, record.kind, record.version, record.payload);
        let used = RECORD_HEADER_BYTES + record.payload.len();
        assert_eq!(&again[..used], &buf[..used]);
        if let Some(lsn) = expected {
            assert_eq!(record.lsn, lsn);
        }
    }
    let _ = SegmentHeader::decode(buf);
});

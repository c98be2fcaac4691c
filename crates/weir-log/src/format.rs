//! Byte layouts of everything the log writes into segment files, and the pure functions that
//! encode and decode them (docs/FORMAT.md describes the same bytes in prose).
//!
//! This module does no I/O: every function takes and returns byte buffers, so it can be fuzzed
//! (`fuzz/fuzz_targets/log_record_decode.rs`) and unit-tested at every boundary.
//!
//! Invariants kept here:
//! - A record is `RECORD_HEADER_BYTES` of header, then the payload, then zero padding up to the
//!   next multiple of `RECORD_ALIGNMENT_BYTES`. Records start at aligned offsets only.
//! - The record crc32c covers every header byte after the crc field (length, LSN, segment id,
//!   kind, version, flags) and the payload, so a flipped bit anywhere that matters is caught.
//! - `decode_record` never panics and never reads past the buffer it is given, whatever the
//!   bytes are; it only returns `Ok` for a record whose crc verifies.
//! - All integers are little-endian.

use crate::Lsn;

/// Record kinds below this value are reserved for the log itself; `Log::append` rejects them
/// and format version 1 defines none, so the decoder rejects them too.
pub const FIRST_USER_KIND: u8 = 0x10;

/// Records start at offsets that are multiples of this. Why 8: the LSN field is then naturally
/// aligned, and resynchronising after a damaged record only has to try one offset in eight
/// while costing on average 3.5 bytes of padding per record.
pub const RECORD_ALIGNMENT_BYTES: usize = 8;

/// Size of the fixed record header: crc32c u32, payload length u32, LSN u64, segment id u32,
/// kind u8, version u8, flags u16.
pub const RECORD_HEADER_BYTES: usize = 24;

/// Record flag: the first record appended after a commit (the first of its batch). Recovery
/// uses it to tell a batch torn by a crash from damage to data that was already durable: a
/// batch is written only after the previous one was fsynced, so a valid batch start after a
/// break proves the broken record was durable.
pub const RECORD_FLAG_BATCH_START: u16 = 0x0001;
/// Every flag this format version defines; a record with any other bit set is rejected.
pub const RECORD_FLAGS_KNOWN: u16 = RECORD_FLAG_BATCH_START;

/// Size of the segment header at offset 0 of every segment file. Records start right after it.
pub const SEGMENT_HEADER_BYTES: usize = 64;

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WEIRSEG\0";

/// The on-disk format version this code writes and reads (segment and record layout).
pub const FORMAT_VERSION: u16 = 1;

/// The largest payload the format can describe: a record must fit in the largest segment.
pub const MAX_FORMAT_PAYLOAD_BYTES: u32 =
    crate::config::MAX_SEGMENT_SIZE_BYTES - SEGMENT_HEADER_BYTES as u32 - RECORD_HEADER_BYTES as u32;

/// Bytes a record with `payload_len` bytes of payload occupies in a segment, padding included.
pub const fn record_span_bytes(payload_len: usize) -> usize {
    align_up(RECORD_HEADER_BYTES + payload_len)
}

/// Rounds `bytes` up to the record alignment.
pub const fn align_up(bytes: usize) -> usize {
    (bytes + RECORD_ALIGNMENT_BYTES - 1) & !(RECORD_ALIGNMENT_BYTES - 1)
}

/// The raw fields of a record header, as read from disk and not yet validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub payload_len: u32,
    pub lsn: Lsn,
    pub segment: u32,
    pub kind: u8,
    pub version: u8,
    pub flags: u16,
}

impl RecordHeader {
    /// Parses the first `RECORD_HEADER_BYTES` of `buf` without checking anything; `None` when
    /// the buffer is shorter than a header.
    pub fn peek(buf: &[u8]) -> Option<RecordHeader> {
        let header = buf.get(..RECORD_HEADER_BYTES)?;
        Some(RecordHeader {
            crc: read_u32(header, 0),
            payload_len: read_u32(header, 4),
            lsn: read_u64(header, 8),
            segment: read_u32(header, 16),
            kind: header[20],
            version: header[21],
            flags: u16::from_le_bytes([header[22], header[23]]),
        })
    }

    /// Header plus payload, without padding; saturates instead of overflowing.
    pub fn record_bytes(&self) -> usize {
        RECORD_HEADER_BYTES.saturating_add(self.payload_len as usize)
    }

    /// Header plus payload plus padding.
    pub fn span_bytes(&self) -> usize {
        record_span_bytes(self.payload_len as usize)
    }
}

/// A record that decoded and whose crc verified. `payload` borrows from the decoded buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedRecord<'a> {
    pub lsn: Lsn,
    /// The segment id written into the record header (the segment it was appended to).
    pub segment: u32,
    pub kind: u8,
    pub version: u8,
    pub payload: &'a [u8],
    /// Bytes from this record's header to the next record's header (padding included).
    pub span_bytes: usize,
    /// `RECORD_FLAG_BATCH_START` was set.
    pub batch_start: bool,
}

/// Why a buffer does not hold a valid record. Ordered roughly by how early decoding stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    #[error("truncated record: {needed_bytes} bytes needed, {available_bytes} available")]
    Truncated { needed_bytes: usize, available_bytes: usize },
    #[error("record header is all zero (no record was written here)")]
    ZeroHeader,
    #[error("record header flags {flags:#06x} include bits this format version does not define")]
    BadFlags { flags: u16 },
    #[error("record LSN is 0 (LSNs start at 1)")]
    ZeroLsn,
    #[error("record payload length {payload_len} exceeds the format limit")]
    LengthTooLarge { payload_len: u32 },
    #[error("record has LSN {found}, expected LSN {expected}")]
    LsnMismatch { found: Lsn, expected: Lsn },
    #[error("record crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("record kind {kind:#04x} is reserved and unknown to format version {FORMAT_VERSION}")]
    ReservedKind { kind: u8 },
}

/// Decodes the record at the start of `buf`. With `expected_lsn`, a record with another LSN is
/// rejected before its crc is computed. Does not check the segment id (the caller knows which
/// segment it is reading; see `DecodedRecord::segment`). Never panics.
pub fn decode_record(buf: &[u8], expected_lsn: Option<Lsn>) -> Result<DecodedRecord<'_>, RecordDecodeError> {
    let header = RecordHeader::peek(buf)
        .ok_or(RecordDecodeError::Truncated { needed_bytes: RECORD_HEADER_BYTES, available_bytes: buf.len() })?;
    if buf[..RECORD_HEADER_BYTES].iter().all(|&byte| byte == 0) {
        return Err(RecordDecodeError::ZeroHeader);
    }
    if header.flags & !RECORD_FLAGS_KNOWN != 0 {
        return Err(RecordDecodeError::BadFlags { flags: header.flags });
    }
    if header.lsn == 0 {
        return Err(RecordDecodeError::ZeroLsn);
    }
    if header.payload_len > MAX_FORMAT_PAYLOAD_BYTES {
        return Err(RecordDecodeError::LengthTooLarge { payload_len: header.payload_len });
    }
    if let Some(expected) = expected_lsn {
        if header.lsn != expected {
            return Err(RecordDecodeError::LsnMismatch { found: header.lsn, expected });
        }
    }
    let record_bytes = header.record_bytes();
    let Some(record) = buf.get(..record_bytes) else {
        return Err(RecordDecodeError::Truncated { needed_bytes: record_bytes, available_bytes: buf.len() });
    };
    let computed = crc32c::crc32c(&record[4..]);
    if computed != header.crc {
        return Err(RecordDecodeError::BadCrc { stored: header.crc, computed });
    }
    if header.kind < FIRST_USER_KIND {
        return Err(RecordDecodeError::ReservedKind { kind: header.kind });
    }
    Ok(DecodedRecord {
        lsn: header.lsn,
        segment: header.segment,
        kind: header.kind,
        version: header.version,
        payload: &record[RECORD_HEADER_BYTES..],
        span_bytes: header.span_bytes(),
        batch_start: header.flags & RECORD_FLAG_BATCH_START != 0,
    })
}

/// Appends one encoded record (header, payload, zero padding) without flags to `out` and
/// returns the number of bytes appended. Reuses `out`'s capacity: no allocation once the
/// buffer is warm.
pub fn encode_record_into(out: &mut Vec<u8>, lsn: Lsn, segment: u32, kind: u8, version: u8, payload: &[u8]) -> usize {
    encode_record_with_flags(out, lsn, segment, kind, version, 0, payload)
}

/// `encode_record_into` with header flags (`RECORD_FLAG_*`).
pub fn encode_record_with_flags(
    out: &mut Vec<u8>,
    lsn: Lsn,
    segment: u32,
    kind: u8,
    version: u8,
    flags: u16,
    payload: &[u8],
) -> usize {
    assert_eq!(flags & !RECORD_FLAGS_KNOWN, 0, "only defined flags are written");
    let payload_len = u32::try_from(payload.len()).expect("caller checked the record size limit");
    assert!(payload_len <= MAX_FORMAT_PAYLOAD_BYTES, "caller checked the record size limit");
    assert!(lsn > 0, "LSN 0 is never written");
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&segment.to_le_bytes());
    out.extend_from_slice(&[kind, version]);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    let span = record_span_bytes(payload.len());
    out.resize(start + span, 0);
    span
}

/// The segment header at offset 0 of every segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment: u32,
    /// LSN of the first record appended to this segment (the segment may hold none yet).
    pub first_lsn: Lsn,
    pub segment_size_bytes: u32,
}

/// Why the first `SEGMENT_HEADER_BYTES` of a file are not a valid segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentHeaderError {
    #[error("segment header is missing: file is only {file_bytes} bytes")]
    Short { file_bytes: u64 },
    #[error("segment header is all zero (never written)")]
    Zero,
    #[error("segment header magic is wrong")]
    BadMagic,
    #[error("segment header crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("segment format version {found} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion { found: u16 },
    #[error("segment header field {field} has invalid value {value}")]
    BadField { field: &'static str, value: u64 },
}

const SEGMENT_HEADER_CRC_OFFSET: usize = SEGMENT_HEADER_BYTES - 4;

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[10..12].copy_from_slice(&(SEGMENT_HEADER_BYTES as u16).to_le_bytes());
        bytes[12..16].copy_from_slice(&self.segment.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        bytes[28..32].copy_from_slice(&(RECORD_ALIGNMENT_BYTES as u32).to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..SEGMENT_HEADER_CRC_OFFSET]);
        bytes[SEGMENT_HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes and validates a segment header. Never panics.
    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        let Some(bytes) = buf.get(..SEGMENT_HEADER_BYTES) else {
            return Err(SegmentHeaderError::Short { file_bytes: buf.len() as u64 });
        };
        if bytes.iter().all(|&byte| byte == 0) {
            return Err(SegmentHeaderError::Zero);
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(SegmentHeaderError::BadMagic);
        }
        let stored = read_u32(bytes, SEGMENT_HEADER_CRC_OFFSET);
        let computed = crc32c::crc32c(&bytes[..SEGMENT_HEADER_CRC_OFFSET]);
        if stored != computed {
            return Err(SegmentHeaderError::BadCrc { stored, computed });
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(SegmentHeaderError::UnsupportedVersion { found: version });
        }
        let header_bytes = u16::from_le_bytes([bytes[10], bytes[11]]);
        if usize::from(header_bytes) != SEGMENT_HEADER_BYTES {
            return Err(SegmentHeaderError::BadField { field: "header_bytes", value: header_bytes.into() });
        }
        let alignment = read_u32(bytes, 28);
        if alignment as usize != RECORD_ALIGNMENT_BYTES {
            return Err(SegmentHeaderError::BadField { field: "record_alignment", value: alignment.into() });
        }
        let header = SegmentHeader {
            segment: read_u32(bytes, 12),
            first_lsn: read_u64(bytes, 16),
            segment_size_bytes: read_u32(bytes, 24),
        };
        if header.first_lsn == 0 {
            return Err(SegmentHeaderError::BadField { field: "first_lsn", value: 0 });
        }
        let size = header.segment_size_bytes;
        if !(crate::config::MIN_SEGMENT_SIZE_BYTES..=crate::config::MAX_SEGMENT_SIZE_BYTES).contains(&size)
            || !size.is_multiple_of(crate::config::SEGMENT_SIZE_GRANULE_BYTES)
        {
            return Err(SegmentHeaderError::BadField { field: "segment_size_bytes", value: size.into() });
        }
        Ok(header)
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

// ---- file names -------------------------------------------------------------------------------

const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".wlog";
const SPARE_PREFIX: &str = "spare-";
/// Suffix of files being written that are not yet complete (spares, checkpoints).
pub const TMP_SUFFIX: &str = ".tmp";

/// `seg-0000000042.wlog`
pub fn segment_file_name(segment: u32) -> String {
    format!("{SEGMENT_PREFIX}{segment:010}{SEGMENT_SUFFIX}")
}

/// `spare-0000000007.wlog`: a prepared (zero-filled or recycled) file waiting to become a segment.
pub fn spare_file_name(number: u64) -> String {
    format!("{SPARE_PREFIX}{number:010}{SEGMENT_SUFFIX}")
}

pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    parse_numbered(name, SEGMENT_PREFIX, SEGMENT_SUFFIX, 10)?.try_into().ok()
}

pub fn parse_spare_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, SPARE_PREFIX, SEGMENT_SUFFIX, 10)
}

/// Parses `prefix` + exactly `digits` decimal digits + `suffix`.
pub(crate) fn parse_numbered(name: &str, prefix: &str, suffix: &str, digits: usize) -> Option<u64> {
    let number = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if number.len() != digits || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(lsn: Lsn, segment: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record_into(&mut out, lsn, segment, FIRST_USER_KIND, 3, payload);
        out
    }

    #[test]
    fn record_round_trips_with_padding() {
        for len in [0usize, 1, 7, 8, 9, 100, 4096] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let bytes = encoded(42, 7, &payload);
            assert_eq!(bytes.len(), record_span_bytes(len));
            assert_eq!(bytes.len() % RECORD_ALIGNMENT_BYTES, 0);
            let record = decode_record(&bytes, Some(42)).expect("valid record");
            assert_eq!(record.lsn, 42);
            assert_eq!(record.segment, 7);
            assert_eq!(record.kind, FIRST_USER_KIND);
            assert_eq!(record.version, 3);
            assert_eq!(record.payload, &payload[..]);
            assert_eq!(record.span_bytes, bytes.len());
        }
    }

    #[test]
    fn record_header_layout_is_as_documented() {
        let bytes = encoded(0x0102_0304_0506_0708, 0x0A0B_0C0D, b"xyz");
        assert_eq!(&bytes[4..8], &3u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[16..20], &0x0A0B_0C0Du32.to_le_bytes());
        assert_eq!(bytes[20], FIRST_USER_KIND);
        assert_eq!(bytes[21], 3);
        assert_eq!(&bytes[22..24], &[0, 0]);
        assert_eq!(&bytes[24..27], b"xyz");
        assert_eq!(&bytes[27..32], &[0; 5]);
        assert_eq!(&bytes[0..4], &crc32c::crc32c(&bytes[4..27]).to_le_bytes());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encoded(9, 1, b"hello, log");
        let covered = RECORD_HEADER_BYTES + 10;
        for bit in 0..covered * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&damaged, None).is_err(), "bit {bit} flip undetected");
        }
    }

    #[test]
    fn decode_rejects_each_defect() {
        let bytes = encoded(5, 2, b"abc");
        assert_eq!(
            decode_record(&bytes[..RECORD_HEADER_BYTES - 1], None),
            Err(RecordDecodeError::Truncated {
                needed_bytes: RECORD_HEADER_BYTES,
                available_bytes: RECORD_HEADER_BYTES - 1
            })
        );
        assert_eq!(
            decode_record(&bytes[..RECORD_HEADER_BYTES + 2], None),
            Err(RecordDecodeError::Truncated {
                needed_bytes: RECORD_HEADER_BYTES + 3,
                available_bytes: RECORD_HEADER_BYTES + 2
            })
        );
        assert_eq!(decode_record(&[0u8; 64], None), Err(RecordDecodeError::ZeroHeader));
        assert_eq!(decode_record(&bytes, Some(6)), Err(RecordDecodeError::LsnMismatch { found: 5, expected: 6 }));
        let mut flags = bytes.clone();
        flags[22] = 2;
        assert_eq!(decode_record(&flags, None), Err(RecordDecodeError::BadFlags { flags: 2 }));
        let mut zero_lsn = bytes.clone();
        zero_lsn[8..16].fill(0);
        assert_eq!(decode_record(&zero_lsn, None), Err(RecordDecodeError::ZeroLsn));
        let mut huge = bytes.clone();
        huge[4..8].copy_from_slice(&(MAX_FORMAT_PAYLOAD_BYTES + 1).to_le_bytes());
        assert_eq!(
            decode_record(&huge, None),
            Err(RecordDecodeError::LengthTooLarge { payload_len: MAX_FORMAT_PAYLOAD_BYTES + 1 })
        );
        let mut reserved = Vec::new();
        encode_record_into(&mut reserved, 1, 1, FIRST_USER_KIND - 1, 0, b"");
        assert_eq!(decode_record(&reserved, None), Err(RecordDecodeError::ReservedKind { kind: FIRST_USER_KIND - 1 }));
    }

    #[test]
    fn max_format_payload_is_decodable_boundary() {
        let mut header = encoded(1, 1, b"");
        header[4..8].copy_from_slice(&MAX_FORMAT_PAYLOAD_BYTES.to_le_bytes());
        assert!(matches!(decode_record(&header, None), Err(RecordDecodeError::Truncated { .. })));
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader { segment: 12, first_lsn: 1000, segment_size_bytes: 65536 };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        assert_eq!(SegmentHeader::decode(&bytes[..63]), Err(SegmentHeaderError::Short { file_bytes: 63 }));
        assert_eq!(SegmentHeader::decode(&[0u8; 64]), Err(SegmentHeaderError::Zero));
        for byte in 0..SEGMENT_HEADER_BYTES {
            let mut damaged = bytes;
            damaged[byte] ^= 0x40;
            assert!(SegmentHeader::decode(&damaged).is_err(), "byte {byte}");
        }
        let mut bad_magic = bytes;
        bad_magic[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bad_magic), Err(SegmentHeaderError::BadMagic));
    }

    #[test]
    fn segment_header_rejects_bad_fields_with_valid_crc() {
        let reseal = |mut bytes: [u8; SEGMENT_HEADER_BYTES]| {
            let crc = crc32c::crc32c(&bytes[..SEGMENT_HEADER_CRC_OFFSET]);
            bytes[SEGMENT_HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
            bytes
        };
        let good = SegmentHeader { segment: 1, first_lsn: 1, segment_size_bytes: 4096 }.encode();
        let mut version = good;
        version[8] = 2;
        assert_eq!(SegmentHeader::decode(&reseal(version)), Err(SegmentHeaderError::UnsupportedVersion { found: 2 }));
        let mut size = good;
        size[24..28].copy_from_slice(&4095u32.to_le_bytes());
        assert!(matches!(SegmentHeader::decode(&reseal(size)), Err(SegmentHeaderError::BadField { .. })));
        let mut lsn = good;
        lsn[16..24].fill(0);
        assert!(matches!(
            SegmentHeader::decode(&reseal(lsn)),
            Err(SegmentHeaderError::BadField { field: "first_lsn", .. })
        ));
    }

    #[test]
    fn file_names_round_trip_and_reject_lookalikes() {
        assert_eq!(segment_file_name(42), "seg-0000000042.wlog");
        assert_eq!(parse_segment_file_name("seg-0000000042.wlog"), Some(42));
        assert_eq!(parse_segment_file_name(&segment_file_name(u32::MAX)), Some(u32::MAX));
        assert_eq!(parse_segment_file_name("seg-9999999999.wlog"), None);
        assert_eq!(parse_segment_file_name("seg-42.wlog"), None);
        assert_eq!(parse_segment_file_name("seg-0000000042.wlog.tmp"), None);
        assert_eq!(parse_segment_file_name("seg-00000000-1.wlog"), None);
        assert_eq!(parse_spare_file_name(&spare_file_name(7)), Some(7));
        assert_eq!(parse_spare_file_name("seg-0000000007.wlog"), None);
    }
}

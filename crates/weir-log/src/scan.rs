//! Walking the record chain of one segment: used by recovery (`Log::open`) and by scrubbing
//! (`Log::verify_segment`).
//!
//! The chain rule: starting after the segment header with an expected LSN, the record at the
//! current offset is valid only if its crc verifies, it names this segment, and its LSN is the
//! expected one. Stale records left in a recycled file name an older segment (and carry older
//! LSNs), so they can never continue the chain.
//!
//! When the chain breaks, the rest of the segment is searched (at record alignment) for a valid
//! record of this segment with an LSN >= the expected one. Found: the break is *damage* in the
//! middle (reported, scanning resumes there). Not found: the break is the *end* of this
//! segment's data, classified as clean (zeros or stale bytes of another incarnation) or torn
//! (a header this segment wrote, whose record does not verify). Whether an end is acceptable
//! is decided by the caller, who knows whether later segments exist.
//!
//! In the newest segment (`tail_in_flight`), a break followed only by records of one batch —
//! no valid record after it carries `RECORD_FLAG_BATCH_START` — is the batch that was being
//! written when the process or machine stopped: its pieces reached the disk out of order and
//! none of it was confirmed. That is a torn end (covering everything up to the last of those
//! records), not damage. A valid batch start after the break proves the broken record was
//! synced before it (batches are written only after the previous commit's fsync): damage.

use crate::error::LogError;
use crate::format::{
    decode_record, DecodedRecord, RecordDecodeError, RecordHeader, RECORD_ALIGNMENT_BYTES, RECORD_FLAGS_KNOWN,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::report::{LsnRange, RecordDefect};
use crate::storage::StorageFile;
use crate::Lsn;

/// Bytes read from a segment at a time while scanning.
pub(crate) const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// A forward-moving read window over one file.
pub(crate) struct SegmentReader<'f, F: StorageFile> {
    file: &'f F,
    data_end: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'f, F: StorageFile> SegmentReader<'f, F> {
    pub(crate) fn new(file: &'f F, data_end: u64) -> Self {
        SegmentReader { file, data_end, buf: Vec::new(), buf_start: 0 }
    }

    /// The buffered bytes from `offset` on: at least `min_len` of them unless the data ends
    /// first.
    pub(crate) fn bytes_at(&mut self, offset: u64, min_len: usize) -> std::io::Result<&[u8]> {
        let want_end = offset.saturating_add(min_len as u64).min(self.data_end);
        let buf_end = self.buf_start + self.buf.len() as u64;
        if offset < self.buf_start || want_end > buf_end || offset > buf_end {
            let read_len = (min_len.max(SCAN_CHUNK_BYTES) as u64).min(self.data_end.saturating_sub(offset));
            self.buf.resize(read_len as usize, 0);
            self.file.read_at(offset, &mut self.buf)?;
            self.buf_start = offset;
        }
        let start = (offset - self.buf_start) as usize;
        Ok(&self.buf[start.min(self.buf.len())..])
    }
}

/// A stretch of damage inside a segment, after which valid records resumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Damage {
    pub offset: u64,
    pub resume_offset: u64,
    pub lsn_lost: Option<LsnRange>,
    pub defect: RecordDefect,
}

/// How a segment's records end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SegmentEnd {
    /// Zeros, stale bytes of an older incarnation, or no room left.
    Clean,
    /// A record header this segment wrote whose record does not verify, with nothing valid
    /// after it. `bytes` is how far the damaged record claims to reach (clamped to the data).
    Torn { bytes: u64, defect: RecordDefect },
}

#[derive(Clone, Debug)]
pub(crate) struct ScanSummary {
    /// LSN after the last valid record.
    pub next_lsn: Lsn,
    /// Offset after the last valid record (where appends continue).
    pub end_offset: u64,
    pub end: SegmentEnd,
    pub damage: Vec<Damage>,
}

/// The check the chain walk applies to one offset. Header-level mismatches (another segment,
/// another LSN) are decided from the header alone, so garbage never makes us read its payload.
fn check_record(bytes: &[u8], segment: u32, expected: Lsn) -> Result<DecodedRecord<'_>, RecordDefect> {
    if let Some(header) = RecordHeader::peek(bytes) {
        let all_zero = bytes[..RECORD_HEADER_BYTES].iter().all(|&byte| byte == 0);
        if !all_zero && header.segment != segment {
            return Err(RecordDefect::ForeignSegment { found: header.segment });
        }
    }
    decode_record(bytes, Some(expected)).map_err(|error| match error {
        RecordDecodeError::LsnMismatch { found, expected } => RecordDefect::UnexpectedLsn { found, expected },
        other => RecordDefect::Decode(other),
    })
}

/// Bytes to read at `offset`: the whole record only when its header claims to be the one the
/// chain expects; otherwise the header is enough to reject it. Clamped to the data.
fn wanted_bytes(header: Option<RecordHeader>, segment: u32, expected: Lsn, offset: u64, data_end: u64) -> usize {
    let room = data_end.saturating_sub(offset);
    match header {
        Some(header) if header.segment == segment && header.lsn == expected => {
            (header.record_bytes() as u64).min(room) as usize
        }
        _ => (RECORD_HEADER_BYTES as u64).min(room) as usize,
    }
}

/// The chain check at `at` for the record with `lsn`: its header (if the bytes hold one) and
/// the record or why it is not the expected one. The caller checked that a header fits.
fn record_at<'r, F: StorageFile>(
    reader: &'r mut SegmentReader<'_, F>,
    segment: u32,
    at: u64,
    lsn: Lsn,
) -> std::io::Result<(Option<RecordHeader>, Result<DecodedRecord<'r>, RecordDefect>)> {
    let header = RecordHeader::peek(reader.bytes_at(at, RECORD_HEADER_BYTES)?);
    let data_end = reader.data_end;
    let bytes = reader.bytes_at(at, wanted_bytes(header, segment, lsn, at, data_end))?;
    Ok((header, check_record(bytes, segment, lsn)))
}

/// Walks the chain of `segment` from the first record slot, calling `on_record` for every
/// valid record with its offset. `data_end` bounds the scan (the segment size).
pub(crate) fn scan_segment<F: StorageFile>(
    file: &F,
    segment: u32,
    data_end: u64,
    first_expected: Lsn,
    tail_in_flight: bool,
    on_record: &mut dyn FnMut(DecodedRecord<'_>, u64) -> Result<(), LogError>,
) -> Result<ScanSummary, LogError> {
    let io_error = |source| LogError::from_io("scanning segment", &crate::format::segment_file_name(segment), source);
    let mut reader = SegmentReader::new(file, data_end);
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let mut expected = first_expected;
    let mut damage = Vec::new();
    loop {
        if offset + RECORD_HEADER_BYTES as u64 > data_end {
            return Ok(ScanSummary { next_lsn: expected, end_offset: offset, end: SegmentEnd::Clean, damage });
        }
        let (header, checked) = record_at(&mut reader, segment, offset, expected).map_err(io_error)?;
        let defect = match checked {
            Ok(record) => {
                on_record(record, offset)?;
                offset += record.span_bytes as u64;
                expected += 1;
                continue;
            }
            Err(defect) => defect,
        };
        let hint = header.filter(|h| h.segment == segment).map(|h| offset + h.span_bytes() as u64);
        match find_resync(&mut reader, segment, offset, expected, hint).map_err(io_error)? {
            Some((resume_offset, resume_lsn)) => {
                if tail_in_flight {
                    if let Some(tail_end) =
                        unfinished_batch_end(&mut reader, segment, resume_offset, resume_lsn).map_err(io_error)?
                    {
                        let end = SegmentEnd::Torn { bytes: tail_end - offset, defect };
                        return Ok(ScanSummary { next_lsn: expected, end_offset: offset, end, damage });
                    }
                }
                let lsn_lost = (resume_lsn > expected).then(|| LsnRange { first: expected, last: resume_lsn - 1 });
                damage.push(Damage { offset, resume_offset, lsn_lost, defect });
                offset = resume_offset;
                expected = resume_lsn;
            }
            None => {
                let end = match header {
                    Some(h)
                        if h.segment == segment && defect != RecordDefect::Decode(RecordDecodeError::ZeroHeader) =>
                    {
                        let claimed = if (h.record_bytes() as u64) <= data_end - offset {
                            h.span_bytes() as u64
                        } else {
                            RECORD_HEADER_BYTES as u64
                        };
                        SegmentEnd::Torn { bytes: claimed.min(data_end - offset), defect }
                    }
                    _ => SegmentEnd::Clean,
                };
                return Ok(ScanSummary { next_lsn: expected, end_offset: offset, end, damage });
            }
        }
    }
}

/// Walks the records that follow a break (from the resynchronised `at`, `lsn`), across further
/// breaks, to the end of the segment's data. `Some(end)` — the offset after the last valid
/// record — when none of them starts a batch (they are all the tail of the batch the break is
/// in); `None` when one does (the break was in data synced before that batch was written).
fn unfinished_batch_end<F: StorageFile>(
    reader: &mut SegmentReader<'_, F>,
    segment: u32,
    mut at: u64,
    mut lsn: Lsn,
) -> std::io::Result<Option<u64>> {
    let data_end = reader.data_end;
    let mut end = at;
    loop {
        if at + RECORD_HEADER_BYTES as u64 <= data_end {
            if let (_, Ok(record)) = record_at(reader, segment, at, lsn)? {
                if record.batch_start {
                    return Ok(None);
                }
                at += record.span_bytes as u64;
                end = at;
                lsn += 1;
                continue;
            }
        }
        match find_resync(reader, segment, at, lsn, None)? {
            Some((next_at, next_lsn)) => (at, lsn) = (next_at, next_lsn),
            None => return Ok(Some(end)),
        }
    }
}

/// Searches forward from `from` for a valid record of `segment` with LSN >= `expected`; tries
/// the damaged record's own claimed end (`hint`) first. Returns its offset and LSN.
fn find_resync<F: StorageFile>(
    reader: &mut SegmentReader<'_, F>,
    segment: u32,
    from: u64,
    expected: Lsn,
    hint: Option<u64>,
) -> std::io::Result<Option<(u64, Lsn)>> {
    let data_end = reader.data_end;
    let is_candidate = |reader: &mut SegmentReader<'_, F>, at: u64| -> std::io::Result<Option<Lsn>> {
        if at + RECORD_HEADER_BYTES as u64 > data_end {
            return Ok(None);
        }
        let Some(header) = RecordHeader::peek(reader.bytes_at(at, RECORD_HEADER_BYTES)?) else {
            return Ok(None);
        };
        // Cheap filters before paying for a crc over the payload.
        if header.segment != segment || header.lsn < expected || header.flags & !RECORD_FLAGS_KNOWN != 0 {
            return Ok(None);
        }
        if header.record_bytes() as u64 > data_end - at {
            return Ok(None);
        }
        let bytes = reader.bytes_at(at, header.record_bytes())?;
        Ok(match decode_record(bytes, None) {
            Ok(record) if record.segment == segment && record.lsn >= expected => Some(record.lsn),
            _ => None,
        })
    };
    if let Some(at) = hint.filter(|&at| at > from && at % RECORD_ALIGNMENT_BYTES as u64 == 0) {
        if let Some(lsn) = is_candidate(reader, at)? {
            return Ok(Some((at, lsn)));
        }
    }
    let mut at = from + RECORD_ALIGNMENT_BYTES as u64;
    while at + RECORD_HEADER_BYTES as u64 <= data_end {
        if let Some(lsn) = is_candidate(reader, at)? {
            return Ok(Some((at, lsn)));
        }
        at += RECORD_ALIGNMENT_BYTES as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{encode_record_into, SegmentHeader, FIRST_USER_KIND};
    use crate::sim::SimStorage;
    use crate::storage::Storage;

    const SIZE: u64 = 8192;

    /// A segment file with records `first..first+count` of `payload_len` bytes; returns their
    /// offsets.
    fn build(storage: &SimStorage, segment: u32, first: Lsn, count: u64, payload_len: usize) -> Vec<u64> {
        let header = SegmentHeader { segment, first_lsn: first, segment_size_bytes: SIZE as u32 };
        let mut bytes = header.encode().to_vec();
        let mut offsets = Vec::new();
        for lsn in first..first + count {
            offsets.push(bytes.len() as u64);
            encode_record_into(&mut bytes, lsn, segment, FIRST_USER_KIND, 0, &vec![lsn as u8; payload_len]);
        }
        bytes.resize(SIZE as usize, 0);
        storage.write_durable("s", 0, &bytes);
        offsets
    }

    fn scan(storage: &SimStorage, segment: u32, first: Lsn) -> (ScanSummary, Vec<Lsn>) {
        let file = storage.open("s").expect("open");
        let mut seen = Vec::new();
        let summary = scan_segment(&file, segment, SIZE, first, false, &mut |record, _| {
            seen.push(record.lsn);
            Ok(())
        })
        .expect("scan");
        (summary, seen)
    }

    #[test]
    fn clean_segment_ends_cleanly() {
        let storage = SimStorage::new();
        let offsets = build(&storage, 1, 10, 5, 20);
        let (summary, seen) = scan(&storage, 1, 10);
        assert_eq!(seen, vec![10, 11, 12, 13, 14]);
        assert_eq!(summary.end, SegmentEnd::Clean);
        assert_eq!(summary.end_offset, offsets[4] + 48);
        assert!(summary.damage.is_empty());
    }

    #[test]
    fn damaged_middle_record_resyncs() {
        let storage = SimStorage::new();
        let offsets = build(&storage, 1, 10, 5, 20);
        storage.corrupt_byte("s", offsets[2] + 30, 0xFF).expect("corrupt");
        let (summary, seen) = scan(&storage, 1, 10);
        assert_eq!(seen, vec![10, 11, 13, 14]);
        assert_eq!(summary.damage.len(), 1);
        assert_eq!(summary.damage[0].offset, offsets[2]);
        assert_eq!(summary.damage[0].resume_offset, offsets[3]);
        assert_eq!(summary.damage[0].lsn_lost, Some(LsnRange { first: 12, last: 12 }));
    }

    #[test]
    fn damaged_length_field_still_resyncs_by_scanning() {
        let storage = SimStorage::new();
        let offsets = build(&storage, 1, 10, 5, 20);
        storage.corrupt_byte("s", offsets[1] + 5, 0x10).expect("corrupt length");
        let (summary, seen) = scan(&storage, 1, 10);
        assert_eq!(seen, vec![10, 12, 13, 14]);
        assert_eq!(summary.damage[0].resume_offset, offsets[2]);
    }

    #[test]
    fn damaged_last_record_is_a_torn_end() {
        let storage = SimStorage::new();
        let offsets = build(&storage, 1, 10, 5, 20);
        storage.corrupt_byte("s", offsets[4] + 30, 0x01).expect("corrupt");
        let (summary, seen) = scan(&storage, 1, 10);
        assert_eq!(seen, vec![10, 11, 12, 13]);
        assert_eq!(summary.end_offset, offsets[4]);
        assert!(matches!(summary.end, SegmentEnd::Torn { bytes: 48, .. }), "{:?}", summary.end);
    }

    #[test]
    fn stale_records_of_another_segment_end_cleanly() {
        let storage = SimStorage::new();
        build(&storage, 1, 10, 8, 20);
        // Recycle: a new header and two records for segment 2 over the stale ones.
        let mut fresh = SegmentHeader { segment: 2, first_lsn: 100, segment_size_bytes: SIZE as u32 }.encode().to_vec();
        encode_record_into(&mut fresh, 100, 2, FIRST_USER_KIND, 0, &[7u8; 20]);
        encode_record_into(&mut fresh, 101, 2, FIRST_USER_KIND, 0, &[7u8; 20]);
        storage.write_durable("s", 0, &fresh);
        let (summary, seen) = scan(&storage, 2, 100);
        assert_eq!(seen, vec![100, 101]);
        assert_eq!(summary.end, SegmentEnd::Clean);
        assert!(summary.damage.is_empty());
    }
}

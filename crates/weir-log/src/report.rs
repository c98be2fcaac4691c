//! What recovery and scrubbing found, in a form both the engine (typed fields) and a human
//! operator (`Display`) can act on.
//!
//! Invariant: every byte range recovery skipped or dropped appears here with its segment, file
//! name and byte offset; nothing is dropped silently.

use std::fmt;

use crate::format::{RecordDecodeError, SegmentHeaderError};
use crate::Lsn;

/// An inclusive range of LSNs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LsnRange {
    pub first: Lsn,
    pub last: Lsn,
}

impl LsnRange {
    /// Number of LSNs in the range.
    pub fn count(&self) -> u64 {
        self.last - self.first + 1
    }
}

impl fmt::Display for LsnRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "LSN {}", self.first)
        } else {
            write!(f, "LSNs {}..={}", self.first, self.last)
        }
    }
}

/// Why one record position did not hold the expected record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordDefect {
    /// The bytes did not decode (see the decode error).
    Decode(RecordDecodeError),
    /// A record with a valid crc that belongs to another segment (stale data of a recycled file).
    ForeignSegment { found: u32 },
    /// A record with a valid crc whose LSN is not the next one.
    UnexpectedLsn { found: Lsn, expected: Lsn },
}

impl fmt::Display for RecordDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordDefect::Decode(error) => write!(f, "{error}"),
            RecordDefect::ForeignSegment { found } => {
                write!(f, "record belongs to segment {found}")
            }
            RecordDefect::UnexpectedLsn { found, expected } => {
                write!(f, "record has LSN {found}, expected LSN {expected}")
            }
        }
    }
}

/// What kind of damage a `Corruption` describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorruptionKind {
    /// A damaged record with valid records after it; recovery resynchronised after it.
    BadRecord(RecordDefect),
    /// The LSN chain jumps between this segment's last valid record and the next segment.
    LsnGap { next_segment: Option<u32>, next_first_lsn: Lsn },
    /// The segment header does not decode.
    BadSegmentHeader(SegmentHeaderError),
    /// The header names another segment id than the file name.
    SegmentIdMismatch { header_segment: u32 },
    /// The file is shorter or longer than its header says.
    SegmentLengthMismatch { file_bytes: u64, header_bytes: u64 },
    /// The segment's first LSN is lower than the previous segment's last LSN + 1.
    SegmentOverlap { first_lsn: Lsn, expected_lsn: Lsn },
    /// A checkpoint covers LSNs the log no longer holds (durable records were lost).
    LogEndsBeforeCheckpoint { log_end_lsn: Lsn, checkpoint_lsn: Lsn },
    /// Scrub: the segment's valid records end before the segment was known to end.
    TruncatedSegment { expected_last_lsn: Lsn, found_last_lsn: Lsn },
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionKind::BadRecord(defect) => write!(f, "damaged record ({defect})"),
            CorruptionKind::LsnGap { next_segment: Some(next), next_first_lsn } => {
                write!(f, "LSN chain breaks; next segment {next} starts at LSN {next_first_lsn}")
            }
            CorruptionKind::LsnGap { next_segment: None, next_first_lsn } => {
                write!(f, "LSN chain breaks; next valid LSN is {next_first_lsn}")
            }
            CorruptionKind::BadSegmentHeader(error) => write!(f, "bad segment header ({error})"),
            CorruptionKind::SegmentIdMismatch { header_segment } => {
                write!(f, "segment header names segment {header_segment}")
            }
            CorruptionKind::SegmentLengthMismatch { file_bytes, header_bytes } => {
                write!(f, "file is {file_bytes} bytes but its header says {header_bytes}")
            }
            CorruptionKind::SegmentOverlap { first_lsn, expected_lsn } => {
                write!(f, "segment starts at LSN {first_lsn} but LSN {expected_lsn} was expected")
            }
            CorruptionKind::LogEndsBeforeCheckpoint { log_end_lsn, checkpoint_lsn } => {
                write!(f, "log ends at LSN {log_end_lsn} but the checkpoint covers LSN {checkpoint_lsn}")
            }
            CorruptionKind::TruncatedSegment { expected_last_lsn, found_last_lsn } => {
                write!(f, "valid records end at LSN {found_last_lsn}, segment should end at LSN {expected_last_lsn}")
            }
        }
    }
}

/// One damaged place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub segment: u32,
    pub file_name: String,
    /// Byte offset in the file where the damage starts.
    pub offset: u64,
    /// Bytes skipped from `offset` before the next valid record (0 when unknown or none).
    pub bytes_skipped: u64,
    /// LSNs whose records are lost, when known.
    pub lsn_lost: Option<LsnRange>,
    pub kind: CorruptionKind,
}

impl Corruption {
    /// One line for logs and operator output.
    pub fn description(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {} ({}) at byte {}: {}", self.segment, self.file_name, self.offset, self.kind)?;
        if self.bytes_skipped > 0 {
            write!(f, "; {} bytes skipped", self.bytes_skipped)?;
        }
        match self.lsn_lost {
            Some(range) => write!(f, "; {range} lost ({} records)", range.count()),
            None => write!(f, "; no LSN lost as far as known"),
        }
    }
}

/// The end of the newest segment, dropped by recovery: a partially written record, or the
/// pieces of the last batch after a break. A crash can only tear data that was never confirmed
/// durable; damage inside the last confirmed batch cannot be told from that and is reported
/// here too (docs/RECOVERY.md, rule 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: u32,
    pub file_name: String,
    /// Offset of the torn record; appends continue here.
    pub offset: u64,
    /// Bytes zeroed from `offset` on.
    pub bytes_dropped: u64,
    /// The LSN the torn record carried (the next LSN to be appended).
    pub lsn: Lsn,
    pub defect: RecordDefect,
}

/// Everything `Log::open` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The checkpoint LSN recovery replayed after.
    pub replay_after: Lsn,
    pub torn_tail: Option<TornTail>,
    pub corruptions: Vec<Corruption>,
    pub records_replayed: u64,
    /// Segments whose records were read and checked.
    pub segments_scanned: u32,
    /// Sealed segments wholly at or before the checkpoint, not scanned (scrub them later).
    pub segments_skipped: u32,
    /// Newest segment files whose header was never written (an interrupted rollover), turned
    /// back into spares.
    pub segments_reclaimed: u32,
    /// Leftover temporary or wrongly sized spare files removed.
    pub stale_files_removed: u32,
    /// The last LSN in the log after recovery; the next append gets `last_lsn + 1`.
    pub last_lsn: Lsn,
}

impl RecoveryReport {
    /// True when nothing was damaged (a torn tail alone is normal after a crash).
    pub fn is_clean(&self) -> bool {
        self.corruptions.is_empty()
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "log recovery: replayed {} records after LSN {}; log ends at LSN {}",
            self.records_replayed, self.replay_after, self.last_lsn
        )?;
        writeln!(
            f,
            "  segments: {} scanned, {} skipped (covered by checkpoint), {} reclaimed; {} stale files removed",
            self.segments_scanned, self.segments_skipped, self.segments_reclaimed, self.stale_files_removed
        )?;
        match &self.torn_tail {
            Some(torn) => writeln!(
                f,
                "  torn tail: segment {} ({}) at byte {}: {} bytes of unconfirmed LSN {} dropped ({})",
                torn.segment, torn.file_name, torn.offset, torn.bytes_dropped, torn.lsn, torn.defect
            )?,
            None => writeln!(f, "  torn tail: none")?,
        }
        if self.corruptions.is_empty() {
            write!(f, "  corruption: none")
        } else {
            write!(f, "  CORRUPTION: {} damaged places", self.corruptions.len())?;
            for corruption in &self.corruptions {
                write!(f, "\n    - {corruption}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_display_names_location_and_lost_lsns() {
        let report = RecoveryReport {
            corruptions: vec![Corruption {
                segment: 3,
                file_name: "seg-0000000003.wlog".into(),
                offset: 4096,
                bytes_skipped: 128,
                lsn_lost: Some(LsnRange { first: 17, last: 19 }),
                kind: CorruptionKind::BadRecord(RecordDefect::Decode(RecordDecodeError::BadCrc {
                    stored: 1,
                    computed: 2,
                })),
            }],
            ..RecoveryReport::default()
        };
        let text = report.to_string();
        assert!(text.contains("seg-0000000003.wlog"), "{text}");
        assert!(text.contains("at byte 4096"), "{text}");
        assert!(text.contains("LSNs 17..=19 lost (3 records)"), "{text}");
        assert!(!report.is_clean());
    }
}

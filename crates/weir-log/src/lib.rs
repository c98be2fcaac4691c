//! weir-log: the durable, segmented, append-only log under the Weir broker.
//!
//! The engine appends records (opaque bytes with a kind and a version) in batches and calls
//! [`Log::commit`] once per batch: one write per touched segment and one fdatasync per touched
//! segment, no timer (group commit). Nothing may be confirmed to a client before `commit`
//! returns `Ok`. Records are read back by position ([`RecordPos`]) with pread, so the engine
//! keeps only a small index in memory. Segments are fixed-size preallocated files, recycled
//! once the engine releases them. Checkpoints bound recovery time.
//!
//! Guarantees (each one tested, see docs/RECOVERY.md):
//! - Every record whose `commit` returned `Ok` is replayed by the next [`Log::open`] exactly
//!   once, in LSN order, with identical bytes (unless the disk later damaged it, which is then
//!   reported as [`Corruption`] with its location — with one exception: damage inside the
//!   *last* committed batch of the newest segment looks exactly like that batch torn by a
//!   crash, and is dropped as a torn tail, as the end of a write-ahead log is in PostgreSQL).
//! - Only the end of the newest segment is ever dropped: a torn record, or the torn pieces of
//!   the last batch (docs/RECOVERY.md rows 4 and 4b); the drop is reported in
//!   [`RecoveryReport::torn_tail`] with its offset, first LSN and bytes.
//! - A failed write or fsync poisons the log for ever: it never retries, never confirms.
//! - LSNs start at 1, grow by one per record and are never reused.
//!
//! The disk is behind the [`Storage`] trait: [`FileStorage`] is the real directory,
//! [`SimStorage`] the simulated twin with crash images and fault injection. The on-disk format
//! is in docs/FORMAT.md. This crate is our own code, not a dependency, because the log is the
//! product's safety core.

#![deny(unsafe_code)]

mod checkpoint;
mod config;
mod error;
mod format;
mod log;
mod recovery;
mod report;
mod scan;
mod sim;
mod spares;
mod storage;

pub use checkpoint::{
    checkpoint_file_name, load_checkpoint, load_checkpoint_detailed, write_checkpoint, Checkpoint, CheckpointDefect,
    CheckpointLoad, CheckpointRejection, CHECKPOINTS_KEPT, CHECKPOINT_FORMAT_VERSION, CHECKPOINT_HEADER_BYTES,
    CHECKPOINT_MAGIC, MAX_CHECKPOINT_BYTES,
};
pub use config::{
    LogConfig, DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_SIZE_BYTES, DEFAULT_SPARE_SEGMENTS,
    DEFAULT_WRITE_BEHIND_BYTES, MAX_SEGMENT_SIZE_BYTES, MAX_SPARE_SEGMENTS, MIN_SEGMENT_SIZE_BYTES,
    SEGMENT_SIZE_GRANULE_BYTES,
};
pub use error::{LogError, ReplayError};
pub use format::{
    align_up, decode_record, encode_record_into, encode_record_with_flags, parse_segment_file_name, record_span_bytes,
    segment_file_name, DecodedRecord, RecordDecodeError, RecordHeader, SegmentHeader, SegmentHeaderError,
    FIRST_USER_KIND, FORMAT_VERSION, MAX_FORMAT_PAYLOAD_BYTES, RECORD_ALIGNMENT_BYTES, RECORD_FLAGS_KNOWN,
    RECORD_FLAG_BATCH_START, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
};
pub use log::{Log, SegmentScrubber};
pub use recovery::ReplayFn;
pub use report::{Corruption, CorruptionKind, LsnRange, RecordDefect, RecoveryReport, TornTail};
pub use sim::{SimFile, SimStats, SimStorage, SIM_SECTOR_BYTES};
pub use storage::{FileStorage, FileStorageFile, Storage, StorageFile, LOCK_FILE_NAME};

/// Log sequence number: the first record is 1, +1 per record, never reused.
pub type Lsn = u64;

/// Where a record lives: segment id and byte offset of its header in the segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordPos {
    pub segment: u32,
    pub offset: u32,
}

/// A record during replay; `payload` borrows from the recovery read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub lsn: Lsn,
    pub kind: u8,
    pub version: u8,
    pub pos: RecordPos,
    pub payload: &'a [u8],
}

/// A record read back by position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    pub kind: u8,
    pub version: u8,
    pub pos: RecordPos,
    pub payload: Vec<u8>,
}

/// One segment as the log sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub id: u32,
    pub first_lsn: Lsn,
    /// `first_lsn - 1` while empty. For a segment recovery did not scan (covered by the
    /// checkpoint) whose successor was released, an upper bound.
    pub last_lsn: Lsn,
    pub size_bytes: u64,
    pub active: bool,
}

impl<S: Storage> Log<S> {
    /// Scans the log, truncates a torn tail, reports corruption, and calls `on_record` for every
    /// valid record with `lsn > replay_after`, in LSN order. Returns the open log, ready to
    /// append at the next LSN, and what recovery found.
    pub fn open(
        storage: S,
        config: LogConfig,
        replay_after: Lsn,
        on_record: &mut dyn FnMut(RecordView<'_>) -> Result<(), ReplayError>,
    ) -> Result<(Log<S>, RecoveryReport), LogError> {
        recovery::open(storage, config, replay_after, on_record)
    }
}

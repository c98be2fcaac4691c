//! The running log: append into a write buffer, commit with one write per segment range and one
//! fdatasync per touched segment, read records back by position, recycle released segments.
//!
//! Invariants:
//! - LSNs are dense: every append gets `last_lsn + 1`; `durable_lsn <= last_lsn`.
//! - Records never span segments; a segment's records are contiguous from its header on.
//! - `pending` holds, in segment order, the bytes appended since the last commit: one range
//!   per touched segment, each contiguous from that segment's durable end. A segment activated
//!   in this batch has its header at the start of its range, so header and first records are
//!   one write.
//! - `commit` writes and syncs the ranges strictly in order and syncs a segment before writing
//!   the next one, so after a crash a later segment never holds data while an earlier one lacks
//!   synced data: a break in the chain followed by valid records is always real damage.
//! - Write-behind: once the first pending range holds `config.write_behind_bytes`, `append` writes it
//!   to its file (no fsync) and empties the buffer, so a large batch streams through a buffer
//!   that stays in the CPU cache instead of being copied whole into memory first. Only the first
//!   range is written behind — a later segment's range waits for `commit`, which syncs the
//!   earlier segment first — so the ordering above still holds. Records written behind are not
//!   durable (or confirmed) until `commit` returns, exactly like the rest of the batch; a crash
//!   may leave a prefix of them, which the crash model allows for any in-flight batch.
//! - Any failure inside `commit` poisons the log for ever; nothing is ever retried. A failed
//!   write-behind is kept and reported by the next `commit`, which poisons.
//! - Preparing a segment (spare file creation, zero fill) happens outside the durable chain:
//!   failing there returns an error (`NoSpace` for a full disk) without poisoning.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::LogConfig;
use crate::error::LogError;
use crate::format::{
    decode_record, encode_record_with_flags, record_span_bytes, segment_file_name, SegmentHeader, FIRST_USER_KIND,
    RECORD_ALIGNMENT_BYTES, RECORD_FLAG_BATCH_START, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::report::{Corruption, CorruptionKind, RecordDefect};
use crate::scan::{scan_segment, SegmentEnd};
use crate::spares::{SpareFile, SparePool};
use crate::storage::{Storage, StorageFile};
use crate::{Lsn, Record, RecordPos, SegmentInfo};

/// `read` fetches this much in its first pread, so small records need one system call.
pub(crate) const READ_AHEAD_BYTES: usize = 4096;
/// Write buffers kept for reuse between commits.
const BUFFER_POOL_MAX: usize = 4;

/// One segment the log knows about.
pub(crate) struct SegmentSlot<F> {
    pub id: u32,
    pub file_name: String,
    pub file: Arc<F>,
    pub first_lsn: Lsn,
    /// `first_lsn - 1` while empty. An upper bound (`last_lsn_exact == false`) for a segment
    /// recovery did not scan and whose successor was released.
    pub last_lsn: Lsn,
    pub last_lsn_exact: bool,
    pub size_bytes: u64,
    /// Offset after the last record (appends continue here in the active segment).
    pub write_offset: u64,
    /// Set while the segment was activated in the current batch: the spare file to rename.
    pub activation_from: Option<String>,
}

/// Bytes appended to one segment since the last commit.
struct PendingRange {
    segment: u32,
    start: u64,
    bytes: Vec<u8>,
}

/// The durable, segmented, append-only log. See the crate docs.
pub struct Log<S: Storage> {
    pub(crate) storage: S,
    pub(crate) config: LogConfig,
    pub(crate) segments: BTreeMap<u32, SegmentSlot<S::File>>,
    pub(crate) active: Option<u32>,
    spares: SparePool<S::File>,
    next_segment_id: u32,
    pending: Vec<PendingRange>,
    buffer_pool: Vec<Vec<u8>>,
    pub(crate) last_lsn: Lsn,
    durable_lsn: Lsn,
    /// Set when the active segment must not receive more records (recovery found its header
    /// damaged, or the LSN chain had to jump).
    pub(crate) force_rollover: bool,
    /// A write-behind that failed in this batch; the next `commit` reports it and poisons.
    write_behind_error: Option<LogError>,
    /// Pieces written behind since open (for tests and metrics).
    write_behinds: u64,
    /// Bytes of the current batch already written behind (they count for spare pacing).
    written_behind_bytes: u64,
    poisoned: Option<String>,
}

impl<S: Storage> Log<S> {
    /// Assembles a log from recovered state (used by `recovery.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        storage: S,
        config: LogConfig,
        segments: BTreeMap<u32, SegmentSlot<S::File>>,
        active: Option<u32>,
        spares: SparePool<S::File>,
        next_segment_id: u32,
        last_lsn: Lsn,
        force_rollover: bool,
    ) -> Log<S> {
        Log {
            storage,
            config,
            segments,
            active,
            spares,
            next_segment_id,
            pending: Vec::new(),
            buffer_pool: Vec::new(),
            last_lsn,
            durable_lsn: last_lsn,
            force_rollover,
            write_behind_error: None,
            write_behinds: 0,
            written_behind_bytes: 0,
            poisoned: None,
        }
    }

    /// Buffers one record; it becomes durable at the next successful `commit`. Rolls over to
    /// a new segment when the record does not fit in the active one.
    pub fn append(&mut self, kind: u8, version: u8, payload: &[u8]) -> Result<(Lsn, RecordPos), LogError> {
        self.check_not_poisoned()?;
        if kind < FIRST_USER_KIND {
            return Err(LogError::ReservedKind { kind });
        }
        if payload.len() > self.config.max_record_bytes as usize {
            return Err(LogError::RecordTooLarge { len_bytes: payload.len(), max_bytes: self.config.max_record_bytes });
        }
        let lsn = self.last_lsn.checked_add(1).ok_or(LogError::Exhausted { what: "LSN space" })?;
        let span = record_span_bytes(payload.len()) as u64;
        let flags = if self.pending.is_empty() { RECORD_FLAG_BATCH_START } else { 0 };
        let fits = self
            .active
            .and_then(|id| self.segments.get(&id))
            .is_some_and(|slot| slot.write_offset + span <= slot.size_bytes);
        if !fits || self.force_rollover {
            self.roll_over()?;
        }
        let segment = self.active.expect("roll_over leaves an active segment");
        let slot = self.segments.get_mut(&segment).expect("active segment is known");
        let offset = slot.write_offset;
        let needs_range = self.pending.last().is_none_or(|range| range.segment != segment);
        if needs_range {
            let bytes = self.buffer_pool.pop().unwrap_or_default();
            self.pending.push(PendingRange { segment, start: offset, bytes });
        }
        let range = self.pending.last_mut().expect("just ensured");
        assert_eq!(range.start + range.bytes.len() as u64, offset, "pending range is contiguous");
        let written = encode_record_with_flags(&mut range.bytes, lsn, segment, kind, version, flags, payload);
        assert_eq!(written as u64, span);
        let buffered = range.bytes.len();
        slot.write_offset += span;
        slot.last_lsn = lsn;
        self.last_lsn = lsn;
        if self.pending.len() == 1 && buffered >= self.config.write_behind_bytes && self.write_behind_error.is_none() {
            self.write_behind();
        }
        let offset = u32::try_from(offset).expect("segment offsets fit in u32 (MAX_SEGMENT_SIZE_BYTES)");
        Ok((lsn, RecordPos { segment, offset }))
    }

    /// Writes the (single) pending range to its file without syncing and empties its buffer.
    /// A failure is kept for `commit`, and the bytes stay buffered.
    fn write_behind(&mut self) {
        let range = &mut self.pending[0];
        let slot = self.segments.get_mut(&range.segment).expect("pending ranges name known segments");
        match write_range(&self.storage, slot, range) {
            Ok(()) => {
                // Let the device work on this piece while the next one is encoded.
                slot.file.start_writeback(range.start, range.bytes.len() as u64);
                range.start += range.bytes.len() as u64;
                self.written_behind_bytes += range.bytes.len() as u64;
                range.bytes.clear();
                self.write_behinds += 1;
            }
            Err(error) => self.write_behind_error = Some(error),
        }
    }

    /// Writes everything buffered and makes it durable: per touched segment one write and one
    /// fdatasync (plus a rename and a directory fsync for a segment activated in this batch).
    /// On any failure the log is poisoned for ever.
    pub fn commit(&mut self) -> Result<(), LogError> {
        self.check_not_poisoned()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.write_pending() {
            let cause = error.to_string();
            tracing::error!(%cause, last_lsn = self.last_lsn, durable_lsn = self.durable_lsn, "log commit failed; the log is poisoned");
            self.poisoned = Some(cause);
            return Err(error);
        }
        self.durable_lsn = self.last_lsn;
        let mut committed_bytes = std::mem::take(&mut self.written_behind_bytes);
        for mut range in self.pending.drain(..) {
            committed_bytes += range.bytes.len() as u64;
            if self.buffer_pool.len() < BUFFER_POOL_MAX {
                range.bytes.clear();
                self.buffer_pool.push(range.bytes);
            }
        }
        // The batch is durable whatever happens here: this only moves the zero-filling of the
        // next spare forward a step, so no single commit pays for a whole segment.
        self.spares.advance_after_commit(
            &self.storage,
            self.config.segment_size_bytes.into(),
            self.config.spare_segments,
            committed_bytes,
        );
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), LogError> {
        if let Some(error) = self.write_behind_error.take() {
            return Err(error);
        }
        for range in &self.pending {
            let slot = self.segments.get_mut(&range.segment).expect("pending ranges name known segments");
            write_range(&self.storage, slot, range)?;
            slot.file.sync_data().map_err(|source| LogError::Io {
                op: "syncing records",
                file: slot.file_name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Seals the active segment (if any) and activates a spare as the next segment.
    fn roll_over(&mut self) -> Result<(), LogError> {
        let spare = self.spares.take(&self.storage, self.config.segment_size_bytes.into())?;
        let id = self.next_segment_id;
        self.next_segment_id = id.checked_add(1).ok_or(LogError::Exhausted { what: "segment ids" })?;
        let first_lsn = self.last_lsn + 1;
        let size_bytes = self.config.segment_size_bytes;
        if let Some(old) = self.active.and_then(|old| self.segments.get_mut(&old)) {
            old.last_lsn_exact = true;
        }
        let header = SegmentHeader { segment: id, first_lsn, segment_size_bytes: size_bytes };
        let mut bytes = self.buffer_pool.pop().unwrap_or_default();
        bytes.extend_from_slice(&header.encode());
        self.pending.push(PendingRange { segment: id, start: 0, bytes });
        self.segments.insert(
            id,
            SegmentSlot {
                id,
                file_name: segment_file_name(id),
                file: spare.file,
                first_lsn,
                last_lsn: first_lsn - 1,
                last_lsn_exact: true,
                size_bytes: size_bytes.into(),
                write_offset: SEGMENT_HEADER_BYTES as u64,
                activation_from: Some(spare.name),
            },
        );
        self.active = Some(id);
        self.force_rollover = false;
        tracing::debug!(segment = id, first_lsn, "rolled over to a new segment");
        Ok(())
    }

    /// Prepares spare segment files inline until `config.spare_segments` are ready (each
    /// written full of zeros and synced). The engine may call this when idle; `commit` also
    /// advances the next spare a step at a time. Does not poison on error.
    pub fn prepare_spares(&mut self) -> Result<(), LogError> {
        self.check_not_poisoned()?;
        self.spares.fill_to(&self.storage, self.config.segment_size_bytes.into(), self.config.spare_segments)
    }

    /// Advances spare preparation by at most `budget_bytes` of zero-fill (the engine calls this
    /// on idle turns, so spares get ready without stalling a commit or start-up). Errors are
    /// logged and retried later, as after a commit.
    pub fn prepare_spares_step(&mut self, budget_bytes: u64) {
        if self.poisoned.is_some() {
            return;
        }
        self.spares.step(
            &self.storage,
            self.config.segment_size_bytes.into(),
            self.config.spare_segments,
            budget_bytes,
        );
    }

    /// Bytes still free in the active segment (`None` before the first segment exists).
    pub fn active_room_bytes(&self) -> Option<u64> {
        let slot = self.segments.get(&self.active?)?;
        Some(slot.size_bytes.saturating_sub(slot.write_offset))
    }

    /// Reads one record back by position, from the write buffer if it is not committed yet.
    /// Verifies crc, segment id and that the LSN belongs to the segment.
    pub fn read(&self, pos: RecordPos) -> Result<Record, LogError> {
        let slot = self.segments.get(&pos.segment).ok_or(LogError::NotFound { segment: pos.segment })?;
        let offset = u64::from(pos.offset);
        if offset < SEGMENT_HEADER_BYTES as u64 || offset % RECORD_ALIGNMENT_BYTES as u64 != 0 {
            return Err(LogError::InvalidPosition { pos, reason: "not a record boundary" });
        }
        if offset + RECORD_HEADER_BYTES as u64 > slot.write_offset {
            return Err(LogError::InvalidPosition { pos, reason: "beyond the end of the segment's records" });
        }
        let in_buffer = self.pending.iter().find(|range| {
            range.segment == pos.segment && offset >= range.start && offset < range.start + range.bytes.len() as u64
        });
        let record = match in_buffer {
            Some(range) => self.decode_at(slot, pos, &range.bytes[(offset - range.start) as usize..])?,
            None => {
                let available = (slot.write_offset - offset).min(READ_AHEAD_BYTES as u64) as usize;
                let mut buf = vec![0u8; available];
                slot.file
                    .read_at(offset, &mut buf)
                    .map_err(|e| LogError::from_io("reading record", &slot.file_name, e))?;
                if let Some(header) = crate::format::RecordHeader::peek(&buf) {
                    let needed = header.record_bytes();
                    // Only a header that names this segment is worth reading in full.
                    let plausible = header.segment == pos.segment && (needed as u64) <= slot.write_offset - offset;
                    if needed > buf.len() && plausible {
                        let have = buf.len();
                        buf.resize(needed, 0);
                        slot.file
                            .read_at(offset + have as u64, &mut buf[have..])
                            .map_err(|e| LogError::from_io("reading record", &slot.file_name, e))?;
                    }
                }
                self.decode_at(slot, pos, &buf)?
            }
        };
        Ok(record)
    }

    fn decode_at(&self, slot: &SegmentSlot<S::File>, pos: RecordPos, bytes: &[u8]) -> Result<Record, LogError> {
        let corrupt = |defect: RecordDefect| {
            LogError::Corrupt(Box::new(Corruption {
                segment: slot.id,
                file_name: slot.file_name.clone(),
                offset: pos.offset.into(),
                bytes_skipped: 0,
                lsn_lost: None,
                kind: CorruptionKind::BadRecord(defect),
            }))
        };
        let record = decode_record(bytes, None).map_err(|e| corrupt(RecordDefect::Decode(e)))?;
        if record.segment != slot.id {
            return Err(corrupt(RecordDefect::ForeignSegment { found: record.segment }));
        }
        if record.lsn < slot.first_lsn || record.lsn > slot.last_lsn {
            return Err(corrupt(RecordDefect::UnexpectedLsn { found: record.lsn, expected: slot.first_lsn }));
        }
        Ok(Record {
            lsn: record.lsn,
            kind: record.kind,
            version: record.version,
            pos,
            payload: record.payload.to_vec(),
        })
    }

    /// Puts a sealed, committed segment on the free list: its file is renamed to a spare and
    /// reused by a later rollover (never deleted). The engine calls this only for segments
    /// whose records are all at or before a durable checkpoint and settled.
    pub fn release_segment(&mut self, id: u32) -> Result<(), LogError> {
        self.check_not_poisoned()?;
        if !self.segments.contains_key(&id) {
            return Err(LogError::NotFound { segment: id });
        }
        if self.active == Some(id) {
            return Err(LogError::ActiveSegment { segment: id });
        }
        if self.pending.iter().any(|range| range.segment == id) {
            return Err(LogError::SegmentBusy { segment: id });
        }
        let spare_name = self.spares.allocate_name();
        let slot = self.segments.get(&id).expect("checked above");
        // No directory fsync: if this rename is lost in a crash, the old segment simply shows
        // up again at the next open (it is covered by the checkpoint) and is released again.
        self.storage
            .rename(&slot.file_name, &spare_name)
            .map_err(|e| LogError::from_io("releasing segment", &slot.file_name, e))?;
        let slot = self.segments.remove(&id).expect("checked above");
        if slot.size_bytes == u64::from(self.config.segment_size_bytes) {
            self.spares.push(SpareFile { name: spare_name, file: slot.file });
        } else {
            // A segment of an older configured size cannot be reused; drop it.
            drop(slot);
            let _ = self.storage.remove(&spare_name);
        }
        tracing::debug!(segment = id, "released segment for recycling");
        Ok(())
    }

    /// Reads every record of a sealed segment and verifies it; returns every damaged place.
    /// Reads through its own handle with pread, so it never touches the write path.
    pub fn verify_segment(&self, id: u32) -> Result<Vec<Corruption>, LogError> {
        self.scrubber(id)?.verify()
    }

    /// A handle that scrubs one sealed segment and can be moved to another thread.
    pub fn scrubber(&self, id: u32) -> Result<SegmentScrubber<S::File>, LogError> {
        let slot = self.segments.get(&id).ok_or(LogError::NotFound { segment: id })?;
        if self.active == Some(id) {
            return Err(LogError::ActiveSegment { segment: id });
        }
        if self.pending.iter().any(|range| range.segment == id) {
            return Err(LogError::SegmentBusy { segment: id });
        }
        Ok(SegmentScrubber {
            id,
            file_name: slot.file_name.clone(),
            file: Arc::clone(&slot.file),
            first_lsn: slot.first_lsn,
            last_lsn: slot.last_lsn,
            last_lsn_exact: slot.last_lsn_exact,
            size_bytes: slot.size_bytes,
        })
    }

    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .values()
            .map(|slot| SegmentInfo {
                id: slot.id,
                first_lsn: slot.first_lsn,
                last_lsn: slot.last_lsn,
                size_bytes: slot.size_bytes,
                active: self.active == Some(slot.id),
            })
            .collect()
    }

    /// Number of prepared spare files ready for rollover.
    pub fn spare_count(&self) -> usize {
        self.spares.ready_count()
    }

    /// How many times a batch was written behind (to the page cache before its commit).
    pub fn write_behind_count(&self) -> u64 {
        self.write_behinds
    }

    pub fn is_poisoned(&self) -> Option<String> {
        self.poisoned.clone()
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    fn check_not_poisoned(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(cause) => Err(LogError::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }
}

/// Scrubs one sealed segment through its own file handle (see `Log::scrubber`). Do not release
/// a segment while it is being scrubbed: a recycled file's new contents would be reported as
/// damage.
pub struct SegmentScrubber<F: StorageFile> {
    id: u32,
    file_name: String,
    file: Arc<F>,
    first_lsn: Lsn,
    last_lsn: Lsn,
    last_lsn_exact: bool,
    size_bytes: u64,
}

impl<F: StorageFile> SegmentScrubber<F> {
    pub fn segment(&self) -> u32 {
        self.id
    }

    /// Reads every record, verifies crc and the LSN chain; returns every damaged place.
    pub fn verify(&self) -> Result<Vec<Corruption>, LogError> {
        let mut found = Vec::new();
        let corruption = |offset: u64, bytes_skipped: u64, lsn_lost, kind| Corruption {
            segment: self.id,
            file_name: self.file_name.clone(),
            offset,
            bytes_skipped,
            lsn_lost,
            kind,
        };
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        let file_len = self.file.len().map_err(|e| LogError::from_io("scrubbing segment", &self.file_name, e))?;
        if file_len >= SEGMENT_HEADER_BYTES as u64 {
            self.file
                .read_at(0, &mut header)
                .map_err(|e| LogError::from_io("scrubbing segment", &self.file_name, e))?;
        }
        match SegmentHeader::decode(&header) {
            Ok(decoded) if decoded.segment == self.id => {}
            Ok(decoded) => found.push(corruption(
                0,
                0,
                None,
                CorruptionKind::SegmentIdMismatch { header_segment: decoded.segment },
            )),
            Err(error) => found.push(corruption(0, 0, None, CorruptionKind::BadSegmentHeader(error))),
        }
        let data_end = self.size_bytes.min(file_len);
        let summary = scan_segment(&*self.file, self.id, data_end, self.first_lsn, false, &mut |_, _| Ok(()))?;
        for damage in &summary.damage {
            found.push(corruption(
                damage.offset,
                damage.resume_offset - damage.offset,
                damage.lsn_lost,
                CorruptionKind::BadRecord(damage.defect),
            ));
        }
        let found_last = summary.next_lsn - 1;
        let short = if self.last_lsn_exact { found_last != self.last_lsn } else { found_last > self.last_lsn };
        if short {
            let bytes = match summary.end {
                SegmentEnd::Torn { bytes, .. } => bytes,
                SegmentEnd::Clean => 0,
            };
            let lsn_lost = (found_last < self.last_lsn)
                .then_some(crate::report::LsnRange { first: summary.next_lsn, last: self.last_lsn });
            found.push(corruption(
                summary.end_offset,
                bytes,
                lsn_lost,
                CorruptionKind::TruncatedSegment { expected_last_lsn: self.last_lsn, found_last_lsn: found_last },
            ));
        }
        for corruption in &found {
            tracing::error!(%corruption, "scrub found damage in a sealed segment");
        }
        Ok(found)
    }
}

/// Writes a pending range's buffered bytes to its segment file (no sync), activating the
/// segment first if this batch created it: rename from the spare name and fsync the directory.
fn write_range<S: Storage>(storage: &S, slot: &mut SegmentSlot<S::File>, range: &PendingRange) -> Result<(), LogError> {
    if let Some(from) = slot.activation_from.take() {
        storage.rename(&from, &slot.file_name).map_err(|source| LogError::Io {
            op: "activating segment",
            file: slot.file_name.clone(),
            source,
        })?;
        storage.sync_dir().map_err(|source| LogError::Io {
            op: "syncing directory",
            file: slot.file_name.clone(),
            source,
        })?;
    }
    if range.bytes.is_empty() {
        return Ok(());
    }
    slot.file.write_at(range.start, &range.bytes).map_err(|source| LogError::Io {
        op: "writing records",
        file: slot.file_name.clone(),
        source,
    })
}

//! `Log::open`: find the segments, replay the records after the checkpoint, decide what every
//! break in the LSN chain means, and hand back a log ready to append (docs/RECOVERY.md is the
//! decision table this code implements; each row names its test).
//!
//! Invariants:
//! - Segments wholly at or before the checkpoint (`replay_after`) are not scanned: only their
//!   64-byte headers are read. This is what bounds recovery time.
//! - Every record with LSN > `replay_after` that forms the LSN chain is replayed exactly once,
//!   in LSN order.
//! - Only the end of the newest segment is dropped, and reported (`RecoveryReport::torn_tail`):
//!   a torn record, or a break followed only by records of the same (last) batch; every other
//!   break is a `Corruption` with its location.
//! - Recovery never reuses an LSN or a segment id, and never writes into a segment whose header
//!   it could not verify.
//! - Before returning, the active segment is fsynced, so every replayed record is durable.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::config::{LogConfig, MAX_SEGMENT_SIZE_BYTES};
use crate::error::{LogError, ReplayError};
use crate::format::{
    parse_segment_file_name, parse_spare_file_name, spare_file_name, SegmentHeader, SegmentHeaderError,
    SEGMENT_HEADER_BYTES, TMP_SUFFIX,
};
use crate::log::{Log, SegmentSlot};
use crate::report::{Corruption, CorruptionKind, LsnRange, RecordDefect, RecoveryReport, TornTail};
use crate::scan::{scan_segment, SegmentEnd};
use crate::spares::{SpareFile, SparePool, ZERO_FILL_CHUNK_BYTES};
use crate::storage::{Storage, StorageFile};
use crate::{Lsn, RecordPos, RecordView};

/// A segment file found in the directory, with what its header said.
struct FoundSegment<F> {
    id: u32,
    name: String,
    file: Arc<F>,
    file_len: u64,
    header: Result<SegmentHeader, CorruptionKind>,
    /// The header was never written for this id: all zero, or a valid header of the file's
    /// previous incarnation (an interrupted rollover into a recycled file).
    unwritten: bool,
}

/// Where the previous scanned segment's chain ended.
struct ChainEnd {
    segment: u32,
    file_name: String,
    offset: u64,
    torn_bytes: u64,
}

/// The replay callback type of `Log::open`.
pub type ReplayFn<'a> = dyn FnMut(RecordView<'_>) -> Result<(), ReplayError> + 'a;

pub(crate) fn open<S: Storage>(
    storage: S,
    config: LogConfig,
    replay_after: Lsn,
    on_record: &mut ReplayFn<'_>,
) -> Result<(Log<S>, RecoveryReport), LogError> {
    config.validate()?;
    let mut report = RecoveryReport { replay_after, ..RecoveryReport::default() };
    let discovered = discover(&storage, &config, &mut report)?;
    let Discovered { found, spares, next_segment_id, next_spare_number, dir_changed } = discovered;

    let replay_from = replay_after.saturating_add(1);
    // The scan starts at the newest segment that begins at or before the first LSN to replay;
    // everything before it is wholly covered by the checkpoint.
    let start = found
        .iter()
        .rposition(|segment| matches!(segment.header, Ok(header) if header.first_lsn <= replay_from))
        .unwrap_or(0);
    let mut segments = BTreeMap::new();
    add_cold_segments(&found[..start], found.get(start), &mut segments, &mut report);
    let first_expected = match found.get(start).map(|segment| &segment.header) {
        Some(Ok(header)) => header.first_lsn,
        _ => replay_from,
    };
    let mut chain = Chain {
        replay_after,
        expected: first_expected,
        previous_end: None,
        active_writable: true,
        segments,
        report: &mut report,
        on_record,
    };
    let scanned = found.len() - start;
    for (index, segment) in found.into_iter().skip(start).enumerate() {
        chain.scan(segment, index + 1 == scanned)?;
    }
    let Chain { expected, previous_end, active_writable, segments, .. } = chain;

    let mut force_rollover = !active_writable;
    let mut next_lsn = expected;
    if replay_after >= expected {
        // The checkpoint covers LSNs the log does not hold: durable records were lost. Never
        // reuse those LSNs, and start a fresh segment so the chain stays unbroken on disk.
        report.corruptions.push(log_ends_before_checkpoint(previous_end.as_ref(), expected, replay_after));
        next_lsn = replay_from;
        force_rollover = true;
    }
    let active = segments.keys().next_back().copied();
    if let Some(slot) = active.and_then(|id| segments.get(&id)) {
        // Replayed records may still sit only in the page cache (a process crash): make them
        // durable before the engine acts on them.
        slot.file.sync_data().map_err(|e| LogError::from_io("syncing active segment", &slot.file_name, e))?;
    }
    if dir_changed {
        storage.sync_dir().map_err(|e| LogError::from_io("syncing directory", "", e))?;
    }
    report.last_lsn = next_lsn - 1;
    let mut log = Log::from_parts(
        storage,
        config,
        segments,
        active,
        SparePool::new(spares, next_spare_number),
        next_segment_id,
        next_lsn - 1,
        force_rollover,
    );
    // Zero-filling a whole spare takes a while (256 MiB by default): do it before serving only
    // when the active segment is nearly full. Otherwise spares are prepared a step at a time
    // after commits and on idle turns, well before the active segment fills up.
    let segment_bytes = u64::from(log.config().segment_size_bytes);
    if log.active_room_bytes().is_none_or(|room| room < segment_bytes / 4) {
        if let Err(error) = log.prepare_spares() {
            tracing::warn!(%error, "could not prepare spare segments at open; the next rollover will retry");
        }
    }
    if report.is_clean() {
        tracing::info!(%report, "log recovered");
    } else {
        tracing::error!(%report, "log recovered with corruption");
    }
    Ok((log, report))
}

/// What is in the directory, after removing leftovers and reclaiming interrupted rollovers.
struct Discovered<F> {
    /// Segment files by ascending id, with their headers.
    found: Vec<FoundSegment<F>>,
    spares: VecDeque<SpareFile<F>>,
    next_segment_id: u32,
    next_spare_number: u64,
    dir_changed: bool,
}

fn discover<S: Storage>(
    storage: &S,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<Discovered<S::File>, LogError> {
    let names = storage.list().map_err(|e| LogError::from_io("listing log directory", "", e))?;
    let mut segment_names = Vec::new();
    let mut spare_names = Vec::new();
    let mut next_spare_number = 0u64;
    let mut dir_changed = false;
    for name in names {
        if let Some(id) = parse_segment_file_name(&name) {
            segment_names.push((id, name));
        } else if let Some(number) = parse_spare_file_name(&name) {
            next_spare_number = next_spare_number.max(number + 1);
            spare_names.push((number, name));
        } else if let Some(number) = name.strip_suffix(TMP_SUFFIX).and_then(parse_spare_file_name) {
            // A spare whose preparation was interrupted.
            next_spare_number = next_spare_number.max(number + 1);
            storage.remove(&name).map_err(|e| LogError::from_io("removing stale file", &name, e))?;
            report.stale_files_removed += 1;
            dir_changed = true;
        }
    }
    segment_names.sort();
    spare_names.sort();
    // Ids are never reused, not even those of reclaimed segments: stale records carrying a
    // reused id could otherwise continue a new chain.
    let next_segment_id = match segment_names.last() {
        Some((id, _)) => id.checked_add(1).ok_or(LogError::Exhausted { what: "segment ids" })?,
        None => 1,
    };
    let mut found = Vec::with_capacity(segment_names.len());
    for (id, name) in segment_names {
        found.push(read_segment_header(storage, id, name)?);
    }
    // Newest segments whose header was never written: an interrupted rollover. Nothing in them
    // was ever synced (the header goes out in the same write as the first records), so they go
    // back to being spares.
    while let Some(segment) = found.pop_if(|segment| segment.unwritten) {
        let spare_name = spare_file_name(next_spare_number);
        next_spare_number += 1;
        storage
            .rename(&segment.name, &spare_name)
            .map_err(|e| LogError::from_io("reclaiming segment", &segment.name, e))?;
        tracing::info!(segment = segment.id, file = %segment.name, "reclaimed a segment whose header was never written");
        report.segments_reclaimed += 1;
        dir_changed = true;
        spare_names.push((next_spare_number - 1, spare_name));
    }
    let mut spares = VecDeque::new();
    for (_, name) in spare_names {
        let file = storage.open(&name).map_err(|e| LogError::from_io("opening spare segment", &name, e))?;
        let len = file.len().map_err(|e| LogError::from_io("opening spare segment", &name, e))?;
        if len == u64::from(config.segment_size_bytes) {
            spares.push_back(SpareFile { name, file: Arc::new(file) });
        } else {
            // Prepared for another segment size (or cut short): not reusable.
            drop(file);
            storage.remove(&name).map_err(|e| LogError::from_io("removing stale spare", &name, e))?;
            report.stale_files_removed += 1;
            dir_changed = true;
        }
    }
    Ok(Discovered { found, spares, next_segment_id, next_spare_number, dir_changed })
}

/// The LSN chain walked across the scanned segments.
struct Chain<'a, 'r, F> {
    replay_after: Lsn,
    /// The next LSN the chain needs.
    expected: Lsn,
    previous_end: Option<ChainEnd>,
    /// Whether the newest scanned segment may receive appends (its header verified).
    active_writable: bool,
    segments: BTreeMap<u32, SegmentSlot<F>>,
    report: &'a mut RecoveryReport,
    on_record: &'a mut ReplayFn<'r>,
}

impl<F: StorageFile> Chain<'_, '_, F> {
    /// Checks one segment's header against the chain, replays its records, and registers it.
    fn scan(&mut self, segment: FoundSegment<F>, is_newest: bool) -> Result<(), LogError> {
        let (size_bytes, writable) = self.check_header(&segment);
        let first_lsn = segment.header.as_ref().map_or(self.expected, |header| header.first_lsn);
        let data_end = segment.file_len.min(size_bytes);
        let segment_id = segment.id;
        let replay_after = self.replay_after;
        let on_record = &mut *self.on_record;
        let replayed = &mut self.report.records_replayed;
        let summary =
            scan_segment(&*segment.file, segment_id, data_end, self.expected, is_newest, &mut |record, offset| {
                if record.lsn > replay_after {
                    let pos = RecordPos { segment: segment_id, offset: offset as u32 };
                    let view = RecordView {
                        lsn: record.lsn,
                        kind: record.kind,
                        version: record.version,
                        pos,
                        payload: record.payload,
                    };
                    on_record(view).map_err(|source| LogError::Replay { lsn: record.lsn, source })?;
                    *replayed += 1;
                }
                Ok(())
            })?;
        self.report.segments_scanned += 1;
        for damage in &summary.damage {
            let mut corruption =
                corruption_at(&segment, damage.offset, damage.lsn_lost, CorruptionKind::BadRecord(damage.defect));
            corruption.bytes_skipped = damage.resume_offset - damage.offset;
            self.report.corruptions.push(corruption);
        }
        self.expected = summary.next_lsn;
        let torn_bytes = match summary.end {
            SegmentEnd::Torn { bytes, defect } if is_newest => {
                drop_torn_tail(&segment, summary.end_offset, bytes, defect, writable, self.expected, self.report)?;
                0
            }
            SegmentEnd::Torn { bytes, .. } => bytes,
            SegmentEnd::Clean => 0,
        };
        self.previous_end = Some(ChainEnd {
            segment: segment.id,
            file_name: segment.name.clone(),
            offset: summary.end_offset,
            torn_bytes,
        });
        self.active_writable = writable;
        self.segments.insert(
            segment.id,
            SegmentSlot {
                id: segment.id,
                file_name: segment.name,
                file: segment.file,
                first_lsn,
                last_lsn: self.expected - 1,
                last_lsn_exact: true,
                size_bytes: data_end,
                write_offset: summary.end_offset,
                activation_from: None,
            },
        );
        Ok(())
    }

    /// Reports header problems and chain gaps/overlaps; returns the size to scan and whether
    /// the segment may receive appends.
    fn check_header(&mut self, segment: &FoundSegment<F>) -> (u64, bool) {
        let header = match &segment.header {
            Ok(header) => header,
            Err(kind) => {
                // Still scanned: records name their segment, so they are found without it.
                self.report.corruptions.push(corruption_at(segment, 0, None, kind.clone()));
                return (segment.file_len.min(u64::from(MAX_SEGMENT_SIZE_BYTES)), false);
            }
        };
        if header.first_lsn > self.expected {
            let range = LsnRange { first: self.expected, last: header.first_lsn - 1 };
            let kind = CorruptionKind::LsnGap { next_segment: Some(segment.id), next_first_lsn: header.first_lsn };
            self.report.corruptions.push(gap_corruption(self.previous_end.as_ref(), segment, range, kind));
            self.expected = header.first_lsn;
        } else if header.first_lsn < self.expected {
            let kind = CorruptionKind::SegmentOverlap { first_lsn: header.first_lsn, expected_lsn: self.expected };
            self.report.corruptions.push(corruption_at(segment, 0, None, kind));
        }
        let size = u64::from(header.segment_size_bytes);
        if segment.file_len != size {
            let kind = CorruptionKind::SegmentLengthMismatch { file_bytes: segment.file_len, header_bytes: size };
            self.report.corruptions.push(corruption_at(segment, 0, None, kind));
            return (size, false);
        }
        (size, true)
    }
}

fn log_ends_before_checkpoint(previous_end: Option<&ChainEnd>, expected: Lsn, replay_after: Lsn) -> Corruption {
    Corruption {
        segment: previous_end.map_or(0, |end| end.segment),
        file_name: previous_end.map_or_else(|| "(no segment files)".to_string(), |end| end.file_name.clone()),
        offset: previous_end.map_or(0, |end| end.offset),
        bytes_skipped: 0,
        lsn_lost: Some(LsnRange { first: expected, last: replay_after }),
        kind: CorruptionKind::LogEndsBeforeCheckpoint { log_end_lsn: expected - 1, checkpoint_lsn: replay_after },
    }
}

fn read_segment_header<S: Storage>(storage: &S, id: u32, name: String) -> Result<FoundSegment<S::File>, LogError> {
    let file = storage.open(&name).map_err(|e| LogError::from_io("opening segment", &name, e))?;
    let file_len = file.len().map_err(|e| LogError::from_io("opening segment", &name, e))?;
    let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
    let readable = (file_len as usize).min(SEGMENT_HEADER_BYTES);
    file.read_at(0, &mut bytes[..readable]).map_err(|e| LogError::from_io("reading segment header", &name, e))?;
    let decoded = if readable < SEGMENT_HEADER_BYTES {
        Err(SegmentHeaderError::Short { file_bytes: file_len })
    } else {
        SegmentHeader::decode(&bytes)
    };
    let (header, unwritten) = match decoded {
        Ok(header) if header.segment == id => (Ok(header), false),
        Ok(header) => (Err(CorruptionKind::SegmentIdMismatch { header_segment: header.segment }), header.segment < id),
        Err(error) => (Err(CorruptionKind::BadSegmentHeader(error)), error == SegmentHeaderError::Zero),
    };
    Ok(FoundSegment { id, name, file: Arc::new(file), file_len, header, unwritten })
}

/// Registers the segments before the scan start: wholly covered by the checkpoint, only their
/// headers were read. Their last LSN is known exactly when the next segment id follows.
fn add_cold_segments<F: StorageFile>(
    cold: &[FoundSegment<F>],
    first_scanned: Option<&FoundSegment<F>>,
    segments: &mut BTreeMap<u32, SegmentSlot<F>>,
    report: &mut RecoveryReport,
) {
    let mut previous_last = 0;
    for (index, segment) in cold.iter().enumerate() {
        let next = cold.get(index + 1).or(first_scanned);
        let next_first = next.and_then(|next| next.header.as_ref().ok()).map(|header| header.first_lsn);
        let first_lsn = match &segment.header {
            Ok(header) => header.first_lsn,
            Err(kind) => {
                report.corruptions.push(corruption_at(segment, 0, None, kind.clone()));
                previous_last + 1
            }
        };
        let last_lsn = next_first
            .map_or(first_lsn.saturating_sub(1), |next_first| next_first.saturating_sub(1))
            .max(first_lsn - 1);
        previous_last = last_lsn;
        let size_bytes =
            segment.header.as_ref().map_or(segment.file_len, |header| u64::from(header.segment_size_bytes));
        segments.insert(
            segment.id,
            SegmentSlot {
                id: segment.id,
                file_name: segment.name.clone(),
                file: Arc::clone(&segment.file),
                first_lsn,
                last_lsn,
                last_lsn_exact: next.is_some_and(|next| next.id == segment.id + 1) && segment.header.is_ok(),
                size_bytes: size_bytes.min(segment.file_len),
                write_offset: size_bytes.min(segment.file_len),
                activation_from: None,
            },
        );
        report.segments_skipped += 1;
    }
}

fn corruption_at<F>(
    segment: &FoundSegment<F>,
    offset: u64,
    lsn_lost: Option<LsnRange>,
    kind: CorruptionKind,
) -> Corruption {
    Corruption { segment: segment.id, file_name: segment.name.clone(), offset, bytes_skipped: 0, lsn_lost, kind }
}

/// A gap between segments is reported where the chain broke: the end of the previous scanned
/// segment, or the start of this one when it is the first.
fn gap_corruption<F>(
    previous: Option<&ChainEnd>,
    next: &FoundSegment<F>,
    range: LsnRange,
    kind: CorruptionKind,
) -> Corruption {
    match previous {
        Some(end) => Corruption {
            segment: end.segment,
            file_name: end.file_name.clone(),
            offset: end.offset,
            bytes_skipped: end.torn_bytes,
            lsn_lost: Some(range),
            kind,
        },
        None => corruption_at(next, 0, Some(range), kind),
    }
}

/// Zeroes a torn record at the end of the newest segment (so it is not reported again once
/// appends move past it) and records it in the report.
fn drop_torn_tail<F: StorageFile>(
    segment: &FoundSegment<F>,
    offset: u64,
    bytes: u64,
    defect: RecordDefect,
    writable: bool,
    lsn: Lsn,
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    tracing::warn!(segment = segment.id, offset, bytes, lsn, %defect, "dropping torn tail");
    if writable {
        let zeros = vec![0u8; (bytes as usize).min(ZERO_FILL_CHUNK_BYTES)];
        let mut done = 0u64;
        while done < bytes {
            let chunk = (bytes - done).min(zeros.len() as u64) as usize;
            segment
                .file
                .write_at(offset + done, &zeros[..chunk])
                .map_err(|e| LogError::from_io("zeroing torn tail", &segment.name, e))?;
            done += chunk as u64;
        }
        segment.file.sync_data().map_err(|e| LogError::from_io("zeroing torn tail", &segment.name, e))?;
    }
    report.torn_tail = Some(TornTail {
        segment: segment.id,
        file_name: segment.name.clone(),
        offset,
        bytes_dropped: bytes,
        lsn,
        defect,
    });
    Ok(())
}

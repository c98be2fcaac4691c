//! Named tests for every row of docs/RECOVERY.md and for the rare paths (fsync failure, full
//! disk, interrupted rollover, recycled segments, checkpoint crash). Each test builds its disk
//! state with `SimStorage`, so every case is deterministic.

mod common;

use common::{append_committed, config, lsns, open_collect, payload, KIND, SEGMENT_BYTES};
use weir_log::{
    checkpoint_file_name, load_checkpoint, segment_file_name, write_checkpoint, CorruptionKind, Log, LogConfig,
    LogError, LsnRange, RecordDefect, ReplayError, SimStorage, FIRST_USER_KIND,
};

/// Payload size whose records span exactly 1024 bytes: 63 fit in a 64 KiB segment.
const KIB_RECORD_PAYLOAD: usize = 1000;
const RECORDS_PER_SEGMENT: u64 = 63;

#[test]
fn fresh_log_starts_at_lsn_one_and_reopens_clean() {
    let storage = SimStorage::new();
    let (mut log, report, replayed) = open_collect(storage.clone(), config(), 0);
    assert!(replayed.is_empty() && report.is_clean() && report.torn_tail.is_none());
    assert_eq!((log.last_lsn(), log.durable_lsn()), (0, 0));
    let positions = append_committed(&mut log, 10, 100);
    assert_eq!((log.last_lsn(), log.durable_lsn()), (10, 10));
    drop(log);
    let (log, report, replayed) = open_collect(storage, config(), 0);
    assert_eq!(lsns(&replayed), (1..=10).collect::<Vec<_>>());
    for (record, pos) in replayed.iter().zip(&positions) {
        assert_eq!(record.pos, *pos);
        assert_eq!(record.payload, payload(record.lsn, 100));
        assert_eq!(record.kind, KIND);
    }
    assert!(report.is_clean() && report.torn_tail.is_none(), "{report}");
    assert_eq!(log.last_lsn(), 10);
}

#[test]
fn zeroed_bytes_after_last_record_are_a_clean_end() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    append_committed(&mut log, 3, 10);
    drop(log);
    let (_, report, replayed) = open_collect(storage, config(), 0);
    assert_eq!(lsns(&replayed), vec![1, 2, 3]);
    assert!(report.is_clean() && report.torn_tail.is_none(), "{report}");
}

#[test]
fn torn_tail_is_truncated_and_reported() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    let positions = append_committed(&mut log, 8, 100);
    drop(log);
    // The last record's bytes fail their crc: exactly what a torn final write looks like.
    storage.corrupt_byte(&segment_file_name(1), u64::from(positions[7].offset) + 40, 0x55).expect("corrupt");
    let (mut log, report, replayed) = open_collect(storage.clone(), config(), 0);
    assert_eq!(lsns(&replayed), (1..=7).collect::<Vec<_>>());
    assert!(report.is_clean(), "a torn tail is not corruption: {report}");
    let torn = report.torn_tail.clone().expect("torn tail reported");
    assert_eq!((torn.segment, torn.offset, torn.lsn, torn.bytes_dropped), (1, positions[7].offset.into(), 8, 128));
    assert!(report.to_string().contains("torn tail: segment 1"), "{report}");
    // Appends continue at the torn record's place, and the next open is clean.
    let (lsn, pos) = log.append(KIND, 1, b"replacement").expect("append");
    assert_eq!((lsn, pos), (8, positions[7]));
    log.commit().expect("commit");
    drop(log);
    let (_, report, replayed) = open_collect(storage, config(), 0);
    assert_eq!(lsns(&replayed), (1..=8).collect::<Vec<_>>());
    assert_eq!(replayed[7].payload, b"replacement");
    assert!(report.is_clean() && report.torn_tail.is_none(), "{report}");
}

#[test]
fn torn_write_at_crash_drops_only_unconfirmed_records() {
    let mut torn_seen = 0;
    for seed in 0..48 {
        let storage = SimStorage::new();
        let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
        append_committed(&mut log, 5, 300);
        for lsn in 6..=40 {
            log.append(KIND, 1, &payload(lsn, 300)).expect("append");
        }
        storage.power_cut_after(1); // the batch write happens, its fsync does not
        assert!(log.commit().is_err(), "seed {seed}");
        drop(log);
        let (log, report, replayed) = open_collect(storage.crash(seed), config(), 0);
        assert!(report.is_clean(), "seed {seed}: {report}");
        assert!(replayed.len() >= 5, "seed {seed}: committed records lost");
        for (index, record) in replayed.iter().enumerate() {
            assert_eq!(record.lsn, index as u64 + 1, "seed {seed}");
            assert_eq!(record.payload, payload(record.lsn, 300), "seed {seed}");
        }
        assert_eq!(log.last_lsn(), replayed.len() as u64, "seed {seed}");
        torn_seen += usize::from(report.torn_tail.is_some());
    }
    assert!(torn_seen > 0, "some seeds must produce a torn tail");
}

/// Writes `segments` full segments of 1 KiB records; returns all positions (index = lsn - 1).
fn fill_segments(storage: &SimStorage, segments: u64) -> Vec<weir_log::RecordPos> {
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    let positions = append_committed(&mut log, (segments * RECORDS_PER_SEGMENT) as usize, KIB_RECORD_PAYLOAD);
    assert_eq!(log.segments().len() as u64, segments);
    positions
}

#[test]
fn corrupt_record_in_middle_is_reported_by_open_and_later_records_replayed() {
    let storage = SimStorage::new();
    let positions = fill_segments(&storage, 3);
    let damaged = positions[9]; // LSN 10, in segment 1
    storage.corrupt_byte(&segment_file_name(1), u64::from(damaged.offset) + 500, 0x01).expect("corrupt");
    let (log, report, replayed) = open_collect(storage, config(), 0);
    let expected: Vec<u64> = (1..=3 * RECORDS_PER_SEGMENT).filter(|&lsn| lsn != 10).collect();
    assert_eq!(lsns(&replayed), expected);
    assert_eq!(report.corruptions.len(), 1, "{report}");
    let corruption = &report.corruptions[0];
    assert_eq!(corruption.segment, 1);
    assert_eq!(corruption.file_name, "seg-0000000001.wlog");
    assert_eq!(corruption.offset, u64::from(damaged.offset));
    assert_eq!(corruption.bytes_skipped, 1024);
    assert_eq!(corruption.lsn_lost, Some(LsnRange { first: 10, last: 10 }));
    assert!(matches!(corruption.kind, CorruptionKind::BadRecord(RecordDefect::Decode(_))));
    assert!(report.torn_tail.is_none());
    assert_eq!(log.last_lsn(), 3 * RECORDS_PER_SEGMENT);
    assert!(matches!(log.read(damaged), Err(LogError::Corrupt(_))));
}

#[test]
fn corrupt_record_before_checkpoint_is_found_by_verify_segment() {
    let storage = SimStorage::new();
    let positions = fill_segments(&storage, 3);
    let checkpoint_lsn = 2 * RECORDS_PER_SEGMENT + 5;
    write_checkpoint(&storage, checkpoint_lsn, b"snapshot").expect("checkpoint");
    let damaged = positions[20];
    storage.corrupt_byte(&segment_file_name(1), u64::from(damaged.offset) + 100, 0x80).expect("corrupt");
    let (log, report, replayed) = open_collect(storage, config(), checkpoint_lsn);
    assert_eq!(lsns(&replayed), (checkpoint_lsn + 1..=3 * RECORDS_PER_SEGMENT).collect::<Vec<_>>());
    assert_eq!((report.segments_skipped, report.segments_scanned), (2, 1), "{report}");
    assert!(report.is_clean(), "cold segments are not scanned at open: {report}");
    let found = log.verify_segment(1).expect("verify");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].segment, found[0].offset), (1, u64::from(damaged.offset)));
    assert_eq!(found[0].lsn_lost, Some(LsnRange { first: 21, last: 21 }));
    assert!(log.verify_segment(2).expect("verify").is_empty());
    assert!(matches!(log.verify_segment(3), Err(LogError::ActiveSegment { segment: 3 })));
}

#[test]
fn missing_middle_segment_is_reported_as_lsn_gap() {
    let storage = SimStorage::new();
    fill_segments(&storage, 3);
    storage.remove_durable(&segment_file_name(2));
    let (_, report, replayed) = open_collect(storage, config(), 0);
    let lost = LsnRange { first: RECORDS_PER_SEGMENT + 1, last: 2 * RECORDS_PER_SEGMENT };
    let expected: Vec<u64> =
        (1..=3 * RECORDS_PER_SEGMENT).filter(|lsn| !(lost.first..=lost.last).contains(lsn)).collect();
    assert_eq!(lsns(&replayed), expected);
    assert_eq!(report.corruptions.len(), 1, "{report}");
    assert_eq!(report.corruptions[0].lsn_lost, Some(lost));
    assert_eq!(report.corruptions[0].segment, 1);
    assert!(matches!(report.corruptions[0].kind, CorruptionKind::LsnGap { next_segment: Some(3), .. }));
}

#[test]
fn damaged_segment_header_in_middle_is_reported_and_its_records_recovered() {
    let storage = SimStorage::new();
    fill_segments(&storage, 3);
    storage.corrupt_byte(&segment_file_name(2), 20, 0x04).expect("corrupt header");
    let (_, report, replayed) = open_collect(storage, config(), 0);
    assert_eq!(lsns(&replayed), (1..=3 * RECORDS_PER_SEGMENT).collect::<Vec<_>>());
    assert_eq!(report.corruptions.len(), 1, "{report}");
    assert!(matches!(report.corruptions[0].kind, CorruptionKind::BadSegmentHeader(_)));
    assert_eq!(report.corruptions[0].lsn_lost, None);
}

#[test]
fn log_ending_before_checkpoint_is_reported_and_lsns_not_reused() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    append_committed(&mut log, 10, 50);
    drop(log);
    let (mut log, report, _) = open_collect(storage.clone(), config(), 1000);
    assert_eq!(report.corruptions.len(), 1, "{report}");
    assert_eq!(report.corruptions[0].lsn_lost, Some(LsnRange { first: 11, last: 1000 }));
    assert_eq!(log.last_lsn(), 1000);
    let (lsn, pos) = log.append(KIND, 1, b"after").expect("append");
    assert_eq!((lsn, pos.segment), (1001, 2), "a fresh segment keeps the chain unbroken");
    log.commit().expect("commit");
    drop(log);
    let (_, report, replayed) = open_collect(storage, config(), 1000);
    assert_eq!(lsns(&replayed), vec![1001]);
    assert!(report.is_clean(), "{report}");
}

#[test]
fn fsync_failure_poisons_the_log_for_ever() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    append_committed(&mut log, 3, 10);
    log.append(KIND, 1, b"doomed").expect("append");
    storage.fail_sync_after(0);
    let error = log.commit().expect_err("fsync fails");
    assert!(matches!(error, LogError::Io { .. }), "{error}");
    let cause = log.is_poisoned().expect("poisoned");
    assert!(cause.contains("fsync"), "{cause}");
    assert!(matches!(log.append(KIND, 1, b"x"), Err(LogError::Poisoned { cause: c }) if c == cause));
    assert!(matches!(log.commit(), Err(LogError::Poisoned { .. })));
    assert!(matches!(log.release_segment(1), Err(LogError::Poisoned { .. })));
    assert_eq!(log.durable_lsn(), 3);
    drop(log);
    let (log, report, replayed) = open_collect(storage.crash(7), config(), 0);
    assert_eq!(lsns(&replayed), vec![1, 2, 3], "the failed batch is gone: its fsync lost it");
    assert!(report.is_clean());
    assert!(log.is_poisoned().is_none());
}

#[test]
fn write_failure_poisons_the_log() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    log.append(KIND, 1, b"doomed").expect("append");
    storage.fail_write_after(0);
    assert!(log.commit().is_err());
    assert!(log.is_poisoned().is_some());
    assert!(log.append(KIND, 1, b"x").unwrap_err().is_poisoned());
}

#[test]
fn enospc_on_segment_preparation_is_not_poison() {
    let storage = SimStorage::new();
    let config = LogConfig { spare_segments: 0, ..config() };
    let (mut log, _, _) = open_collect(storage.clone(), config.clone(), 0);
    append_committed(&mut log, 60, KIB_RECORD_PAYLOAD);
    storage.set_space_limit(Some(storage.used_bytes()));
    for lsn in 61..=RECORDS_PER_SEGMENT {
        log.append(KIND, 1, &payload(lsn, KIB_RECORD_PAYLOAD)).expect("fits in the active segment");
    }
    let error = log.append(KIND, 1, &payload(64, KIB_RECORD_PAYLOAD)).expect_err("needs a new segment");
    assert!(error.is_no_space(), "{error}");
    assert!(log.is_poisoned().is_none());
    log.commit().expect("records already in the active segment still commit");
    assert!(log.append(KIND, 1, &payload(64, KIB_RECORD_PAYLOAD)).expect_err("still full").is_no_space());
    assert!(!storage.file_names().iter().any(|name| name.ends_with(".tmp")), "{:?}", storage.file_names());
    storage.set_space_limit(None);
    let (lsn, pos) = log.append(KIND, 1, &payload(64, KIB_RECORD_PAYLOAD)).expect("space again");
    assert_eq!((lsn, pos.segment), (64, 2));
    log.commit().expect("commit");
    drop(log);
    let (_, report, replayed) = open_collect(storage, config, 0);
    assert_eq!(lsns(&replayed), (1..=64).collect::<Vec<_>>());
    assert!(report.is_clean());
}

#[test]
fn enospc_while_replenishing_spares_after_commit_is_not_an_error() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    assert_eq!(log.spare_count(), 1);
    append_committed(&mut log, 60, KIB_RECORD_PAYLOAD);
    storage.set_space_limit(Some(storage.used_bytes()));
    append_committed(&mut log, 10, KIB_RECORD_PAYLOAD); // rolls over into the spare
    assert_eq!(log.spare_count(), 0);
    assert!(log.is_poisoned().is_none());
}

#[test]
fn recycled_segment_stale_records_are_not_replayed() {
    let storage = SimStorage::new();
    let config = LogConfig { spare_segments: 0, ..config() };
    let (mut log, _, _) = open_collect(storage.clone(), config.clone(), 0);
    append_committed(&mut log, (4 * RECORDS_PER_SEGMENT) as usize, KIB_RECORD_PAYLOAD);
    let checkpoint_lsn = 2 * RECORDS_PER_SEGMENT;
    write_checkpoint(&storage, checkpoint_lsn, b"snap").expect("checkpoint");
    log.release_segment(1).expect("release");
    log.release_segment(2).expect("release");
    assert_eq!(log.spare_count(), 2);
    append_committed(&mut log, 5, KIB_RECORD_PAYLOAD); // segment 5, in the file of segment 1
    let new_segment = log.segments().last().map(|info| info.id).expect("segment");
    assert_eq!(new_segment, 5);
    let contents = storage.file_contents(&segment_file_name(5)).expect("file");
    assert!(contents[64 + 6 * 1024..].iter().any(|&byte| byte != 0), "stale records must remain for this test");
    drop(log);
    let (log, report, replayed) = open_collect(storage, config, checkpoint_lsn);
    assert_eq!(lsns(&replayed), (checkpoint_lsn + 1..=4 * RECORDS_PER_SEGMENT + 5).collect::<Vec<_>>());
    assert!(report.is_clean() && report.torn_tail.is_none(), "{report}");
    assert_eq!(log.segments().iter().map(|s| s.id).collect::<Vec<_>>(), vec![3, 4, 5]);
}

#[test]
fn interrupted_rollover_segment_is_reclaimed_and_its_id_not_reused() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    append_committed(&mut log, RECORDS_PER_SEGMENT as usize, KIB_RECORD_PAYLOAD);
    log.append(KIND, 1, &payload(64, KIB_RECORD_PAYLOAD)).expect("rolls over");
    storage.power_cut_after(2); // rename + directory sync happen, the write does not
    assert!(log.commit().is_err());
    drop(log);
    let crashed = storage.crash(1);
    assert!(crashed.file_names().contains(&segment_file_name(2)));
    let (mut log, report, replayed) = open_collect(crashed, config(), 0);
    assert_eq!(replayed.len() as u64, RECORDS_PER_SEGMENT);
    assert_eq!(report.segments_reclaimed, 1, "{report}");
    assert!(report.is_clean());
    let (_, pos) = log.append(KIND, 1, &payload(64, KIB_RECORD_PAYLOAD)).expect("append");
    assert_eq!(pos.segment, 3, "segment ids are never reused");
}

#[test]
fn checkpoint_crash_during_write_leaves_previous_loadable() {
    for cut_after in 0..8 {
        for seed in 0..8 {
            let storage = SimStorage::new();
            write_checkpoint(&storage, 10, b"ten").expect("first checkpoint");
            storage.power_cut_after(cut_after);
            let finished = write_checkpoint(&storage, 20, b"twenty").is_ok();
            let crashed = storage.crash(seed);
            let loaded = load_checkpoint(&crashed).expect("load");
            let context = format!("cut after {cut_after}, seed {seed}");
            assert!(
                loaded == Some((10, b"ten".to_vec())) || loaded == Some((20, b"twenty".to_vec())),
                "{context}: {loaded:?}"
            );
            if finished {
                assert_eq!(loaded, Some((20, b"twenty".to_vec())), "{context}: a finished checkpoint is durable");
            }
        }
    }
}

#[test]
fn records_are_readable_before_and_after_commit_and_after_reopen() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    let mut positions = Vec::new();
    for lsn in 1..=200 {
        let (_, pos) = log.append(KIND, 2, &payload(lsn, 700)).expect("append");
        positions.push(pos);
        let record = log.read(pos).expect("read uncommitted");
        assert_eq!((record.lsn, record.version, record.payload.clone()), (lsn, 2, payload(lsn, 700)));
    }
    log.commit().expect("commit");
    for (index, pos) in positions.iter().enumerate() {
        assert_eq!(log.read(*pos).expect("read committed").lsn, index as u64 + 1);
    }
    drop(log);
    let (log, _, _) = open_collect(storage, config(), 150);
    for (index, pos) in positions.iter().enumerate() {
        let record = log.read(*pos).expect("read after reopen");
        assert_eq!(record.payload, payload(index as u64 + 1, 700));
    }
    let bogus = weir_log::RecordPos { segment: positions[0].segment, offset: positions[0].offset + 8 };
    assert!(log.read(bogus).is_err());
    assert!(matches!(log.read(weir_log::RecordPos { segment: 99, offset: 64 }), Err(LogError::NotFound { .. })));
    assert!(matches!(log.read(weir_log::RecordPos { segment: 1, offset: 3 }), Err(LogError::InvalidPosition { .. })));
}

#[test]
fn commit_issues_one_write_and_one_fsync_per_touched_segment() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    append_committed(&mut log, 1, 10);
    let before = storage.stats();
    for lsn in 2..=50 {
        log.append(KIND, 1, &payload(lsn, 100)).expect("append");
    }
    log.commit().expect("commit");
    let after = storage.stats();
    assert_eq!((after.writes - before.writes, after.syncs - before.syncs), (1, 1));
    log.commit().expect("an empty commit does nothing");
    assert_eq!(storage.stats().syncs, after.syncs);
}

#[test]
fn record_limits_are_enforced_at_the_boundary() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage, config(), 0);
    let max = LogConfig::max_payload_for_segment(SEGMENT_BYTES) as usize;
    assert!(matches!(log.append(KIND, 0, &vec![0; max + 1]), Err(LogError::RecordTooLarge { .. })));
    assert!(matches!(log.append(FIRST_USER_KIND - 1, 0, b""), Err(LogError::ReservedKind { .. })));
    log.append(FIRST_USER_KIND, 0, b"").expect("smallest kind, empty payload");
    let (_, pos) = log.append(0xFF, 0xFF, &vec![7; max]).expect("largest record fills a fresh segment");
    assert_eq!(pos.offset, 64);
    log.commit().expect("commit");
    assert_eq!(log.read(pos).expect("read").payload.len(), max);
}

#[test]
fn release_rules() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage, config(), 0);
    append_committed(&mut log, RECORDS_PER_SEGMENT as usize, KIB_RECORD_PAYLOAD);
    assert!(matches!(log.release_segment(1), Err(LogError::ActiveSegment { segment: 1 })));
    assert!(matches!(log.release_segment(9), Err(LogError::NotFound { segment: 9 })));
    log.append(KIND, 1, &payload(64, KIB_RECORD_PAYLOAD)).expect("rolls over, sealing segment 1");
    log.append(KIND, 1, &payload(65, KIB_RECORD_PAYLOAD)).expect("append");
    let infos = log.segments();
    assert_eq!(infos.len(), 2);
    assert_eq!((infos[0].first_lsn, infos[0].last_lsn, infos[0].active), (1, RECORDS_PER_SEGMENT, false));
    assert_eq!((infos[1].first_lsn, infos[1].last_lsn, infos[1].active), (64, 65, true));
    log.commit().expect("commit");
    log.release_segment(1).expect("sealed and committed");
    assert!(matches!(log.read(weir_log::RecordPos { segment: 1, offset: 64 }), Err(LogError::NotFound { .. })));
}

#[test]
fn replay_callback_error_stops_open() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config(), 0);
    append_committed(&mut log, 5, 10);
    drop(log);
    let result = Log::open(storage, config(), 0, &mut |view| {
        if view.lsn == 3 {
            Err(ReplayError::new("engine refused"))
        } else {
            Ok(())
        }
    });
    assert!(matches!(result, Err(LogError::Replay { lsn: 3, .. })));
}

#[test]
fn checkpoint_file_names_sort_by_lsn() {
    assert!(checkpoint_file_name(9) < checkpoint_file_name(10));
}

#[test]
fn corrupt_last_record_of_sealed_segment_is_a_gap_not_a_torn_tail() {
    let storage = SimStorage::new();
    let positions = fill_segments(&storage, 2);
    let last_of_first = positions[(RECORDS_PER_SEGMENT - 1) as usize];
    storage.corrupt_byte(&segment_file_name(1), u64::from(last_of_first.offset) + 30, 0x02).expect("corrupt");
    let (_, report, replayed) = open_collect(storage, config(), 0);
    assert_eq!(replayed.len() as u64, 2 * RECORDS_PER_SEGMENT - 1);
    assert!(report.torn_tail.is_none(), "{report}");
    assert_eq!(report.corruptions.len(), 1, "{report}");
    let corruption = &report.corruptions[0];
    assert_eq!((corruption.segment, corruption.offset), (1, u64::from(last_of_first.offset)));
    assert_eq!(corruption.bytes_skipped, 1024);
    assert_eq!(corruption.lsn_lost, Some(LsnRange { first: RECORDS_PER_SEGMENT, last: RECORDS_PER_SEGMENT }));
    assert!(matches!(corruption.kind, CorruptionKind::LsnGap { next_segment: Some(2), .. }));
}

#[test]
fn damaged_header_of_newest_segment_is_reported_and_not_appended_to() {
    let storage = SimStorage::new();
    fill_segments(&storage, 2);
    storage.corrupt_byte(&segment_file_name(2), 13, 0x01).expect("corrupt header");
    let (mut log, report, replayed) = open_collect(storage.clone(), config(), 0);
    assert_eq!(replayed.len() as u64, 2 * RECORDS_PER_SEGMENT, "records are found by their segment id");
    assert_eq!(report.corruptions.len(), 1, "{report}");
    assert!(matches!(report.corruptions[0].kind, CorruptionKind::BadSegmentHeader(_)));
    let (_, pos) = log.append(KIND, 1, b"next").expect("append");
    assert_eq!(pos.segment, 3, "appends go to a fresh segment");
    log.commit().expect("commit");
    let bytes = storage.file_contents(&segment_file_name(2)).expect("file");
    assert!(weir_log::SegmentHeader::decode(&bytes).is_err(), "the damaged header is left as evidence");
}

#[test]
fn truncated_segment_file_is_reported() {
    let storage = SimStorage::new();
    fill_segments(&storage, 2);
    let name = segment_file_name(1);
    let half = storage.file_contents(&name).expect("file")[..(SEGMENT_BYTES / 2) as usize].to_vec();
    storage.remove_durable(&name);
    storage.write_durable(&name, 0, &half);
    let (_, report, replayed) = open_collect(storage, config(), 0);
    let kept = (SEGMENT_BYTES as u64 / 2 - 64) / 1024;
    assert_eq!(replayed.len() as u64, kept + RECORDS_PER_SEGMENT);
    assert!(
        report.corruptions.iter().any(|c| matches!(c.kind, CorruptionKind::SegmentLengthMismatch { .. })),
        "{report}"
    );
    assert!(
        report.corruptions.iter().any(|c| c.lsn_lost == Some(LsnRange { first: kept + 1, last: RECORDS_PER_SEGMENT })),
        "{report}"
    );
}

#[test]
fn overlapping_segment_header_is_reported() {
    let storage = SimStorage::new();
    fill_segments(&storage, 2);
    let header =
        weir_log::SegmentHeader { segment: 2, first_lsn: RECORDS_PER_SEGMENT - 4, segment_size_bytes: SEGMENT_BYTES };
    storage.write_durable(&segment_file_name(2), 0, &header.encode());
    let (_, report, replayed) = open_collect(storage, config(), 0);
    assert_eq!(lsns(&replayed), (1..=2 * RECORDS_PER_SEGMENT).collect::<Vec<_>>());
    assert_eq!(report.corruptions.len(), 1, "{report}");
    assert!(matches!(report.corruptions[0].kind, CorruptionKind::SegmentOverlap { .. }));
}

#[test]
fn leftover_temporary_and_wrong_size_spares_are_removed() {
    let storage = SimStorage::new();
    storage.write_durable("spare-0000000099.wlog.tmp", 0, &[0u8; 100]);
    storage.write_durable("spare-0000000007.wlog", 0, &[0u8; 4096]);
    storage.write_durable("unrelated.txt", 0, b"left alone");
    let (log, report, _) = open_collect(storage.clone(), config(), 0);
    assert_eq!(report.stale_files_removed, 2, "{report}");
    let names = storage.file_names();
    assert!(names.contains(&"unrelated.txt".to_string()));
    assert!(!names.iter().any(|name| name.contains("0000000099") || name == "spare-0000000007.wlog"), "{names:?}");
    assert_eq!(log.spare_count(), 1, "a fresh spare is prepared, numbered after the leftovers");
    assert!(names.contains(&"spare-0000000100.wlog".to_string()), "{names:?}");
}

/// A config whose batches are written behind every 2 KiB.
fn write_behind_config() -> LogConfig {
    LogConfig { write_behind_bytes: 2048, ..config() }
}

#[test]
fn large_batch_is_written_behind_and_readable_before_its_commit() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), write_behind_config(), 0);
    append_committed(&mut log, 1, 10);
    let before = storage.stats();
    let mut positions = Vec::new();
    for lsn in 2..=21 {
        positions.push(log.append(KIND, 1, &payload(lsn, 500)).expect("append").1);
    }
    let during = storage.stats();
    assert!(log.write_behind_count() >= 4, "{} pieces", log.write_behind_count());
    assert!(during.writes > before.writes, "pieces reach the file before the commit");
    assert_eq!(during.syncs, before.syncs, "but nothing is synced before the commit");
    assert_eq!(log.durable_lsn(), 1);
    for (index, pos) in positions.iter().enumerate() {
        assert_eq!(log.read(*pos).expect("read uncommitted").payload, payload(index as u64 + 2, 500));
    }
    log.commit().expect("commit");
    assert_eq!(storage.stats().syncs, during.syncs + 1, "one fsync per batch, as without write-behind");
    drop(log);
    let (_, report, replayed) = open_collect(storage.crash(3), write_behind_config(), 0);
    assert!(report.is_clean(), "{report}");
    assert_eq!(lsns(&replayed), (1..=21).collect::<Vec<_>>());
}

#[test]
fn failed_write_behind_poisons_at_commit() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), write_behind_config(), 0);
    append_committed(&mut log, 3, 10);
    storage.fail_write_after(0);
    for lsn in 4..=20 {
        log.append(KIND, 1, &payload(lsn, 500)).expect("append keeps buffering after a failed write-behind");
    }
    let error = log.commit().expect_err("the failed write-behind fails the commit");
    assert!(matches!(error, LogError::Io { .. }), "{error}");
    assert!(log.is_poisoned().is_some());
    assert_eq!(log.durable_lsn(), 3);
    drop(log);
    let (_, report, replayed) = open_collect(storage.crash(1), write_behind_config(), 0);
    assert!(report.is_clean(), "{report}");
    assert!(lsns(&replayed).starts_with(&[1, 2, 3]), "confirmed records survive");
}

#[test]
fn batch_torn_out_of_order_is_a_torn_tail_not_damage() {
    // The image a crash leaves when a written-behind batch was on its way to the disk: a later
    // piece of the batch landed, an earlier one did not. (Built here by committing the batch
    // and erasing pieces; recovery sees only the image, and a confirmed last batch damaged
    // this way is dropped the same: docs/RECOVERY.md rule 3.)
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), write_behind_config(), 0);
    append_committed(&mut log, 5, 100);
    let batch = append_committed(&mut log, 20, 500); // LSNs 6..=25
    drop(log);
    // The batch's pieces 1 and 3 never reached the disk (zeros), pieces 2 and 4 did.
    let segment = segment_file_name(1);
    for lsn in (6..=10).chain(16..=20) {
        let pos = batch[(lsn - 6) as usize];
        storage.write_durable(&segment, pos.offset.into(), &[0u8; 512]);
    }
    let (mut log, report, replayed) = open_collect(storage.clone(), write_behind_config(), 0);
    assert!(report.is_clean(), "an unconfirmed batch torn out of order is not corruption: {report}");
    assert_eq!(lsns(&replayed), (1..=5).collect::<Vec<_>>(), "no record after the break is replayed");
    let torn = report.torn_tail.clone().expect("reported as a torn tail");
    assert_eq!((torn.offset, torn.lsn), (u64::from(batch[0].offset), 6));
    let record_span = weir_log::record_span_bytes(500) as u64;
    assert_eq!(torn.bytes_dropped, u64::from(batch[19].offset) + record_span - u64::from(batch[0].offset));
    // The stale pieces were zeroed: new appends reuse the LSNs and the next open is clean.
    append_committed(&mut log, 3, 40);
    drop(log);
    let (_, report, replayed) = open_collect(storage, write_behind_config(), 0);
    assert!(report.is_clean() && report.torn_tail.is_none(), "{report}");
    assert_eq!(lsns(&replayed), (1..=8).collect::<Vec<_>>());
}

#[test]
fn damage_followed_by_a_later_batch_is_corruption_in_the_newest_segment() {
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), write_behind_config(), 0);
    let first = append_committed(&mut log, 5, 100);
    append_committed(&mut log, 5, 100);
    drop(log);
    // LSN 3 was durable before the batch 6..=10 was written: this is damage, not a torn batch.
    storage.corrupt_byte(&segment_file_name(1), u64::from(first[2].offset) + 40, 0x55).expect("corrupt");
    let (_, report, replayed) = open_collect(storage, write_behind_config(), 0);
    assert_eq!(lsns(&replayed), vec![1, 2, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(report.corruptions.len(), 1, "{report}");
    assert_eq!(report.corruptions[0].lsn_lost, Some(LsnRange { first: 3, last: 3 }));
    assert!(report.torn_tail.is_none());
}

#[test]
fn bytes_written_behind_count_for_spare_preparation() {
    // 4 MiB segments so the 1 MiB minimum zero-fill step does not hide the pacing.
    let config = LogConfig { write_behind_bytes: 64 * 1024, ..LogConfig::with_segment_size(4 << 20) };
    let storage = SimStorage::new();
    let (mut log, _, _) = open_collect(storage.clone(), config.clone(), 0);
    append_committed(&mut log, 1, 10); // takes the prepared spare: the next one starts now
    let before = storage.stats().bytes_written;
    let batch = append_committed(&mut log, 1500, 1000);
    let record_bytes = batch.len() as u64 * weir_log::record_span_bytes(1000) as u64;
    assert!(log.write_behind_count() > 10);
    let zero_filled = storage.stats().bytes_written - before - record_bytes;
    assert!(
        zero_filled >= 2 * record_bytes,
        "a commit advances the next spare by twice what it wrote: {zero_filled} < 2 x {record_bytes}"
    );
}

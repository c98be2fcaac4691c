//! Helpers shared by the integration tests: opening a log while collecting replayed records,
//! and deterministic payloads whose bytes identify their LSN.

#![allow(dead_code)]

use weir_log::{Log, LogConfig, Lsn, Record, RecoveryReport, Storage};

/// Small segments so tests roll over often.
pub const SEGMENT_BYTES: u32 = 64 * 1024;

pub const KIND: u8 = 0x20;

pub fn config() -> LogConfig {
    LogConfig::with_segment_size(SEGMENT_BYTES)
}

/// Opens the log and returns every replayed record.
pub fn open_collect<S: Storage>(
    storage: S,
    config: LogConfig,
    replay_after: Lsn,
) -> (Log<S>, RecoveryReport, Vec<Record>) {
    let mut replayed = Vec::new();
    let (log, report) = Log::open(storage, config, replay_after, &mut |view| {
        replayed.push(Record {
            lsn: view.lsn,
            kind: view.kind,
            version: view.version,
            pos: view.pos,
            payload: view.payload.to_vec(),
        });
        Ok(())
    })
    .expect("open");
    (log, report, replayed)
}

/// A payload of `len` bytes derived from `lsn`.
pub fn payload(lsn: Lsn, len: usize) -> Vec<u8> {
    (0..len).map(|i| (lsn as usize).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

/// Appends `count` records of `len` bytes and commits; returns their positions.
pub fn append_committed<S: Storage>(log: &mut Log<S>, count: usize, len: usize) -> Vec<weir_log::RecordPos> {
    let mut positions = Vec::new();
    for _ in 0..count {
        let lsn = log.last_lsn() + 1;
        let (got, pos) = log.append(KIND, 1, &payload(lsn, len)).expect("append");
        assert_eq!(got, lsn);
        positions.push(pos);
    }
    log.commit().expect("commit");
    positions
}

pub fn lsns(records: &[Record]) -> Vec<Lsn> {
    records.iter().map(|record| record.lsn).collect()
}

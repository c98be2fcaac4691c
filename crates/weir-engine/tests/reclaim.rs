//! Segment reclamation and compaction, driven through the engine's command API on a real
//! directory: one long-lived message must not pin the segments that heavy traffic flows
//! through, and it must survive the moves and a restart intact.

mod common;

use std::path::Path;

use common::Client;
use weir_engine::{Engine, EngineConfig, FileStorage, LogConfig};

const SEGMENT_BYTES: u32 = 64 * 1024;
/// Segment files the test allows at the end. Steady state with compaction: 60 keepers of 3 KB
/// may sit in segments that are each at least a quarter live (compaction leaves those alone):
/// about 11, plus the active segment and up to two checkpoint intervals not yet released (four
/// segments): about 16. Without compaction every keeper pins its own segment: about 64.
const SEGMENTS_MAX: usize = 24;

fn config() -> EngineConfig {
    EngineConfig {
        log: LogConfig::with_segment_size(SEGMENT_BYTES),
        cache_budget_bytes: 0, // every delivery reads the log, so moved bodies are really read back
        checkpoint_interval_bytes: 2 * u64::from(SEGMENT_BYTES),
        ..EngineConfig::default()
    }
}

/// Segment files holding log data (`seg-*.wlog`). Spare files (`spare-*.wlog`) are not
/// counted: the spare pool keeps its peak size by design (it is not trimmed), and how large that
/// peak gets depends on how far checkpoints lagged, that is on timing.
fn log_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().to_string_lossy().into_owned();
            name.starts_with("seg-") && name.ends_with(".wlog")
        })
        .count()
}

fn keeper(i: u32) -> Vec<u8> {
    (0..3000u32).map(|j| (i * 31 + j * 7) as u8).collect()
}

#[test]
fn long_lived_messages_do_not_pin_segments_and_survive_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let keepers = 60u32;
    {
        let (engine, _) = Engine::start(FileStorage::open(dir.path()).unwrap(), config()).unwrap();
        let mut client = Client::connect(engine.handle());
        client.declare("keep");
        client.declare("churn");
        // About 4 MiB through the log, with one long-lived message in nearly every segment:
        // without compaction each of them would pin its whole segment.
        for i in 0..4000u32 {
            if i % 64 == 0 && i / 64 < keepers {
                client.publish("keep", keeper(i / 64));
            }
            client.publish("churn", vec![(i % 251) as u8; 1024]);
            assert_eq!(client.get("churn").expect("churn message").len(), 1024);
        }
        // Checkpoints complete on a background thread, so how many segments are free at one
        // moment depends on timing. Keep the traffic going (bounded) until reclamation has
        // caught up: without compaction the count never drops (each keeper pins a segment).
        let mut files = log_files(dir.path());
        for i in 0..2000u32 {
            if files <= SEGMENTS_MAX {
                break;
            }
            client.publish("churn", vec![(i % 251) as u8; 1024]);
            client.get("churn").expect("churn message");
            files = log_files(dir.path());
        }
        eprintln!("segment files at the end: {files}");
        assert!(
            files <= SEGMENTS_MAX,
            "settled segments must be recycled and sparse ones compacted: {files} segment files"
        );
        engine.shutdown();
    }
    let (engine, report) = Engine::start(FileStorage::open(dir.path()).unwrap(), config()).unwrap();
    assert!(report.corruptions.is_empty(), "{report}");
    let mut client = Client::connect(engine.handle());
    for i in 0..keepers {
        let body = client.get("keep").unwrap_or_else(|| panic!("long-lived message {i} survived"));
        assert_eq!(body.as_ref(), keeper(i).as_slice(), "long-lived message {i} intact and in order");
    }
    assert!(client.get("keep").is_none());
    assert!(client.get("churn").is_none(), "every churn message was settled");
    engine.shutdown();
}

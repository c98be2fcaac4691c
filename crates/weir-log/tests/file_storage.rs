//! The same log over the real `FileStorage` in a temporary directory: append, commit, reopen,
//! read back by position, checkpoint, release and recycle.

mod common;

use common::{append_committed, config, lsns, open_collect, payload};
use weir_log::{load_checkpoint, segment_file_name, write_checkpoint, FileStorage};

#[test]
fn file_storage_append_commit_reopen_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FileStorage::open(dir.path()).expect("storage");
    let (mut log, report, replayed) = open_collect(storage, config(), 0);
    assert!(replayed.is_empty() && report.is_clean());
    let positions = append_committed(&mut log, 300, 900);
    let segments = log.segments();
    assert!(segments.len() >= 4, "{segments:?}");
    for path in std::fs::read_dir(dir.path()).expect("list").map(|entry| entry.expect("entry").path()) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.ends_with(".wlog") {
            let len = std::fs::metadata(&path).expect("metadata").len();
            assert_eq!(len, u64::from(common::SEGMENT_BYTES), "{name} is preallocated");
        }
    }
    write_checkpoint(log.storage(), 200, b"state").expect("checkpoint");
    drop(log);

    let storage = FileStorage::open(dir.path()).expect("storage reopens after the lock is released");
    assert_eq!(load_checkpoint(&storage).expect("load"), Some((200, b"state".to_vec())));
    let (mut log, report, replayed) = open_collect(storage, config(), 200);
    assert!(report.is_clean() && report.torn_tail.is_none(), "{report}");
    assert_eq!(lsns(&replayed), (201..=300).collect::<Vec<_>>());
    for (index, pos) in positions.iter().enumerate() {
        let record = log.read(*pos).expect("read");
        assert_eq!((record.lsn, record.payload), (index as u64 + 1, payload(index as u64 + 1, 900)));
    }
    let first_segment = log.segments()[0].id;
    log.release_segment(first_segment).expect("release");
    assert!(!dir.path().join(segment_file_name(first_segment)).exists());
    append_committed(&mut log, 300, 900); // rolls over into recycled files
    drop(log);

    let storage = FileStorage::open(dir.path()).expect("storage");
    let (log, report, replayed) = open_collect(storage, config(), 200);
    assert!(report.is_clean(), "{report}");
    assert_eq!(lsns(&replayed), (201..=600).collect::<Vec<_>>());
    assert_eq!(log.last_lsn(), 600);
}

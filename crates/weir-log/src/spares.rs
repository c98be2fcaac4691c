//! The pool of prepared segment files ("spares") that rollovers turn into segments.
//!
//! A spare is either a released segment kept for recycling, or a new file really written full of
//! zeros (not sparse) and fdatasynced, so the fdatasyncs of later commits never allocate blocks.
//! Zero-filling a new spare costs as much I/O as the segment it will hold; to keep that cost out
//! of any single commit's latency, `advance_after_commit` fills the next spare a step at a time
//! (twice the bytes the commit wrote, at least `MIN_ZERO_FILL_STEP_BYTES`), so it keeps ahead of
//! the write rate. Only when no spare is ready at a rollover is one finished inline.
//!
//! Invariants:
//! - A file under a `spare-N.wlog` name is complete (full size, zero-filled or recycled) and
//!   durable; a file still being filled is named `spare-N.wlog.tmp` and is removed by the next
//!   open if a crash interrupts it.
//! - Failing here never poisons the log: nothing of the durable chain is touched. A full disk is
//!   `LogError::NoSpace`, and after a failure in the background step no further background
//!   attempt is made until the next rollover (which retries inline and reports the error).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::LogError;
use crate::format::{spare_file_name, TMP_SUFFIX};
use crate::storage::{Storage, StorageFile};

/// Zero-filling writes this many bytes per call.
pub(crate) const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;
/// The background step after a commit zero-fills at least this much of the next spare.
pub(crate) const MIN_ZERO_FILL_STEP_BYTES: u64 = 1 << 20;
/// ... and at least this multiple of the bytes the commit wrote, so spares stay ahead.
pub(crate) const ZERO_FILL_STEP_FACTOR: u64 = 2;

/// A prepared file waiting to become a segment.
pub(crate) struct SpareFile<F> {
    pub name: String,
    pub file: Arc<F>,
}

/// A new spare being zero-filled.
struct SpareInProgress<F> {
    name: String,
    tmp_name: String,
    file: F,
    filled_bytes: u64,
}

pub(crate) struct SparePool<F> {
    ready: VecDeque<SpareFile<F>>,
    in_progress: Option<SpareInProgress<F>>,
    next_number: u64,
    /// A background step failed; wait for the next rollover before trying again.
    backoff: bool,
}

impl<F: StorageFile> SparePool<F> {
    pub(crate) fn new(ready: VecDeque<SpareFile<F>>, next_number: u64) -> Self {
        SparePool { ready, in_progress: None, next_number, backoff: false }
    }

    /// Spares ready for a rollover.
    pub(crate) fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// A fresh spare file name (for a released segment).
    pub(crate) fn allocate_name(&mut self) -> String {
        let name = spare_file_name(self.next_number);
        self.next_number += 1;
        name
    }

    pub(crate) fn push(&mut self, spare: SpareFile<F>) {
        self.ready.push_back(spare);
    }

    /// Takes a spare for a rollover, finishing or creating one inline if none is ready.
    pub(crate) fn take<S: Storage<File = F>>(
        &mut self,
        storage: &S,
        segment_bytes: u64,
    ) -> Result<SpareFile<F>, LogError> {
        self.backoff = false;
        if self.ready.is_empty() {
            self.advance(storage, segment_bytes, u64::MAX)?;
        }
        Ok(self.ready.pop_front().expect("advance with an unlimited budget completes a spare"))
    }

    /// Prepares spares inline until `target` are ready.
    pub(crate) fn fill_to<S: Storage<File = F>>(
        &mut self,
        storage: &S,
        segment_bytes: u64,
        target: usize,
    ) -> Result<(), LogError> {
        while self.ready.len() < target {
            self.advance(storage, segment_bytes, u64::MAX)?;
        }
        Ok(())
    }

    /// The background step after a successful commit that wrote `committed_bytes`. Errors are
    /// logged, never returned: the commit is already durable.
    pub(crate) fn advance_after_commit<S: Storage<File = F>>(
        &mut self,
        storage: &S,
        segment_bytes: u64,
        target: usize,
        committed_bytes: u64,
    ) {
        let budget = committed_bytes.saturating_mul(ZERO_FILL_STEP_FACTOR).max(MIN_ZERO_FILL_STEP_BYTES);
        self.step(storage, segment_bytes, target, budget);
    }

    /// Zero-fills at most `budget` bytes towards `target` ready spares (after a commit, or on an
    /// idle turn). Errors are logged, never returned, and stop further steps until the next
    /// rollover retries inline.
    pub(crate) fn step<S: Storage<File = F>>(&mut self, storage: &S, segment_bytes: u64, target: usize, budget: u64) {
        if self.backoff || self.ready.len() >= target {
            return;
        }
        if let Err(error) = self.advance(storage, segment_bytes, budget) {
            tracing::warn!(%error, "could not prepare a spare segment; the next rollover retries");
            self.backoff = true;
        }
    }

    /// Zero-fills up to `budget` bytes of the spare in progress (starting one if needed) and
    /// completes it when full: fdatasync, rename to its final name, fsync the directory.
    fn advance<S: Storage<File = F>>(&mut self, storage: &S, segment_bytes: u64, budget: u64) -> Result<(), LogError> {
        if self.in_progress.is_none() {
            let name = self.allocate_name();
            let tmp_name = format!("{name}{TMP_SUFFIX}");
            let file =
                storage.create(&tmp_name).map_err(|e| LogError::from_io("creating spare segment", &tmp_name, e))?;
            self.in_progress = Some(SpareInProgress { name, tmp_name, file, filled_bytes: 0 });
        }
        let result = self.fill_in_progress(storage, segment_bytes, budget);
        if result.is_err() {
            if let Some(abandoned) = self.in_progress.take() {
                // Best effort: a leftover temporary file is also removed by the next open.
                drop(abandoned.file);
                let _ = storage.remove(&abandoned.tmp_name);
            }
        }
        result
    }

    fn fill_in_progress<S: Storage<File = F>>(
        &mut self,
        storage: &S,
        segment_bytes: u64,
        budget: u64,
    ) -> Result<(), LogError> {
        let progress = self.in_progress.as_mut().expect("advance started one");
        let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES.min(segment_bytes as usize)];
        let stop = progress.filled_bytes.saturating_add(budget).min(segment_bytes);
        while progress.filled_bytes < stop {
            let chunk = (stop - progress.filled_bytes).min(zeros.len() as u64) as usize;
            progress
                .file
                .write_at(progress.filled_bytes, &zeros[..chunk])
                .map_err(|e| LogError::from_io("zero-filling spare segment", &progress.tmp_name, e))?;
            progress.filled_bytes += chunk as u64;
        }
        if progress.filled_bytes < segment_bytes {
            return Ok(());
        }
        let (tmp_name, name) = (&progress.tmp_name, &progress.name);
        progress.file.sync_data().map_err(|e| LogError::from_io("syncing spare segment", tmp_name, e))?;
        storage.rename(tmp_name, name).map_err(|e| LogError::from_io("naming spare segment", name, e))?;
        storage.sync_dir().map_err(|e| LogError::from_io("syncing directory", name, e))?;
        let done = self.in_progress.take().expect("checked above");
        self.ready.push_back(SpareFile { name: done.name, file: Arc::new(done.file) });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    const SEGMENT: u64 = 4 << 20;

    #[test]
    fn background_steps_spread_the_zero_fill_over_commits() {
        let storage = SimStorage::new();
        let mut pool = SparePool::new(VecDeque::new(), 0);
        pool.advance_after_commit(&storage, SEGMENT, 1, 1000);
        assert_eq!(pool.ready_count(), 0);
        assert_eq!(storage.file_names(), vec!["spare-0000000000.wlog.tmp".to_string()]);
        assert_eq!(storage.stats().bytes_written, MIN_ZERO_FILL_STEP_BYTES);
        pool.advance_after_commit(&storage, SEGMENT, 1, 1 << 20);
        assert_eq!(storage.stats().bytes_written, 3 << 20);
        pool.advance_after_commit(&storage, SEGMENT, 1, 1 << 20);
        assert_eq!(pool.ready_count(), 1);
        assert_eq!(storage.file_names(), vec!["spare-0000000000.wlog".to_string()]);
        assert_eq!(storage.file_contents("spare-0000000000.wlog").map(|c| c.len() as u64), Some(SEGMENT));
        pool.advance_after_commit(&storage, SEGMENT, 1, 1 << 20);
        assert_eq!(storage.stats().bytes_written, SEGMENT, "nothing more once the target is met");
    }

    #[test]
    fn take_finishes_a_partial_spare_inline() {
        let storage = SimStorage::new();
        let mut pool = SparePool::new(VecDeque::new(), 5);
        pool.advance_after_commit(&storage, SEGMENT, 1, 1);
        let spare = pool.take(&storage, SEGMENT).expect("take");
        assert_eq!(spare.name, "spare-0000000005.wlog");
        assert_eq!(spare.file.len().expect("len"), SEGMENT);
    }

    #[test]
    fn failure_in_background_backs_off_until_the_next_rollover() {
        let storage = SimStorage::new();
        let mut pool = SparePool::new(VecDeque::new(), 0);
        storage.set_space_limit(Some(1000));
        pool.advance_after_commit(&storage, SEGMENT, 1, 1);
        assert!(storage.file_names().is_empty(), "the partial file is removed");
        storage.set_space_limit(None);
        pool.advance_after_commit(&storage, SEGMENT, 1, 1);
        assert!(storage.file_names().is_empty(), "backing off");
        storage.set_space_limit(Some(1000));
        assert!(pool.take(&storage, SEGMENT).err().is_some_and(|e| e.is_no_space()));
        storage.set_space_limit(None);
        pool.take(&storage, SEGMENT).expect("space again");
    }
}

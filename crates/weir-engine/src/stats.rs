//! Engine measurements that readers take without asking the engine thread: the latency of
//! each log commit (write + one fdatasync), as a histogram with fixed buckets.
//!
//! Written by the engine thread with relaxed atomics, read by `/metrics` at any time; a
//! reader may see the buckets one commit ahead of the sum, which a histogram tolerates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commit latency buckets, in microseconds (the last bucket is +Inf).
pub const COMMIT_BUCKETS_MICROS: [u64; 12] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

#[derive(Debug, Default)]
pub struct EngineStats {
    /// Commits at or below each bound (not cumulative; the reader sums them).
    commit_buckets: [AtomicU64; COMMIT_BUCKETS_MICROS.len() + 1],
    commit_micros_sum: AtomicU64,
}

/// A copy of the commit histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitHistogram {
    /// Cumulative counts for each bound of [`COMMIT_BUCKETS_MICROS`], then +Inf.
    pub cumulative: Vec<u64>,
    pub sum_micros: u64,
    pub count: u64,
}

impl EngineStats {
    pub(crate) fn record_commit(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket =
            COMMIT_BUCKETS_MICROS.iter().position(|&bound| micros <= bound).unwrap_or(COMMIT_BUCKETS_MICROS.len());
        self.commit_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.commit_micros_sum.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn commit_histogram(&self) -> CommitHistogram {
        let mut running = 0;
        let cumulative: Vec<u64> = self
            .commit_buckets
            .iter()
            .map(|bucket| {
                running += bucket.load(Ordering::Relaxed);
                running
            })
            .collect();
        // The count is the last cumulative bucket (+Inf), so the two always agree.
        CommitHistogram { count: running, cumulative, sum_micros: self.commit_micros_sum.load(Ordering::Relaxed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_land_in_their_bucket_and_counts_are_cumulative() {
        let stats = EngineStats::default();
        stats.record_commit(Duration::from_micros(100)); // at the bound: first bucket
        stats.record_commit(Duration::from_micros(101));
        stats.record_commit(Duration::from_secs(5)); // beyond every bound: +Inf
        let h = stats.commit_histogram();
        assert_eq!(h.count, 3);
        assert_eq!(h.sum_micros, 5_000_201);
        assert_eq!(h.cumulative[0], 1);
        assert_eq!(h.cumulative[1], 2);
        assert_eq!(h.cumulative[COMMIT_BUCKETS_MICROS.len() - 1], 2);
        assert_eq!(*h.cumulative.last().unwrap(), 3);
    }
}

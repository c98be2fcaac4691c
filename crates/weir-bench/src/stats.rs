//! What the publisher and consumer tasks share with the monitor: counters, the stop signal
//! and why the run stopped.
//!
//! Counters are atomics bumped once per batch or read, never per message, so sharing them
//! costs nothing measurable. The stop signal is a `watch` channel: every task selects on it,
//! the first reason recorded wins (later ones are ignored), and a task that sees it finishes
//! its current write, settles what it can within a bound, and closes its connection.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::watch;

/// Largest latency recorded, in microseconds (one hour: the longest run); larger values are
/// recorded as this.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Significant figures the latency histogram keeps.
pub const LATENCY_SIGNIFICANT_FIGURES: u8 = 3;

/// An empty latency histogram in microseconds.
#[must_use]
pub fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGNIFICANT_FIGURES) {
        Ok(histogram) => histogram,
        // The bounds are constants that hdrhistogram accepts: a bug if not.
        Err(error) => panic!("latency histogram bounds rejected: {error}"),
    }
}

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum StopReason {
    /// `--duration` elapsed.
    Duration = 1,
    /// `--count` messages were published (and consumed, with consumers).
    Count,
    /// `--consume-only` consumers saw no message for 2 s.
    Idle,
    /// Nothing moved for the stall timeout.
    Stalled,
    /// The hard time cap was reached before `--count`.
    TimeLimit,
    /// A connection failed.
    Error,
    /// Ctrl-C.
    Interrupted,
}

impl StopReason {
    const ALL: [StopReason; 7] = [
        StopReason::Duration,
        StopReason::Count,
        StopReason::Idle,
        StopReason::Stalled,
        StopReason::TimeLimit,
        StopReason::Error,
        StopReason::Interrupted,
    ];

    /// True if a run that stopped for this reason did what was asked.
    #[must_use]
    pub fn is_success(self) -> bool {
        matches!(self, StopReason::Duration | StopReason::Count | StopReason::Idle)
    }

    /// The name used in reports (`duration`, `count`, `time-limit`, …).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Duration => "duration",
            StopReason::Count => "count",
            StopReason::Idle => "idle",
            StopReason::Stalled => "stalled",
            StopReason::TimeLimit => "time-limit",
            StopReason::Error => "error",
            StopReason::Interrupted => "interrupted",
        }
    }

    fn from_code(code: u8) -> Option<StopReason> {
        StopReason::ALL.into_iter().find(|reason| *reason as u8 == code)
    }
}

/// State shared by every task of one run.
#[derive(Debug)]
pub struct Shared {
    /// When the measured part of the run began.
    pub start: Instant,
    /// Messages written to publisher sockets.
    pub published: AtomicU64,
    /// Messages the broker acked (publisher confirms).
    pub confirmed: AtomicU64,
    /// Messages the broker nacked.
    pub nacked: AtomicU64,
    /// Deliveries received completely by consumers.
    pub consumed: AtomicU64,
    /// Microseconds from `start` to the most recent delivery (0: none yet).
    pub last_delivery_us: AtomicU64,
    /// Microseconds from `start` to the stop request (0: not stopped).
    stopped_at_us: AtomicU64,
    /// Consumed messages at which consumers stop the run.
    pub consume_target: Option<u64>,
    stop_reason: AtomicU8,
    stop: watch::Sender<bool>,
}

impl Shared {
    /// Shared state for a run starting now.
    #[must_use]
    pub fn new(consume_target: Option<u64>) -> Shared {
        Shared {
            start: Instant::now(),
            published: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            stopped_at_us: AtomicU64::new(0),
            consume_target,
            stop_reason: AtomicU8::new(0),
            stop: watch::channel(false).0,
        }
    }

    /// A receiver of the stop signal.
    #[must_use]
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Asks every task to stop; the first reason given is the one reported.
    pub fn request_stop(&self, reason: StopReason) {
        let first = self.stop_reason.compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if first {
            self.stopped_at_us.store(self.elapsed_us().max(1), Ordering::Release);
        }
        self.stop.send_replace(true);
    }

    /// Why the run stopped, if it did.
    #[must_use]
    pub fn stop_reason(&self) -> Option<StopReason> {
        StopReason::from_code(self.stop_reason.load(Ordering::Acquire))
    }

    /// When the stop was requested, from `start`.
    #[must_use]
    pub fn stopped_at(&self) -> Option<Duration> {
        match self.stopped_at_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Microseconds since `start`.
    #[must_use]
    pub fn elapsed_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records `count` complete deliveries; stops the run when the consume target is met.
    pub fn add_consumed(&self, count: u64) {
        if count == 0 {
            return;
        }
        self.last_delivery_us.store(self.elapsed_us().max(1), Ordering::Release);
        let total = self.consumed.fetch_add(count, Ordering::AcqRel) + count;
        if self.consume_target.is_some_and(|target| total >= target) {
            self.request_stop(StopReason::Count);
        }
    }

    /// Sum of every counter: the monitor's measure of progress.
    #[must_use]
    pub fn progress(&self) -> u64 {
        self.published.load(Ordering::Acquire)
            + self.confirmed.load(Ordering::Acquire)
            + self.nacked.load(Ordering::Acquire)
            + self.consumed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_reason_wins() {
        let shared = Shared::new(None);
        assert_eq!(shared.stop_reason(), None);
        let signal = shared.stop_signal();
        shared.request_stop(StopReason::Count);
        shared.request_stop(StopReason::Stalled);
        assert_eq!(shared.stop_reason(), Some(StopReason::Count));
        assert!(*signal.borrow());
        assert!(shared.stopped_at().is_some());
    }

    #[test]
    fn reaching_the_consume_target_stops_the_run() {
        let shared = Shared::new(Some(10));
        shared.add_consumed(9);
        assert_eq!(shared.stop_reason(), None);
        shared.add_consumed(1);
        assert_eq!(shared.stop_reason(), Some(StopReason::Count));
    }

    #[test]
    fn stop_reasons_round_trip_their_codes() {
        for reason in StopReason::ALL {
            assert_eq!(StopReason::from_code(reason as u8), Some(reason));
        }
        assert_eq!(StopReason::from_code(0), None);
    }

    #[test]
    fn huge_latencies_saturate_instead_of_failing() {
        let mut histogram = latency_histogram();
        histogram.saturating_record(u64::MAX);
        assert!(histogram.max() >= LATENCY_MAX_US);
    }
}

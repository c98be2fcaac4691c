//! The run's supervisor: owns every publisher and consumer task, prints progress, enforces
//! the time limit, the stall timeout and the idle stop, samples the broker process, and
//! aborts tasks that do not finish after a stop.
//!
//! Invariants:
//! - The run ends: at the time limit a stop is requested, and [`SHUTDOWN_GRACE`] after any
//!   stop every task still running is aborted.
//! - No progress (no message published, confirmed or consumed) for [`STALL_TIMEOUT`] stops
//!   the run as `stalled`, which the report and the exit code show.
//! - Ctrl-C stops the run gracefully (the report is still printed); a second one aborts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::client::ClientError;
use crate::config::{RunPlan, CONSUME_IDLE_STOP};
use crate::consumer::ConsumerOutcome;
use crate::procfs::{self, ProcError, ProcSample};
use crate::publisher::PublisherOutcome;
use crate::report::{rate, BrokerUsage};
use crate::stats::{Shared, StopReason};

/// How often the monitor checks the run.
pub const MONITOR_TICK: Duration = Duration::from_millis(100);
/// How often a progress line is printed and the broker sampled.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A run with no progress for this long is stopped as stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long tasks get to finish after a stop before they are aborted: the confirm drain
/// and the close timeout, with room to spare.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// What a task returned.
#[derive(Debug)]
pub enum TaskOutcome {
    /// A publisher finished.
    Publisher(u32, Result<PublisherOutcome, ClientError>),
    /// A consumer finished (its outcome carries its error, if any).
    Consumer(u32, ConsumerOutcome),
}

/// CPU and RSS of the broker over the run.
#[derive(Debug)]
pub struct BrokerWatch {
    pid: u32,
    start: ProcSample,
    rss_peak_bytes: u64,
}

impl BrokerWatch {
    /// Takes the first sample.
    pub fn start(pid: u32) -> Result<BrokerWatch, ProcError> {
        let start = procfs::sample(pid)?;
        Ok(BrokerWatch { pid, start, rss_peak_bytes: start.rss_bytes })
    }

    /// Samples RSS for the peak; a failed read (process gone) is ignored here and reported
    /// by [`BrokerWatch::finish`].
    pub fn observe(&mut self) {
        if let Ok(rss) = procfs::rss_bytes(self.pid) {
            self.rss_peak_bytes = self.rss_peak_bytes.max(rss);
        }
    }

    /// The final sample and the usage over the run.
    pub fn finish(mut self, published: u64, consumed: u64, elapsed: Duration) -> Result<BrokerUsage, ProcError> {
        let end = procfs::sample(self.pid)?;
        self.rss_peak_bytes = self.rss_peak_bytes.max(end.rss_bytes);
        let cpu_seconds = procfs::ticks_to_duration(end.cpu_ticks.saturating_sub(self.start.cpu_ticks)).as_secs_f64();
        let per_cpu = |count: u64| (count > 0 && cpu_seconds > 0.0).then(|| rate(count, cpu_seconds));
        Ok(BrokerUsage {
            pid: self.pid,
            cpu_seconds,
            cores_busy: cpu_seconds / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            published_per_cpu_second: per_cpu(published),
            consumed_per_cpu_second: per_cpu(consumed),
            rss_start_bytes: self.start.rss_bytes,
            rss_peak_bytes: self.rss_peak_bytes,
            rss_final_bytes: end.rss_bytes,
        })
    }
}

/// Counters as of the last progress line.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    published: u64,
    consumed: u64,
}

/// Supervises `tasks` until all have finished (or were aborted); returns their outcomes and
/// the errors of tasks that panicked or were aborted.
pub async fn supervise(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<TaskOutcome>,
    plan: &RunPlan,
    mut broker: Option<&mut BrokerWatch>,
) -> (Vec<TaskOutcome>, Vec<String>) {
    let deadline = shared.start + plan.time_limit;
    let mut tick = tokio::time::interval(MONITOR_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outcomes = Vec::new();
    let mut errors = Vec::new();
    let mut last_progress = (shared.progress(), Instant::now());
    let mut last_print = (Snapshot::default(), Instant::now());
    let mut abort_at: Option<Instant> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let stopping = shared.stop_reason().is_some();
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(outcome)) => {
                    let failed = match &outcome {
                        TaskOutcome::Publisher(_, result) => result.is_err(),
                        TaskOutcome::Consumer(_, consumer) => consumer.error.is_some(),
                    };
                    if failed {
                        shared.request_stop(StopReason::Error);
                    }
                    outcomes.push(outcome);
                }
                Some(Err(join_error)) if join_error.is_cancelled() => {
                    errors.push(format!("a task did not finish within {SHUTDOWN_GRACE:?} of the stop and was aborted"));
                }
                Some(Err(join_error)) => {
                    shared.request_stop(StopReason::Error);
                    errors.push(format!("a task panicked: {join_error}"));
                }
            },
            () = tokio::time::sleep_until(deadline.into()), if !stopping => {
                shared.request_stop(if plan.duration_given { StopReason::Duration } else { StopReason::TimeLimit });
            }
            _ = &mut interrupted => {
                if stopping {
                    eprintln!("weir-bench: second interrupt: aborting every connection");
                    tasks.abort_all();
                } else {
                    eprintln!("weir-bench: interrupted: stopping (interrupt again to abort)");
                    shared.request_stop(StopReason::Interrupted);
                }
                interrupted.set(tokio::signal::ctrl_c());
            }
            _ = tick.tick() => {
                let now = Instant::now();
                check_idle_and_stall(shared, plan, &mut last_progress, now);
                if !stopping && now.duration_since(last_print.1) >= PROGRESS_INTERVAL {
                    last_print = print_progress(shared, plan, last_print);
                    if let Some(broker) = broker.as_deref_mut() {
                        broker.observe();
                    }
                }
                if shared.stop_reason().is_some() {
                    let abort_at = *abort_at.get_or_insert(now + SHUTDOWN_GRACE);
                    if now >= abort_at {
                        tasks.abort_all();
                    }
                }
            }
        }
    }
    if shared.stop_reason().is_none() {
        // Every task finished on its own: publishers of a --publish-only --count run.
        shared.request_stop(StopReason::Count);
    }
    (outcomes, errors)
}

fn check_idle_and_stall(shared: &Shared, plan: &RunPlan, last_progress: &mut (u64, Instant), now: Instant) {
    if shared.stop_reason().is_some() {
        return;
    }
    if plan.stop_when_idle {
        let last_delivery_us = shared.last_delivery_us.load(Ordering::Acquire);
        let idle = Duration::from_micros(shared.elapsed_us().saturating_sub(last_delivery_us));
        if idle >= CONSUME_IDLE_STOP {
            shared.request_stop(StopReason::Idle);
            return;
        }
    }
    let progress = shared.progress();
    if progress != last_progress.0 {
        *last_progress = (progress, now);
    } else if now.duration_since(last_progress.1) >= STALL_TIMEOUT {
        eprintln!("weir-bench: no progress for {STALL_TIMEOUT:?}: stopping");
        shared.request_stop(StopReason::Stalled);
    }
}

fn print_progress(shared: &Shared, plan: &RunPlan, (previous, at): (Snapshot, Instant)) -> (Snapshot, Instant) {
    let now = Instant::now();
    let seconds = now.duration_since(at).as_secs_f64();
    let current = Snapshot {
        published: shared.published.load(Ordering::Acquire),
        consumed: shared.consumed.load(Ordering::Acquire),
    };
    let mut line = format!("[{:>7.1}s]", shared.start.elapsed().as_secs_f64());
    if plan.publishers > 0 {
        let published = rate(current.published - previous.published, seconds);
        line.push_str(&format!("  published {published:>10.0}/s"));
    }
    if plan.consumers > 0 {
        let consumed = rate(current.consumed - previous.consumed, seconds);
        line.push_str(&format!("  consumed {consumed:>10.0}/s"));
    }
    if plan.publishers > 0 && plan.confirm_window > 0 {
        let settled = shared.confirmed.load(Ordering::Acquire) + shared.nacked.load(Ordering::Acquire);
        line.push_str(&format!("  confirms outstanding {}", current.published.saturating_sub(settled)));
    }
    eprintln!("{line}");
    (current, now)
}

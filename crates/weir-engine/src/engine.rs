//! The engine thread: one loop of inbox → batch → apply → append → fsync → reply.
//!
//! Each turn takes everything waiting in the inbox (up to [`BATCH_COMMANDS_MAX`]), applies
//! it, delivers what became deliverable, sends the events that need no fsync, then commits
//! the log once (one fdatasync for the whole batch) and only then sends the rest (publisher
//! confirms and other durable replies). The next turn starts when that fsync has returned:
//! the batch grows with the load, there is no timer.
//!
//! Checkpoints: once [`EngineConfig::checkpoint_interval_bytes`] of records were appended
//! since the last one, the turn serialises a snapshot and hands it to the checkpoint thread,
//! which writes it atomically and reports back through the inbox. Then segments that hold
//! nothing live are recycled, and sparse ones are compacted (their live messages re-written
//! at the head) so one long-lived message cannot pin a whole segment.
//!
//! When idle, the loop hands one sealed segment at a time to the scrub thread (crc check of
//! every record), so corruption in old segments is found and reported without anyone reading
//! that message. A segment is never released while it is being scrubbed.
//!
//! A panic on the engine thread is a Weir bug with the state in an unknown shape: the process
//! aborts, and the next start recovers from the log (crash-only design).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_log::{LogConfig, RecoveryReport, Storage};
use weir_queue::MessageEntry;

use crate::api::{Command, ConnectionId};
use crate::broker::{Broker, QueueId};
use crate::error::StartError;
use crate::records::{self, location_of, pos_of, Writer, ENQUEUE_FLAG_RELOCATED};
use crate::security::{Authenticator, SharedDirectory};
use crate::stats::EngineStats;

/// Commands applied in one turn at most, so that one turn's replies are not held back too long.
pub const BATCH_COMMANDS_MAX: usize = 8192;
/// How long the loop waits for a command before doing idle work (scrubbing).
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// Zero-fill done for spare segments per idle turn (a few milliseconds of disk).
const IDLE_SPARE_STEP_BYTES: u64 = 8 << 20;
/// Bytes of live messages re-written per compaction round at most.
const COMPACTION_ROUND_BYTES_MAX: u64 = 64 << 20;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub log: LogConfig,
    /// Bytes of persistent message content kept in memory to avoid reading it back.
    pub cache_budget_bytes: u64,
    /// Log bytes appended between checkpoints: bounds the replay at start-up.
    pub checkpoint_interval_bytes: u64,
    /// Commands that may wait in the inbox before senders wait.
    pub inbox_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            log: LogConfig::default(),
            cache_budget_bytes: 256 << 20,
            checkpoint_interval_bytes: 256 << 20,
            inbox_capacity: 16_384,
        }
    }
}

/// How protocol code reaches the engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    inbox: flume::Sender<Command>,
    next_connection: Arc<AtomicU64>,
    stats: Arc<EngineStats>,
    directory: SharedDirectory,
    /// One for every front-end, so that a login checked over HTTP is remembered for AMQP too.
    authenticator: Arc<Authenticator>,
}

impl EngineHandle {
    /// A fresh connection id.
    pub fn connection_id(&self) -> ConnectionId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Users and permissions as the engine last changed them.
    pub fn directory(&self) -> &SharedDirectory {
        &self.directory
    }

    /// Logs users in against [`EngineHandle::directory`].
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.authenticator
    }

    /// Measurements readable at any time (commit latency).
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Send a command, waiting while the inbox is full. Err when the engine has stopped.
    pub async fn send(&self, command: Command) -> Result<(), EngineStopped> {
        self.inbox.send_async(command).await.map_err(|_| EngineStopped)
    }

    /// Send from a thread that may block.
    pub fn send_blocking(&self, command: Command) -> Result<(), EngineStopped> {
        self.inbox.send(command).map_err(|_| EngineStopped)
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the engine has stopped")]
pub struct EngineStopped;

/// A running engine: its handle and its thread.
pub struct Engine {
    handle: EngineHandle,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Recover from `storage` (on the calling thread, so errors come back here), then start
    /// the engine thread.
    pub fn start<S: Storage + Clone>(storage: S, config: EngineConfig) -> Result<(Self, RecoveryReport), StartError> {
        let (broker, report) =
            crate::recovery::recover(storage.clone(), config.log.clone(), config.cache_budget_bytes)?;
        let (inbox_sender, inbox) = flume::bounded(config.inbox_capacity);
        let stats = Arc::new(EngineStats::default());
        let handle = EngineHandle {
            inbox: inbox_sender.clone(),
            next_connection: Arc::new(AtomicU64::new(1)),
            stats: Arc::clone(&stats),
            directory: broker.shared_directory.clone(),
            authenticator: Arc::new(Authenticator::new(broker.shared_directory.clone())),
        };
        let checkpointer = Checkpointer::start(storage, inbox_sender.clone())?;
        let scrubber = Scrubber::start(inbox_sender)?;
        let thread = std::thread::Builder::new().name("weir-engine".into()).spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| run(broker, inbox, checkpointer, scrubber, config, &stats));
            if std::panic::catch_unwind(run).is_err() {
                eprintln!("weir: the engine thread panicked (a bug); aborting so that recovery starts from the log");
                std::process::abort();
            }
        })?;
        Ok((Self { handle, thread: Some(thread) }, report))
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Stop: finish the current turn, write a final checkpoint, and wait for the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.handle.inbox.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The background writer of checkpoint files.
struct Checkpointer {
    jobs: Option<flume::Sender<(u64, Vec<u8>)>>,
    thread: Option<JoinHandle<()>>,
    in_flight: bool,
}

impl Checkpointer {
    fn start<S: Storage>(storage: S, inbox: flume::Sender<Command>) -> std::io::Result<Self> {
        let (jobs, receiver) = flume::bounded::<(u64, Vec<u8>)>(1);
        let thread = std::thread::Builder::new().name("weir-checkpoint".into()).spawn(move || {
            for (lsn, payload) in receiver {
                let result = weir_log::write_checkpoint(&storage, lsn, &payload).map_err(|e| e.to_string());
                if inbox.send(Command::CheckpointWritten { lsn, result }).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread), in_flight: false })
    }

    fn submit(&mut self, lsn: u64, payload: Vec<u8>) {
        if let Some(jobs) = &self.jobs {
            if jobs.send((lsn, payload)).is_ok() {
                self.in_flight = true;
            }
        }
    }

    fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The background verifier of sealed segments.
struct Scrubber<F: weir_log::StorageFile> {
    jobs: Option<flume::Sender<weir_log::SegmentScrubber<F>>>,
    thread: Option<JoinHandle<()>>,
    /// The segment being verified now: it must not be released meanwhile.
    in_flight: Option<u32>,
    done: HashSet<u32>,
}

impl<F: weir_log::StorageFile> Scrubber<F> {
    fn start(inbox: flume::Sender<Command>) -> std::io::Result<Self> {
        let (jobs, receiver) = flume::bounded::<weir_log::SegmentScrubber<F>>(1);
        let thread = std::thread::Builder::new().name("weir-scrub".into()).spawn(move || {
            for job in receiver {
                let segment = job.segment();
                let result = job
                    .verify()
                    .map(|found| found.iter().map(ToString::to_string).collect())
                    .map_err(|e| e.to_string());
                if inbox.send(Command::Scrubbed { segment, result }).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread), in_flight: None, done: HashSet::new() })
    }

    /// Start verifying the next sealed segment not verified in this run, if none is running.
    fn start_next<S: Storage<File = F>>(&mut self, broker: &Broker<S>) {
        if self.in_flight.is_some() {
            return;
        }
        let segments = broker.log.segments();
        let Some(segment) = segments.into_iter().find(|s| !s.active && !self.done.contains(&s.id)) else {
            return;
        };
        self.done.insert(segment.id);
        let Ok(job) = broker.log.scrubber(segment.id) else {
            return; // busy (being written) or gone: try it again in another run
        };
        if let Some(jobs) = &self.jobs {
            if jobs.send(job).is_ok() {
                self.in_flight = Some(segment.id);
            }
        }
    }

    fn finished<S: Storage>(&mut self, broker: &mut Broker<S>, segment: u32, result: Result<Vec<String>, String>) {
        self.in_flight = None;
        match result {
            Ok(found) if found.is_empty() => {}
            Ok(found) => {
                for corruption in &found {
                    tracing::error!(segment, "scrub found corruption: {corruption}");
                }
                broker.read_only.get_or_insert(format!("scrub found corruption: {}", found[0]));
            }
            Err(e) => tracing::warn!(segment, "scrub could not read segment: {e}"),
        }
    }

    fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run<S: Storage>(
    mut broker: Broker<S>,
    inbox: flume::Receiver<Command>,
    mut checkpointer: Checkpointer,
    mut scrubber: Scrubber<S::File>,
    config: EngineConfig,
    stats: &EngineStats,
) {
    let mut shutdown = false;
    loop {
        let now = clock_ms();
        let wait = match broker.next_timer_ms() {
            Some(at) => Duration::from_millis(at.saturating_sub(now)).min(IDLE_WAIT),
            None => IDLE_WAIT,
        };
        let first = match inbox.recv_timeout(wait) {
            Ok(command) => Some(command),
            // A timer is due: run a turn with no commands (expiry, then dispatch and commit).
            Err(flume::RecvTimeoutError::Timeout) if broker.next_timer_ms().is_some_and(|at| at <= clock_ms()) => None,
            Err(flume::RecvTimeoutError::Timeout) => {
                scrubber.start_next(&broker);
                broker.log.prepare_spares_step(IDLE_SPARE_STEP_BYTES);
                continue;
            }
            Err(flume::RecvTimeoutError::Disconnected) => break,
        };
        broker.now_ms = clock_ms();
        for command in first.into_iter().chain(inbox.try_iter().take(BATCH_COMMANDS_MAX - 1)) {
            match command {
                Command::Shutdown => shutdown = true,
                Command::CheckpointWritten { lsn, result } => {
                    checkpointer.in_flight = false;
                    match result {
                        Ok(()) => {
                            // The previous checkpoint is now the older of the two kept: the
                            // fallback if this one is ever found damaged. Release up to it only.
                            let older = std::mem::replace(&mut broker.checkpoint_lsn, lsn);
                            reclaim_segments(&mut broker, older, scrubber.in_flight, stats);
                        }
                        Err(e) => tracing::error!(lsn, "checkpoint write failed: {e}"),
                    }
                }
                Command::Scrubbed { segment, result } => scrubber.finished(&mut broker, segment, result),
                other => broker.handle(other),
            }
        }
        end_turn(&mut broker, stats);
        if shutdown {
            break;
        }
        if broker.bytes_since_checkpoint >= config.checkpoint_interval_bytes
            && !checkpointer.in_flight
            && broker.read_only.is_none()
        {
            let lsn = broker.log.durable_lsn();
            checkpointer.submit(lsn, records::encode_snapshot(&broker.snapshot()));
            broker.bytes_since_checkpoint = 0;
        }
    }
    // Close the inbox before stopping the helper threads: one blocked reporting into a full
    // inbox then gets an error and ends, instead of waiting for ever for a loop that is gone.
    drop(inbox);
    checkpointer.stop();
    scrubber.stop();
    if shutdown {
        final_checkpoint(&mut broker);
    }
}

/// The clock in epoch milliseconds, read once per turn: everything in a turn sees one `now`.
fn clock_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Release delayed messages, expire what is due, take back lapsed leases, deliver, log settlements, send ungated events, fsync, send the rest.
fn end_turn<S: Storage>(broker: &mut Broker<S>, stats: &EngineStats) {
    broker.release_due();
    broker.expire_due();
    broker.lapse_leases();
    broker.dispatch();
    broker.flush_settles();
    broker.outbox.send_ungated(&broker.sinks);
    let mut failure = None;
    if broker.log.last_lsn() > broker.log.durable_lsn() {
        let started = Instant::now();
        let committed = broker.log.commit();
        stats.record_commit(started.elapsed());
        if let Err(e) = committed {
            let reason = e.to_string();
            tracing::error!("log commit failed, refusing new durable data from now on: {reason}");
            broker.read_only.get_or_insert(reason.clone());
            failure = Some(reason);
        }
    }
    broker.outbox.send_after_commit(&broker.sinks, failure.as_deref());
    broker.retire_sinks();
}

/// On clean shutdown, a checkpoint so the next start replays nothing.
fn final_checkpoint<S: Storage>(broker: &mut Broker<S>) {
    if broker.read_only.is_some() || broker.bytes_since_checkpoint == 0 {
        return;
    }
    let lsn = broker.log.durable_lsn();
    let payload = records::encode_snapshot(&broker.snapshot());
    match weir_log::write_checkpoint(broker.log.storage(), lsn, &payload) {
        Ok(()) => tracing::info!(lsn, bytes = payload.len(), "final checkpoint written"),
        Err(e) => tracing::error!("final checkpoint failed (the next start replays the log): {e}"),
    }
}

/// Recycle sealed segments at or below `lsn` (the older of the two kept checkpoints) that
/// hold nothing live, and compact sparse ones.
fn reclaim_segments<S: Storage>(broker: &mut Broker<S>, lsn: u64, scrubbing: Option<u32>, stats: &EngineStats) {
    if broker.read_only.is_some() {
        return; // keep every byte for the operator to look at
    }
    let mut sparse = HashSet::new();
    for segment in broker.log.segments() {
        if segment.active || segment.last_lsn > lsn || scrubbing == Some(segment.id) {
            continue;
        }
        match broker.segment_live.get(&segment.id) {
            None => {
                if let Err(e) = broker.log.release_segment(segment.id) {
                    tracing::warn!(segment = segment.id, "cannot release segment: {e}");
                }
            }
            Some(live) if live.bytes.saturating_mul(4) < segment.size_bytes => {
                sparse.insert(segment.id);
            }
            Some(_) => {}
        }
    }
    if !sparse.is_empty() {
        compact(broker, &sparse, stats);
    }
}

/// Re-write the live messages of `segments` at the log head. The segments become free at
/// the next checkpoint (whose snapshot then holds the new locations).
fn compact<S: Storage>(broker: &mut Broker<S>, segments: &HashSet<u32>, stats: &EngineStats) {
    let mut moves: BTreeMap<u64, (MessageEntry, Vec<QueueId>)> = BTreeMap::new();
    for (id, queue) in &broker.queues {
        for entry in queue.messages.entries() {
            if entry.is_persistent() && pos_of(entry.location).is_some_and(|p| segments.contains(&p.segment)) {
                moves.entry(entry.seq).or_insert((*entry, Vec::new())).1.push(*id);
            }
        }
    }
    let mut moved_bytes = 0u64;
    let mut writer = Writer::default();
    for (seq, (entry, queue_ids)) in moves {
        if moved_bytes >= COMPACTION_ROUND_BYTES_MAX {
            break;
        }
        let message = match broker.read_message(&entry) {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(seq, "compaction cannot read a message: {e}");
                broker.read_only.get_or_insert(format!("compaction read failed: {e}"));
                return;
            }
        };
        writer.buf.clear();
        // No times: the message's expiry is already scheduled (and in the next checkpoint).
        records::encode_enqueue(&mut writer, seq, ENQUEUE_FLAG_RELOCATED, None, None, &queue_ids, &message);
        let Ok(new_pos) = broker.log_append(records::KIND_ENQUEUE, &writer.buf) else {
            return;
        };
        let new_location = location_of(new_pos);
        for id in queue_ids {
            let queue = broker.queues.get_mut(&id).expect("collected above");
            if let Some(old) = queue.messages.relocate(seq, new_location) {
                let mut moved = entry;
                moved.location = old;
                broker.track_live(&moved, -1);
                moved.location = new_location;
                broker.track_live(&moved, 1);
            }
        }
        moved_bytes += u64::from(entry.size_bytes);
    }
    tracing::info!(segments = segments.len(), moved_bytes, "compacted sparse segments");
    end_turn(broker, stats);
}

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
//! When idle, the loop scrubs one sealed segment per turn (crc check of every record), so
//! corruption in old segments is found and reported without anyone reading that message.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use weir_log::{LogConfig, RecoveryReport, Storage};
use weir_queue::MessageEntry;

use crate::api::{Command, ConnectionId};
use crate::broker::{Broker, QueueId};
use crate::error::StartError;
use crate::records::{self, location_of, pos_of, Writer, ENQUEUE_FLAG_RELOCATED};

/// Commands applied in one turn at most, so that one turn's replies are not held back too long.
pub const BATCH_COMMANDS_MAX: usize = 8192;
/// How long the loop waits for a command before doing idle work (scrubbing).
const IDLE_WAIT: Duration = Duration::from_millis(200);
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
}

impl EngineHandle {
    /// A fresh connection id.
    pub fn connection_id(&self) -> ConnectionId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
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
        let handle = EngineHandle { inbox: inbox_sender.clone(), next_connection: Arc::new(AtomicU64::new(1)) };
        let checkpointer = Checkpointer::start(storage, inbox_sender)?;
        let thread = std::thread::Builder::new()
            .name("weir-engine".into())
            .spawn(move || run(broker, inbox, checkpointer, config))?;
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

fn run<S: Storage>(
    mut broker: Broker<S>,
    inbox: flume::Receiver<Command>,
    mut checkpointer: Checkpointer,
    config: EngineConfig,
) {
    let mut scrubbed: HashSet<u32> = HashSet::new();
    loop {
        let first = match inbox.recv_timeout(IDLE_WAIT) {
            Ok(command) => command,
            Err(flume::RecvTimeoutError::Timeout) => {
                scrub_one(&mut broker, &mut scrubbed);
                continue;
            }
            Err(flume::RecvTimeoutError::Disconnected) => break,
        };
        let mut shutdown = false;
        for command in std::iter::once(first).chain(inbox.try_iter().take(BATCH_COMMANDS_MAX - 1)) {
            match command {
                Command::Shutdown => shutdown = true,
                Command::CheckpointWritten { lsn, result } => {
                    checkpointer.in_flight = false;
                    match result {
                        Ok(()) => reclaim_segments(&mut broker, lsn),
                        Err(e) => tracing::error!(lsn, "checkpoint write failed: {e}"),
                    }
                }
                other => broker.handle(other),
            }
        }
        end_turn(&mut broker);
        if shutdown {
            checkpointer.stop();
            final_checkpoint(&mut broker);
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
    checkpointer.stop();
}

/// Deliver, log settlements, send ungated events, fsync, send the rest.
fn end_turn<S: Storage>(broker: &mut Broker<S>) {
    broker.dispatch();
    broker.flush_settles();
    broker.outbox.send_ungated(&broker.sinks);
    let mut failure = None;
    if broker.log.last_lsn() > broker.log.durable_lsn() {
        if let Err(e) = broker.log.commit() {
            let reason = e.to_string();
            tracing::error!("log commit failed, refusing new durable data from now on: {reason}");
            broker.read_only.get_or_insert(reason.clone());
            failure = Some(reason);
        }
    }
    broker.outbox.send_after_commit(&broker.sinks, failure.as_deref());
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

/// A checkpoint for `lsn` is durable: recycle sealed segments at or below it that hold
/// nothing live, and compact sparse ones.
fn reclaim_segments<S: Storage>(broker: &mut Broker<S>, lsn: u64) {
    if broker.read_only.is_some() {
        return; // keep every byte for the operator to look at
    }
    let mut sparse = HashSet::new();
    for segment in broker.log.segments() {
        if segment.active || segment.last_lsn > lsn {
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
        compact(broker, &sparse);
    }
}

/// Re-write the live messages of `segments` at the log head. The segments become free at
/// the next checkpoint (whose snapshot then holds the new locations).
fn compact<S: Storage>(broker: &mut Broker<S>, segments: &HashSet<u32>) {
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
        let Some(pos) = pos_of(entry.location) else { continue };
        let record = match broker.log.read(pos) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(seq, "compaction cannot read message at {pos:?}: {e}");
                broker.read_only.get_or_insert(format!("compaction read failed at {pos:?}: {e}"));
                return;
            }
        };
        let message = match records::decode_enqueue(record.payload.into()) {
            Ok(decoded) => decoded.message,
            Err(e) => {
                tracing::error!(seq, "compaction cannot decode message at {pos:?}: {e}");
                return;
            }
        };
        writer.buf.clear();
        records::encode_enqueue(&mut writer, seq, ENQUEUE_FLAG_RELOCATED, &queue_ids, &message);
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
    end_turn(broker);
}

/// Verify one sealed segment not verified yet in this run.
fn scrub_one<S: Storage>(broker: &mut Broker<S>, scrubbed: &mut HashSet<u32>) {
    let Some(segment) = broker.log.segments().into_iter().find(|s| !s.active && !scrubbed.contains(&s.id)) else {
        return;
    };
    scrubbed.insert(segment.id);
    match broker.log.verify_segment(segment.id) {
        Ok(corruptions) if corruptions.is_empty() => {}
        Ok(corruptions) => {
            for corruption in &corruptions {
                tracing::error!(segment = segment.id, "scrub found corruption: {corruption}");
            }
            broker
                .read_only
                .get_or_insert(format!("scrub found corruption in segment {}: {}", segment.id, corruptions[0]));
        }
        Err(e) => tracing::warn!(segment = segment.id, "scrub could not read segment: {e}"),
    }
}

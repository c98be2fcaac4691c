//! Start-up: rebuild the broker's durable state from the newest checkpoint plus the log
//! records written after it.
//!
//! The replay applies each record with the same bookkeeping the live path uses
//! (`track_segment_live`, `Queue::push/remove/relocate`), so live and recovered state cannot
//! drift apart. Nothing is delivered after a restart: every recovered message is ready.
//!
//! Snapshot (checkpoint) writing lives here too: `snapshot` captures exactly what a replay
//! would rebuild — durable, non-exclusive queues and their persistent entries.

use std::collections::HashMap;

use weir_log::{Log, LogConfig, RecordView, RecoveryReport, ReplayError, Storage};
use weir_queue::{MessageEntry, ENTRY_FLAG_PERSISTENT};

use crate::broker::{binding_record, message_expiry};
use crate::broker::{track_segment_live, Broker, QueueId, QueueState, SegmentLive, DEFAULT_VHOST};
use crate::error::StartError;
use crate::expiry::{Expiry, ExpiryIndex};
use crate::properties::raw_message_id;
use crate::records::{self, location_of, QueueSettings, Snapshot, VhostRecord, ENQUEUE_FLAG_RELOCATED};
use crate::security::{Directory, Permission, PermissionRecord};
use crate::topology::{Binding, Destination, Vhost};

/// The durable state as it is rebuilt, before the broker around it exists.
struct Rebuilt {
    vhosts: HashMap<String, Vhost>,
    queues: HashMap<QueueId, QueueState>,
    segment_live: HashMap<u32, SegmentLive>,
    next_message_seq: u64,
    next_queue_id: u32,
    /// (expires at, queue, message) of every message with a time to live.
    expiries: Vec<Expiry>,
    /// (deliver at, queue, message) of every delayed message.
    delays: Vec<Expiry>,
    /// Messages waiting after a failed delivery (retry records): (queue, message) → when
    /// they may go again. Kept apart so the latest failure's time replaces any earlier one.
    retries: HashMap<(QueueId, u64), u64>,
    directory: Directory,
}

impl Rebuilt {
    fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut rebuilt = Self {
            vhosts: HashMap::from([(DEFAULT_VHOST.to_string(), Vhost::new())]),
            queues: HashMap::new(),
            segment_live: HashMap::new(),
            next_message_seq: snapshot.next_message_seq.max(1),
            next_queue_id: snapshot.next_queue_id.max(1),
            expiries: Vec::new(),
            delays: Vec::new(),
            retries: HashMap::new(),
            directory: Directory::default(),
        };
        for vhost in snapshot.vhosts {
            rebuilt.vhosts.entry(vhost.name).or_default().limits = vhost.limits;
        }
        for user in snapshot.users {
            rebuilt.directory.put_user(user);
        }
        for permission in snapshot.permissions {
            rebuilt.put_permission(permission);
        }
        for ((queue, _), expiries) in snapshot.queues.iter().zip(&snapshot.expiries) {
            for (seq, at) in expiries {
                rebuilt.expiries.push((*at, queue.queue_id, *seq));
            }
        }
        for (vhost, exchange) in snapshot.exchanges {
            rebuilt.vhosts.entry(vhost).or_default().exchanges.insert(exchange.name.clone(), exchange);
        }
        let delays = snapshot.delays.into_iter().chain(std::iter::repeat_with(Vec::new));
        for ((record, mut entries), delays) in snapshot.queues.into_iter().zip(delays) {
            let id = record.queue_id;
            rebuilt.add_queue(QueueState::from_record(record));
            entries.sort_by_key(|e| e.seq);
            let delayed: HashMap<u64, u64> = delays.into_iter().collect();
            let queue = rebuilt.queues.get_mut(&id).expect("just added");
            for entry in entries {
                track_segment_live(&mut rebuilt.segment_live, &entry, 1);
                match delayed.get(&entry.seq) {
                    Some(&at) => {
                        queue.messages.push_delayed(entry);
                        rebuilt.delays.push((at, id, entry.seq));
                    }
                    None => queue.messages.push(entry),
                }
            }
        }
        for binding in snapshot.bindings {
            rebuilt.apply_binding(binding, true);
        }
        for settings in snapshot.settings {
            rebuilt.apply_settings(settings);
        }
        for (queue_id, ids) in snapshot.dedup {
            if let Some(queue) = rebuilt.queues.get_mut(&queue_id) {
                for (at, id) in ids {
                    queue.dedup.remember(&id, at);
                }
            }
        }
        rebuilt
    }

    /// An operator's settings for a queue; settings that no longer validate are ignored (and
    /// said so), as arguments are in `QueueState::from_record`.
    fn apply_settings(&mut self, settings: QueueSettings) {
        if let Some(queue) = self.queues.get_mut(&settings.queue_id) {
            if let Err(error) = queue.apply_settings(settings.settings) {
                tracing::warn!(queue = queue.name, %error, "recovered queue settings no longer validate; ignoring them");
            }
        }
    }

    fn add_queue(&mut self, queue: QueueState) {
        self.vhosts.entry(queue.vhost.clone()).or_default().queues.insert(queue.name.clone(), queue.id);
        self.next_queue_id = self.next_queue_id.max(queue.id + 1);
        self.queues.insert(queue.id, queue);
    }

    fn apply(&mut self, record: RecordView<'_>) -> Result<(), String> {
        if record.kind == records::KIND_TX {
            // Every record of a committed transaction, in order, all at the container's place.
            for (kind, payload) in records::decode_tx(record.payload).map_err(|e| e.to_string())? {
                self.apply_one(kind, payload, record.pos)?;
            }
            return Ok(());
        }
        self.apply_one(record.kind, record.payload, record.pos)
    }

    /// Apply one record (or one record of a transaction, at the container's position).
    fn apply_one(&mut self, kind: u8, payload: &[u8], pos: weir_log::RecordPos) -> Result<(), String> {
        match kind {
            records::KIND_QUEUE_DECLARE => {
                let queue = records::decode_whole(payload, "queue declare record", records::decode_queue)
                    .map_err(|e| e.to_string())?;
                self.add_queue(QueueState::from_record(queue));
            }
            records::KIND_QUEUE_DELETE => {
                let id = records::decode_queue_delete(payload).map_err(|e| e.to_string())?;
                if let Some(queue) = self.queues.remove(&id) {
                    if let Some(vhost) = self.vhosts.get_mut(&queue.vhost) {
                        vhost.queues.remove(&queue.name);
                        vhost.remove_bindings_to(&Destination::Queue(id));
                    }
                    for entry in queue.messages.entries() {
                        track_segment_live(&mut self.segment_live, entry, -1);
                    }
                }
            }
            records::KIND_ENQUEUE => {
                let header = records::decode_enqueue_header(payload).map_err(|e| e.to_string())?;
                let location = location_of(pos);
                for id in header.queue_ids {
                    let Some(queue) = self.queues.get_mut(&id) else {
                        continue; // deleted later in the log than this record was written
                    };
                    if header.flags & ENQUEUE_FLAG_RELOCATED != 0 {
                        if let Some(old) = queue.messages.relocate(header.seq, location) {
                            let mut entry = probe_entry(header.seq, old, header.body_len);
                            track_segment_live(&mut self.segment_live, &entry, -1);
                            entry.location = location;
                            track_segment_live(&mut self.segment_live, &entry, 1);
                        }
                    } else {
                        let entry = MessageEntry {
                            priority: header.priority,
                            ..probe_entry(header.seq, location, header.body_len)
                        };
                        track_segment_live(&mut self.segment_live, &entry, 1);
                        match header.deliver_at {
                            Some(at) => {
                                queue.messages.push_delayed(entry);
                                self.delays.push((at, id, header.seq));
                            }
                            None => queue.messages.push(entry),
                        }
                        if let Some(at) = message_expiry(&queue.config, header.times) {
                            self.expiries.push((at, id, header.seq));
                        }
                        if let (Some(_), Some((at, _))) = (queue.config.dedup_window_ms, header.times) {
                            if let Some(message_id) = raw_message_id(&payload[header.properties.clone()]) {
                                queue.dedup.remember(message_id, at);
                            }
                        }
                    }
                }
                self.next_message_seq = self.next_message_seq.max(header.seq + 1);
            }
            records::KIND_SETTLE => {
                for (id, seq) in records::decode_settle(payload).map_err(|e| e.to_string())? {
                    if let Some(entry) = self.queues.get_mut(&id).and_then(|q| q.messages.remove(seq)) {
                        track_segment_live(&mut self.segment_live, &entry, -1);
                    }
                }
            }
            records::KIND_QUEUE_SETTINGS => {
                let settings = records::decode_whole(payload, "queue settings record", records::decode_queue_settings)
                    .map_err(|e| e.to_string())?;
                self.apply_settings(settings);
            }
            records::KIND_RETRY => {
                let retry = records::decode_retry(payload).map_err(|e| e.to_string())?;
                let key = (retry.queue_id, retry.seq);
                let Some(queue) = self.queues.get_mut(&retry.queue_id) else { return Ok(()) };
                // Its latest failure decides: an earlier wait (or its x-delay) is over.
                if queue.messages.is_delayed(retry.seq) {
                    queue.messages.release_delayed(retry.seq);
                }
                self.retries.remove(&key);
                if queue.messages.set_delivery_count(retry.seq, retry.delivery_count)
                    && retry.retry_at_ms > 0
                    && queue.messages.defer(retry.seq)
                {
                    self.retries.insert(key, retry.retry_at_ms);
                }
            }
            records::KIND_EXCHANGE_DECLARE => {
                let (vhost, exchange) =
                    records::decode_whole(payload, "exchange declare record", records::decode_exchange)
                        .map_err(|e| e.to_string())?;
                self.vhosts.entry(vhost).or_default().exchanges.insert(exchange.name.clone(), exchange);
            }
            records::KIND_EXCHANGE_DELETE => {
                let (vhost, name) = records::decode_exchange_delete(payload).map_err(|e| e.to_string())?;
                if let Some(vhost) = self.vhosts.get_mut(&vhost) {
                    vhost.delete_exchange(&name);
                }
            }
            records::KIND_BIND | records::KIND_UNBIND => {
                let binding = records::decode_whole(payload, "binding record", records::decode_binding)
                    .map_err(|e| e.to_string())?;
                self.apply_binding(binding, kind == records::KIND_BIND);
            }
            records::KIND_VHOST_PUT => {
                let vhost =
                    records::decode_whole(payload, "vhost record", records::decode_vhost).map_err(|e| e.to_string())?;
                self.vhosts.entry(vhost.name).or_default().limits = vhost.limits;
            }
            records::KIND_VHOST_DELETE => {
                let [name] = records::decode_names(payload, "vhost delete record").map_err(|e| e.to_string())?;
                // Its queues were deleted by records before this one; any left go too.
                let left: Vec<QueueId> =
                    self.vhosts.remove(&name).map(|v| v.queues.into_values().collect()).unwrap_or_default();
                for id in left {
                    if let Some(queue) = self.queues.remove(&id) {
                        for entry in queue.messages.entries() {
                            track_segment_live(&mut self.segment_live, entry, -1);
                        }
                    }
                }
                self.directory.delete_vhost(&name);
            }
            records::KIND_USER_PUT => {
                let user =
                    records::decode_whole(payload, "user record", records::decode_user).map_err(|e| e.to_string())?;
                self.directory.put_user(user);
            }
            records::KIND_USER_DELETE => {
                let [name] = records::decode_names(payload, "user delete record").map_err(|e| e.to_string())?;
                self.directory.delete_user(&name);
            }
            records::KIND_PERMISSION_PUT => {
                let permission = records::decode_whole(payload, "permission record", records::decode_permission)
                    .map_err(|e| e.to_string())?;
                self.put_permission(permission);
            }
            records::KIND_PERMISSION_DELETE => {
                let [user, vhost] =
                    records::decode_names(payload, "permission delete record").map_err(|e| e.to_string())?;
                self.directory.delete_permission(&user, &vhost);
            }
            kind => return Err(format!("unknown record kind {kind:#x}")),
        }
        Ok(())
    }
}

impl Rebuilt {
    /// A logged permission was checked before it was logged; one that no longer compiles is
    /// left out (and said), rather than stopping the broker from starting.
    fn put_permission(&mut self, record: PermissionRecord) {
        match Permission::compile(record) {
            Ok(permission) => self.directory.put_permission(permission),
            Err(e) => tracing::error!("a logged permission is left out: {e}"),
        }
    }

    /// Replay one bind or unbind. A binding whose ends are gone (deleted later in the log than
    /// it was written, or before a checkpoint) is skipped.
    fn apply_binding(&mut self, record: records::BindingRecord, add: bool) {
        let Some(vhost) = self.vhosts.get_mut(&record.vhost) else { return };
        let ends_exist = vhost.exchanges.contains_key(&record.source)
            && match &record.destination {
                Destination::Queue(id) => self.queues.contains_key(id),
                Destination::Exchange(name) => vhost.exchanges.contains_key(name),
            };
        if !ends_exist {
            return;
        }
        let binding =
            Binding { destination: record.destination, routing_key: record.routing_key, arguments: record.arguments };
        if add {
            vhost.bind(&record.source, binding);
        } else {
            vhost.unbind(&record.source, &binding);
        }
    }
}

fn probe_entry(seq: u64, location: u64, size_bytes: u32) -> MessageEntry {
    MessageEntry { seq, location, size_bytes, delivery_count: 0, flags: ENTRY_FLAG_PERSISTENT, priority: 0 }
}

/// Load the checkpoint, open the log replaying what follows it, and build the broker.
pub(crate) fn recover<S: Storage>(
    storage: S,
    log_config: LogConfig,
    cache_budget_bytes: u64,
) -> Result<(Broker<S>, RecoveryReport), StartError> {
    let checkpoint = weir_log::load_checkpoint(&storage)?;
    let (snapshot, replay_after) = match checkpoint {
        Some((lsn, payload)) => {
            (records::decode_snapshot(&payload).map_err(|e| StartError::Checkpoint(e.to_string()))?, lsn)
        }
        None => (Snapshot::default(), 0),
    };
    let mut rebuilt = Rebuilt::from_snapshot(snapshot);
    let mut on_record = |record: RecordView<'_>| {
        let (lsn, pos) = (record.lsn, record.pos);
        rebuilt.apply(record).map_err(|e| ReplayError::new(format!("record lsn {lsn} at {pos:?}: {e}")))
    };
    let (log, report) = Log::open(storage, log_config, replay_after, &mut on_record)?;
    let mut broker = Broker::new(log, cache_budget_bytes);
    broker.vhosts = rebuilt.vhosts;
    broker.queues = rebuilt.queues;
    broker.segment_live = rebuilt.segment_live;
    broker.next_message_seq = rebuilt.next_message_seq;
    broker.next_queue_id = rebuilt.next_queue_id;
    broker.expiries = ExpiryIndex::from_entries(rebuilt.expiries);
    // Delayed messages whose time passed while the broker was down go out on the first turn.
    // A message with a retry wait waits for that, not for any earlier time it had.
    let mut delays = rebuilt.delays;
    delays.retain(|(_, queue, seq)| !rebuilt.retries.contains_key(&(*queue, *seq)));
    delays.extend(rebuilt.retries.into_iter().map(|((queue, seq), at)| (at, queue, seq)));
    broker.delays = ExpiryIndex::from_entries(delays);
    // Look for unused recovered queues (`x-expires`) on the first turn.
    broker.has_expiring_queues = true;
    broker.checkpoint_lsn = replay_after;
    broker.directory = rebuilt.directory;
    if !report.corruptions.is_empty() {
        broker.read_only = Some(format!("recovery found corruption: {report}"));
    }
    broker.seed_directory();
    Ok((broker, report))
}

impl<S: Storage> Broker<S> {
    /// What a checkpoint must hold: durable queues and their persistent messages.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut queues: Vec<_> = self
            .queues
            .values()
            .filter(|q| q.is_logged())
            .map(|q| {
                let mut entries: Vec<MessageEntry> =
                    q.messages.entries().filter(|e| e.is_persistent()).copied().collect();
                // A delivery still in progress has not failed: it does not count (a log replay,
                // which sees no deliveries, agrees).
                for entry in &mut entries {
                    if q.messages.is_unacked(entry.seq) {
                        entry.delivery_count = entry.delivery_count.saturating_sub(1);
                    }
                }
                entries.sort_by_key(|e| e.seq);
                (q.record(), entries)
            })
            .collect();
        queues.sort_by_key(|(q, _)| q.queue_id);
        // Expiry times of messages still in their queue; ones that expired while unacked are
        // written as due at once.
        let mut by_queue: HashMap<QueueId, Vec<(u64, u64)>> = HashMap::new();
        for (at, queue_id, seq) in self.expiries.iter() {
            if self.queues.get(queue_id).is_some_and(|q| q.messages.contains(*seq)) {
                by_queue.entry(*queue_id).or_default().push((*seq, *at));
            }
        }
        for queue in self.queues.values() {
            for seq in queue.expired_unacked() {
                by_queue.entry(queue.id).or_default().push((*seq, 0));
            }
        }
        let expiries = queues.iter().map(|(q, _)| by_queue.remove(&q.queue_id).unwrap_or_default()).collect();
        // Delivery times of messages still delayed.
        let mut delayed_by_queue: HashMap<QueueId, Vec<(u64, u64)>> = HashMap::new();
        for (at, queue_id, seq) in self.delays.iter() {
            if self.queues.get(queue_id).is_some_and(|q| q.messages.is_delayed(*seq)) {
                delayed_by_queue.entry(*queue_id).or_default().push((*seq, *at));
            }
        }
        let delays = queues.iter().map(|(q, _)| delayed_by_queue.remove(&q.queue_id).unwrap_or_default()).collect();
        // Deduplication windows of the queues in the snapshot.
        let dedup = queues
            .iter()
            .map(|(q, _)| &self.queues[&q.queue_id])
            .filter(|q| q.config.dedup_window_ms.is_some())
            .map(|q| (q.id, q.dedup.entries()))
            .collect();
        // Operators' settings of the queues in the snapshot.
        let settings = queues
            .iter()
            .map(|(q, _)| &self.queues[&q.queue_id])
            .filter(|q| !q.settings.is_empty())
            .map(|q| QueueSettings { queue_id: q.id, settings: q.settings.clone() })
            .collect();
        let mut exchanges = Vec::new();
        let mut bindings = Vec::new();
        let mut vhost_names: Vec<&String> = self.vhosts.keys().collect();
        vhost_names.sort();
        let vhosts = vhost_names
            .iter()
            .map(|name| VhostRecord { name: name.to_string(), limits: self.vhosts[*name].limits.clone() })
            .collect();
        for vhost_name in vhost_names {
            let vhost = &self.vhosts[vhost_name];
            let mut names: Vec<&String> = vhost.exchanges.keys().collect();
            names.sort();
            for name in names {
                let exchange = &vhost.exchanges[name];
                if exchange.durable && !exchange.predeclared {
                    exchanges.push((vhost_name.clone(), exchange.definition()));
                }
                if !exchange.durable {
                    continue;
                }
                for binding in &exchange.bindings {
                    let durable_destination = match &binding.destination {
                        Destination::Queue(id) => self.queues.get(id).is_some_and(|q| q.is_logged()),
                        Destination::Exchange(other) => vhost.exchanges.get(other).is_some_and(|e| e.durable),
                    };
                    if durable_destination {
                        bindings.push(binding_record(vhost_name, name, binding));
                    }
                }
            }
        }
        Snapshot {
            expiries,
            delays,
            next_message_seq: self.next_message_seq,
            next_queue_id: self.next_queue_id,
            queues,
            exchanges,
            bindings,
            vhosts,
            users: self.directory.users().cloned().collect(),
            permissions: self.directory.permissions().cloned().collect(),
            settings,
            dedup,
        }
    }
}

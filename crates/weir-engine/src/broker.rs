//! The broker's state and the handling of each command.
//!
//! Everything here runs on the engine thread, one command at a time, so there are no locks.
//! A handler validates, changes the state, appends log records for what must survive a
//! crash, and queues events in the [`Outbox`]; the engine loop then fsyncs once for the whole
//! batch before any gated event leaves (see `outbox.rs`).
//!
//! What is logged: durable queue declarations and deletions, persistent messages entering
//! durable queues (one record per message, listing every durable queue it reached), and
//! their settlements (acks, auto-ack deliveries, purges; batched into one record per loop
//! turn). Deliveries are not logged: after a crash, unacked messages are ready again.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use weir_log::{Log, Storage};
use weir_queue::{MessageEntry, Queue, ENTRY_FLAG_PERSISTENT};

use crate::api::{
    ArgValue, ChannelId, Command, ConnectionId, ConnectionInfo, ConsumeRequest, Event, EventSink, Message, Origin,
    Publish, QueueCounters, QueueDeclare,
};
use crate::content::ContentStore;
use crate::error::{EngineError, ErrorKind};
use crate::expiry::ExpiryIndex;
use crate::filter::{self, MessageFilter};
use crate::outbox::Outbox;
use crate::properties::{self, DeathReason};
use crate::queue_config::{Overflow, QueueConfig};
use crate::records::{self, location_of, pos_of, QueueRecord, Writer, LOCATION_MEMORY};
use crate::security::{Access, Directory, Permission, SharedDirectory};
use crate::topology::{Destination, Vhost};

mod capacity;
mod dedup;
mod delay;
mod exchanges;
mod filtered;
mod inspect;
mod lease;
mod lifecycle;
mod moving;
mod reply_to;
mod retry;
mod security;
mod settings;
mod tx;

pub(crate) use lifecycle::message_expiry;

impl QueueState {
    /// Messages that expired while a consumer held them (they expire at once if requeued).
    pub(crate) fn expired_unacked(&self) -> impl Iterator<Item = &u64> {
        self.expired_unacked.iter()
    }
}

pub(crate) use exchanges::binding_record;

pub use crate::topology::QueueId;
pub use lease::LeaseAction;
pub use retry::ERROR_QUEUE;

/// The connection id of the broker's own publishes (dead-lettering); clients' ids start at 1.
pub(crate) const INTERNAL_CONNECTION: ConnectionId = 0;

/// A queue's pass grows by this over its `x-weight` per delivery when queues compete.
const DISPATCH_STRIDE: u64 = 1 << 20;

/// The vhost every broker has.
pub const DEFAULT_VHOST: &str = "/";

pub(crate) struct QueueState {
    pub id: QueueId,
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive_owner: Option<ConnectionId>,
    pub arguments: Vec<(String, ArgValue)>,
    /// An operator's settings: arguments that override the declared ones (sorted by key).
    pub settings: Vec<(String, ArgValue)>,
    pub messages: Queue,
    /// The policies its arguments (with the settings over them) ask for.
    pub config: QueueConfig,
    /// Messages whose time ran out while a consumer held them: they expire if requeued.
    expired_unacked: HashSet<u64>,
    /// Last declare, consume or get (for `x-expires`).
    last_used_ms: u64,
    consumers: Vec<ConsumerKey>,
    next_consumer: usize,
    had_consumers: bool,
    /// Listed in `Broker::dirty_queues` (so marking it again costs nothing).
    dirty: bool,
    exclusive_consumer: bool,
    /// Consumers that filter or browse: while there are any, dispatch lets each choose.
    choosing_consumers: usize,
    /// Unacked messages held under a lease (`x-lease-ms`, HTTP lease tokens), by seq.
    leases: HashMap<u64, lease::Lease>,
    /// Message-ids taken recently (`x-deduplication-window`).
    pub(crate) dedup: dedup::DedupWindow,
    /// Filled past its high capacity watermark and not yet drained to the low one.
    above_high: bool,
    /// Its place in the dispatch order when queues compete (stride scheduling, `x-weight`).
    dispatch_pass: u64,
    pub counters: QueueCounters,
}

impl QueueState {
    /// Would this queue turn away one more message of `size_bytes`: full, under a policy that
    /// refuses or drops the newcomer rather than making room?
    fn turns_away(&self, size_bytes: u32) -> bool {
        let stats = self.messages.stats();
        self.config.overflow.turns_away_new()
            && self.config.over_limit(stats.ready_messages + 1, stats.ready_bytes + u64::from(size_bytes))
    }

    fn count_delivery(&mut self, entry: &MessageEntry) {
        self.counters.delivered += 1;
        if entry.is_redelivered() {
            self.counters.redelivered += 1;
        }
    }

    pub fn record(&self) -> QueueRecord {
        QueueRecord {
            queue_id: self.id,
            vhost: self.vhost.clone(),
            name: self.name.clone(),
            durable: self.durable,
            exclusive: self.exclusive_owner.is_some(),
            auto_delete: self.auto_delete,
            arguments: self.arguments.clone(),
        }
    }

    /// Is this queue's content kept across restarts?
    pub fn is_logged(&self) -> bool {
        self.durable && self.exclusive_owner.is_none()
    }

    /// A queue from its logged declaration (replay, snapshot). Its arguments were validated when
    /// it was declared; should a later version refuse one, the queue comes back without the
    /// policies rather than not at all, and says so.
    pub fn from_record(record: QueueRecord) -> Self {
        let config = QueueConfig::parse(&record.arguments, &record.name, &record.vhost).unwrap_or_else(|error| {
            tracing::warn!(queue = record.name, %error, "recovered queue's arguments no longer validate; ignoring them");
            QueueConfig::default()
        });
        Self::with_config(record, config)
    }

    /// Replace the operator's settings; the policy follows. Refused (nothing changes) if the
    /// arguments with these settings over them do not validate.
    pub fn apply_settings(&mut self, settings: Vec<(String, ArgValue)>) -> Result<(), EngineError> {
        let (settings, config) = self.with_settings(settings)?;
        self.config = config;
        self.settings = settings;
        Ok(())
    }

    /// The settings (sorted by key, one per key) and the policy they would give, changing
    /// nothing; an error if the arguments with them over them do not validate.
    pub fn with_settings(
        &self,
        mut settings: Vec<(String, ArgValue)>,
    ) -> Result<(Vec<(String, ArgValue)>, QueueConfig), EngineError> {
        settings.sort_by(|a, b| a.0.cmp(&b.0));
        settings.dedup_by(|a, b| a.0 == b.0);
        let mut merged: Vec<(String, ArgValue)> =
            self.arguments.iter().filter(|(key, _)| !settings.iter().any(|(k, _)| k == key)).cloned().collect();
        merged.extend(settings.iter().cloned());
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        let config = QueueConfig::parse(&merged, &self.name, &self.vhost)?;
        if config.order != self.config.order {
            return Err(error(ErrorKind::PreconditionFailed, "settings cannot change a queue's order".into()));
        }
        Ok((settings, config))
    }

    fn with_config(record: QueueRecord, config: QueueConfig) -> Self {
        let messages = Queue::with_order(config.order);
        Self {
            config,
            expired_unacked: HashSet::new(),
            last_used_ms: 0,
            id: record.queue_id,
            vhost: record.vhost,
            name: record.name,
            durable: record.durable,
            auto_delete: record.auto_delete,
            exclusive_owner: None,
            arguments: record.arguments,
            settings: Vec::new(),
            messages,
            consumers: Vec::new(),
            next_consumer: 0,
            had_consumers: false,
            dirty: false,
            exclusive_consumer: false,
            choosing_consumers: 0,
            leases: HashMap::new(),
            dedup: dedup::DedupWindow::default(),
            above_high: false,
            dispatch_pass: 0,
            counters: QueueCounters::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ConsumerKey {
    connection: ConnectionId,
    channel: ChannelId,
    tag: Arc<str>,
    /// `x-priority`: higher goes first.
    priority: i64,
    /// It filters or browses (`ConsumerState::choice`).
    choosing: bool,
    /// It only browses: never the single active consumer.
    browsing: bool,
}

struct ConsumerState {
    /// Unique per channel, so a delivery of a cancelled consumer is never counted against a
    /// new consumer that reuses its tag.
    id: u64,
    queue: QueueId,
    no_ack: bool,
    /// 0 = unlimited.
    prefetch_limit: u16,
    unacked: u32,
    /// Filter or browse; `None` for a consumer that takes whatever comes next.
    choice: Option<filtered::ConsumerChoice>,
    /// `x-lease-ms`: how long each delivery may stay unacked.
    lease_ms: Option<u64>,
    /// Deliveries whose lease lapsed and that the consumer has not settled yet: while there
    /// are any, it gets nothing more (a hung consumer does not collect the same message again
    /// and again).
    lapsed: u32,
}

struct Unacked {
    queue: QueueId,
    seq: u64,
    /// None for `basic.get` deliveries.
    consumer: Option<(Arc<str>, u64)>,
    /// A browsed copy: settling it changes nothing in the queue.
    browse: bool,
    /// Its lease ran out and the message was taken back: settling it changes nothing either.
    lapsed: bool,
}

impl Unacked {
    /// The queue and message this delivery holds, unless it was only a browsed copy or its
    /// lease lapsed.
    fn held(&self) -> Option<(QueueId, u64)> {
        (!self.browse && !self.lapsed).then_some((self.queue, self.seq))
    }
}

#[derive(Default)]
struct ChannelState {
    next_delivery_tag: u64,
    unacked: BTreeMap<u64, Unacked>,
    consumers: HashMap<Arc<str>, ConsumerState>,
    /// `basic.qos(global=false)`: the limit for consumers created from now on.
    prefetch_per_consumer: u16,
    /// `basic.qos(global=true)`: one limit shared by the channel's consumers.
    prefetch_global: u16,
    unacked_by_consumers: u32,
    next_consumer_tag: u64,
    next_consumer_id: u64,
    /// `tx.select` was sent: publishes and acks wait here for `tx.commit`.
    tx: Option<tx::TxBuffer>,
    /// Its consumer on the direct reply-to pseudo-queue, if any.
    reply_consumer: Option<reply_to::ReplyConsumer>,
}

impl ChannelState {
    /// The client's consumer tag, or a new server-generated `amq.ctag-…` one when it is empty.
    fn consumer_tag(&mut self, origin: Origin, requested: &str) -> Arc<str> {
        if requested.is_empty() {
            self.next_consumer_tag += 1;
            format!("amq.ctag-{}.{}.{}", origin.connection, origin.channel, self.next_consumer_tag).into()
        } else {
            requested.into()
        }
    }
}

struct ConnectionState {
    vhost: String,
    info: ConnectionInfo,
    /// The user's permission on the vhost; None once it is cleared (everything is refused).
    permission: Option<Arc<Permission>>,
    /// Told to close (its user or vhost was deleted): refused everything, for good.
    forced_closed: bool,
    channels: HashMap<ChannelId, ChannelState>,
    exclusive_queues: Vec<QueueId>,
}

/// Live-data bookkeeping per log segment, for reclaiming and compacting segments.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SegmentLive {
    pub entries: u64,
    pub bytes: u64,
}

pub(crate) struct Broker<S: Storage> {
    pub log: Log<S>,
    pub vhosts: HashMap<String, Vhost>,
    pub queues: HashMap<QueueId, QueueState>,
    connections: HashMap<ConnectionId, ConnectionState>,
    pub sinks: HashMap<ConnectionId, EventSink>,
    /// Connections gone this turn: their sinks are dropped after the turn's last send.
    retired_sinks: Vec<ConnectionId>,
    pub next_message_seq: u64,
    pub next_queue_id: u32,
    content: ContentStore,
    pub segment_live: HashMap<u32, SegmentLive>,
    pub outbox: Outbox,
    dirty_queues: Vec<QueueId>,
    pending_settles: Vec<(QueueId, u64)>,
    /// Every message with a time to live: (expires at, queue, message), earliest first.
    pub expiries: ExpiryIndex,
    /// Every delayed message: (deliver at, queue, message), earliest first.
    pub delays: ExpiryIndex,
    /// Every leased delivery: (lapses at, queue, message), earliest first.
    pub leases: ExpiryIndex,
    /// Messages the broker holds for HTTP clients under a lease token: token → (queue, seq).
    lease_tokens: HashMap<u64, (QueueId, u64)>,
    /// Tokens are a counter through a hash keyed at random per start: unguessable, and no
    /// token of an earlier run names a message of this one.
    lease_token_key: std::collections::hash_map::RandomState,
    lease_token_count: u64,
    /// What happened in queues deleted since the start, so broker-wide totals never go down.
    pub deleted_counters: QueueCounters,
    /// Source of direct reply-to tokens.
    next_reply_token: u64,
    /// The clock, read once per engine turn (epoch milliseconds).
    pub now_ms: u64,
    /// The pass of the queue served last (stride scheduling in `dispatch`).
    dispatch_pass: u64,
    /// How many dead-letters deep the current one is (`lifecycle.rs`).
    dead_letter_depth: u32,
    /// When unused queues (`x-expires`) are looked for next, and whether any queue has it.
    next_unused_check_ms: u64,
    pub(crate) has_expiring_queues: bool,
    /// While a transaction commits: the records its publishes produce, to be logged as one.
    tx_capture: Option<tx::TxCapture>,
    /// Why new persistent data is refused (poisoned log, corruption found), if it is.
    pub read_only: Option<String>,
    /// Payload bytes appended since the last checkpoint.
    pub bytes_since_checkpoint: u64,
    /// LSN of the newest durable checkpoint. Two checkpoints are kept on disk and recovery
    /// falls back to the older one if the newest is damaged, so segments are only released up
    /// to the older of the two (see `engine::reclaim_segments`).
    pub checkpoint_lsn: u64,
    /// Users and permissions, changed only with logged records.
    pub directory: Directory,
    /// The same, as the protocol front-ends read it to log users in.
    pub shared_directory: SharedDirectory,
    scratch: Writer,
}

fn error(kind: ErrorKind, text: String) -> EngineError {
    EngineError::new(kind, text)
}

fn no_exchange(name: &str, vhost: &str) -> EngineError {
    error(ErrorKind::NotFound, format!("no exchange '{name}' in vhost '{vhost}'"))
}

fn no_queue(name: &str, vhost: &str) -> EngineError {
    error(ErrorKind::NotFound, format!("no queue '{name}' in vhost '{vhost}'"))
}

impl<S: Storage> Broker<S> {
    pub fn new(log: Log<S>, cache_budget_bytes: u64) -> Self {
        Self {
            log,
            vhosts: HashMap::from([(DEFAULT_VHOST.to_string(), Vhost::new())]),
            queues: HashMap::new(),
            connections: HashMap::new(),
            sinks: HashMap::new(),
            retired_sinks: Vec::new(),
            next_message_seq: 1,
            next_queue_id: 1,
            content: ContentStore::new(cache_budget_bytes),
            segment_live: HashMap::new(),
            outbox: Outbox::default(),
            dirty_queues: Vec::new(),
            pending_settles: Vec::new(),
            tx_capture: None,
            deleted_counters: QueueCounters::default(),
            expiries: ExpiryIndex::default(),
            delays: ExpiryIndex::default(),
            leases: ExpiryIndex::default(),
            lease_tokens: HashMap::new(),
            lease_token_key: std::collections::hash_map::RandomState::new(),
            lease_token_count: 0,
            now_ms: 0,
            dispatch_pass: 0,
            dead_letter_depth: 0,
            next_reply_token: 0x5eed,
            next_unused_check_ms: 0,
            has_expiring_queues: false,
            read_only: None,
            bytes_since_checkpoint: 0,
            checkpoint_lsn: 0,
            directory: Directory::default(),
            shared_directory: SharedDirectory::default(),
            scratch: Writer::default(),
        }
    }

    // -----------------------------------------------------------------------------------
    // Entry point

    pub fn handle(&mut self, command: Command) {
        let (origin, result) = match command {
            Command::Connect { connection, vhost, info, sink } => {
                self.connect(connection, vhost, info, sink);
                return;
            }
            Command::CloseConnection { connection, reason, reply } => {
                // Only client connections: the HTTP API's own are not the operator's to close.
                let found = self.connections.get(&connection).is_some_and(|c| !c.info.internal);
                if found {
                    let error = error(ErrorKind::ConnectionForced, reason);
                    self.outbox.push(connection, Event::ConnectionError { error });
                }
                let _ = reply.send(found);
                return;
            }
            Command::Admin { origin, op } => (origin, self.admin(origin, op)),
            Command::Inspect { query, reply } => {
                let _ = reply.send(self.inspect(query));
                return;
            }
            Command::Disconnect { connection } => {
                self.disconnect(connection);
                return;
            }
            Command::Resume { connection } => {
                self.mark_consumed_queues_dirty(connection, None);
                return;
            }
            Command::ChannelOpen { origin } => (origin, self.channel_open(origin)),
            Command::ChannelClose { origin } => {
                self.channel_close(origin.connection, origin.channel);
                self.outbox.push(origin.connection, Event::ChannelClosed { channel: origin.channel });
                return;
            }
            Command::QueueDeclare { origin, declare, no_wait } => {
                (origin, self.queue_declare(origin, declare, no_wait))
            }
            Command::QueueDelete { origin, queue, if_unused, if_empty, no_wait } => {
                (origin, self.queue_delete(origin, &queue, if_unused, if_empty, no_wait))
            }
            Command::QueuePurge { origin, queue, no_wait } => (origin, self.queue_purge(origin, &queue, no_wait)),
            Command::ExchangeDeclare { origin, declare, no_wait } => {
                (origin, self.exchange_declare(origin, declare, no_wait))
            }
            Command::ExchangeDelete { origin, exchange, if_unused, no_wait } => {
                (origin, self.exchange_delete(origin, &exchange, if_unused, no_wait))
            }
            Command::Bind { origin, bind, no_wait } => (origin, self.bind(origin, bind, no_wait)),
            Command::Unbind { origin, bind, no_wait } => (origin, self.unbind(origin, bind, no_wait)),
            Command::Publish(publish) => (publish.origin, self.publish(*publish)),
            Command::Consume { origin, consume } => (origin, self.consume(origin, consume)),
            Command::Cancel { origin, consumer_tag, no_wait } => (origin, self.cancel(origin, &consumer_tag, no_wait)),
            Command::Qos { origin, prefetch_count, global } => (origin, self.qos(origin, prefetch_count, global)),
            Command::Get { origin, queue, no_ack, filter } => {
                (origin, self.get(origin, &queue, no_ack, filter.as_deref()))
            }
            Command::Browse { origin, queue, request } => (origin, self.browse(origin, &queue, request)),
            Command::Move { origin, queue, request } => (origin, self.move_messages(origin, &queue, request)),
            Command::Hold { origin, delivery_tag, lease_ms } => (origin, self.hold(origin, delivery_tag, lease_ms)),
            Command::SettleLease { origin, token, action } => (origin, self.settle_lease(origin, token, action)),
            Command::Remove { origin, queue, filter, count } => {
                (origin, self.remove_messages(origin, &queue, &filter, count))
            }
            Command::QueueSettings { origin, queue, settings } => {
                (origin, self.queue_settings(origin, &queue, settings))
            }
            Command::Ack { origin, delivery_tag, multiple } => {
                (origin, self.settle_tags(origin, delivery_tag, multiple, Settlement::Ack))
            }
            Command::Reject { origin, delivery_tag, multiple, requeue } => {
                let how = if requeue { Settlement::Requeue } else { Settlement::Discard };
                (origin, self.settle_tags(origin, delivery_tag, multiple, how))
            }
            Command::Recover { origin } => (origin, self.recover(origin)),
            Command::TxSelect { origin } => (origin, self.tx_select(origin)),
            Command::TxCommit { origin } => (origin, self.tx_commit(origin)),
            Command::TxRollback { origin } => (origin, self.tx_rollback(origin)),
            Command::Shutdown | Command::CheckpointWritten { .. } | Command::Scrubbed { .. } => {
                unreachable!("handled by the engine loop")
            }
        };
        if let Err(error) = result {
            self.outbox
                .push(origin.connection, Event::ChannelError { channel: origin.channel, method: origin.method, error });
        }
    }

    /// Reply to a request; gated when the batch has log records not yet fsynced, since the
    /// reply may report one of them (and must not overtake a gated event anyway).
    fn reply(&mut self, connection: ConnectionId, event: Event) {
        if self.log.last_lsn() > self.log.durable_lsn() {
            self.outbox.push_gated(connection, event);
        } else {
            self.outbox.push(connection, event);
        }
    }

    // -----------------------------------------------------------------------------------
    // Connections and channels

    fn connect(&mut self, connection: ConnectionId, vhost: String, info: ConnectionInfo, sink: EventSink) {
        // The HTTP API's management sessions open no vhost: only administrators', and all they
        // can do is `Command::Admin` (every other command needs the vhost).
        let management = vhost.is_empty() && info.internal && self.directory.is_administrator(&info.user);
        let permission = self.directory.permission(&info.user, &vhost).cloned();
        let refusal = if management {
            None
        } else if !self.vhosts.contains_key(&vhost) {
            Some(format!("vhost {vhost} not found"))
        } else if permission.is_none() {
            Some(format!("access to vhost '{vhost}' refused for user '{}'", info.user))
        } else if let Some(max) = self.vhosts[&vhost].limit("max-connections").filter(|_| !info.internal) {
            let open = self.connections.values().filter(|c| c.vhost == vhost && !c.info.internal).count();
            (open as u64 >= max).then(|| {
                format!(
                    "access to vhost '{vhost}' refused for user '{}': connection limit ({max}) is reached",
                    info.user
                )
            })
        } else {
            None
        };
        if let Some(text) = refusal {
            let _ = sink.sender.send(vec![Event::ConnectionError { error: error(ErrorKind::NotAllowed, text) }]);
            return;
        }
        self.sinks.insert(connection, sink);
        self.connections.insert(
            connection,
            ConnectionState {
                vhost,
                info,
                permission,
                forced_closed: false,
                channels: HashMap::new(),
                exclusive_queues: Vec::new(),
            },
        );
        self.outbox.push(connection, Event::ConnectionOpened);
    }

    fn disconnect(&mut self, connection: ConnectionId) {
        let Some(state) = self.connections.get(&connection) else {
            self.sinks.remove(&connection);
            return;
        };
        let channels: Vec<ChannelId> = state.channels.keys().copied().collect();
        for channel in channels {
            self.channel_close(connection, channel);
        }
        let state = self.connections.remove(&connection).expect("present");
        for queue in state.exclusive_queues {
            self.delete_queue(queue);
        }
        // Its last event: what was queued for it goes first (confirms may still wait for this
        // turn's fsync), so the sink is retired only after the turn has sent everything.
        self.outbox.push(connection, Event::Disconnected);
        self.retired_sinks.push(connection);
    }

    fn channel_open(&mut self, origin: Origin) -> Result<(), EngineError> {
        let connection = self.connection_mut(origin.connection)?;
        connection.channels.insert(origin.channel, ChannelState { next_delivery_tag: 1, ..Default::default() });
        Ok(())
    }

    /// Requeue the channel's unacked messages and end its consumers.
    fn channel_close(&mut self, connection: ConnectionId, channel: ChannelId) {
        let Some(state) = self.connections.get_mut(&connection).and_then(|c| c.channels.remove(&channel)) else {
            return;
        };
        for (queue, seq) in state.unacked.into_values().rev().filter_map(|u| u.held()) {
            self.requeue_entry(queue, seq);
        }
        for (tag, consumer) in state.consumers {
            let choosing = consumer.choice.is_some();
            let key = ConsumerKey { connection, channel, tag, priority: 0, choosing, browsing: false };
            self.remove_consumer(consumer.queue, &key);
        }
    }

    fn connection_mut(&mut self, connection: ConnectionId) -> Result<&mut ConnectionState, EngineError> {
        self.connections
            .get_mut(&connection)
            .ok_or_else(|| error(ErrorKind::InternalError, "connection is not open".into()))
    }

    fn channel_mut(&mut self, origin: Origin) -> Result<&mut ChannelState, EngineError> {
        self.connection_mut(origin.connection)?
            .channels
            .get_mut(&origin.channel)
            .ok_or_else(|| error(ErrorKind::InternalError, format!("channel {} is not open", origin.channel)))
    }

    /// The connection's vhost; an error once its vhost or user is deleted (it is being closed
    /// then), and for management sessions, which have no vhost.
    fn vhost_of(&self, connection: ConnectionId) -> Result<&str, EngineError> {
        let state = self
            .connections
            .get(&connection)
            .ok_or_else(|| error(ErrorKind::InternalError, "connection is not open".into()))?;
        // A deleted vhost's connections are all marked (`force_close`), so no lookup of the vhost
        // is needed here; management sessions have none.
        if state.forced_closed || state.vhost.is_empty() {
            return Err(error(
                ErrorKind::NotAllowed,
                "the connection is being closed: its user or vhost was deleted".into(),
            ));
        }
        Ok(&state.vhost)
    }

    /// Find a queue the connection may use (not another connection's exclusive queue).
    fn lookup_queue(&self, connection: ConnectionId, name: &str) -> Result<QueueId, EngineError> {
        let vhost = self.vhost_of(connection)?;
        let id = *self.vhosts.get(vhost).and_then(|v| v.queues.get(name)).ok_or_else(|| no_queue(name, vhost))?;
        let queue = &self.queues[&id];
        match queue.exclusive_owner {
            Some(owner) if owner != connection => Err(error(
                ErrorKind::ResourceLocked,
                format!(
                    "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. \
                     It could be originally declared on another connection or the exclusive property value does \
                     not match that of the original declaration."
                ),
            )),
            _ => Ok(id),
        }
    }

    fn refuse_if_read_only(&self) -> Result<(), EngineError> {
        match &self.read_only {
            Some(reason) => Err(error(ErrorKind::InternalError, format!("the log refuses new durable data: {reason}"))),
            None => Ok(()),
        }
    }

    // -----------------------------------------------------------------------------------
    // Queues

    fn queue_declare(&mut self, origin: Origin, declare: QueueDeclare, no_wait: bool) -> Result<(), EngineError> {
        if reply_to::is_reply_name(&declare.name) {
            return self.declare_reply_name(origin, &declare.name, no_wait);
        }
        let vhost = self.vhost_of(origin.connection)?.to_string();
        let name = if declare.name.is_empty() {
            format!("amq.gen-{}", generated_suffix(self.next_queue_id, origin.connection))
        } else {
            declare.name.clone()
        };
        if !declare.passive {
            self.authorize(origin.connection, Access::Configure, "queue", &name)?;
            if let Some(ArgValue::Str(dlx)) =
                declare.arguments.iter().find(|(k, _)| k == "x-dead-letter-exchange").map(|(_, v)| v)
            {
                // As RabbitMQ: dead letters are published to the DLX and read from this queue.
                self.authorize(origin.connection, Access::Write, "exchange", dlx)?;
                self.authorize(origin.connection, Access::Read, "queue", &name)?;
            }
        }
        let existing = self.vhosts.get(&vhost).and_then(|v| v.queues.get(&name)).copied();
        let id = match existing {
            Some(_) => {
                let id = self.lookup_queue(origin.connection, &name)?;
                if !declare.passive {
                    check_equivalent(&self.queues[&id], &declare, &vhost)?;
                }
                if let Some(queue) = self.queues.get_mut(&id) {
                    queue.last_used_ms = self.now_ms;
                }
                id
            }
            None if declare.passive => return Err(no_queue(&name, &vhost)),
            None if !declare.name.is_empty() && name.starts_with("amq.") => {
                return Err(error(
                    ErrorKind::AccessRefused,
                    format!("queue name '{name}' contains reserved prefix 'amq.*'"),
                ))
            }
            None => self.create_queue(origin.connection, &vhost, name.clone(), &declare)?,
        };
        if !no_wait {
            let queue = &self.queues[&id];
            let event = Event::QueueDeclareOk {
                channel: origin.channel,
                queue: name,
                message_count: clamp_u32(queue.messages.stats().ready_messages),
                consumer_count: queue.consumers.len() as u32,
            };
            self.reply(origin.connection, event);
        }
        Ok(())
    }

    fn create_queue(
        &mut self,
        connection: ConnectionId,
        vhost: &str,
        name: String,
        declare: &QueueDeclare,
    ) -> Result<QueueId, EngineError> {
        let config = QueueConfig::parse(&declare.arguments, &name, vhost)?;
        let topology = self.vhosts.get(vhost).ok_or_else(|| no_queue(&name, vhost))?;
        if let Some(max) = topology.limit("max-queues").filter(|max| topology.queues.len() as u64 >= *max) {
            return Err(error(
                ErrorKind::PreconditionFailed,
                format!("cannot declare queue '{name}': queue limit in vhost '{vhost}' ({max}) is reached"),
            ));
        }
        if config.expires_ms.is_some() {
            self.has_expiring_queues = true;
        }
        let logged = declare.durable && !declare.exclusive;
        if logged {
            self.refuse_if_read_only()?;
        }
        let id = self.next_queue_id;
        self.next_queue_id += 1;
        let queue = QueueState {
            exclusive_owner: declare.exclusive.then_some(connection),
            last_used_ms: self.now_ms,
            ..QueueState::with_config(
                QueueRecord {
                    queue_id: id,
                    vhost: vhost.to_string(),
                    name: name.clone(),
                    durable: declare.durable,
                    exclusive: declare.exclusive,
                    auto_delete: declare.auto_delete,
                    arguments: declare.arguments.clone(),
                },
                config,
            )
        };
        if logged {
            let record = queue.record();
            self.append_with(records::KIND_QUEUE_DECLARE, |w| records::encode_queue(w, &record))?;
        }
        if declare.exclusive {
            self.connection_mut(connection)?.exclusive_queues.push(id);
        }
        self.vhosts.get_mut(vhost).expect("vhost exists").queues.insert(name, id);
        self.queues.insert(id, queue);
        Ok(id)
    }

    fn queue_delete(
        &mut self,
        origin: Origin,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        no_wait: bool,
    ) -> Result<(), EngineError> {
        let vhost = self.vhost_of(origin.connection)?.to_string();
        self.authorize(origin.connection, Access::Configure, "queue", name)?;
        let message_count = match self.lookup_queue(origin.connection, name) {
            // Deleting what does not exist succeeds (RabbitMQ does the same).
            Err(e) if e.kind == ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
            Ok(id) => {
                let queue = &self.queues[&id];
                if if_unused && !queue.consumers.is_empty() {
                    return Err(error(
                        ErrorKind::PreconditionFailed,
                        format!("queue '{name}' in vhost '{vhost}' in use"),
                    ));
                }
                if if_empty && queue.messages.stats().ready_messages > 0 {
                    return Err(error(
                        ErrorKind::PreconditionFailed,
                        format!("queue '{name}' in vhost '{vhost}' is not empty"),
                    ));
                }
                if queue.is_logged() {
                    self.refuse_if_read_only()?;
                }
                let count = queue.messages.stats().ready_messages;
                self.delete_queue(id);
                clamp_u32(count)
            }
        };
        if !no_wait {
            self.reply(origin.connection, Event::QueueDeleteOk { channel: origin.channel, message_count });
        }
        Ok(())
    }

    /// Remove a queue with everything in it; consumers are told (server-sent cancel).
    pub(crate) fn delete_queue(&mut self, id: QueueId) {
        let Some(mut queue) = self.queues.remove(&id) else {
            return;
        };
        self.deleted_counters += queue.counters;
        self.lease_tokens.retain(|_, (queue_id, _)| *queue_id != id);
        if queue.is_logged() {
            // A failed append poisons the log; the queue still goes away in memory and the
            // refusal reaches clients through the gated replies of this batch.
            let _ = self.log_append(records::KIND_QUEUE_DELETE, &records::encode_queue_delete(id));
        }
        if let Some(vhost) = self.vhosts.get_mut(&queue.vhost) {
            vhost.queues.remove(&queue.name);
            let auto_deleted = vhost.remove_bindings_to(&Destination::Queue(id));
            self.log_exchanges_deleted(&queue.vhost.clone(), &auto_deleted);
        }
        for consumer in std::mem::take(&mut queue.consumers) {
            if let Some(channel) =
                self.connections.get_mut(&consumer.connection).and_then(|c| c.channels.get_mut(&consumer.channel))
            {
                channel.consumers.remove(&consumer.tag);
                self.outbox.push(
                    consumer.connection,
                    Event::ConsumerCancelled { channel: consumer.channel, consumer_tag: consumer.tag.to_string() },
                );
            }
        }
        let entries: Vec<MessageEntry> = queue.messages.entries().copied().collect();
        for entry in entries {
            self.forget_entry(&entry);
        }
    }

    fn queue_purge(&mut self, origin: Origin, name: &str, no_wait: bool) -> Result<(), EngineError> {
        self.authorize(origin.connection, Access::Read, "queue", name)?;
        let id = self.lookup_queue(origin.connection, name)?;
        let queue = self.queues.get_mut(&id).expect("looked up");
        let mut purged = queue.messages.purge_ready();
        purged.extend(queue.messages.purge_delayed());
        for entry in &purged {
            self.drop_entry(id, entry);
        }
        self.mark_dirty(id);
        // Log the settlements now, not at the end of the turn, so that the reply is gated on
        // their fsync even when the purge is all this turn logs.
        self.flush_settles();
        if !no_wait {
            let message_count = clamp_u32(purged.len() as u64);
            self.reply(origin.connection, Event::QueuePurgeOk { channel: origin.channel, message_count });
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Publishing

    fn publish(&mut self, publish: Publish) -> Result<(), EngineError> {
        let publish = if publish.direct_reply_to { self.with_reply_address(publish)? } else { publish };
        self.authorize(publish.origin.connection, Access::Write, "exchange", &publish.exchange)?;
        if publish.exchange.is_empty() && reply_to::is_reply_name(&publish.routing_key) {
            self.deliver_reply(publish);
            return Ok(());
        }
        if self.channel_mut(publish.origin)?.tx.is_none() {
            return self.publish_now(publish);
        }
        // In a transaction a missing exchange or a bad delay header is an error now (the
        // commit must not fail once it starts applying); routing happens at commit.
        let vhost = self.vhost_of(publish.origin.connection)?.to_string();
        self.route(&vhost, &publish)?;
        delay::delivery_time(&publish.headers, self.now_ms)?;
        self.channel_mut(publish.origin)?.tx.as_mut().expect("checked above").publishes.push(publish);
        Ok(())
    }

    /// Route, log and enqueue a message for a client's publish.
    fn publish_now(&mut self, publish: Publish) -> Result<(), EngineError> {
        let vhost = self.vhost_of(publish.origin.connection)?.to_string();
        self.publish_in(&vhost, publish).map(|_| ())
    }

    /// Route, log and enqueue a message in `vhost` (clients' publishes and the broker's own:
    /// dead-lettering, moves). Returns how many queues took it.
    pub(crate) fn publish_in(&mut self, vhost: &str, publish: Publish) -> Result<usize, EngineError> {
        let origin = publish.origin;
        let deliver_at = if origin.connection == INTERNAL_CONNECTION {
            None
        } else {
            delay::delivery_time(&publish.headers, self.now_ms)?
        };
        let mut targets = self.route(vhost, &publish)?;
        let message = publish.message;
        let size_bytes = u32::try_from(message.body.len()).unwrap_or(u32::MAX);
        // The message-id, read from the property bytes only when a target deduplicates.
        let message_id = targets
            .iter()
            .any(|id| self.queues[id].config.dedup_window_ms.is_some())
            .then(|| properties::raw_message_id(&message.raw_properties))
            .flatten();
        // A message-id a queue took within its deduplication window: confirmed, not enqueued.
        // The broker's own republishes (dead-letters, moves, redrives) are not producer retries.
        let mut duplicate = false;
        if let Some(message_id) = message_id.filter(|_| origin.connection != INTERNAL_CONNECTION) {
            let now = self.now_ms;
            let queues = &mut self.queues;
            targets.retain(|id| {
                let queue = queues.get_mut(id).expect("routed");
                let seen = queue.config.dedup_window_ms.is_some_and(|w| queue.dedup.is_duplicate(message_id, now, w));
                duplicate |= seen;
                !seen
            });
        }
        // Over the vhost's message quota, nothing takes it (the broker's own republishes,
        // dead-letters and moves, are not new messages to the vhost). Else full queues that
        // turn new messages away do so: `reject-publish(-dlx)` refuse it (a nack), `drop-new`
        // drops it (an ack); the others take it and make room.
        let mut refused = Vec::new();
        let mut dropped = Vec::new();
        let over_quota =
            origin.connection != INTERNAL_CONNECTION && self.over_vhost_quota(vhost, targets.len(), size_bytes);
        if over_quota {
            refused = std::mem::take(&mut targets);
        }
        targets.retain(|id| {
            let queue = &self.queues[id];
            let full = queue.turns_away(size_bytes);
            if full && queue.config.overflow == Overflow::DropNew {
                dropped.push(*id);
            } else if full {
                refused.push(*id);
            }
            !full
        });
        let turned_away = refused.iter().filter(|_| !over_quota).chain(&dropped);
        for id in turned_away.copied().collect::<Vec<_>>() {
            let overflow = self.queues[&id].config.overflow;
            if overflow == Overflow::RejectPublish {
                continue;
            }
            let sent = self.republish_dead(id, &message, DeathReason::MaxLength);
            let counters = &mut self.queues.get_mut(&id).expect("routed").counters;
            if sent {
                counters.dead_lettered += 1;
            } else if overflow == Overflow::DropNew {
                counters.dropped += 1;
            }
        }
        let confirm_event = |sequence| {
            if refused.is_empty() {
                Event::ConfirmAck { channel: origin.channel, sequence, multiple: false }
            } else {
                Event::ConfirmNack { channel: origin.channel, sequence, multiple: false }
            }
        };
        if targets.is_empty() {
            if publish.mandatory && refused.is_empty() && !duplicate && dropped.is_empty() {
                self.outbox.push(origin.connection, Event::Returned { channel: origin.channel, message });
            }
            if let Some(sequence) = publish.confirm {
                let event = confirm_event(sequence);
                self.reply(origin.connection, event);
            }
            return Ok(0);
        }
        let persistent = publish.persistent;
        let logged: Vec<QueueId> = if persistent {
            targets.iter().copied().filter(|id| self.queues[id].is_logged()).collect()
        } else {
            Vec::new()
        };
        let now = self.now_ms;
        let message_expires_at = publish.expiration_ms.map(|ms| now.saturating_add(ms));
        // The enqueue time is logged where a rule needs it at replay: a TTL, a deduplication
        // window.
        let timed = message_expires_at.is_some()
            || targets.iter().any(|id| {
                let config = &self.queues[id].config;
                config.message_ttl_ms.is_some() || config.dedup_window_ms.is_some()
            });
        let times = timed.then_some((now, message_expires_at.unwrap_or(0)));
        let seq = self.next_message_seq;
        let mut location = LOCATION_MEMORY;
        let mut pinned = logged.len() < targets.len();
        if !logged.is_empty() {
            if let Err(e) = self.refuse_if_read_only() {
                if let Some(sequence) = publish.confirm {
                    self.outbox.push(
                        origin.connection,
                        Event::ConfirmNack { channel: origin.channel, sequence, multiple: false },
                    );
                    return Ok(0);
                }
                return Err(e);
            }
            let mut w = std::mem::take(&mut self.scratch);
            w.buf.clear();
            records::encode_enqueue(&mut w, seq, 0, times, deliver_at, &logged, &message);
            let appended = match &mut self.tx_capture {
                // Inside a commit: the record joins the transaction's container, and the
                // entries get their location when the container is appended. Until then the
                // content is held in memory.
                Some(capture) => {
                    capture.records.push((records::KIND_ENQUEUE, w.buf.clone()));
                    capture.enqueues.push((seq, logged.clone(), size_bytes));
                    if !pinned {
                        capture.unpin_after.push(seq);
                        pinned = true;
                    }
                    Ok(None)
                }
                None => self.log_append(records::KIND_ENQUEUE, &w.buf).map(Some),
            };
            self.scratch = w;
            if let Some(pos) = appended? {
                location = location_of(pos);
            }
        }
        self.next_message_seq += 1;
        let taken = targets.len();
        self.content.insert(seq, &message, targets.len() as u32, pinned);
        let mut priority = None;
        for id in targets {
            let target = &self.queues[&id];
            // Same test as `logged` above, without a search of it per target.
            let is_logged = persistent && target.is_logged();
            let entry = MessageEntry {
                seq,
                location: if is_logged { location } else { LOCATION_MEMORY },
                size_bytes,
                delivery_count: 0,
                flags: if is_logged { ENTRY_FLAG_PERSISTENT } else { 0 },
                priority: if target.config.order.max_priority > 0 {
                    *priority.get_or_insert_with(|| properties::raw_priority(&message.raw_properties).unwrap_or(0))
                } else {
                    0
                },
            };
            self.track_live(&entry, 1);
            let queue = self.queues.get_mut(&id).expect("routed");
            queue.counters.published += 1;
            if let (Some(message_id), Some(_)) = (message_id, queue.config.dedup_window_ms) {
                queue.dedup.remember(message_id, now);
            }
            let expires_at = lifecycle::message_expiry(&queue.config, times);
            match deliver_at {
                Some(at) => {
                    queue.messages.push_delayed(entry);
                    self.schedule_delay(id, seq, at);
                }
                None => {
                    queue.messages.push(entry);
                    self.enforce_max_length(id);
                    self.mark_dirty(id);
                }
            }
            if let Some(at) = expires_at {
                self.schedule_expiry(id, seq, at);
            }
        }
        if let Some(sequence) = publish.confirm {
            let event = confirm_event(sequence);
            self.reply(origin.connection, event);
        }
        Ok(taken)
    }

    /// Would `copies` more messages of `size_bytes` each take vhost `vhost` over its
    /// `max-messages` or `max-bytes` quota? Every message in its queues counts (ready,
    /// unacked, delayed); a message routed to three queues counts three times. Summed over the
    /// vhost's queues per publish, and only when the vhost has such a quota.
    fn over_vhost_quota(&self, vhost: &str, copies: usize, size_bytes: u32) -> bool {
        let Some(topology) = self.vhosts.get(vhost) else { return false };
        let (max_messages, max_bytes) = (topology.limit("max-messages"), topology.limit("max-bytes"));
        if max_messages.is_none() && max_bytes.is_none() {
            return false;
        }
        let (mut messages, mut bytes) = (copies as u64, copies as u64 * u64::from(size_bytes));
        for id in topology.queues.values() {
            let stats = self.queues[id].messages.stats();
            messages += stats.ready_messages + stats.unacked_messages + stats.delayed_messages;
            bytes += stats.ready_bytes + stats.unacked_bytes + stats.delayed_bytes;
        }
        max_messages.is_some_and(|max| messages > max) || max_bytes.is_some_and(|max| bytes > max)
    }

    /// The queues a publish reaches: unknown exchanges are 404, internal ones 403 (except to
    /// the broker itself), and another connection's exclusive queue reached through the
    /// default exchange is 405.
    fn route(&self, vhost: &str, publish: &Publish) -> Result<Vec<QueueId>, EngineError> {
        let topology = &self.vhosts[vhost];
        if !publish.exchange.is_empty() {
            match topology.exchanges.get(&publish.exchange) {
                None => return Err(no_exchange(&publish.exchange, vhost)),
                Some(exchange) if exchange.internal && publish.origin.connection != INTERNAL_CONNECTION => {
                    return Err(error(
                        ErrorKind::AccessRefused,
                        format!("cannot publish to internal exchange '{}' in vhost '{vhost}'", publish.exchange),
                    ))
                }
                Some(_) => {}
            }
        } else {
            // Every key the default exchange routes by names a queue directly: CC/BCC too.
            let owner_only =
                |owner| owner != publish.origin.connection && publish.origin.connection != INTERNAL_CONNECTION;
            for key in std::iter::once(&publish.routing_key).chain(&publish.cc) {
                if let Some(&id) = topology.queues.get(key) {
                    if self.queues[&id].exclusive_owner.is_some_and(owner_only) {
                        return Err(self.lookup_queue(publish.origin.connection, key).expect_err("locked"));
                    }
                }
            }
        }
        let mut queues = topology.route(&publish.exchange, &publish.routing_key, &publish.headers);
        for key in &publish.cc {
            for id in topology.route(&publish.exchange, key, &publish.headers) {
                if !queues.contains(&id) {
                    queues.push(id);
                }
            }
        }
        if let Some(recipients) = &publish.recipients {
            queues.retain(|id| recipients.contains(&self.queues[id].name));
        }
        Ok(queues)
    }

    // -----------------------------------------------------------------------------------
    // Consuming

    fn consume(&mut self, origin: Origin, consume: ConsumeRequest) -> Result<(), EngineError> {
        let ConsumeRequest { queue: queue_name, consumer_tag, no_ack, exclusive, no_wait, arguments } = consume;
        let queue_name = queue_name.as_str();
        let priority = consumer_priority(&arguments)?;
        let choice = filtered::ConsumerChoice::new(
            MessageFilter::from_arguments(&arguments)?,
            filter::browse_argument(&arguments)?,
        );
        let lease_ms = lease::lease_argument(&arguments)?;
        if queue_name == reply_to::REPLY_TO {
            return self.consume_reply_to(origin, consumer_tag, no_ack, no_wait);
        }
        self.authorize(origin.connection, Access::Read, "queue", queue_name)?;
        let id = self.lookup_queue(origin.connection, queue_name)?;
        let vhost = self.vhost_of(origin.connection)?.to_string();
        let now = self.now_ms;
        self.queues.get_mut(&id).expect("looked up").last_used_ms = now;
        let queue = &self.queues[&id];
        if queue.exclusive_consumer || (exclusive && !queue.consumers.is_empty()) {
            return Err(error(
                ErrorKind::AccessRefused,
                format!("queue '{queue_name}' in vhost '{vhost}' in exclusive use"),
            ));
        }
        let channel = self.channel_mut(origin)?;
        let tag = channel.consumer_tag(origin, &consumer_tag);
        if channel.consumers.contains_key(&tag) {
            return Err(error(ErrorKind::NotAllowed, format!("attempt to reuse consumer tag '{tag}'")));
        }
        let prefetch_limit = channel.prefetch_per_consumer;
        channel.next_consumer_id += 1;
        let choosing = choice.is_some();
        let browsing = choice.as_ref().is_some_and(|c| c.browse);
        let consumer = ConsumerState {
            id: channel.next_consumer_id,
            queue: id,
            no_ack,
            prefetch_limit,
            unacked: 0,
            choice,
            lease_ms,
            lapsed: 0,
        };
        channel.consumers.insert(Arc::clone(&tag), consumer);
        let queue = self.queues.get_mut(&id).expect("looked up");
        // Sorted by priority, highest first; arrival order among equals.
        let position = queue.consumers.partition_point(|c| c.priority >= priority);
        let key = ConsumerKey {
            connection: origin.connection,
            channel: origin.channel,
            tag: Arc::clone(&tag),
            priority,
            choosing,
            browsing,
        };
        queue.consumers.insert(position, key);
        queue.choosing_consumers += usize::from(choosing);
        queue.had_consumers = true;
        queue.exclusive_consumer = exclusive;
        if !no_wait {
            self.reply(origin.connection, Event::ConsumeOk { channel: origin.channel, consumer_tag: tag.to_string() });
        }
        self.mark_dirty(id);
        Ok(())
    }

    fn cancel(&mut self, origin: Origin, consumer_tag: &str, no_wait: bool) -> Result<(), EngineError> {
        let channel = self.channel_mut(origin)?;
        if channel.reply_consumer.as_ref().is_some_and(|c| &*c.tag == consumer_tag) {
            channel.reply_consumer = None;
        }
        // An unknown tag is not an error (RabbitMQ answers cancel-ok).
        if let Some((tag, consumer)) = channel.consumers.remove_entry(consumer_tag) {
            let choosing = consumer.choice.is_some();
            let (connection, channel) = (origin.connection, origin.channel);
            let key = ConsumerKey { connection, channel, tag, priority: 0, choosing, browsing: false };
            self.remove_consumer(consumer.queue, &key);
        }
        if !no_wait {
            self.reply(
                origin.connection,
                Event::CancelOk { channel: origin.channel, consumer_tag: consumer_tag.into() },
            );
        }
        Ok(())
    }

    /// Take a consumer off its queue; an auto-delete queue goes with its last consumer.
    fn remove_consumer(&mut self, queue_id: QueueId, key: &ConsumerKey) {
        let Some(queue) = self.queues.get_mut(&queue_id) else {
            return;
        };
        let before = queue.consumers.len();
        queue.consumers.retain(|c| (c.connection, c.channel, &c.tag) != (key.connection, key.channel, &key.tag));
        if key.choosing && queue.consumers.len() < before {
            queue.choosing_consumers -= 1;
        }
        queue.exclusive_consumer = false;
        if queue.auto_delete && queue.had_consumers && queue.consumers.is_empty() {
            self.delete_queue(queue_id);
        }
    }

    fn qos(&mut self, origin: Origin, prefetch_count: u16, global: bool) -> Result<(), EngineError> {
        let channel = self.channel_mut(origin)?;
        if global {
            channel.prefetch_global = prefetch_count;
        } else {
            channel.prefetch_per_consumer = prefetch_count;
        }
        self.mark_consumed_queues_dirty(origin.connection, Some(origin.channel));
        self.reply(origin.connection, Event::QosOk { channel: origin.channel });
        Ok(())
    }

    fn get(
        &mut self,
        origin: Origin,
        queue_name: &str,
        no_ack: bool,
        filter: Option<&MessageFilter>,
    ) -> Result<(), EngineError> {
        self.authorize(origin.connection, Access::Read, "queue", queue_name)?;
        let id = self.lookup_queue(origin.connection, queue_name)?;
        self.channel_mut(origin)?;
        let now = self.now_ms;
        self.queues.get_mut(&id).expect("looked up").last_used_ms = now;
        // A message whose body cannot be read is dropped and reported by `load_message`;
        // the get goes on to the next one.
        let (entry, message, message_count) = loop {
            let chosen = match filter {
                Some(filter) => match self.first_match(id, filter) {
                    Some(seq) => Some(seq),
                    None => {
                        self.reply(origin.connection, Event::GetEmpty { channel: origin.channel });
                        return Ok(());
                    }
                },
                None => None,
            };
            let queue = self.queues.get_mut(&id).expect("looked up");
            let taken = match chosen {
                Some(seq) => queue.messages.deliver_seq(seq, no_ack),
                None => queue.messages.deliver(no_ack),
            };
            let Some(entry) = taken else {
                self.reply(origin.connection, Event::GetEmpty { channel: origin.channel });
                return Ok(());
            };
            let message_count = clamp_u32(queue.messages.stats().ready_messages);
            if let Some(message) = self.load_message(id, &entry, no_ack) {
                self.queues.get_mut(&id).expect("looked up").count_delivery(&entry);
                break (entry, message, message_count);
            }
        };
        self.mark_dirty(id);
        let channel = self.channel_mut(origin)?;
        let delivery_tag = channel.next_delivery_tag;
        channel.next_delivery_tag += 1;
        if !no_ack {
            let unacked = Unacked { queue: id, seq: entry.seq, consumer: None, browse: false, lapsed: false };
            channel.unacked.insert(delivery_tag, unacked);
        }
        self.reply(
            origin.connection,
            Event::GetOk {
                channel: origin.channel,
                delivery_tag,
                redelivered: entry.is_redelivered(),
                message_count,
                message,
            },
        );
        if no_ack {
            self.drop_entry(id, &entry);
        }
        Ok(())
    }

    fn settle_tags(
        &mut self,
        origin: Origin,
        delivery_tag: u64,
        multiple: bool,
        how: Settlement,
    ) -> Result<(), EngineError> {
        let channel = self.channel_mut(origin)?;
        let known = channel.unacked.contains_key(&delivery_tag) || (multiple && delivery_tag == 0);
        if let Some(buffer) = &mut channel.tx {
            // An unknown tag is an error now; the settlement itself waits for the commit.
            if !known {
                return Err(unknown_tag(delivery_tag));
            }
            buffer.settlements.push((delivery_tag, multiple, how));
            return Ok(());
        }
        self.settle_now(origin, delivery_tag, multiple, how)
    }

    fn settle_now(
        &mut self,
        origin: Origin,
        delivery_tag: u64,
        multiple: bool,
        how: Settlement,
    ) -> Result<(), EngineError> {
        let channel = self.channel_mut(origin)?;
        let taken: Vec<(u64, Unacked)> = if multiple {
            let upto = if delivery_tag == 0 { u64::MAX } else { delivery_tag };
            if delivery_tag != 0 && !channel.unacked.contains_key(&delivery_tag) {
                return Err(unknown_tag(delivery_tag));
            }
            let rest = channel.unacked.split_off(&upto.saturating_add(1));
            std::mem::replace(&mut channel.unacked, rest).into_iter().collect()
        } else {
            let unacked = channel.unacked.remove(&delivery_tag).ok_or_else(|| unknown_tag(delivery_tag))?;
            vec![(delivery_tag, unacked)]
        };
        for (_, unacked) in &taken {
            if let Some((tag, consumer_id)) = &unacked.consumer {
                channel.unacked_by_consumers -= 1;
                if let Some(consumer) = channel.consumers.get_mut(tag).filter(|c| c.id == *consumer_id) {
                    consumer.unacked -= 1;
                    consumer.lapsed -= u32::from(unacked.lapsed);
                }
            }
        }
        for (_, unacked) in taken {
            // A browsed copy only frees its consumer's prefetch.
            let Some((queue_id, seq)) = unacked.held() else {
                self.mark_dirty(unacked.queue);
                continue;
            };
            let Some(queue) = self.queues.get_mut(&queue_id) else {
                continue; // the queue was deleted meanwhile
            };
            match how {
                Settlement::Requeue => self.requeue_entry(queue_id, seq),
                Settlement::Ack => {
                    queue.leases.remove(&seq);
                    if let Some(entry) = queue.messages.settle(seq) {
                        queue.counters.acked += 1;
                        queue.expired_unacked.remove(&seq);
                        self.drop_entry(queue_id, &entry);
                    }
                }
                Settlement::Discard => {
                    queue.leases.remove(&seq);
                    if let Some(entry) = queue.messages.settle(seq) {
                        self.dead_letter(queue_id, entry, DeathReason::Rejected);
                    }
                }
            }
            self.mark_dirty(queue_id);
        }
        // Room freed under a channel-wide prefetch may go to any queue the channel consumes:
        // they all compete for it (fairly, by `x-weight`, in `dispatch`).
        let shared_room = self.connections.get(&origin.connection).and_then(|c| c.channels.get(&origin.channel));
        if shared_room.is_some_and(|c| c.prefetch_global != 0) {
            self.mark_consumed_queues_dirty(origin.connection, Some(origin.channel));
        }
        Ok(())
    }

    fn recover(&mut self, origin: Origin) -> Result<(), EngineError> {
        let channel = self.channel_mut(origin)?;
        let taken = std::mem::take(&mut channel.unacked);
        channel.unacked_by_consumers = 0;
        for consumer in channel.consumers.values_mut() {
            consumer.unacked = 0;
            consumer.lapsed = 0;
        }
        for (queue, seq) in taken.into_values().rev().filter_map(|u| u.held()) {
            self.requeue_entry(queue, seq);
        }
        self.reply(origin.connection, Event::RecoverOk { channel: origin.channel });
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Dispatch

    fn mark_dirty(&mut self, id: QueueId) {
        if let Some(queue) = self.queues.get_mut(&id) {
            if !queue.dirty {
                queue.dirty = true;
                self.dirty_queues.push(id);
            }
        }
    }

    fn mark_consumed_queues_dirty(&mut self, connection: ConnectionId, only_channel: Option<ChannelId>) {
        let Some(state) = self.connections.get(&connection) else {
            return;
        };
        let queues: Vec<QueueId> = state
            .channels
            .iter()
            .filter(|(id, _)| only_channel.is_none_or(|only| **id == only))
            .flat_map(|(_, channel)| channel.consumers.values().map(|c| c.queue))
            .collect();
        for id in queues {
            self.mark_dirty(id);
        }
    }

    /// Deliver ready messages of every queue touched in this turn to consumers with room.
    ///
    /// Several queues are served by stride scheduling, one message at a time: the queue with
    /// the smallest pass goes next and its pass grows by `STRIDE / x-weight`. Where queues
    /// compete for the same room (a channel's global prefetch), each gets deliveries in
    /// proportion to its weight and none starves. A queue that comes back after a pause
    /// starts at the current pass, so it gets no burst for the time it was idle. One queue
    /// alone is served by a plain loop.
    pub fn dispatch(&mut self) {
        let dirty = std::mem::take(&mut self.dirty_queues);
        for id in &dirty {
            // Cleared first: a delivery may mark it again (for the next turn).
            if let Some(queue) = self.queues.get_mut(id) {
                queue.dirty = false;
            }
        }
        if let [id] = dirty.as_slice() {
            while self.dispatch_one(*id) {}
        } else {
            let now_pass = self.dispatch_pass;
            let mut turns: BinaryHeap<Reverse<(u64, QueueId)>> = dirty
                .iter()
                .filter_map(|id| {
                    let queue = self.queues.get_mut(id)?;
                    queue.dispatch_pass = queue.dispatch_pass.max(now_pass);
                    Some(Reverse((queue.dispatch_pass, *id)))
                })
                .collect();
            while let Some(Reverse((pass, id))) = turns.pop() {
                if self.dispatch_one(id) {
                    // The current pass moves only with deliveries: a queue that found no
                    // room must not push the others' start forward.
                    self.dispatch_pass = pass;
                    let Some(queue) = self.queues.get_mut(&id) else { continue };
                    queue.dispatch_pass = pass + DISPATCH_STRIDE / u64::from(queue.config.weight.max(1));
                    turns.push(Reverse((queue.dispatch_pass, id)));
                }
            }
        }
        for id in dirty {
            self.check_capacity(id);
        }
    }

    /// Hand one ready message of queue `id` to a consumer with room (where consumers filter
    /// or browse, to one that wants it). False when none can take one.
    fn dispatch_one(&mut self, id: QueueId) -> bool {
        if self.queues.get(&id).is_some_and(|q| q.choosing_consumers > 0) {
            return self.dispatch_filtered_one(id);
        }
        let Some((index, group_start)) = self.pick_consumer(id) else { return false };
        let queue = self.queues.get_mut(&id).expect("picked from it");
        queue.next_consumer = index - group_start + 1;
        let key = queue.consumers[index].clone();
        self.deliver_to(id, &key, filtered::Pick::Next);
        true
    }

    /// The next consumer of queue `id` to receive a ready message, with the start of its
    /// priority group.
    fn pick_consumer(&self, id: QueueId) -> Option<(usize, usize)> {
        if !self.queues.get(&id)?.messages.has_ready() {
            return None;
        }
        self.turn_order(id).next()
    }

    /// Consumers of queue `id` with room, in the order they are offered a message, each with
    /// the start of its priority group: round-robin within the highest-priority group; lower
    /// groups only after every higher one (RabbitMQ's consumer priorities). With a single
    /// active consumer only the first consumer that takes messages is considered, with any
    /// browsers (they take nothing, so they do not compete for the place).
    fn turn_order(&self, id: QueueId) -> impl Iterator<Item = (usize, usize)> + '_ {
        let queue = &self.queues[&id];
        let consumers = &queue.consumers;
        let eligible = consumers.len();
        let single = queue.config.single_active_consumer;
        let active = consumers.iter().position(|c| !c.browsing);
        let group_size = move |start: usize| {
            let priority = consumers[start].priority;
            consumers[start..eligible].partition_point(|c| c.priority == priority)
        };
        let groups = std::iter::successors((eligible > 0).then_some(0), move |&start| {
            let next = start + group_size(start);
            (next < eligible).then_some(next)
        });
        groups
            .flat_map(move |start| {
                let size = group_size(start);
                let offset = queue.next_consumer % size;
                (0..size).map(move |i| (start + (offset + i) % size, start))
            })
            .filter(move |&(index, _)| !single || consumers[index].browsing || Some(index) == active)
            .filter(move |&(index, _)| self.consumer_has_room(&consumers[index]))
    }

    fn consumer_has_room(&self, key: &ConsumerKey) -> bool {
        let Some(channel) = self.connections.get(&key.connection).and_then(|c| c.channels.get(&key.channel)) else {
            return false;
        };
        let Some(consumer) = channel.consumers.get(&key.tag) else {
            return false;
        };
        if consumer.lapsed > 0 {
            return false;
        }
        if !consumer.no_ack {
            if consumer.prefetch_limit != 0 && consumer.unacked >= u32::from(consumer.prefetch_limit) {
                return false;
            }
            if channel.prefetch_global != 0 && channel.unacked_by_consumers >= u32::from(channel.prefetch_global) {
                return false;
            }
        }
        self.sinks.get(&key.connection).is_some_and(|sink| sink.shared.has_room())
    }

    fn deliver_to(&mut self, id: QueueId, key: &ConsumerKey, pick: filtered::Pick) {
        let no_ack = self.connections[&key.connection].channels[&key.channel].consumers[&key.tag].no_ack;
        let messages = &mut self.queues.get_mut(&id).expect("present").messages;
        let (entry, browse) = match pick {
            filtered::Pick::Next => (messages.deliver(no_ack).expect("has ready"), false),
            filtered::Pick::Seq(seq) => (messages.deliver_seq(seq, no_ack).expect("chosen among ready"), false),
            filtered::Pick::Browse(entry) => (entry, true),
        };
        // A browsed message stays ready: if it cannot be read, it is taken out of the queue.
        let Some(message) = self.load_message(id, &entry, no_ack && !browse) else {
            return;
        };
        if !browse {
            self.queues.get_mut(&id).expect("present").count_delivery(&entry);
        }
        let channel = self
            .connections
            .get_mut(&key.connection)
            .and_then(|c| c.channels.get_mut(&key.channel))
            .expect("checked by consumer_has_room");
        let delivery_tag = channel.next_delivery_tag;
        channel.next_delivery_tag += 1;
        let mut lease_ms = None;
        if !no_ack {
            let consumer = channel.consumers.get_mut(&key.tag).expect("checked by consumer_has_room");
            consumer.unacked += 1;
            let owner = Some((Arc::clone(&key.tag), consumer.id));
            lease_ms = consumer.lease_ms.filter(|_| !browse);
            let unacked = Unacked { queue: id, seq: entry.seq, consumer: owner, browse, lapsed: false };
            channel.unacked.insert(delivery_tag, unacked);
            channel.unacked_by_consumers += 1;
        }
        if let Some(lease_ms) = lease_ms {
            let holder = lease::Holder::Channel { connection: key.connection, channel: key.channel, delivery_tag };
            self.lease(id, entry.seq, holder, lease_ms);
        }
        self.sinks[&key.connection].shared.reserve_delivery();
        self.outbox.push(
            key.connection,
            Event::Deliver {
                channel: key.channel,
                consumer_tag: Arc::clone(&key.tag),
                delivery_tag,
                redelivered: entry.is_redelivered(),
                message,
            },
        );
        if no_ack && !browse {
            self.drop_entry(id, &entry);
        }
    }

    /// The content of a message being handed out: from memory, or read back from the log.
    /// A body that cannot be read (corruption) is reported, the entry dropped, and the log
    /// turned read-only: the operator must look.
    fn load_message(&mut self, queue: QueueId, entry: &MessageEntry, already_removed: bool) -> Option<Arc<Message>> {
        if let Some(message) = self.content.get(entry.seq) {
            return Some(message);
        }
        let failure = match self.read_message(entry) {
            Ok(message) => return Some(Arc::new(message)),
            Err(failure) => failure,
        };
        tracing::error!(queue, seq = entry.seq, "cannot read a message body, dropping it: {failure}");
        self.read_only.get_or_insert(failure);
        if !already_removed {
            if let Some(q) = self.queues.get_mut(&queue) {
                q.messages.remove(entry.seq);
            }
        }
        self.forget_entry(entry);
        None
    }

    /// Read a message's content back from the log (an enqueue record, or the transaction
    /// container it was committed in).
    pub(crate) fn read_message(&self, entry: &MessageEntry) -> Result<Message, String> {
        let Some(pos) = pos_of(entry.location) else {
            return Err(format!("message {} has no stored body", entry.seq));
        };
        let record = self.log.read(pos).map_err(|e| format!("message {} at {pos:?}: {e}", entry.seq))?;
        records::message_in_record(record.kind, record.payload.into(), entry.seq)
            .map_err(|e| format!("message {} at {pos:?}: {e}", entry.seq))
    }

    // -----------------------------------------------------------------------------------
    // Bookkeeping

    /// A message left a queue for good: log the settlement if it was logged, release the
    /// content and the segment's live count.
    fn drop_entry(&mut self, queue: QueueId, entry: &MessageEntry) {
        if entry.is_persistent() {
            self.pending_settles.push((queue, entry.seq));
        }
        self.forget_entry(entry);
    }

    /// Release what an entry held, without logging (its queue's deletion is logged instead).
    fn forget_entry(&mut self, entry: &MessageEntry) {
        self.track_live(entry, -1);
        self.content.release(entry.seq);
    }

    pub(crate) fn track_live(&mut self, entry: &MessageEntry, sign: i64) {
        track_segment_live(&mut self.segment_live, entry, sign);
    }

    /// Drop the sinks of connections that went away this turn (after its events were sent).
    pub fn retire_sinks(&mut self) {
        for connection in self.retired_sinks.drain(..) {
            self.sinks.remove(&connection);
        }
    }

    /// Write the settlements gathered this turn as one record.
    pub fn flush_settles(&mut self) {
        if self.pending_settles.is_empty() {
            return;
        }
        let settles = std::mem::take(&mut self.pending_settles);
        // On failure the log is poisoned; what a settlement loses is a redelivery after a
        // crash, never a confirmed message, so there is no client to refuse here.
        if let Err(e) = self.append_with(records::KIND_SETTLE, |w| records::encode_settle(w, &settles)) {
            tracing::error!("cannot log settlements: {e}");
        }
    }

    /// Encode a record with `encode` into the scratch buffer and append it.
    fn append_with(&mut self, kind: u8, encode: impl FnOnce(&mut Writer)) -> Result<(), EngineError> {
        let mut w = std::mem::take(&mut self.scratch);
        w.buf.clear();
        encode(&mut w);
        let result = self.log_append(kind, &w.buf).map(|_| ());
        self.scratch = w;
        result
    }

    pub(crate) fn log_append(&mut self, kind: u8, payload: &[u8]) -> Result<weir_log::RecordPos, EngineError> {
        match self.log.append(kind, records::RECORD_VERSION, payload) {
            Ok((_, pos)) => {
                self.bytes_since_checkpoint += payload.len() as u64;
                Ok(pos)
            }
            // A message too large for one record is the client's mistake, not the log's.
            Err(weir_log::LogError::RecordTooLarge { len_bytes, max_bytes }) => Err(error(
                ErrorKind::PreconditionFailed,
                format!("message size {len_bytes} is larger than configured max size {max_bytes}"),
            )),
            Err(e) => {
                let reason = e.to_string();
                tracing::error!("log append failed: {reason}");
                self.read_only.get_or_insert(reason.clone());
                Err(error(ErrorKind::InternalError, format!("log append failed: {reason}")))
            }
        }
    }
}

/// Count a persistent entry in (sign 1) or out of (sign -1) its segment's live data.
pub(crate) fn track_segment_live(live: &mut HashMap<u32, SegmentLive>, entry: &MessageEntry, sign: i64) {
    if !entry.is_persistent() {
        return;
    }
    let Some(pos) = pos_of(entry.location) else {
        return;
    };
    let segment = live.entry(pos.segment).or_default();
    segment.entries = segment.entries.wrapping_add_signed(sign);
    segment.bytes = segment.bytes.wrapping_add_signed(sign * i64::from(entry.size_bytes));
    if segment.entries == 0 {
        live.remove(&pos.segment);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settlement {
    Ack,
    Requeue,
    Discard,
}

/// `x-priority` of a consumer (default 0); not an integer: 406, as RabbitMQ.
fn consumer_priority(arguments: &[(String, ArgValue)]) -> Result<i64, EngineError> {
    match arguments.iter().find(|(k, _)| k == "x-priority").map(|(_, v)| v) {
        None => Ok(0),
        Some(ArgValue::Int(priority)) => Ok(*priority),
        Some(other) => {
            Err(error(ErrorKind::PreconditionFailed, format!("invalid arg 'x-priority': {other:?} is not an integer")))
        }
    }
}

fn unknown_tag(tag: u64) -> EngineError {
    error(ErrorKind::PreconditionFailed, format!("unknown delivery tag {tag}"))
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A 22-character suffix for server-named queues, unique per broker run and connection.
fn generated_suffix(queue_id: u32, connection: ConnectionId) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut state = nanos ^ (u64::from(queue_id) << 32) ^ connection.rotate_left(17);
    (0..22)
        .map(|_| {
            // xorshift64*: enough to make names unguessable-looking and unique with the ids mixed in.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ALPHABET[(v >> 58) as usize] as char
        })
        .collect()
}

/// RabbitMQ's equivalence rule for re-declaring an existing queue.
fn check_equivalent(queue: &QueueState, declare: &QueueDeclare, vhost: &str) -> Result<(), EngineError> {
    let name = &queue.name;
    let mismatch = |field: &str, received: String, current: String| {
        error(
            ErrorKind::PreconditionFailed,
            format!(
                "inequivalent arg '{field}' for queue '{name}' in vhost '{vhost}': \
                 received '{received}' but current is '{current}'"
            ),
        )
    };
    if queue.durable != declare.durable {
        return Err(mismatch("durable", declare.durable.to_string(), queue.durable.to_string()));
    }
    if queue.auto_delete != declare.auto_delete {
        return Err(mismatch("auto_delete", declare.auto_delete.to_string(), queue.auto_delete.to_string()));
    }
    if queue.exclusive_owner.is_some() != declare.exclusive {
        return Err(mismatch("exclusive", declare.exclusive.to_string(), queue.exclusive_owner.is_some().to_string()));
    }
    for (key, value) in &declare.arguments {
        let current = queue.arguments.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        if current != Some(value) {
            return Err(mismatch(
                key,
                format!("{value:?}"),
                current.map(|v| format!("{v:?}")).unwrap_or("none".into()),
            ));
        }
    }
    for (key, value) in &queue.arguments {
        if !declare.arguments.iter().any(|(k, _)| k == key) {
            return Err(mismatch(key, "none".into(), format!("{value:?}")));
        }
    }
    Ok(())
}

//! What the protocol layers send to the engine ([`Command`]) and what comes back ([`Event`]).
//!
//! The vocabulary is protocol-neutral: no AMQP frame types here, so the HTTP API can drive
//! the same engine. Each command carries an [`Origin`] (connection, channel and an opaque
//! method token that comes back unchanged in errors, so the AMQP layer can name the method
//! that failed in `channel.close`).
//!
//! Flow control: every queue between tasks is bounded. The engine inbox is a bounded channel
//! (a publisher that outruns the disk waits on `send_async`, which stops reading its socket).
//! Events to a connection go through an unbounded channel whose depth the engine bounds
//! itself: it counts deliveries in flight per connection ([`ConnectionShared`]) and stops
//! delivering to a connection past [`CONNECTION_DELIVERIES_IN_FLIGHT_MAX`] until the writer
//! has drained it and sent [`Command::Resume`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

pub use crate::broker::LeaseAction;
use crate::error::EngineError;
use crate::filter::MessageFilter;
use crate::records::VhostRecord;
use crate::security::{PermissionRecord, UserRecord};

pub type ConnectionId = u64;
pub type ChannelId = u16;

/// Deliveries a connection may have queued for writing before the engine stops sending it
/// more; the writer asks to resume when it is back under half of this.
pub const CONNECTION_DELIVERIES_IN_FLIGHT_MAX: usize = 4096;

/// Who asked: the connection, the channel, and an opaque token naming the method (the AMQP
/// layer packs class-id and method-id into it). The engine only copies it into errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub connection: ConnectionId,
    pub channel: ChannelId,
    pub method: u32,
}

/// A message's content, shared (by `Arc`) between every queue it reached and every delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    /// The content-header property bytes exactly as the publisher sent them (forwarded
    /// unchanged, so nothing is lost in a decode/encode round trip).
    pub raw_properties: Bytes,
    pub body: Bytes,
}

/// A queue argument value, protocol-neutral (the AMQP layer converts field tables).
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Void,
}

/// `queue.declare` as the engine sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueDeclare {
    /// Empty means: name it for me (`amq.gen-…`).
    pub name: String,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    /// Sorted by key, keys unique.
    pub arguments: Vec<(String, ArgValue)>,
}

/// `exchange.declare` as the engine sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeDeclare {
    pub name: String,
    /// `direct`, `fanout`, `topic` or `headers`; anything else is refused.
    pub kind: String,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    /// Sorted by key, keys unique.
    pub arguments: Vec<(String, ArgValue)>,
}

/// `basic.consume` as the engine sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumeRequest {
    pub queue: String,
    /// Empty: the engine generates `amq.ctag-…`.
    pub consumer_tag: String,
    pub no_ack: bool,
    pub exclusive: bool,
    pub no_wait: bool,
    /// Consumer arguments (`x-priority`).
    pub arguments: Vec<(String, ArgValue)>,
}

/// Which of a queue's messages a browse looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BrowseState {
    /// Ready messages, in the order consumers get them.
    #[default]
    Ready,
    /// Waiting for their delivery time, by arrival.
    Delayed,
    /// Delivered and not yet settled, by arrival.
    Unacked,
    /// Ready, then delayed, then unacked.
    All,
}

/// Where a browse page ends and the next begins. The order is ready messages in delivery
/// order, then delayed ones, then unacked ones (each by arrival). A cursor stays valid when
/// its message leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrowseCursor {
    Ready { priority: u8, seq: u64 },
    Delayed { seq: u64 },
    Unacked { seq: u64 },
}

/// [`Command::Browse`]'s question.
#[derive(Clone, Debug, Default)]
pub struct BrowseRequest {
    pub state: BrowseState,
    /// Start after this message (`None`: from the start).
    pub after: Option<BrowseCursor>,
    /// At most this many messages.
    pub limit: u32,
    pub filter: Option<Arc<MessageFilter>>,
}

/// [`Command::Move`]'s question.
#[derive(Clone, Debug, Default)]
pub struct MoveRequest {
    /// The queue (same vhost) to move to; `None`: redrive each message to the queue it was
    /// dead-lettered from (its `x-first-death-queue` header).
    pub target: Option<String>,
    /// At most this many messages, up to [`MOVE_BATCH_MAX`].
    pub count: u32,
    pub filter: Option<Arc<MessageFilter>>,
    /// Go on after this message (a previous answer's `next`).
    pub after: Option<(u8, u64)>,
}

/// The queue arguments an operator may change after declaration ([`Command::QueueSettings`]).
/// Not the order (`x-max-priority`, `x-queue-order`): it shapes the index the messages are in.
pub const QUEUE_SETTINGS: [&str; 13] = [
    "x-message-ttl",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-delivery-limit",
    "x-retry-delay",
    "x-retry-backoff",
    "x-retry-delay-max",
    "x-expires",
    "x-capacity-high",
    "x-capacity-low",
];

/// The most messages one [`Command::Move`] moves: a larger move is several commands, so the
/// engine is never held for long.
pub const MOVE_BATCH_MAX: u32 = 1000;

/// One message seen by a browse.
#[derive(Clone, Debug)]
pub struct BrowsedMessage {
    /// Where it is: ready, delayed or unacked.
    pub state: BrowseState,
    /// The broker's sequence number for it (arrival order).
    pub seq: u64,
    pub priority: u8,
    /// How many times it has been delivered.
    pub delivery_count: u16,
    /// It was handed out before and given back (AMQP `redelivered` on its next delivery).
    pub redelivered: bool,
    pub message: Arc<Message>,
}

/// What a binding leads to, by name, as a client names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindTarget {
    Queue(String),
    Exchange(String),
}

/// `queue.bind`/`unbind` and `exchange.bind`/`unbind`.
#[derive(Clone, Debug, PartialEq)]
pub struct BindRequest {
    pub source: String,
    pub destination: BindTarget,
    pub routing_key: String,
    pub arguments: Vec<(String, ArgValue)>,
}

#[derive(Clone, Debug)]
pub struct Publish {
    pub origin: Origin,
    pub exchange: String,
    pub routing_key: String,
    pub mandatory: bool,
    /// delivery-mode 2.
    pub persistent: bool,
    /// Publisher-confirm sequence number when the channel is in confirm mode.
    pub confirm: Option<u64>,
    /// The message's headers table, decoded (for headers exchanges). Empty if none.
    pub headers: Vec<(String, ArgValue)>,
    /// The `expiration` property: milliseconds the message may wait in a queue.
    pub expiration_ms: Option<u64>,
    /// Extra routing keys from the `CC` and `BCC` headers (RabbitMQ's sender-selected
    /// distribution): the message is routed with each of them too.
    pub cc: Vec<String>,
    /// The `x-recipients` header (AQ's recipient list): only these queues, of those the
    /// exchange routes to, get the message.
    pub recipients: Option<Vec<String>>,
    /// The `reply_to` property names the direct reply-to pseudo-queue: the engine rewrites it
    /// to this channel's reply address.
    pub direct_reply_to: bool,
    pub message: Arc<Message>,
}

/// Engine requests. Each is applied in arrival order per connection.
#[derive(Debug)]
pub enum Command {
    /// A connection has authenticated and opened `vhost`.
    Connect {
        connection: ConnectionId,
        vhost: String,
        info: ConnectionInfo,
        sink: EventSink,
    },
    Disconnect {
        connection: ConnectionId,
    },
    ChannelOpen {
        origin: Origin,
    },
    /// The engine requeues the channel's unacked messages, cancels its consumers and answers
    /// [`Event::ChannelClosed`]; events for the channel sent before that are stale.
    ChannelClose {
        origin: Origin,
    },
    QueueDeclare {
        origin: Origin,
        declare: QueueDeclare,
        no_wait: bool,
    },
    QueueDelete {
        origin: Origin,
        queue: String,
        if_unused: bool,
        if_empty: bool,
        no_wait: bool,
    },
    QueuePurge {
        origin: Origin,
        queue: String,
        no_wait: bool,
    },
    ExchangeDeclare {
        origin: Origin,
        declare: ExchangeDeclare,
        no_wait: bool,
    },
    ExchangeDelete {
        origin: Origin,
        exchange: String,
        if_unused: bool,
        no_wait: bool,
    },
    Bind {
        origin: Origin,
        bind: BindRequest,
        no_wait: bool,
    },
    Unbind {
        origin: Origin,
        bind: BindRequest,
        no_wait: bool,
    },
    Publish(Box<Publish>),
    Consume {
        origin: Origin,
        consume: ConsumeRequest,
    },
    Cancel {
        origin: Origin,
        consumer_tag: String,
        no_wait: bool,
    },
    Qos {
        origin: Origin,
        prefetch_count: u16,
        global: bool,
    },
    Get {
        origin: Origin,
        queue: String,
        no_ack: bool,
        /// Take the first ready message (in delivery order) that meets it.
        filter: Option<Arc<MessageFilter>>,
    },
    /// Look at a queue's messages without taking them; answered with [`Event::Browsed`].
    Browse {
        origin: Origin,
        queue: String,
        request: BrowseRequest,
    },
    /// Hand a message this channel took with `basic.get` (still unacked) to the broker, which
    /// holds it under a lease token for `lease_ms` (the HTTP API's lease-then-ack). Answered
    /// with [`Event::Held`].
    Hold {
        origin: Origin,
        delivery_tag: u64,
        lease_ms: u64,
    },
    /// Ack, requeue, reject or renew the message held under a lease token. Answered with
    /// [`Event::Held`] (its new time for a renewal, 0 otherwise).
    SettleLease {
        origin: Origin,
        token: u64,
        action: LeaseAction,
    },
    /// Remove up to `count` ready or delayed messages that meet `filter` (ready ones first, in
    /// delivery order; then delayed ones by arrival): deleting one message, or cancelling a
    /// scheduled one. Answered with [`Event::QueuePurgeOk`] once the removals are durable.
    Remove {
        origin: Origin,
        queue: String,
        filter: Arc<MessageFilter>,
        count: u32,
    },
    /// Change a queue's settings (the policy arguments in [`QUEUE_SETTINGS`], which override
    /// the declared ones without changing them); the list replaces the previous settings.
    /// Answered with [`Event::AdminDone`] once durable.
    QueueSettings {
        origin: Origin,
        queue: String,
        settings: Vec<(String, ArgValue)>,
    },
    /// Move ready messages to another queue, or back where they were dead-lettered from;
    /// answered with [`Event::Moved`].
    Move {
        origin: Origin,
        queue: String,
        request: MoveRequest,
    },
    Ack {
        origin: Origin,
        delivery_tag: u64,
        multiple: bool,
    },
    /// `basic.nack` and `basic.reject`.
    Reject {
        origin: Origin,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    },
    /// `basic.recover(requeue=true)`.
    Recover {
        origin: Origin,
    },
    /// `tx.select`: from now on the channel's publishes and acks wait for `tx.commit`.
    TxSelect {
        origin: Origin,
    },
    /// Apply every publish and ack since the last commit or rollback, durable together in one
    /// log record, or none of them.
    TxCommit {
        origin: Origin,
    },
    /// Forget the publishes and acks since the last commit or rollback. Messages whose acks
    /// are forgotten stay unacked (delivered again when the channel closes or on
    /// `basic.recover`, as RabbitMQ does).
    TxRollback {
        origin: Origin,
    },
    /// An operator closes a connection: it is told [`ErrorKind::ConnectionForced`] with
    /// `reason` (AMQP 320), then disconnects as usual.
    ///
    /// [`ErrorKind::ConnectionForced`]: crate::ErrorKind::ConnectionForced
    CloseConnection {
        connection: ConnectionId,
        reason: String,
        reply: flume::Sender<bool>,
    },
    /// Manage vhosts, users or permissions. Only an administrator's connection may; answered
    /// with [`Event::AdminDone`] once the change is durable, or a channel error.
    Admin {
        origin: Origin,
        op: AdminOp,
    },
    /// A read-only question about the broker's state, answered at once on `reply`.
    Inspect {
        query: Inspect,
        reply: flume::Sender<InspectReply>,
    },
    /// The connection's writer drained below half of its in-flight limit.
    Resume {
        connection: ConnectionId,
    },
    /// Stop: write a checkpoint, close the log, end the loop.
    Shutdown,
    /// Internal: the checkpoint thread finished writing the checkpoint for `lsn`.
    #[doc(hidden)]
    CheckpointWritten {
        lsn: u64,
        result: Result<(), String>,
    },
    /// Internal: the scrub thread verified `segment`; the damage it found, if any.
    #[doc(hidden)]
    Scrubbed {
        segment: u32,
        result: Result<Vec<String>, String>,
    },
}

/// A change to vhosts, users or permissions ([`Command::Admin`]).
#[derive(Clone, Debug, PartialEq)]
pub enum AdminOp {
    /// Create a vhost, or change the limits of an existing one.
    PutVhost(VhostRecord),
    /// Delete a vhost with its queues, exchanges and permissions; its connections are closed.
    DeleteVhost {
        name: String,
    },
    /// Create or replace a user (the password already hashed).
    PutUser(UserRecord),
    /// Delete a user and its permissions; its connections are closed.
    DeleteUser {
        name: String,
    },
    PutPermission(PermissionRecord),
    DeletePermission {
        user: String,
        vhost: String,
    },
}

/// Who a connection is, for listings (`/api/connections`). Given at [`Command::Connect`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub user: String,
    /// The client's address, `ip:port`.
    pub peer: String,
    /// The client library's name and version (AMQP `client-properties`), if it said.
    pub client: String,
    /// Connections the broker makes for itself (the HTTP API's) are not listed.
    pub internal: bool,
}

/// What [`Command::Inspect`] asks. `vhost: None` means every vhost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inspect {
    Overview,
    Vhosts,
    Queues { vhost: Option<String> },
    Exchanges { vhost: Option<String> },
    Bindings { vhost: Option<String> },
    Connections,
}

/// The answer to [`Command::Inspect`], one variant per question.
#[derive(Clone, Debug)]
pub enum InspectReply {
    Overview(OverviewView),
    /// Every vhost with its limits, by name.
    Vhosts(Vec<VhostRecord>),
    Queues(Vec<QueueView>),
    Exchanges(Vec<ExchangeView>),
    Bindings(Vec<BindingView>),
    Connections(Vec<ConnectionView>),
}

/// Cumulative counts of what happened to a queue's messages since the broker started (rates
/// are their differences over time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Messages that entered the queue (published, dead-lettered into it).
    pub published: u64,
    /// Deliveries to consumers and `basic.get`s (redeliveries included).
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    /// Messages whose time to live ran out here.
    pub expired: u64,
    /// Messages that left for a dead-letter exchange.
    pub dead_lettered: u64,
    /// Messages that left without a dead-letter exchange to go to (expired, rejected, overflow).
    pub dropped: u64,
}

impl std::ops::AddAssign for QueueCounters {
    fn add_assign(&mut self, more: Self) {
        let Self { published, delivered, redelivered, acked, expired, dead_lettered, dropped } = more;
        self.published += published;
        self.delivered += delivered;
        self.redelivered += redelivered;
        self.acked += acked;
        self.expired += expired;
        self.dead_lettered += dead_lettered;
        self.dropped += dropped;
    }
}

/// A queue's settings and state at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueView {
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive: bool,
    pub arguments: Vec<(String, ArgValue)>,
    /// An operator's settings, overriding `arguments` ([`Command::QueueSettings`]).
    pub settings: Vec<(String, ArgValue)>,
    pub ready: u64,
    pub ready_bytes: u64,
    pub unacked: u64,
    pub unacked_bytes: u64,
    pub delayed: u64,
    pub delayed_bytes: u64,
    pub consumers: u32,
    pub counters: QueueCounters,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeView {
    pub vhost: String,
    pub name: String,
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Vec<(String, ArgValue)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BindingView {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    pub destination_is_queue: bool,
    pub routing_key: String,
    pub arguments: Vec<(String, ArgValue)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    pub id: ConnectionId,
    pub vhost: String,
    pub info: ConnectionInfo,
    pub channels: u32,
    pub consumers: u32,
    pub unacked: u64,
}

/// Broker-wide totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverviewView {
    pub vhosts: u32,
    pub queues: u32,
    pub exchanges: u32,
    pub connections: u32,
    pub channels: u32,
    pub consumers: u32,
    pub ready: u64,
    pub unacked: u64,
    pub delayed: u64,
    /// Sum of every queue's counters, deleted queues included (so the totals never go down).
    pub counters: QueueCounters,
    /// Log segments on disk and their total size.
    pub log_segments: u32,
    pub log_bytes: u64,
    pub durable_lsn: u64,
    /// Why new persistent messages are refused, if they are.
    pub read_only: Option<String>,
}

/// What the engine tells a connection.
#[derive(Debug, Clone)]
pub enum Event {
    QueueDeclareOk {
        channel: ChannelId,
        queue: String,
        message_count: u32,
        consumer_count: u32,
    },
    QueueDeleteOk {
        channel: ChannelId,
        message_count: u32,
    },
    QueuePurgeOk {
        channel: ChannelId,
        message_count: u32,
    },
    ExchangeDeclareOk {
        channel: ChannelId,
    },
    ExchangeDeleteOk {
        channel: ChannelId,
    },
    /// Answer to [`Command::Bind`]: `queue.bind-ok` or `exchange.bind-ok`, by destination.
    BindOk {
        channel: ChannelId,
        to_exchange: bool,
    },
    UnbindOk {
        channel: ChannelId,
        to_exchange: bool,
    },
    ConsumeOk {
        channel: ChannelId,
        consumer_tag: String,
    },
    CancelOk {
        channel: ChannelId,
        consumer_tag: String,
    },
    /// The server ended a consumer (its queue was deleted).
    ConsumerCancelled {
        channel: ChannelId,
        consumer_tag: String,
    },
    QosOk {
        channel: ChannelId,
    },
    RecoverOk {
        channel: ChannelId,
    },
    TxSelectOk {
        channel: ChannelId,
    },
    TxCommitOk {
        channel: ChannelId,
    },
    TxRollbackOk {
        channel: ChannelId,
    },
    Deliver {
        channel: ChannelId,
        consumer_tag: Arc<str>,
        delivery_tag: u64,
        redelivered: bool,
        message: Arc<Message>,
    },
    GetOk {
        channel: ChannelId,
        delivery_tag: u64,
        redelivered: bool,
        message_count: u32,
        message: Arc<Message>,
    },
    GetEmpty {
        channel: ChannelId,
    },
    /// The answer to [`Command::Browse`]: a page of messages, and where the next page starts
    /// (`None`: the end was reached).
    Browsed {
        channel: ChannelId,
        messages: Vec<BrowsedMessage>,
        next: Option<BrowseCursor>,
    },
    /// The answer to [`Command::Hold`] and [`Command::SettleLease`].
    Held {
        channel: ChannelId,
        token: u64,
        /// When the lease runs out (epoch ms; 0 when it was settled).
        until_ms: u64,
    },
    /// The answer to [`Command::Move`].
    Moved {
        channel: ChannelId,
        moved: u32,
        /// Looked at and left in place: no source queue to redrive to, or it does not exist.
        skipped: u32,
        /// Where to go on from (the last message looked at, as (priority, seq)); `None`:
        /// every ready message was looked at.
        next: Option<(u8, u64)>,
        /// Stopped because the target is full and refuses more (`x-overflow: reject-publish`).
        target_full: bool,
    },
    /// An unroutable mandatory message comes back (`basic.return`, 312 NO_ROUTE).
    Returned {
        channel: ChannelId,
        message: Arc<Message>,
    },
    ConfirmAck {
        channel: ChannelId,
        sequence: u64,
        multiple: bool,
    },
    ConfirmNack {
        channel: ChannelId,
        sequence: u64,
        multiple: bool,
    },
    /// The channel must be closed with this error (soft errors) or the connection (hard).
    ChannelError {
        channel: ChannelId,
        method: u32,
        error: EngineError,
    },
    /// Answer to [`Command::Admin`] and [`Command::QueueSettings`]: the change is applied and
    /// durable.
    AdminDone {
        channel: ChannelId,
    },
    /// Answer to [`Command::ChannelClose`]: from here the channel number is free again.
    ChannelClosed {
        channel: ChannelId,
    },
    /// Answer to [`Command::Connect`]: the vhost exists and the connection is registered.
    ConnectionOpened,
    /// Answer to [`Command::Disconnect`]: the connection's channels are closed, its unacked
    /// messages requeued and its exclusive queues deleted (the last event it gets).
    Disconnected,
    /// The connection must be closed (unknown vhost, engine stopping, …).
    ConnectionError {
        error: EngineError,
    },
}

/// State shared between the engine and one connection's writer task.
#[derive(Debug, Default)]
pub struct ConnectionShared {
    deliveries_in_flight: AtomicUsize,
    paused: AtomicBool,
}

impl ConnectionShared {
    /// Engine side: may this connection take another delivery? When it may not, the
    /// connection is marked paused, and its writer sends [`Command::Resume`] once drained.
    pub(crate) fn has_room(&self) -> bool {
        if self.deliveries_in_flight.load(Ordering::Acquire) < CONNECTION_DELIVERIES_IN_FLIGHT_MAX {
            return true;
        }
        self.paused.store(true, Ordering::Release);
        // Re-check: the writer may have drained between the load and the store, and then it
        // would not have seen the pause.
        if self.deliveries_in_flight.load(Ordering::Acquire) < CONNECTION_DELIVERIES_IN_FLIGHT_MAX / 2 {
            self.paused.store(false, Ordering::Release);
            return true;
        }
        false
    }

    pub(crate) fn reserve_delivery(&self) {
        self.deliveries_in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Writer side: `count` deliveries were written to the socket. Returns true when the
    /// engine had paused this connection and must now be sent [`Command::Resume`].
    pub fn deliveries_written(&self, count: usize) -> bool {
        let before = self.deliveries_in_flight.fetch_sub(count, Ordering::AcqRel);
        let after = before - count;
        after < CONNECTION_DELIVERIES_IN_FLIGHT_MAX / 2 && self.paused.swap(false, Ordering::AcqRel)
    }
}

/// Where the engine sends one connection's events: batches, in order.
#[derive(Debug, Clone)]
pub struct EventSink {
    pub sender: flume::Sender<Vec<Event>>,
    pub shared: Arc<ConnectionShared>,
}

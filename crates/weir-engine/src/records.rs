//! The engine's log records and checkpoint snapshot, byte by byte (docs/FORMAT.md, section
//! "Engine records", is the written form of this file; keep them in step).
//!
//! All integers are little-endian. Strings are length-prefixed UTF-8. Decoding never
//! panics: a short or malformed payload is a [`DecodeError`] (the log's crc32c has already
//! vouched for the bytes, so a decode error means a Weir bug or a version we do not know).

use bytes::Bytes;
use weir_log::RecordPos;
use weir_queue::MessageEntry;

use crate::api::{ArgValue, Message};
use crate::security::{PermissionRecord, UserRecord};
use crate::topology::{Destination, Exchange, ExchangeKind};

pub const KIND_QUEUE_DECLARE: u8 = 0x10;
pub const KIND_QUEUE_DELETE: u8 = 0x11;
pub const KIND_ENQUEUE: u8 = 0x12;
pub const KIND_SETTLE: u8 = 0x13;
pub const KIND_EXCHANGE_DECLARE: u8 = 0x14;
pub const KIND_EXCHANGE_DELETE: u8 = 0x15;
pub const KIND_BIND: u8 = 0x16;
pub const KIND_UNBIND: u8 = 0x17;
/// A committed transaction: the records of its publishes and acks, durable together or not
/// at all.
pub const KIND_TX: u8 = 0x18;
/// A vhost created (or its limits changed): name, then its limits as arguments.
pub const KIND_VHOST_PUT: u8 = 0x19;
/// A vhost deleted, after the deletes of everything in it.
pub const KIND_VHOST_DELETE: u8 = 0x1A;
/// A user created or changed: name, password hash, tags.
pub const KIND_USER_PUT: u8 = 0x1B;
/// A user deleted, with every permission it held.
pub const KIND_USER_DELETE: u8 = 0x1C;
/// A permission set: user, vhost, configure, write and read patterns.
pub const KIND_PERMISSION_PUT: u8 = 0x1D;
/// A permission cleared: user, vhost.
pub const KIND_PERMISSION_DELETE: u8 = 0x1E;
/// A delivery failed in a queue with a retry policy: queue, message, its delivery count, and
/// when it may be delivered again (0: at once).
pub const KIND_RETRY: u8 = 0x1F;
/// An operator changed a queue's settings: queue id, then the settings as arguments (all of
/// them, replacing the previous ones; declared arguments stay as they were).
pub const KIND_QUEUE_SETTINGS: u8 = 0x20;
pub const RECORD_VERSION: u8 = 1;
/// Version 2 added exchanges and bindings after the queues; version 3 each queue's message
/// expiry times after its entries; version 4 a priority byte at the end of each entry;
/// version 5 each queue's delayed messages (seq, deliver at) after its expiries; version 6
/// the vhosts, users and permissions after the bindings; version 7 the queues' settings at
/// the end; version 8 the queues' deduplication windows after them.
pub const SNAPSHOT_VERSION: u32 = 8;

/// `Enqueue.flags`: this record re-writes a live message that compaction moved out of an old
/// segment; replay only updates the location of entries that still exist.
pub const ENQUEUE_FLAG_RELOCATED: u8 = 0b0000_0001;
/// `Enqueue.flags`: two u64 follow the flags: when the message was enqueued and when the
/// message itself expires (its `expiration` property; 0 = never), both epoch milliseconds. Each
/// queue applies its own `x-message-ttl` to the enqueue time.
pub const ENQUEUE_FLAG_TIMED: u8 = 0b0000_0010;
/// `Enqueue.flags`: one u64 follows (after the TIMED pair, if any): when the message may be
/// delivered, epoch milliseconds (`x-delay`, `x-deliver-at`). Until then it waits, delayed.
pub const ENQUEUE_FLAG_DELAYED: u8 = 0b0000_0100;

/// A queue entry's `location` when the body is only in memory (transient message).
pub const LOCATION_MEMORY: u64 = u64::MAX;

pub fn location_of(pos: RecordPos) -> u64 {
    (u64::from(pos.segment) << 32) | u64::from(pos.offset)
}

pub fn pos_of(location: u64) -> Option<RecordPos> {
    (location != LOCATION_MEMORY).then_some(RecordPos { segment: (location >> 32) as u32, offset: location as u32 })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {what}: {detail}")]
pub struct DecodeError {
    pub what: &'static str,
    pub detail: String,
}

/// A durable queue's definition as logged.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueRecord {
    pub queue_id: u32,
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: Vec<(String, ArgValue)>,
}

/// A message enqueued into one or more durable queues.
#[derive(Clone, Debug, PartialEq)]
pub struct EnqueueRecord {
    pub seq: u64,
    pub flags: u8,
    /// (enqueued at, message expires at or 0), epoch ms, when `ENQUEUE_FLAG_TIMED`.
    pub times: Option<(u64, u64)>,
    /// Delivery time, epoch ms, when `ENQUEUE_FLAG_DELAYED`.
    pub deliver_at: Option<u64>,
    pub queue_ids: Vec<u32>,
    pub message: Message,
}

/// A durable binding (its source exchange and its destination are both durable).
#[derive(Clone, Debug, PartialEq)]
pub struct BindingRecord {
    pub vhost: String,
    pub source: String,
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: Vec<(String, ArgValue)>,
}

/// The state a checkpoint holds: everything needed to resume without the log before it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub next_message_seq: u64,
    pub next_queue_id: u32,
    pub queues: Vec<(QueueRecord, Vec<MessageEntry>)>,
    /// Per queue (same order as `queues`): (message seq, expires at epoch ms).
    pub expiries: Vec<Vec<(u64, u64)>>,
    /// Per queue (same order as `queues`): (message seq, deliver at epoch ms) of the messages
    /// still delayed.
    pub delays: Vec<Vec<(u64, u64)>>,
    /// (vhost, exchange definition; bindings are listed separately).
    pub exchanges: Vec<(String, Exchange)>,
    pub bindings: Vec<BindingRecord>,
    /// Every vhost (name, limits); empty in snapshots before version 6, whose vhosts are the
    /// default one and those their queues and exchanges name.
    pub vhosts: Vec<VhostRecord>,
    pub users: Vec<UserRecord>,
    pub permissions: Vec<PermissionRecord>,
    /// Queues whose settings an operator changed (version 7).
    pub settings: Vec<QueueSettings>,
    /// Queues with a deduplication window: (queue id, [(taken at, message-id)] oldest first)
    /// (version 8).
    pub dedup: Vec<(u32, Vec<(u64, String)>)>,
}

fn encode_dedup(w: &mut Writer, (queue_id, ids): &(u32, Vec<(u64, String)>)) {
    w.u32(*queue_id);
    w.u32(ids.len() as u32);
    for (at, id) in ids {
        w.u64(*at);
        w.str16(id);
    }
}

fn decode_dedup(r: &mut Reader<'_>) -> Result<(u32, Vec<(u64, String)>), DecodeError> {
    let queue_id = r.u32()?;
    // No capacity from the count: a damaged count must not allocate before decoding fails.
    let ids = (0..r.u32()?).map(|_| Ok((r.u64()?, r.str16()?))).collect::<Result<_, DecodeError>>()?;
    Ok((queue_id, ids))
}

/// A queue's operator settings (`KIND_QUEUE_SETTINGS`): arguments that override the declared
/// ones without changing them (so a client's re-declare stays equivalent).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueSettings {
    pub queue_id: u32,
    pub settings: Vec<(String, ArgValue)>,
}

pub fn encode_queue_settings(w: &mut Writer, s: &QueueSettings) {
    w.u32(s.queue_id);
    encode_arguments(w, &s.settings);
}

pub fn decode_queue_settings(r: &mut Reader<'_>) -> Result<QueueSettings, DecodeError> {
    Ok(QueueSettings { queue_id: r.u32()?, settings: decode_arguments(r)? })
}

/// A vhost as logged: its name and limits (SPEC quotas), as arguments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VhostRecord {
    pub name: String,
    pub limits: Vec<(String, ArgValue)>,
}

// ---------------------------------------------------------------------------------------
// Writer

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes32(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).expect("record field over 4 GiB"));
        self.buf.extend_from_slice(v);
    }
    /// Short strings: AMQP names are at most 255 bytes, but the length field is 16 bits so
    /// that vhost names and argument keys need no separate limit here.
    pub fn str16(&mut self, v: &str) {
        self.u16(u16::try_from(v.len()).expect("name over 64 KiB"));
        self.buf.extend_from_slice(v.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// Reader

pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }
    fn err(&self, detail: impl Into<String>) -> DecodeError {
        DecodeError { what: self.what, detail: detail.into() }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(self.err(format!("needs {n} more bytes, has {}", self.buf.len())));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub fn bytes32(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str16(&mut self) -> Result<String, DecodeError> {
        let n = usize::from(self.u16()?);
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
    /// Steps over a `str16` without allocating (or checking its UTF-8).
    fn skip_str16(&mut self) -> Result<(), DecodeError> {
        let n = usize::from(self.u16()?);
        self.take(n).map(|_| ())
    }
    /// How many bytes are left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.buf.len())))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Queue declare / delete

const QUEUE_FLAG_DURABLE: u8 = 1;
const QUEUE_FLAG_EXCLUSIVE: u8 = 2;
const QUEUE_FLAG_AUTO_DELETE: u8 = 4;

const ARG_BOOL: u8 = 1;
const ARG_INT: u8 = 2;
const ARG_FLOAT: u8 = 3;
const ARG_STR: u8 = 4;
const ARG_BYTES: u8 = 5;
const ARG_VOID: u8 = 6;

pub fn encode_queue(w: &mut Writer, q: &QueueRecord) {
    w.u32(q.queue_id);
    w.str16(&q.vhost);
    w.str16(&q.name);
    let mut flags = 0;
    if q.durable {
        flags |= QUEUE_FLAG_DURABLE;
    }
    if q.exclusive {
        flags |= QUEUE_FLAG_EXCLUSIVE;
    }
    if q.auto_delete {
        flags |= QUEUE_FLAG_AUTO_DELETE;
    }
    w.u8(flags);
    encode_arguments(w, &q.arguments);
}

fn encode_arguments(w: &mut Writer, arguments: &[(String, ArgValue)]) {
    w.u32(arguments.len() as u32);
    for (key, value) in arguments {
        w.str16(key);
        match value {
            ArgValue::Bool(b) => {
                w.u8(ARG_BOOL);
                w.u8(u8::from(*b));
            }
            ArgValue::Int(i) => {
                w.u8(ARG_INT);
                w.u64(*i as u64);
            }
            ArgValue::Float(f) => {
                w.u8(ARG_FLOAT);
                w.u64(f.to_bits());
            }
            ArgValue::Str(s) => {
                w.u8(ARG_STR);
                w.bytes32(s.as_bytes());
            }
            ArgValue::Bytes(b) => {
                w.u8(ARG_BYTES);
                w.bytes32(b);
            }
            ArgValue::Void => w.u8(ARG_VOID),
        }
    }
}

pub fn decode_queue(r: &mut Reader<'_>) -> Result<QueueRecord, DecodeError> {
    let queue_id = r.u32()?;
    let vhost = r.str16()?;
    let name = r.str16()?;
    let flags = r.u8()?;
    let arguments = decode_arguments(r)?;
    Ok(QueueRecord {
        queue_id,
        vhost,
        name,
        durable: flags & QUEUE_FLAG_DURABLE != 0,
        exclusive: flags & QUEUE_FLAG_EXCLUSIVE != 0,
        auto_delete: flags & QUEUE_FLAG_AUTO_DELETE != 0,
        arguments,
    })
}

fn decode_arguments(r: &mut Reader<'_>) -> Result<Vec<(String, ArgValue)>, DecodeError> {
    let count = r.u32()?;
    let mut arguments = Vec::new();
    for _ in 0..count {
        let key = r.str16()?;
        let value = match r.u8()? {
            ARG_BOOL => ArgValue::Bool(r.u8()? != 0),
            ARG_INT => ArgValue::Int(r.u64()? as i64),
            ARG_FLOAT => ArgValue::Float(f64::from_bits(r.u64()?)),
            ARG_STR => {
                ArgValue::Str(String::from_utf8(r.bytes32()?.to_vec()).map_err(|_| r.err("argument is not UTF-8"))?)
            }
            ARG_BYTES => ArgValue::Bytes(r.bytes32()?.to_vec()),
            ARG_VOID => ArgValue::Void,
            tag => return Err(r.err(format!("unknown argument tag {tag}"))),
        };
        arguments.push((key, value));
    }
    Ok(arguments)
}

// ---------------------------------------------------------------------------------------
// Exchanges and bindings

const EXCHANGE_FLAG_DURABLE: u8 = 1;
const EXCHANGE_FLAG_AUTO_DELETE: u8 = 2;
const EXCHANGE_FLAG_INTERNAL: u8 = 4;
const DESTINATION_QUEUE: u8 = 1;
const DESTINATION_EXCHANGE: u8 = 2;

/// An exchange's definition (its bindings are logged as bind records).
pub fn encode_exchange(w: &mut Writer, vhost: &str, e: &Exchange) {
    w.str16(vhost);
    w.str16(&e.name);
    w.str16(e.kind.name());
    let mut flags = 0;
    if e.durable {
        flags |= EXCHANGE_FLAG_DURABLE;
    }
    if e.auto_delete {
        flags |= EXCHANGE_FLAG_AUTO_DELETE;
    }
    if e.internal {
        flags |= EXCHANGE_FLAG_INTERNAL;
    }
    w.u8(flags);
    encode_arguments(w, &e.arguments);
}

/// The vhost and the exchange (with no bindings yet).
pub fn decode_exchange(r: &mut Reader<'_>) -> Result<(String, Exchange), DecodeError> {
    let vhost = r.str16()?;
    let name = r.str16()?;
    let kind_name = r.str16()?;
    let kind = ExchangeKind::parse(&kind_name).ok_or_else(|| r.err(format!("unknown exchange type {kind_name}")))?;
    let flags = r.u8()?;
    let mut exchange = Exchange::new(&name, kind);
    exchange.durable = flags & EXCHANGE_FLAG_DURABLE != 0;
    exchange.auto_delete = flags & EXCHANGE_FLAG_AUTO_DELETE != 0;
    exchange.internal = flags & EXCHANGE_FLAG_INTERNAL != 0;
    exchange.arguments = decode_arguments(r)?;
    Ok((vhost, exchange))
}

/// Exchange delete: the vhost and the name.
pub fn encode_exchange_delete(w: &mut Writer, vhost: &str, name: &str) {
    w.str16(vhost);
    w.str16(name);
}

pub fn decode_exchange_delete(payload: &[u8]) -> Result<(String, String), DecodeError> {
    decode_whole(payload, "exchange delete record", |r| Ok((r.str16()?, r.str16()?)))
}

/// Bind and unbind records share this payload.
pub fn encode_binding(w: &mut Writer, b: &BindingRecord) {
    w.str16(&b.vhost);
    w.str16(&b.source);
    match &b.destination {
        Destination::Queue(id) => {
            w.u8(DESTINATION_QUEUE);
            w.u32(*id);
        }
        Destination::Exchange(name) => {
            w.u8(DESTINATION_EXCHANGE);
            w.str16(name);
        }
    }
    w.str16(&b.routing_key);
    encode_arguments(w, &b.arguments);
}

pub fn decode_binding(r: &mut Reader<'_>) -> Result<BindingRecord, DecodeError> {
    let vhost = r.str16()?;
    let source = r.str16()?;
    let destination = match r.u8()? {
        DESTINATION_QUEUE => Destination::Queue(r.u32()?),
        DESTINATION_EXCHANGE => Destination::Exchange(r.str16()?),
        tag => return Err(r.err(format!("unknown binding destination tag {tag}"))),
    };
    let routing_key = r.str16()?;
    let arguments = decode_arguments(r)?;
    Ok(BindingRecord { vhost, source, destination, routing_key, arguments })
}

/// Decode a whole record payload with `decode`, refusing trailing bytes.
pub fn decode_whole<T>(
    payload: &[u8],
    what: &'static str,
    decode: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut r = Reader::new(payload, what);
    let value = decode(&mut r)?;
    r.finish()?;
    Ok(value)
}

// ---------------------------------------------------------------------------------------
// Vhosts, users and permissions

pub fn encode_vhost(w: &mut Writer, v: &VhostRecord) {
    w.str16(&v.name);
    encode_arguments(w, &v.limits);
}

pub fn decode_vhost(r: &mut Reader<'_>) -> Result<VhostRecord, DecodeError> {
    Ok(VhostRecord { name: r.str16()?, limits: decode_arguments(r)? })
}

pub fn encode_user(w: &mut Writer, u: &UserRecord) {
    w.str16(&u.name);
    w.str16(&u.password_hash);
    w.u16(u16::try_from(u.tags.len()).expect("tags are limited by the API"));
    for tag in &u.tags {
        w.str16(tag);
    }
}

pub fn decode_user(r: &mut Reader<'_>) -> Result<UserRecord, DecodeError> {
    let name = r.str16()?;
    let password_hash = r.str16()?;
    let tags = (0..r.u16()?).map(|_| r.str16()).collect::<Result<_, _>>()?;
    Ok(UserRecord { name, password_hash, tags })
}

pub fn encode_permission(w: &mut Writer, p: &PermissionRecord) {
    for field in [&p.user, &p.vhost, &p.configure, &p.write, &p.read] {
        w.str16(field);
    }
}

pub fn decode_permission(r: &mut Reader<'_>) -> Result<PermissionRecord, DecodeError> {
    Ok(PermissionRecord {
        user: r.str16()?,
        vhost: r.str16()?,
        configure: r.str16()?,
        write: r.str16()?,
        read: r.str16()?,
    })
}

/// A record that names things by strings only: a vhost or user delete (one name) or a
/// permission delete (user, vhost).
pub fn encode_names(names: &[&str]) -> Vec<u8> {
    let mut w = Writer::default();
    for name in names {
        w.str16(name);
    }
    w.buf
}

pub fn decode_names<const N: usize>(payload: &[u8], what: &'static str) -> Result<[String; N], DecodeError> {
    decode_whole(payload, what, |r| {
        let mut names: [String; N] = std::array::from_fn(|_| String::new());
        for name in &mut names {
            *name = r.str16()?;
        }
        Ok(names)
    })
}

pub fn encode_queue_delete(queue_id: u32) -> Vec<u8> {
    queue_id.to_le_bytes().to_vec()
}

pub fn decode_queue_delete(payload: &[u8]) -> Result<u32, DecodeError> {
    decode_whole(payload, "queue delete record", |r| r.u32())
}

// ---------------------------------------------------------------------------------------
// Enqueue

pub fn encode_enqueue(
    w: &mut Writer,
    seq: u64,
    flags: u8,
    times: Option<(u64, u64)>,
    deliver_at: Option<u64>,
    queue_ids: &[u32],
    message: &Message,
) {
    w.u64(seq);
    let mut flags = flags & !(ENQUEUE_FLAG_TIMED | ENQUEUE_FLAG_DELAYED);
    if times.is_some() {
        flags |= ENQUEUE_FLAG_TIMED;
    }
    if deliver_at.is_some() {
        flags |= ENQUEUE_FLAG_DELAYED;
    }
    w.u8(flags);
    if let Some((enqueued_at, expires_at)) = times {
        w.u64(enqueued_at);
        w.u64(expires_at);
    }
    if let Some(at) = deliver_at {
        w.u64(at);
    }
    w.u16(u16::try_from(queue_ids.len()).expect("a message reaches at most 65535 durable queues"));
    for id in queue_ids {
        w.u32(*id);
    }
    w.str16(&message.exchange);
    w.str16(&message.routing_key);
    w.bytes32(&message.raw_properties);
    w.bytes32(&message.body);
}

/// The fields an enqueue record starts with, before its message.
struct EnqueuePrefix {
    seq: u64,
    flags: u8,
    times: Option<(u64, u64)>,
    deliver_at: Option<u64>,
    queue_ids: Vec<u32>,
}

fn read_enqueue_prefix(r: &mut Reader<'_>) -> Result<EnqueuePrefix, DecodeError> {
    let seq = r.u64()?;
    let flags = r.u8()?;
    let times = if flags & ENQUEUE_FLAG_TIMED != 0 { Some((r.u64()?, r.u64()?)) } else { None };
    let deliver_at = if flags & ENQUEUE_FLAG_DELAYED != 0 { Some(r.u64()?) } else { None };
    let count = r.u16()?;
    let mut queue_ids = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        queue_ids.push(r.u32()?);
    }
    Ok(EnqueuePrefix { seq, flags, times, deliver_at, queue_ids })
}

/// Decode an enqueue record. `payload` is taken as `Bytes` so the body and properties are
/// zero-copy slices of it.
pub fn decode_enqueue(payload: Bytes) -> Result<EnqueueRecord, DecodeError> {
    let mut r = Reader::new(&payload, "enqueue record");
    let EnqueuePrefix { seq, flags, times, deliver_at, queue_ids } = read_enqueue_prefix(&mut r)?;
    let exchange = r.str16()?;
    let routing_key = r.str16()?;
    let props_len = r.u32()? as usize;
    let props_start = payload.len() - r.remaining();
    r.take(props_len)?;
    let body_len = r.u32()? as usize;
    let body_start = payload.len() - r.remaining();
    r.take(body_len)?;
    r.finish()?;
    Ok(EnqueueRecord {
        seq,
        flags,
        times,
        deliver_at,
        queue_ids,
        message: Message {
            exchange,
            routing_key,
            raw_properties: payload.slice(props_start..props_start + props_len),
            body: payload.slice(body_start..body_start + body_len),
        },
    })
}

/// The parts of an enqueue record replay needs, without copying the body.
pub struct EnqueueHeader {
    pub seq: u64,
    pub flags: u8,
    pub times: Option<(u64, u64)>,
    pub deliver_at: Option<u64>,
    pub queue_ids: Vec<u32>,
    pub body_len: u32,
    /// The message's `priority` property (0 when absent).
    pub priority: u8,
    /// Where the raw property bytes are in the payload (for the few rules that read more).
    pub properties: std::ops::Range<usize>,
}

/// Reads what replay needs; skips the exchange and routing key without allocating (replay
/// reads every enqueue record after the checkpoint).
pub fn decode_enqueue_header(payload: &[u8]) -> Result<EnqueueHeader, DecodeError> {
    let mut r = Reader::new(payload, "enqueue record");
    let EnqueuePrefix { seq, flags, times, deliver_at, queue_ids } = read_enqueue_prefix(&mut r)?;
    r.skip_str16()?;
    r.skip_str16()?;
    // After its u32 length: where the property bytes start.
    let start = payload.len() - r.remaining() + 4;
    let raw_properties = r.bytes32()?;
    let properties = start..start + raw_properties.len();
    let priority = crate::properties::raw_priority(raw_properties).unwrap_or(0);
    let body = r.bytes32()?;
    let body_len = body.len() as u32;
    r.finish()?;
    Ok(EnqueueHeader { seq, flags, times, deliver_at, queue_ids, body_len, priority, properties })
}

// ---------------------------------------------------------------------------------------
// Settle

pub fn encode_settle(w: &mut Writer, settled: &[(u32, u64)]) {
    w.u32(settled.len() as u32);
    for (queue_id, seq) in settled {
        w.u32(*queue_id);
        w.u64(*seq);
    }
}

pub fn decode_settle(payload: &[u8]) -> Result<Vec<(u32, u64)>, DecodeError> {
    let mut r = Reader::new(payload, "settle record");
    let count = r.u32()? as usize;
    let mut out = Vec::with_capacity(count.min(payload.len() / 12));
    for _ in 0..count {
        out.push((r.u32()?, r.u64()?));
    }
    r.finish()?;
    Ok(out)
}

/// A failed delivery (`KIND_RETRY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryRecord {
    pub queue_id: u32,
    pub seq: u64,
    pub delivery_count: u16,
    /// Epoch milliseconds; 0 when the message is ready again at once.
    pub retry_at_ms: u64,
}

pub fn encode_retry(w: &mut Writer, retry: &RetryRecord) {
    w.u32(retry.queue_id);
    w.u64(retry.seq);
    w.u16(retry.delivery_count);
    w.u64(retry.retry_at_ms);
}

pub fn decode_retry(payload: &[u8]) -> Result<RetryRecord, DecodeError> {
    let mut r = Reader::new(payload, "retry record");
    let retry = RetryRecord { queue_id: r.u32()?, seq: r.u64()?, delivery_count: r.u16()?, retry_at_ms: r.u64()? };
    r.finish()?;
    Ok(retry)
}

// ---------------------------------------------------------------------------------------
// Transactions

/// A transaction container: `count u32`, then per record `kind u8`, `payload bytes32`.
pub fn encode_tx(w: &mut Writer, records: &[(u8, Vec<u8>)]) {
    w.u32(records.len() as u32);
    for (kind, payload) in records {
        w.u8(*kind);
        w.bytes32(payload);
    }
}

/// The records inside a transaction container, as slices of it. A container inside a
/// container is refused.
pub fn decode_tx(payload: &[u8]) -> Result<Vec<(u8, &[u8])>, DecodeError> {
    let mut r = Reader::new(payload, "transaction record");
    let count = r.u32()? as usize;
    let mut out = Vec::with_capacity(count.min(payload.len() / 5));
    for _ in 0..count {
        let kind = r.u8()?;
        if kind == KIND_TX {
            return Err(r.err("a transaction inside a transaction"));
        }
        out.push((kind, r.bytes32()?));
    }
    r.finish()?;
    Ok(out)
}

/// The message with sequence number `seq` in a record that holds it: an enqueue record, or a
/// transaction container with such a record inside. Zero-copy slices of `payload`.
pub fn message_in_record(kind: u8, payload: Bytes, seq: u64) -> Result<Message, DecodeError> {
    let not_here = || DecodeError { what: "message record", detail: format!("message {seq} is not in this record") };
    match kind {
        KIND_ENQUEUE => {
            let record = decode_enqueue(payload)?;
            if record.seq == seq {
                Ok(record.message)
            } else {
                Err(not_here())
            }
        }
        KIND_TX => {
            for (inner_kind, inner) in decode_tx(&payload)? {
                // An enqueue record starts with its message's seq.
                if inner_kind == KIND_ENQUEUE && Reader::new(inner, "enqueue record").u64()? == seq {
                    let start = inner.as_ptr() as usize - payload.as_ptr() as usize;
                    return Ok(decode_enqueue(payload.slice(start..start + inner.len()))?.message);
                }
            }
            Err(not_here())
        }
        other => {
            Err(DecodeError { what: "message record", detail: format!("record kind {other:#x} holds no message") })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Snapshot

pub fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(SNAPSHOT_VERSION);
    w.u64(snapshot.next_message_seq);
    w.u32(snapshot.next_queue_id);
    w.u32(snapshot.queues.len() as u32);
    for (index, (queue, entries)) in snapshot.queues.iter().enumerate() {
        encode_queue(&mut w, queue);
        w.u64(entries.len() as u64);
        for e in entries {
            w.u64(e.seq);
            w.u64(e.location);
            w.u32(e.size_bytes);
            w.u16(e.delivery_count);
            w.u8(e.flags);
            w.u8(e.priority);
        }
        for timers in [&snapshot.expiries, &snapshot.delays] {
            let timers = timers.get(index).map(Vec::as_slice).unwrap_or_default();
            w.u64(timers.len() as u64);
            for (seq, at) in timers {
                w.u64(*seq);
                w.u64(*at);
            }
        }
    }
    w.u32(snapshot.exchanges.len() as u32);
    for (vhost, exchange) in &snapshot.exchanges {
        encode_exchange(&mut w, vhost, exchange);
    }
    encode_list(&mut w, &snapshot.bindings, encode_binding);
    encode_list(&mut w, &snapshot.vhosts, encode_vhost);
    encode_list(&mut w, &snapshot.users, encode_user);
    encode_list(&mut w, &snapshot.permissions, encode_permission);
    encode_list(&mut w, &snapshot.settings, encode_queue_settings);
    encode_list(&mut w, &snapshot.dedup, encode_dedup);
    w.buf
}

/// A u32 count, then each item.
fn encode_list<T>(w: &mut Writer, items: &[T], encode: fn(&mut Writer, &T)) {
    w.u32(items.len() as u32);
    for item in items {
        encode(w, item);
    }
}

fn decode_list<T>(
    r: &mut Reader<'_>,
    decode: fn(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    // No capacity from the count: a damaged count must not allocate before decoding fails.
    (0..r.u32()?).map(|_| decode(r)).collect()
}

pub fn decode_snapshot(payload: &[u8]) -> Result<Snapshot, DecodeError> {
    let mut r = Reader::new(payload, "checkpoint snapshot");
    let version = r.u32()?;
    if !(1..=SNAPSHOT_VERSION).contains(&version) {
        return Err(r.err(format!("unknown snapshot version {version}")));
    }
    let next_message_seq = r.u64()?;
    let next_queue_id = r.u32()?;
    let queue_count = r.u32()?;
    let mut queues = Vec::new();
    let mut expiries = Vec::new();
    let mut delays = Vec::new();
    for _ in 0..queue_count {
        let queue = decode_queue(&mut r)?;
        let count = r.u64()? as usize;
        // 23 or 24 bytes per entry: refuse counts the payload cannot hold before allocating.
        if count > r.remaining() / 23 {
            return Err(r.err(format!("{count} entries cannot fit in {} bytes", r.remaining())));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(MessageEntry {
                seq: r.u64()?,
                location: r.u64()?,
                size_bytes: r.u32()?,
                delivery_count: r.u16()?,
                flags: r.u8()?,
                priority: if version >= 4 { r.u8()? } else { 0 },
            });
        }
        queues.push((queue, entries));
        let timers = |r: &mut Reader<'_>, since: u32, what: &str| -> Result<Vec<(u64, u64)>, DecodeError> {
            let mut list = Vec::new();
            if version >= since {
                let count = r.u64()? as usize;
                if count > r.remaining() / 16 {
                    return Err(r.err(format!("{count} {what} cannot fit in {} bytes", r.remaining())));
                }
                for _ in 0..count {
                    list.push((r.u64()?, r.u64()?));
                }
            }
            Ok(list)
        };
        expiries.push(timers(&mut r, 3, "expiries")?);
        delays.push(timers(&mut r, 5, "delays")?);
    }
    let mut exchanges = Vec::new();
    let mut bindings = Vec::new();
    if version >= 2 {
        for _ in 0..r.u32()? {
            exchanges.push(decode_exchange(&mut r)?);
        }
        bindings = decode_list(&mut r, decode_binding)?;
    }
    let (mut vhosts, mut users, mut permissions) = (Vec::new(), Vec::new(), Vec::new());
    if version >= 6 {
        vhosts = decode_list(&mut r, decode_vhost)?;
        users = decode_list(&mut r, decode_user)?;
        permissions = decode_list(&mut r, decode_permission)?;
    }
    let settings = if version >= 7 { decode_list(&mut r, decode_queue_settings)? } else { Vec::new() };
    let dedup = if version >= 8 { decode_list(&mut r, decode_dedup)? } else { Vec::new() };
    r.finish()?;
    Ok(Snapshot {
        next_message_seq,
        next_queue_id,
        queues,
        expiries,
        delays,
        exchanges,
        bindings,
        vhosts,
        users,
        permissions,
        settings,
        dedup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueRecord {
        QueueRecord {
            queue_id: 7,
            vhost: "/".into(),
            name: "orders".into(),
            durable: true,
            exclusive: false,
            auto_delete: true,
            arguments: vec![
                ("x-a".into(), ArgValue::Bool(true)),
                ("x-b".into(), ArgValue::Int(-5)),
                ("x-c".into(), ArgValue::Float(1.5)),
                ("x-d".into(), ArgValue::Str("é".into())),
                ("x-e".into(), ArgValue::Bytes(vec![0, 1])),
                ("x-f".into(), ArgValue::Void),
            ],
        }
    }

    #[test]
    fn queue_round_trip() {
        let mut w = Writer::default();
        encode_queue(&mut w, &queue());
        let mut r = Reader::new(&w.buf, "t");
        assert_eq!(decode_queue(&mut r).unwrap(), queue());
        r.finish().unwrap();
    }

    #[test]
    fn enqueue_round_trip_and_truncation() {
        let message = Message {
            exchange: "".into(),
            routing_key: "q".into(),
            raw_properties: Bytes::from_static(&[0x10, 0x00, 2]),
            body: Bytes::from_static(b"hello"),
        };
        let mut w = Writer::default();
        encode_enqueue(&mut w, 42, 0, Some((1000, 2000)), Some(3000), &[1, 2], &message);
        let decoded = decode_enqueue(Bytes::from(w.buf.clone())).unwrap();
        assert_eq!(decoded.seq, 42);
        assert_eq!(decoded.queue_ids, vec![1, 2]);
        assert_eq!(decoded.times, Some((1000, 2000)));
        assert_eq!(decoded.message, message);
        for cut in 0..w.buf.len() {
            assert!(decode_enqueue(Bytes::copy_from_slice(&w.buf[..cut])).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn retry_record_round_trip_and_truncation() {
        let retry = RetryRecord { queue_id: 7, seq: 1 << 40, delivery_count: 3, retry_at_ms: 1_700_000_000_123 };
        let mut w = Writer::default();
        encode_retry(&mut w, &retry);
        assert_eq!(decode_retry(&w.buf).unwrap(), retry);
        for cut in 0..w.buf.len() {
            assert!(decode_retry(&w.buf[..cut]).is_err(), "cut {cut}");
        }
        w.u8(0);
        assert!(decode_retry(&w.buf).is_err(), "trailing bytes");
    }

    #[test]
    fn snapshot_round_trip() {
        let entry = MessageEntry { seq: 3, location: 9, size_bytes: 4, delivery_count: 1, flags: 1, priority: 6 };
        let snapshot = Snapshot {
            next_message_seq: 10,
            next_queue_id: 8,
            queues: vec![(queue(), vec![entry])],
            expiries: vec![vec![(3, 12_345)]],
            delays: vec![vec![(3, 99_999)]],
            exchanges: vec![("/".into(), {
                let mut logs = Exchange::new("logs", ExchangeKind::Topic);
                logs.internal = true;
                logs.arguments = vec![("alternate-exchange".into(), ArgValue::Str("ae".into()))];
                logs
            })],
            bindings: vec![
                BindingRecord {
                    vhost: "/".into(),
                    source: "logs".into(),
                    destination: Destination::Queue(7),
                    routing_key: "*.error".into(),
                    arguments: Vec::new(),
                },
                BindingRecord {
                    vhost: "/".into(),
                    source: "logs".into(),
                    destination: Destination::Exchange("other".into()),
                    routing_key: "#".into(),
                    arguments: vec![("x-match".into(), ArgValue::Str("any".into()))],
                },
            ],
            vhosts: vec![
                VhostRecord { name: "/".into(), limits: Vec::new() },
                VhostRecord { name: "billing".into(), limits: vec![("max-queues".into(), ArgValue::Int(10))] },
            ],
            users: vec![UserRecord {
                name: "ops".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                tags: vec!["administrator".into(), "monitoring".into()],
            }],
            permissions: vec![PermissionRecord {
                user: "ops".into(),
                vhost: "billing".into(),
                configure: "^ops-".into(),
                write: ".*".into(),
                read: "".into(),
            }],
            settings: vec![QueueSettings {
                queue_id: 7,
                settings: vec![
                    ("x-max-length".into(), ArgValue::Int(5)),
                    ("x-overflow".into(), ArgValue::Str("reject-publish".into())),
                ],
            }],
            dedup: vec![(7, vec![(1000, "m-1".into()), (2000, "m-2".into())])],
        };
        let bytes = encode_snapshot(&snapshot);
        assert_eq!(decode_snapshot(&bytes).unwrap(), snapshot);
        assert!(decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn security_records_round_trip() {
        let names = encode_names(&["ops", "billing"]);
        assert_eq!(decode_names::<2>(&names, "permission delete").unwrap(), ["ops".to_string(), "billing".into()]);
        assert!(decode_names::<1>(&names, "user delete").is_err(), "trailing bytes are refused");
        assert!(decode_names::<3>(&names, "x").is_err(), "short payloads are refused");
        let user = UserRecord { name: "ops".into(), password_hash: String::new(), tags: vec!["a".into()] };
        let mut w = Writer::default();
        encode_user(&mut w, &user);
        assert_eq!(decode_whole(&w.buf, "user", decode_user).unwrap(), user);
    }

    #[test]
    fn messages_are_found_in_transaction_containers() {
        let message = |body: &'static [u8]| Message {
            exchange: "".into(),
            routing_key: "q".into(),
            raw_properties: Bytes::new(),
            body: Bytes::from_static(body),
        };
        let mut inner = Vec::new();
        for (seq, body) in [(5u64, &b"five"[..]), (6, b"six")] {
            let mut w = Writer::default();
            encode_enqueue(&mut w, seq, 0, None, None, &[1], &message(body));
            inner.push((KIND_ENQUEUE, w.buf));
        }
        let mut w = Writer::default();
        encode_settle(&mut w, &[(1, 2)]);
        inner.push((KIND_SETTLE, w.buf));
        let mut container = Writer::default();
        encode_tx(&mut container, &inner);
        let payload = Bytes::from(container.buf);
        assert_eq!(message_in_record(KIND_TX, payload.clone(), 6).unwrap().body.as_ref(), b"six");
        assert_eq!(message_in_record(KIND_TX, payload.clone(), 5).unwrap().body.as_ref(), b"five");
        assert!(message_in_record(KIND_TX, payload.clone(), 7).is_err());
        assert_eq!(decode_tx(&payload).unwrap().len(), 3);
        for cut in 0..payload.len() {
            assert!(decode_tx(&payload[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn settle_round_trip() {
        let mut w = Writer::default();
        encode_settle(&mut w, &[(1, 2), (3, 4)]);
        assert_eq!(decode_settle(&w.buf).unwrap(), vec![(1, 2), (3, 4)]);
    }

    #[test]
    fn location_encoding() {
        let pos = RecordPos { segment: 3, offset: 4096 };
        assert_eq!(pos_of(location_of(pos)), Some(pos));
        assert_eq!(pos_of(LOCATION_MEMORY), None);
    }
}

//! AMQP message properties, where the engine must read or change them.
//!
//! Messages keep their content-header property bytes as published (forwarded unchanged). The
//! engine decodes them only when a rule needs them: dead-lettering adds RabbitMQ's `x-death`
//! history and `x-first-death-*` headers and moves a per-message `expiration` into the
//! history. Decoding and encoding use the pure codec crate, so the engine depends on the
//! message format but not on the AMQP connection layer.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

use std::sync::Arc;

use bytes::Bytes;

use crate::api::{ArgValue, Message, Origin, Publish};
use crate::error::{EngineError, ErrorKind};

/// The `reply_to` that names RabbitMQ's direct reply-to pseudo-queue.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A publish as a protocol received it: where it goes, and its content with the properties
/// decoded once (the protocol had to decode them to validate them).
pub struct PublishParts<'a> {
    pub origin: Origin,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub mandatory: bool,
    pub confirm: Option<u64>,
    pub properties: &'a BasicProperties,
    /// The properties' bytes as received (kept unchanged unless `BCC` must be removed).
    pub raw_properties: Bytes,
    pub body: Bytes,
}

impl Publish {
    /// The engine's publish from what a protocol received, with every property rule applied
    /// in one place for AMQP and HTTP alike: delivery-mode 2 is persistent, `headers` are
    /// kept decoded for headers exchanges, `CC`/`BCC` add routing keys (`BCC` is removed
    /// from the stored message), `reply_to` may name direct reply-to, and `expiration` must
    /// be a whole number of milliseconds (else 406, as RabbitMQ).
    pub fn from_parts(parts: PublishParts<'_>) -> Result<Publish, EngineError> {
        let properties = parts.properties;
        let expiration_ms = match properties.expiration() {
            None => None,
            Some(text) => Some(text.as_str().parse::<u64>().map_err(|_| {
                EngineError::new(ErrorKind::PreconditionFailed, format!("invalid expiration '{}'", text.as_str()))
            })?),
        };
        let (cc, raw_properties) = sender_selected(properties, parts.raw_properties);
        let recipients = recipient_list(properties)?;
        Ok(Publish {
            origin: parts.origin,
            exchange: parts.exchange.to_string(),
            routing_key: parts.routing_key.to_string(),
            mandatory: parts.mandatory,
            persistent: *properties.delivery_mode() == Some(2),
            confirm: parts.confirm,
            headers: properties.headers().as_ref().map(table_to_arguments).unwrap_or_default(),
            expiration_ms,
            cc,
            recipients,
            direct_reply_to: properties.reply_to().as_ref().is_some_and(|r| r.as_str() == DIRECT_REPLY_TO),
            message: Arc::new(Message {
                exchange: parts.exchange.to_string(),
                routing_key: parts.routing_key.to_string(),
                raw_properties: Bytes::copy_from_slice(&raw_properties),
                body: parts.body,
            }),
        })
    }
}

/// Header naming the only queues a publish may reach (AQ's recipient list).
pub const RECIPIENTS_HEADER: &str = "x-recipients";

/// The `x-recipients` header: an array of queue names, else 406 (as an invalid `x-delay`).
fn recipient_list(properties: &BasicProperties) -> Result<Option<Vec<String>>, EngineError> {
    let Some(value) = properties.headers().as_ref().and_then(|h| h.inner().get(RECIPIENTS_HEADER)) else {
        return Ok(None);
    };
    let invalid = || {
        EngineError::new(
            ErrorKind::PreconditionFailed,
            format!("invalid {RECIPIENTS_HEADER} header: expected an array of queue names"),
        )
    };
    let AMQPValue::FieldArray(values) = value else { return Err(invalid()) };
    let names = values.as_slice().iter().map(|v| match v {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_string),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    });
    names.collect::<Option<Vec<String>>>().map(Some).ok_or_else(invalid)
}

/// RabbitMQ's sender-selected distribution: the `CC` and `BCC` headers (arrays of strings)
/// are extra routing keys; `BCC` is removed from the message before anyone receives it.
/// Returns the extra keys and the property bytes to store.
fn sender_selected(properties: &BasicProperties, raw: Bytes) -> (Vec<String>, Bytes) {
    let Some(headers) = properties.headers() else {
        return (Vec::new(), raw);
    };
    let keys = |name: &str| -> Vec<String> {
        match headers.inner().get(name) {
            Some(AMQPValue::FieldArray(values)) => values
                .as_slice()
                .iter()
                .filter_map(|v| match v {
                    AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_string),
                    AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut cc = keys("CC");
    if !headers.contains_key("BCC") {
        return (cc, raw);
    }
    cc.extend(keys("BCC"));
    let without_bcc: FieldTable = headers
        .inner()
        .iter()
        .filter(|(key, _)| key.as_str() != "BCC")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    (cc, weir_amqp_codec::encode_properties(&properties.clone().with_headers(without_bcc)))
}

/// Why a message was dead-lettered, as RabbitMQ names it in `x-death`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathReason {
    Rejected,
    Expired,
    MaxLength,
    /// Delivered `x-delivery-limit` times without an ack (RabbitMQ quorum queues' name).
    DeliveryLimit,
}

impl DeathReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::MaxLength => "maxlen",
            Self::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Content-header property flags (AMQP 0-9-1 `basic` class), highest bit first.
const FLAG_CONTENT_TYPE: u16 = 1 << 15;
const FLAG_HEADERS: u16 = 1 << 13;
const FLAG_PRIORITY: u16 = 1 << 11;
const FLAG_MESSAGE_ID: u16 = 1 << 7;
const FLAG_TIMESTAMP: u16 = 1 << 6;

/// Where the property with flag `wanted` starts in raw property bytes (flags, then the present
/// fields in flag order), skipping the ones before it without decoding them. `None` when it is
/// absent or the bytes end early (they were validated when the message was published, so that
/// only happens to a damaged record).
fn raw_field(raw: &[u8], wanted: u16) -> Option<usize> {
    let flags = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
    if flags & wanted == 0 {
        return None;
    }
    let mut at = 2usize;
    let mut flag = FLAG_CONTENT_TYPE;
    while flag > wanted {
        if flags & flag != 0 {
            at = match flag {
                FLAG_HEADERS => {
                    let len = u32::from_be_bytes(raw.get(at..at.checked_add(4)?)?.try_into().ok()?);
                    at.checked_add(4)?.checked_add(usize::try_from(len).ok()?)?
                }
                // delivery-mode and priority: one octet.
                f if f == 1 << 12 || f == FLAG_PRIORITY => at + 1,
                FLAG_TIMESTAMP => at + 8,
                // The rest before message-id and timestamp are short strings.
                _ => at + 1 + usize::from(*raw.get(at)?),
            };
        }
        flag >>= 1;
    }
    (at < raw.len()).then_some(at)
}

/// The `message-id` property read straight from raw property bytes, for log replay of queues
/// with a deduplication window. `None` when absent, not UTF-8, or the bytes end early.
pub fn raw_message_id(raw: &[u8]) -> Option<&str> {
    let at = raw_field(raw, FLAG_MESSAGE_ID)?;
    let len = usize::from(raw[at]);
    std::str::from_utf8(raw.get(at + 1..at + 1 + len)?).ok()
}

/// The `priority` property read straight from raw property bytes: it is needed for every
/// message routed to a priority queue, at publish and at log replay.
pub fn raw_priority(raw: &[u8]) -> Option<u8> {
    raw.get(raw_field(raw, FLAG_PRIORITY)?).copied()
}

/// The `timestamp` property (AMQP seconds) read straight from raw property bytes (overflow
/// `drop-oldest` compares it across a queue).
pub fn raw_timestamp(raw: &[u8]) -> Option<u64> {
    let at = raw_field(raw, FLAG_TIMESTAMP)?;
    Some(u64::from_be_bytes(raw.get(at..at + 8)?.try_into().ok()?))
}

/// Field-table values as the engine's protocol-neutral arguments (sorted by key, as a
/// `FieldTable` is).
pub fn table_to_arguments(table: &FieldTable) -> Vec<(String, ArgValue)> {
    table.inner().iter().map(|(key, value)| (key.as_str().to_string(), arg_value(value))).collect()
}

/// The value of any of the field-table integer types (a timestamp too), if it is one.
pub(crate) fn integer_value(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::Timestamp(v) => *v as i64,
        _ => return None,
    })
}

fn arg_value(value: &AMQPValue) -> ArgValue {
    if let Some(n) = integer_value(value) {
        return ArgValue::Int(n);
    }
    match value {
        AMQPValue::Boolean(b) => ArgValue::Bool(*b),
        AMQPValue::Float(v) => ArgValue::Float(f64::from(*v)),
        AMQPValue::Double(v) => ArgValue::Float(*v),
        AMQPValue::ShortString(s) => ArgValue::Str(s.as_str().to_string()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => ArgValue::Str(text.to_string()),
            Err(_) => ArgValue::Bytes(s.as_bytes().to_vec()),
        },
        AMQPValue::ByteArray(b) => ArgValue::Bytes(b.as_slice().to_vec()),
        AMQPValue::Void => ArgValue::Void,
        // Nested values are kept in a readable form; no rule compares them yet.
        other => ArgValue::Str(format!("{other:?}")),
    }
}

fn long(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

fn header_str<'a>(table: &'a FieldTable, key: &str) -> Option<&'a [u8]> {
    match table.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A text header (long or short string, UTF-8), if the message has it.
pub(crate) fn header_text<'a>(properties: &'a BasicProperties, key: &str) -> Option<&'a str> {
    match properties.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Has this message been dead-lettered from `queue` for `reason` before? (RabbitMQ drops a
/// message that would go round such a cycle again without a rejection in between.)
pub fn died_before(properties: &BasicProperties, queue: &str, reason: DeathReason) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = properties.headers().as_ref().and_then(|h| h.inner().get("x-death"))
    else {
        return false;
    };
    deaths.as_slice().iter().any(|death| is_death_of(death, queue, reason))
}

/// The queues a message was dead-lettered from (its `x-death` history), and whether any of
/// those deaths was a rejection (a consumer's decision, which breaks a cycle).
pub fn death_history(properties: &BasicProperties) -> (Vec<String>, bool) {
    let Some(AMQPValue::FieldArray(deaths)) = properties.headers().as_ref().and_then(|h| h.inner().get("x-death"))
    else {
        return (Vec::new(), false);
    };
    let mut queues = Vec::new();
    let mut rejected = false;
    for death in deaths.as_slice() {
        if let AMQPValue::FieldTable(t) = death {
            if let Some(queue) = header_str(t, "queue").and_then(|q| std::str::from_utf8(q).ok()) {
                queues.push(queue.to_string());
            }
            rejected |= header_str(t, "reason") == Some(DeathReason::Rejected.name().as_bytes());
        }
    }
    (queues, rejected)
}

/// Is this `x-death` entry the one for (`queue`, `reason`)?
fn is_death_of(death: &AMQPValue, queue: &str, reason: DeathReason) -> bool {
    match death {
        AMQPValue::FieldTable(t) => {
            header_str(t, "queue") == Some(queue.as_bytes())
                && header_str(t, "reason") == Some(reason.name().as_bytes())
        }
        _ => false,
    }
}

/// The properties of a message dead-lettered from `queue`: RabbitMQ's `x-death` entry for
/// (queue, reason) counted up and moved to the front (or a new one), `x-first-death-*` set
/// once, and a per-message `expiration` moved into the entry as `original-expiration`.
pub fn with_death(
    properties: BasicProperties,
    queue: &str,
    reason: DeathReason,
    exchange: &str,
    routing_key: &str,
    now_ms: u64,
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(array)) => array.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = deaths.iter().position(|death| is_death_of(death, queue, reason));
    let entry = match same {
        Some(index) => {
            let AMQPValue::FieldTable(mut entry) = deaths.remove(index) else { unreachable!("matched a table") };
            let count = match entry.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                Some(AMQPValue::LongInt(n)) => i64::from(*n),
                _ => 0,
            };
            entry.insert("count".into(), AMQPValue::LongLongInt(count + 1));
            entry.insert("time".into(), AMQPValue::Timestamp(now_ms / 1000));
            entry
        }
        None => {
            let mut entry = FieldTable::default();
            entry.insert("count".into(), AMQPValue::LongLongInt(1));
            entry.insert("reason".into(), long(reason.name()));
            entry.insert("queue".into(), long(queue));
            entry.insert("time".into(), AMQPValue::Timestamp(now_ms / 1000));
            entry.insert("exchange".into(), long(exchange));
            entry.insert("routing-keys".into(), AMQPValue::FieldArray(FieldArray::from(vec![long(routing_key)])));
            if let Some(expiration) = properties.expiration() {
                entry.insert("original-expiration".into(), long(expiration.as_str()));
            }
            entry
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(deaths)));
    for (key, value) in
        [("x-first-death-reason", reason.name()), ("x-first-death-queue", queue), ("x-first-death-exchange", exchange)]
    {
        if !headers.contains_key(key) {
            headers.insert(ShortString::from(key), long(value));
        }
    }
    // A dead-lettered message does not expire again by its old per-message TTL.
    without_expiration(&properties).with_headers(headers)
}

/// The same properties without `expiration` (the library has no setter that clears one).
fn without_expiration(p: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_priority_skips_the_fields_before_it() {
        let mut headers = FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString("v".repeat(300).into()));
        let cases = [
            (BasicProperties::default(), None),
            (BasicProperties::default().with_priority(7), Some(7)),
            (
                BasicProperties::default()
                    .with_content_type("text/plain".into())
                    .with_content_encoding("gzip".into())
                    .with_headers(headers)
                    .with_delivery_mode(2)
                    .with_priority(255)
                    .with_correlation_id("c".into()),
                Some(255),
            ),
            (BasicProperties::default().with_delivery_mode(2).with_message_id("m".into()), None),
        ];
        for (properties, want) in cases {
            let raw = weir_amqp_codec::encode_properties(&properties);
            assert_eq!(raw_priority(&raw), want, "{properties:?}");
            for cut in 0..raw.len() {
                let _ = raw_priority(&raw[..cut]); // never panics on short input
            }
        }
    }

    #[test]
    fn raw_message_id_skips_every_field_before_it() {
        let mut headers = FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString("v".repeat(300).into()));
        let full = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_priority(3)
            .with_correlation_id("c-1".into())
            .with_reply_to("replies".into())
            .with_expiration("500".into())
            .with_message_id("m-42".into())
            .with_timestamp(7);
        for (properties, want) in [
            (full.clone(), Some("m-42")),
            (BasicProperties::default().with_message_id("only".into()), Some("only")),
            (BasicProperties::default().with_correlation_id("c".into()), None),
        ] {
            let raw = weir_amqp_codec::encode_properties(&properties);
            assert_eq!(raw_message_id(&raw), want, "{properties:?}");
            let decoded = weir_amqp_codec::decode_properties(&raw).unwrap();
            assert_eq!(raw_message_id(&raw), decoded.message_id().as_ref().map(|m| m.as_str()));
            assert_eq!(raw_timestamp(&raw), *decoded.timestamp());
            assert_eq!(raw_priority(&raw), *decoded.priority());
            for cut in 0..raw.len() {
                let _ = raw_message_id(&raw[..cut]); // never panics on short input
            }
        }
    }

    #[test]
    fn deaths_are_counted_per_queue_and_reason_and_moved_to_the_front() {
        let props = BasicProperties::default().with_expiration("500".into());
        let once = with_death(props, "work", DeathReason::Expired, "ex", "rk", 10_000);
        assert!(once.expiration().is_none(), "expiration moved into the history");
        assert!(died_before(&once, "work", DeathReason::Expired));
        assert!(!died_before(&once, "work", DeathReason::Rejected));
        let twice = with_death(once, "other", DeathReason::Rejected, "ex2", "rk2", 11_000);
        let thrice = with_death(twice, "work", DeathReason::Expired, "ex", "rk", 12_000);
        let headers = thrice.headers().clone().unwrap();
        let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else { panic!("x-death") };
        assert_eq!(deaths.as_slice().len(), 2);
        let AMQPValue::FieldTable(first) = &deaths.as_slice()[0] else { panic!("table") };
        assert_eq!(header_str(first, "queue"), Some(&b"work"[..]));
        assert_eq!(first.inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(header_str(first, "original-expiration"), Some(&b"500"[..]));
        assert_eq!(header_str(&headers, "x-first-death-queue"), Some(&b"work"[..]));
        assert_eq!(header_str(&headers, "x-first-death-reason"), Some(&b"expired"[..]));
    }
}

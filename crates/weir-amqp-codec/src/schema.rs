//! The field layout of every AMQP 0-9-1 method Weir knows, as data.
//!
//! `amq-protocol` hides class and method lookup behind an opaque nom error (trap #3) and
//! recurses into field tables without a limit (trap #1). This table lets the codec read the
//! class and method ids itself (unknown → 540), and walk every field of a method payload
//! without recursion before `amq-protocol` sees it (see `scan.rs`).
//!
//! Invariants:
//! - The table lists exactly the methods `amq_protocol::protocol::parse_class` accepts, with
//!   the same fields in the same order, including reserved ones (`ticket`, `out-of-band`…).
//!   `tests/round_trip.rs` checks this: it generates every method with `amq-protocol`
//!   and decodes it through this table.
//! - Consecutive bit fields are one `Bits(n)` entry occupying `ceil(n / 8)` octets, as both
//!   the spec and `amq-protocol`'s `parse_flags` pack them.

/// The wire type of one method field or content property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// 1 octet.
    Octet,
    /// 2 octets.
    Short,
    /// 4 octets.
    Long,
    /// 8 octets.
    LongLong,
    /// 8 octets.
    Timestamp,
    /// 1-octet length, then UTF-8 bytes (trap #4: `amq-protocol` requires UTF-8).
    ShortString,
    /// 4-octet length, then raw bytes.
    LongString,
    /// `n` packed bit fields.
    Bits(u8),
    /// 4-octet length, then field-table entries.
    Table,
}

/// One named field of a method or of the content properties.
pub(crate) type Field = (&'static str, FieldKind);

/// A method: its ids, its RabbitMQ-style name (`queue.declare`) and its fields.
#[derive(Debug)]
pub(crate) struct MethodSchema {
    pub(crate) class_id: u16,
    pub(crate) method_id: u16,
    pub(crate) name: &'static str,
    pub(crate) fields: &'static [Field],
}

/// Class id of `basic`, the only class with content.
pub(crate) const CLASS_BASIC: u16 = 60;
/// Method id of `basic.publish`.
pub(crate) const METHOD_BASIC_PUBLISH: u16 = 40;
/// Method id of `basic.return`.
pub(crate) const METHOD_BASIC_RETURN: u16 = 50;
/// Method id of `basic.deliver`.
pub(crate) const METHOD_BASIC_DELIVER: u16 = 60;
/// Method id of `basic.get-ok`.
pub(crate) const METHOD_BASIC_GET_OK: u16 = 71;
/// Method id of `basic.ack`.
pub(crate) const METHOD_BASIC_ACK: u16 = 80;
/// Method id of `basic.reject`.
pub(crate) const METHOD_BASIC_REJECT: u16 = 90;
/// Method id of `basic.nack`.
pub(crate) const METHOD_BASIC_NACK: u16 = 120;

use FieldKind::{Bits, Long, LongLong, LongString, Octet, Short, ShortString, Table, Timestamp};

const fn method(class_id: u16, method_id: u16, name: &'static str, fields: &'static [Field]) -> MethodSchema {
    MethodSchema { class_id, method_id, name, fields }
}

/// Every method of RabbitMQ's 0-9-1 codegen JSON, as `amq-protocol` 10.6 parses them.
pub(crate) static METHODS: &[MethodSchema] = &[
    // connection (10)
    method(
        10,
        10,
        "connection.start",
        &[
            ("version-major", Octet),
            ("version-minor", Octet),
            ("server-properties", Table),
            ("mechanisms", LongString),
            ("locales", LongString),
        ],
    ),
    method(
        10,
        11,
        "connection.start-ok",
        &[("client-properties", Table), ("mechanism", ShortString), ("response", LongString), ("locale", ShortString)],
    ),
    method(10, 20, "connection.secure", &[("challenge", LongString)]),
    method(10, 21, "connection.secure-ok", &[("response", LongString)]),
    method(10, 30, "connection.tune", &[("channel-max", Short), ("frame-max", Long), ("heartbeat", Short)]),
    method(10, 31, "connection.tune-ok", &[("channel-max", Short), ("frame-max", Long), ("heartbeat", Short)]),
    method(
        10,
        40,
        "connection.open",
        &[("virtual-host", ShortString), ("capabilities", ShortString), ("insist", Bits(1))],
    ),
    method(10, 41, "connection.open-ok", &[("known-hosts", ShortString)]),
    method(
        10,
        50,
        "connection.close",
        &[("reply-code", Short), ("reply-text", ShortString), ("class-id", Short), ("method-id", Short)],
    ),
    method(10, 51, "connection.close-ok", &[]),
    method(10, 60, "connection.blocked", &[("reason", ShortString)]),
    method(10, 61, "connection.unblocked", &[]),
    method(10, 70, "connection.update-secret", &[("new-secret", LongString), ("reason", ShortString)]),
    method(10, 71, "connection.update-secret-ok", &[]),
    // channel (20)
    method(20, 10, "channel.open", &[("out-of-band", ShortString)]),
    method(20, 11, "channel.open-ok", &[("channel-id", LongString)]),
    method(20, 20, "channel.flow", &[("active", Bits(1))]),
    method(20, 21, "channel.flow-ok", &[("active", Bits(1))]),
    method(
        20,
        40,
        "channel.close",
        &[("reply-code", Short), ("reply-text", ShortString), ("class-id", Short), ("method-id", Short)],
    ),
    method(20, 41, "channel.close-ok", &[]),
    // access (30), deprecated but still in RabbitMQ's codegen
    method(30, 10, "access.request", &[("realm", ShortString), ("flags", Bits(5))]),
    method(30, 11, "access.request-ok", &[("ticket", Short)]),
    // exchange (40)
    method(
        40,
        10,
        "exchange.declare",
        &[
            ("ticket", Short),
            ("exchange", ShortString),
            ("type", ShortString),
            ("flags", Bits(5)),
            ("arguments", Table),
        ],
    ),
    method(40, 11, "exchange.declare-ok", &[]),
    method(40, 20, "exchange.delete", &[("ticket", Short), ("exchange", ShortString), ("flags", Bits(2))]),
    method(40, 21, "exchange.delete-ok", &[]),
    method(
        40,
        30,
        "exchange.bind",
        &[
            ("ticket", Short),
            ("destination", ShortString),
            ("source", ShortString),
            ("routing-key", ShortString),
            ("no-wait", Bits(1)),
            ("arguments", Table),
        ],
    ),
    method(40, 31, "exchange.bind-ok", &[]),
    method(
        40,
        40,
        "exchange.unbind",
        &[
            ("ticket", Short),
            ("destination", ShortString),
            ("source", ShortString),
            ("routing-key", ShortString),
            ("no-wait", Bits(1)),
            ("arguments", Table),
        ],
    ),
    // 51, not 41: RabbitMQ's codegen numbers it so and every client follows.
    method(40, 51, "exchange.unbind-ok", &[]),
    // queue (50)
    method(
        50,
        10,
        "queue.declare",
        &[("ticket", Short), ("queue", ShortString), ("flags", Bits(5)), ("arguments", Table)],
    ),
    method(50, 11, "queue.declare-ok", &[("queue", ShortString), ("message-count", Long), ("consumer-count", Long)]),
    method(
        50,
        20,
        "queue.bind",
        &[
            ("ticket", Short),
            ("queue", ShortString),
            ("exchange", ShortString),
            ("routing-key", ShortString),
            ("no-wait", Bits(1)),
            ("arguments", Table),
        ],
    ),
    method(50, 21, "queue.bind-ok", &[]),
    method(50, 30, "queue.purge", &[("ticket", Short), ("queue", ShortString), ("no-wait", Bits(1))]),
    method(50, 31, "queue.purge-ok", &[("message-count", Long)]),
    method(50, 40, "queue.delete", &[("ticket", Short), ("queue", ShortString), ("flags", Bits(3))]),
    method(50, 41, "queue.delete-ok", &[("message-count", Long)]),
    method(
        50,
        50,
        "queue.unbind",
        &[
            ("ticket", Short),
            ("queue", ShortString),
            ("exchange", ShortString),
            ("routing-key", ShortString),
            ("arguments", Table),
        ],
    ),
    method(50, 51, "queue.unbind-ok", &[]),
    // basic (60)
    method(60, 10, "basic.qos", &[("prefetch-size", Long), ("prefetch-count", Short), ("global", Bits(1))]),
    method(60, 11, "basic.qos-ok", &[]),
    method(
        60,
        20,
        "basic.consume",
        &[
            ("ticket", Short),
            ("queue", ShortString),
            ("consumer-tag", ShortString),
            ("flags", Bits(4)),
            ("arguments", Table),
        ],
    ),
    method(60, 21, "basic.consume-ok", &[("consumer-tag", ShortString)]),
    method(60, 30, "basic.cancel", &[("consumer-tag", ShortString), ("no-wait", Bits(1))]),
    method(60, 31, "basic.cancel-ok", &[("consumer-tag", ShortString)]),
    method(
        60,
        METHOD_BASIC_PUBLISH,
        "basic.publish",
        &[("ticket", Short), ("exchange", ShortString), ("routing-key", ShortString), ("flags", Bits(2))],
    ),
    method(
        60,
        METHOD_BASIC_RETURN,
        "basic.return",
        &[("reply-code", Short), ("reply-text", ShortString), ("exchange", ShortString), ("routing-key", ShortString)],
    ),
    method(
        60,
        METHOD_BASIC_DELIVER,
        "basic.deliver",
        &[
            ("consumer-tag", ShortString),
            ("delivery-tag", LongLong),
            ("redelivered", Bits(1)),
            ("exchange", ShortString),
            ("routing-key", ShortString),
        ],
    ),
    method(60, 70, "basic.get", &[("ticket", Short), ("queue", ShortString), ("no-ack", Bits(1))]),
    method(
        60,
        METHOD_BASIC_GET_OK,
        "basic.get-ok",
        &[
            ("delivery-tag", LongLong),
            ("redelivered", Bits(1)),
            ("exchange", ShortString),
            ("routing-key", ShortString),
            ("message-count", Long),
        ],
    ),
    method(60, 72, "basic.get-empty", &[("cluster-id", ShortString)]),
    method(60, METHOD_BASIC_ACK, "basic.ack", &[("delivery-tag", LongLong), ("multiple", Bits(1))]),
    method(60, METHOD_BASIC_REJECT, "basic.reject", &[("delivery-tag", LongLong), ("requeue", Bits(1))]),
    method(60, 100, "basic.recover-async", &[("requeue", Bits(1))]),
    method(60, 110, "basic.recover", &[("requeue", Bits(1))]),
    method(60, 111, "basic.recover-ok", &[]),
    method(60, METHOD_BASIC_NACK, "basic.nack", &[("delivery-tag", LongLong), ("flags", Bits(2))]),
    // tx (90)
    method(90, 10, "tx.select", &[]),
    method(90, 11, "tx.select-ok", &[]),
    method(90, 20, "tx.commit", &[]),
    method(90, 21, "tx.commit-ok", &[]),
    method(90, 30, "tx.rollback", &[]),
    method(90, 31, "tx.rollback-ok", &[]),
    // confirm (85)
    method(85, 10, "confirm.select", &[("no-wait", Bits(1))]),
    method(85, 11, "confirm.select-ok", &[]),
];

/// The basic-class content properties, in flag-bit order from bit 15 down to bit 2
/// (AMQP-NOTES §3.1 "Content assembly").
pub(crate) static BASIC_PROPERTIES: [Field; 14] = [
    ("content-type", ShortString),
    ("content-encoding", ShortString),
    ("headers", Table),
    ("delivery-mode", Octet),
    ("priority", Octet),
    ("correlation-id", ShortString),
    ("reply-to", ShortString),
    ("expiration", ShortString),
    ("message-id", ShortString),
    ("timestamp", Timestamp),
    ("type", ShortString),
    ("user-id", ShortString),
    ("app-id", ShortString),
    ("cluster-id", ShortString),
];

/// The schema of `class_id`.`method_id`, if Weir knows the method.
pub(crate) fn lookup(class_id: u16, method_id: u16) -> Option<&'static MethodSchema> {
    METHODS.iter().find(|schema| schema.class_id == class_id && schema.method_id == method_id)
}

/// True if Weir knows the class at all (to word the 540 reply text).
pub(crate) fn class_is_known(class_id: u16) -> bool {
    METHODS.iter().any(|schema| schema.class_id == class_id)
}

/// The RabbitMQ-style name of a method, or `None` if unknown.
#[must_use]
pub fn method_name(class_id: u16, method_id: u16) -> Option<&'static str> {
    lookup(class_id, method_id).map(|schema| schema.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        for (index, schema) in METHODS.iter().enumerate() {
            for other in &METHODS[index + 1..] {
                assert!(
                    (schema.class_id, schema.method_id) != (other.class_id, other.method_id),
                    "duplicate {}",
                    schema.name
                );
            }
        }
    }

    #[test]
    fn lookup_finds_known_and_rejects_unknown() {
        assert_eq!(method_name(60, 40), Some("basic.publish"));
        assert_eq!(method_name(40, 51), Some("exchange.unbind-ok"));
        assert_eq!(method_name(40, 41), None);
        assert!(class_is_known(85));
        assert!(!class_is_known(70));
    }
}

//! Round trip of every method a broker receives or sends: encoded with
//! [`encode_method`], compared byte for byte with `amq-protocol`'s own `gen_frame`, decoded
//! with [`decode_frame`] and with `amq-protocol`'s `parse_frame`, and compared with the
//! original. Every boolean flag is also tested alone (trap #11: flags of fields with dashes,
//! such as `auto_delete` and `no_wait`, were broken server-side in `amq-protocol` before).
//!
//! Because `decode_frame` validates each payload against Weir's own method schema before
//! `amq-protocol` parses it, this also proves the schema matches `amq-protocol`.

mod common;

use bytes::BytesMut;
use common::{decode_all, sample_table};
use weir_amqp_codec::amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use weir_amqp_codec::amq_protocol::protocol::{
    access, basic, channel, confirm, connection, exchange, queue, tx, AMQPClass,
};
use weir_amqp_codec::amq_protocol::types::{FieldTable, LongString};
use weir_amqp_codec::{encode_method, method_name, Frame, FRAME_MIN_SIZE};

const CHANNEL: u16 = 7;
/// Large enough for the sample tables.
const FRAME_MAX: u32 = 131_072;

fn amq_protocol_bytes(channel: u16, method: &AMQPClass) -> Vec<u8> {
    let frame = AMQPFrame::Method(channel, method.clone());
    let generated = gen_frame(&frame)(WriteContext::from(Vec::new()));
    generated.expect("amq-protocol generates").into_inner().0
}

/// Encodes, cross-checks against amq-protocol both ways, decodes, compares.
fn assert_round_trip(method: AMQPClass) {
    let mut out = BytesMut::new();
    encode_method(&mut out, CHANNEL, &method);
    assert_eq!(
        &out[..],
        &amq_protocol_bytes(CHANNEL, &method)[..],
        "encode_method differs from amq-protocol for {method:?}"
    );
    let (rest, parsed) = parse_frame(&out[..]).expect("amq-protocol parses our bytes");
    assert!(rest.is_empty());
    assert_eq!(parsed, AMQPFrame::Method(CHANNEL, method.clone()));

    let frames = decode_all(&out, FRAME_MAX).unwrap_or_else(|error| panic!("decode of {method:?} failed: {error}"));
    let [Frame::Method { channel, class_id, method_id, method: decoded }] = &frames[..] else {
        panic!("expected one method frame, got {frames:?}");
    };
    assert_eq!(*channel, CHANNEL);
    assert_eq!(*class_id, method.get_amqp_class_id());
    assert_eq!(*method_id, method.get_amqp_method_id());
    assert!(method_name(*class_id, *method_id).is_some());
    assert_eq!(decoded, &method);
}

/// Round-trips `base` with all flags off, each flag alone, and all flags on.
fn assert_flags_round_trip<T: Clone>(base: T, flags: &[fn(&mut T)], wrap: impl Fn(T) -> AMQPClass) {
    assert_round_trip(wrap(base.clone()));
    let mut all = base.clone();
    for set in flags {
        let mut one = base.clone();
        set(&mut one);
        assert_round_trip(wrap(one));
        set(&mut all);
    }
    assert_round_trip(wrap(all));
}

fn connection_method(method: connection::AMQPMethod) -> AMQPClass {
    AMQPClass::Connection(method)
}

#[test]
fn connection_methods_round_trip() {
    use connection::AMQPMethod as M;
    let mut capabilities = FieldTable::default();
    capabilities.insert("publisher_confirms".into(), weir_amqp_codec::amq_protocol::types::AMQPValue::Boolean(true));
    let mut server_properties = sample_table();
    server_properties
        .insert("capabilities".into(), weir_amqp_codec::amq_protocol::types::AMQPValue::FieldTable(capabilities));
    for method in [
        M::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties.clone(),
            mechanisms: LongString::from("AMQPLAIN PLAIN"),
            locales: LongString::from("en_US"),
        }),
        M::StartOk(connection::StartOk {
            client_properties: server_properties,
            mechanism: "PLAIN".into(),
            response: LongString::from(b"\0guest\0guest".to_vec()),
            locale: "en_US".into(),
        }),
        M::Secure(connection::Secure { challenge: LongString::from(b"\x01\x02challenge".to_vec()) }),
        M::SecureOk(connection::SecureOk { response: LongString::from(b"answer\0".to_vec()) }),
        M::Tune(connection::Tune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 }),
        M::TuneOk(connection::TuneOk { channel_max: 2047, frame_max: FRAME_MIN_SIZE, heartbeat: 0 }),
        M::Open(connection::Open { virtual_host: "/".into() }),
        M::OpenOk(connection::OpenOk {}),
        M::Close(connection::Close {
            reply_code: 320,
            reply_text: "CONNECTION_FORCED - broker forced connection closure".into(),
            class_id: 50,
            method_id: 10,
        }),
        M::CloseOk(connection::CloseOk {}),
        M::Blocked(connection::Blocked { reason: "low on memory".into() }),
        M::Unblocked(connection::Unblocked {}),
        M::UpdateSecret(connection::UpdateSecret { new_secret: LongString::from("token"), reason: "refresh".into() }),
        M::UpdateSecretOk(connection::UpdateSecretOk {}),
    ] {
        assert_round_trip(connection_method(method));
    }
}

#[test]
fn channel_methods_round_trip() {
    use channel::AMQPMethod as M;
    let wrap = AMQPClass::Channel;
    for method in [
        M::Open(channel::Open {}),
        M::OpenOk(channel::OpenOk {}),
        M::Close(channel::Close { reply_code: 0, reply_text: "".into(), class_id: 0, method_id: 0 }),
        M::Close(channel::Close {
            reply_code: 404,
            reply_text: "NOT_FOUND - no queue 'q' in vhost '/'".into(),
            class_id: 50,
            method_id: 10,
        }),
        M::CloseOk(channel::CloseOk {}),
    ] {
        assert_round_trip(wrap(method));
    }
    assert_flags_round_trip(channel::Flow::default(), &[|m| m.active = true], |m| wrap(M::Flow(m)));
    assert_flags_round_trip(channel::FlowOk::default(), &[|m| m.active = true], |m| wrap(M::FlowOk(m)));
}

#[test]
fn access_methods_round_trip() {
    use access::AMQPMethod as M;
    assert_flags_round_trip(
        access::Request { realm: "/data".into(), ..Default::default() },
        &[|m| m.exclusive = true, |m| m.passive = true, |m| m.active = true, |m| m.write = true, |m| m.read = true],
        |m| AMQPClass::Access(M::Request(m)),
    );
    assert_round_trip(AMQPClass::Access(M::RequestOk(access::RequestOk {})));
}

#[test]
fn exchange_methods_round_trip() {
    use exchange::AMQPMethod as M;
    let wrap = AMQPClass::Exchange;
    assert_flags_round_trip(
        exchange::Declare {
            exchange: "celeryev".into(),
            kind: "topic".into(),
            arguments: sample_table(),
            ..Default::default()
        },
        &[
            |m| m.passive = true,
            |m| m.durable = true,
            |m| m.auto_delete = true,
            |m| m.internal = true,
            |m| m.nowait = true,
        ],
        |m| wrap(M::Declare(m)),
    );
    assert_flags_round_trip(
        exchange::Delete { exchange: "x".into(), ..Default::default() },
        &[|m| m.if_unused = true, |m| m.nowait = true],
        |m| wrap(M::Delete(m)),
    );
    assert_flags_round_trip(
        exchange::Bind {
            destination: "d".into(),
            source: "s".into(),
            routing_key: "a.*.b".into(),
            arguments: sample_table(),
            ..Default::default()
        },
        &[|m| m.nowait = true],
        |m| wrap(M::Bind(m)),
    );
    assert_flags_round_trip(
        exchange::Unbind {
            destination: "d".into(),
            source: "s".into(),
            routing_key: "#".into(),
            arguments: FieldTable::default(),
            ..Default::default()
        },
        &[|m| m.nowait = true],
        |m| wrap(M::Unbind(m)),
    );
    for method in [
        M::DeclareOk(exchange::DeclareOk {}),
        M::DeleteOk(exchange::DeleteOk {}),
        M::BindOk(exchange::BindOk {}),
        M::UnbindOk(exchange::UnbindOk {}),
    ] {
        assert_round_trip(wrap(method));
    }
}

#[test]
fn queue_methods_round_trip() {
    use queue::AMQPMethod as M;
    let wrap = AMQPClass::Queue;
    assert_flags_round_trip(
        queue::Declare { queue: "celery".into(), arguments: sample_table(), ..Default::default() },
        &[
            |m| m.passive = true,
            |m| m.durable = true,
            |m| m.exclusive = true,
            |m| m.auto_delete = true,
            |m| m.nowait = true,
        ],
        |m| wrap(M::Declare(m)),
    );
    assert_flags_round_trip(
        queue::Bind {
            queue: "q".into(),
            exchange: "amq.topic".into(),
            routing_key: "worker.#".into(),
            arguments: sample_table(),
            ..Default::default()
        },
        &[|m| m.nowait = true],
        |m| wrap(M::Bind(m)),
    );
    assert_flags_round_trip(queue::Purge { queue: "q".into(), ..Default::default() }, &[|m| m.nowait = true], |m| {
        wrap(M::Purge(m))
    });
    assert_flags_round_trip(
        queue::Delete { queue: "q".into(), ..Default::default() },
        &[|m| m.if_unused = true, |m| m.if_empty = true, |m| m.nowait = true],
        |m| wrap(M::Delete(m)),
    );
    for method in [
        M::DeclareOk(queue::DeclareOk {
            queue: "amq.gen-JzTY20BRgKO-HjmUJj0wLg".into(),
            message_count: 42,
            consumer_count: 3,
        }),
        M::BindOk(queue::BindOk {}),
        M::Unbind(queue::Unbind {
            queue: "q".into(),
            exchange: "x".into(),
            routing_key: "k".into(),
            arguments: sample_table(),
        }),
        M::UnbindOk(queue::UnbindOk {}),
        M::PurgeOk(queue::PurgeOk { message_count: 9 }),
        M::DeleteOk(queue::DeleteOk { message_count: u32::MAX }),
    ] {
        assert_round_trip(wrap(method));
    }
}

#[test]
fn basic_methods_round_trip() {
    use basic::AMQPMethod as M;
    let wrap = AMQPClass::Basic;
    assert_flags_round_trip(basic::Qos { prefetch_count: 8, ..Default::default() }, &[|m| m.global = true], |m| {
        wrap(M::Qos(m))
    });
    assert_flags_round_trip(
        basic::Consume {
            queue: "celery".into(),
            consumer_tag: "ctag-1".into(),
            arguments: sample_table(),
            ..Default::default()
        },
        &[|m| m.no_local = true, |m| m.no_ack = true, |m| m.exclusive = true, |m| m.nowait = true],
        |m| wrap(M::Consume(m)),
    );
    assert_flags_round_trip(
        basic::Cancel { consumer_tag: "ctag-1".into(), ..Default::default() },
        &[|m| m.nowait = true],
        |m| wrap(M::Cancel(m)),
    );
    assert_flags_round_trip(
        basic::Publish { exchange: "celery".into(), routing_key: "celery".into(), ..Default::default() },
        &[|m| m.mandatory = true, |m| m.immediate = true],
        |m| wrap(M::Publish(m)),
    );
    assert_flags_round_trip(
        basic::Deliver {
            consumer_tag: "amq.ctag-abc".into(),
            delivery_tag: u64::MAX,
            exchange: "".into(),
            routing_key: "q".into(),
            ..Default::default()
        },
        &[|m| m.redelivered = true],
        |m| wrap(M::Deliver(m)),
    );
    assert_flags_round_trip(basic::Get { queue: "q".into(), ..Default::default() }, &[|m| m.no_ack = true], |m| {
        wrap(M::Get(m))
    });
    assert_flags_round_trip(
        basic::GetOk {
            delivery_tag: 2,
            exchange: "x".into(),
            routing_key: "k".into(),
            message_count: 5,
            ..Default::default()
        },
        &[|m| m.redelivered = true],
        |m| wrap(M::GetOk(m)),
    );
    assert_flags_round_trip(
        basic::Ack { delivery_tag: 1 << 40, ..Default::default() },
        &[|m| m.multiple = true],
        |m| wrap(M::Ack(m)),
    );
    assert_flags_round_trip(basic::Reject { delivery_tag: 3, ..Default::default() }, &[|m| m.requeue = true], |m| {
        wrap(M::Reject(m))
    });
    assert_flags_round_trip(basic::RecoverAsync::default(), &[|m| m.requeue = true], |m| wrap(M::RecoverAsync(m)));
    assert_flags_round_trip(basic::Recover::default(), &[|m| m.requeue = true], |m| wrap(M::Recover(m)));
    assert_flags_round_trip(
        basic::Nack { delivery_tag: 0, ..Default::default() },
        &[|m| m.multiple = true, |m| m.requeue = true],
        |m| wrap(M::Nack(m)),
    );
    for method in [
        M::QosOk(basic::QosOk {}),
        M::ConsumeOk(basic::ConsumeOk { consumer_tag: "amq.ctag-1".into() }),
        M::CancelOk(basic::CancelOk { consumer_tag: "amq.ctag-1".into() }),
        M::Return(basic::Return {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "x".into(),
            routing_key: "nowhere".into(),
        }),
        M::GetEmpty(basic::GetEmpty {}),
        M::RecoverOk(basic::RecoverOk {}),
    ] {
        assert_round_trip(wrap(method));
    }
}

#[test]
fn tx_and_confirm_methods_round_trip() {
    use tx::AMQPMethod as T;
    for method in [
        T::Select(tx::Select {}),
        T::SelectOk(tx::SelectOk {}),
        T::Commit(tx::Commit {}),
        T::CommitOk(tx::CommitOk {}),
        T::Rollback(tx::Rollback {}),
        T::RollbackOk(tx::RollbackOk {}),
    ] {
        assert_round_trip(AMQPClass::Tx(method));
    }
    use confirm::AMQPMethod as C;
    assert_flags_round_trip(confirm::Select::default(), &[|m| m.nowait = true], |m| AMQPClass::Confirm(C::Select(m)));
    assert_round_trip(AMQPClass::Confirm(C::SelectOk(confirm::SelectOk {})));
}

/// Pins the bit positions on the wire, independently of amq-protocol, for the flags whose
/// names carry dashes in the spec.
#[test]
fn dashed_flags_sit_on_the_spec_bits() {
    let flag_octet = |method: AMQPClass| {
        let mut out = BytesMut::new();
        encode_method(&mut out, 1, &method);
        // frame header 7, ids 4, ticket 2, queue name "q" 2 → flags at 15
        out[15]
    };
    let declare = |set: fn(&mut queue::Declare)| {
        let mut method = queue::Declare { queue: "q".into(), ..Default::default() };
        set(&mut method);
        AMQPClass::Queue(queue::AMQPMethod::Declare(method))
    };
    assert_eq!(flag_octet(declare(|m| m.passive = true)), 0b0_0001);
    assert_eq!(flag_octet(declare(|m| m.durable = true)), 0b0_0010);
    assert_eq!(flag_octet(declare(|m| m.exclusive = true)), 0b0_0100);
    assert_eq!(flag_octet(declare(|m| m.auto_delete = true)), 0b0_1000);
    assert_eq!(flag_octet(declare(|m| m.nowait = true)), 0b1_0000);
}

//! The first slice of AMQP, driven by a real client (lapin) against the real binary:
//! declare, publish with and without confirms, consume, get, ack, nack and reject with
//! requeue, durability across a clean restart, and the RabbitMQ reply codes on mistakes.

mod common;

use common::{durable, next_delivery, persistent, runtime, Broker};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

async fn connect(broker: &Broker) -> (Connection, Channel) {
    let connection = Connection::connect(&broker.url(), ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

async fn publish(channel: &Channel, queue: &str, body: &[u8], properties: BasicProperties) -> Confirmation {
    channel
        .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, properties)
        .await
        .expect("publish")
        .await
        .expect("confirm")
}

/// Publishes the one-byte messages `[0]`, `[1]`, … `[count - 1]` to `queue`.
async fn publish_numbered(channel: &Channel, queue: &str, count: u8) {
    for i in 0..count {
        publish(channel, queue, &[i], BasicProperties::default()).await;
    }
}

#[test]
fn publish_confirm_consume_ack_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let (connection, channel) = connect(&broker).await;
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let queue = channel.queue_declare("orders".into(), durable(), FieldTable::default()).await.unwrap();
        assert_eq!(queue.message_count(), 0);
        for i in 0..10 {
            let confirmation = publish(&channel, "orders", format!("m{i}").as_bytes(), persistent()).await;
            assert!(confirmation.is_ack(), "message {i} confirmed");
        }
        // A transient message in a durable queue does not survive a restart (RabbitMQ rule).
        publish(&channel, "orders", b"transient", BasicProperties::default()).await;
        let queue = channel
            .queue_declare(
                "orders".into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(queue.message_count(), 11);
        connection.close(200, "bye".into()).await.unwrap();
    });
    broker.restart();
    runtime().block_on(async {
        let (connection, channel) = connect(&broker).await;
        channel.basic_qos(5, BasicQosOptions::default()).await.unwrap();
        let mut consumer = channel
            .basic_consume("orders".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        for i in 0..10 {
            let delivery = next_delivery(&mut consumer).await;
            assert_eq!(delivery.data, format!("m{i}").as_bytes(), "FIFO order after restart");
            assert_eq!(delivery.properties.delivery_mode(), &Some(2));
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        let queue = channel
            .queue_declare(
                "orders".into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(queue.message_count(), 0, "the transient message did not survive");
        connection.close(200, "bye".into()).await.unwrap();
    });
    broker.restart();
    runtime().block_on(async {
        let (_connection, channel) = connect(&broker).await;
        let got = channel.basic_get("orders".into(), BasicGetOptions::default()).await.unwrap();
        assert!(got.is_none(), "acked messages stay acked across restarts");
    });
}

#[test]
fn get_nack_reject_requeue_and_redelivered_flag() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let (_connection, channel) = connect(&broker).await;
        channel.queue_declare("work".into(), durable(), FieldTable::default()).await.unwrap();
        assert!(channel.basic_get("work".into(), BasicGetOptions::default()).await.unwrap().is_none());
        for body in [&b"a"[..], b"b", b"c"] {
            channel
                .basic_publish("".into(), "work".into(), BasicPublishOptions::default(), body, persistent())
                .await
                .unwrap();
        }
        let a = channel.basic_get("work".into(), BasicGetOptions::default()).await.unwrap().expect("a");
        assert_eq!(a.delivery.data, b"a");
        assert!(!a.delivery.redelivered);
        assert_eq!(a.message_count, 2);
        a.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
        let again = channel.basic_get("work".into(), BasicGetOptions::default()).await.unwrap().expect("a again");
        assert_eq!(again.delivery.data, b"a", "requeued to its original place");
        assert!(again.delivery.redelivered);
        again.delivery.reject(BasicRejectOptions { requeue: false }).await.unwrap();
        let b = channel.basic_get("work".into(), BasicGetOptions::default()).await.unwrap().expect("b");
        assert_eq!(b.delivery.data, b"b");
        b.delivery.reject(BasicRejectOptions { requeue: true }).await.unwrap();
        let b = channel.basic_get("work".into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("b");
        assert!(b.delivery.redelivered);
        let purged = channel.queue_purge("work".into(), QueuePurgeOptions::default()).await.unwrap();
        assert_eq!(purged, 1, "only c was left");
        let deleted = channel.queue_delete("work".into(), QueueDeleteOptions::default()).await.unwrap();
        assert_eq!(deleted, 0);
    });
}

#[test]
fn unacked_messages_return_when_the_channel_closes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let (connection, channel) = connect(&broker).await;
        channel.queue_declare("q".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        publish_numbered(&channel, "q", 5).await;
        let mut consumer = channel
            .basic_consume("q".into(), "c1".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        for _ in 0..5 {
            next_delivery(&mut consumer).await;
        }
        channel.close(200, "done".into()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(
                "q".into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(queue.message_count(), 5);
        let first = channel.basic_get("q".into(), BasicGetOptions { no_ack: true }).await.unwrap().unwrap();
        assert_eq!(first.delivery.data, [0]);
        assert!(first.delivery.redelivered);
    });
}

#[test]
fn prefetch_limits_unacked_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let (_connection, channel) = connect(&broker).await;
        channel.queue_declare("p".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        publish_numbered(&channel, "p", 10).await;
        channel.basic_qos(3, BasicQosOptions::default()).await.unwrap();
        let mut consumer = channel
            .basic_consume("p".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(next_delivery(&mut consumer).await);
        }
        let fourth = tokio::time::timeout(std::time::Duration::from_millis(300), consumer.next()).await;
        assert!(fourth.is_err(), "a fourth delivery would exceed prefetch 3");
        held.remove(0).ack(BasicAckOptions::default()).await.unwrap();
        let fourth = next_delivery(&mut consumer).await;
        assert_eq!(fourth.data, [3]);
    });
}

#[test]
fn mistakes_get_rabbitmq_reply_codes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let (connection, channel) = connect(&broker).await;
        let missing = channel
            .queue_declare(
                "nope".into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("404") || format!("{missing:?}").contains("NOT_FOUND"), "{missing:?}");

        let channel = connection.create_channel().await.unwrap();
        let reserved = channel.queue_declare("amq.mine".into(), durable(), FieldTable::default()).await.unwrap_err();
        assert!(format!("{reserved:?}").contains("ACCESS_REFUSED"), "{reserved:?}");

        let channel = connection.create_channel().await.unwrap();
        channel.queue_declare("d".into(), durable(), FieldTable::default()).await.unwrap();
        let inequivalent =
            channel.queue_declare("d".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap_err();
        assert!(format!("{inequivalent:?}").contains("PRECONDITION_FAILED"), "{inequivalent:?}");

        // The connection is still usable after channel-level errors.
        let channel = connection.create_channel().await.unwrap();
        let named = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert!(named.name().as_str().starts_with("amq.gen-"), "{}", named.name());
    });
}

#[test]
fn acking_a_cancelled_consumers_delivery_does_not_free_a_new_consumers_prefetch() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let (_connection, channel) = connect(&broker).await;
        channel.queue_declare("r".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        publish_numbered(&channel, "r", 3).await;
        channel.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut first = channel
            .basic_consume("r".into(), "same-tag".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        let old = next_delivery(&mut first).await;
        channel.basic_cancel("same-tag".into(), lapin::options::BasicCancelOptions::default()).await.unwrap();
        let mut second = channel
            .basic_consume("r".into(), "same-tag".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        let held = next_delivery(&mut second).await;
        assert_eq!(held.data, [1]);
        // Acking the cancelled consumer's delivery frees nothing for the new consumer.
        old.ack(BasicAckOptions::default()).await.unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_millis(300), second.next()).await;
        assert!(third.is_err(), "prefetch 1 with one unacked delivery: nothing more may arrive");
        held.ack(BasicAckOptions::default()).await.unwrap();
        assert_eq!(next_delivery(&mut second).await.data, [2]);
    });
}

#[test]
fn consumer_priorities_and_single_active_consumer() {
    use lapin::types::AMQPValue;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let (_connection, channel) = connect(&broker).await;
        channel.queue_declare("prio".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        channel.basic_qos(2, BasicQosOptions::default()).await.unwrap();
        let with_priority = |p: i32| {
            let mut args = FieldTable::default();
            args.insert("x-priority".into(), AMQPValue::LongInt(p));
            args
        };
        let mut low = channel
            .basic_consume("prio".into(), "low".into(), BasicConsumeOptions::default(), with_priority(1))
            .await
            .unwrap();
        let mut high = channel
            .basic_consume("prio".into(), "high".into(), BasicConsumeOptions::default(), with_priority(10))
            .await
            .unwrap();
        publish_numbered(&channel, "prio", 3).await;
        // The high-priority consumer fills its prefetch first; only then the low one gets work.
        assert_eq!(next_delivery(&mut high).await.data, [0]);
        assert_eq!(next_delivery(&mut high).await.data, [1]);
        assert_eq!(next_delivery(&mut low).await.data, [2]);

        let mut sac = FieldTable::default();
        sac.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        channel.queue_declare("sac".into(), QueueDeclareOptions::default(), sac).await.unwrap();
        let channel = _connection.create_channel().await.unwrap();
        let mut first = channel
            .basic_consume(
                "sac".into(),
                "first".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut second = channel
            .basic_consume(
                "sac".into(),
                "second".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        publish_numbered(&channel, "sac", 3).await;
        for i in 0..3u8 {
            assert_eq!(next_delivery(&mut first).await.data, [i], "only the active consumer receives");
        }
        channel.basic_cancel("first".into(), lapin::options::BasicCancelOptions::default()).await.unwrap();
        channel
            .basic_publish("".into(), "sac".into(), BasicPublishOptions::default(), &[9], BasicProperties::default())
            .await
            .unwrap();
        assert_eq!(next_delivery(&mut second).await.data, [9], "the next consumer takes over");
    });
}

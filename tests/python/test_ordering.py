"""Ready-message order: RabbitMQ priorities (`x-max-priority`) and Tuxedo-style `x-queue-order`
(`fifo`, `lifo`, `priority`, `priority,lifo`), live, after requeue and across restarts."""
import pika
import pytest

from helpers import connect, drain


def publish_all(ch, queue, items, persistent=False):
    """items: (body, priority or None) pairs, published in order."""
    for body, priority in items:
        props = pika.BasicProperties(priority=priority, delivery_mode=2 if persistent else 1)
        ch.basic_publish("", queue, body.encode(), props)


MIXED = [("p1", 1), ("none", None), ("p5-a", 5), ("p9", 9), ("p5-b", 5), ("p200", 200), ("p0", 0)]
# Highest priority first, oldest first inside a priority; 200 counts as the maximum 10;
# no priority property counts as 0.
MIXED_BY_PRIORITY = ["p200", "p9", "p5-a", "p5-b", "p1", "none", "p0"]


def test_max_priority_delivers_highest_first(broker):
    conn, ch = connect(broker)
    ch.queue_declare("prio", arguments={"x-max-priority": 10})
    publish_all(ch, "prio", MIXED)
    assert drain(ch, "prio") == MIXED_BY_PRIORITY
    conn.close()


def test_queue_without_priorities_ignores_the_property(broker):
    conn, ch = connect(broker)
    ch.queue_declare("plain")
    publish_all(ch, "plain", MIXED)
    assert drain(ch, "plain") == [body for body, _ in MIXED]
    conn.close()


def test_consumer_receives_in_priority_order(broker):
    conn, ch = connect(broker)
    ch.queue_declare("prio", arguments={"x-max-priority": 10})
    publish_all(ch, "prio", MIXED)
    ch.basic_qos(prefetch_count=1)
    got = []

    def on_message(channel, method, _props, body):
        got.append(body.decode())
        channel.basic_ack(method.delivery_tag)
        if len(got) == len(MIXED):
            channel.stop_consuming()

    ch.basic_consume("prio", on_message)
    conn.call_later(10, ch.stop_consuming)
    ch.start_consuming()
    assert got == MIXED_BY_PRIORITY
    conn.close()


def test_requeued_messages_go_back_to_their_place(broker):
    conn, ch = connect(broker)
    ch.queue_declare("prio", arguments={"x-max-priority": 10})
    publish_all(ch, "prio", MIXED)
    first = ch.basic_get("prio")
    second = ch.basic_get("prio")
    assert [first[2], second[2]] == [b"p200", b"p9"]
    ch.basic_nack(second[0].delivery_tag, requeue=True)
    ch.basic_nack(first[0].delivery_tag, requeue=True)
    method, _, body = ch.basic_get("prio", auto_ack=True)
    assert body == b"p200" and method.redelivered
    assert drain(ch, "prio") == MIXED_BY_PRIORITY[1:]
    conn.close()


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_priority_order_survives_a_restart(broker, stop):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("prio", durable=True, arguments={"x-max-priority": 10})
    publish_all(ch, "prio", MIXED, persistent=True)
    conn.close()
    if stop == "kill9":
        broker.kill9()  # recovery replays the log
    else:
        broker.stop()  # a final checkpoint: recovery loads the snapshot
    broker.start()
    conn, ch = connect(broker)
    assert drain(ch, "prio") == MIXED_BY_PRIORITY
    conn.close()


def test_lifo_delivers_newest_first(broker):
    conn, ch = connect(broker)
    ch.queue_declare("stack", arguments={"x-queue-order": "lifo"})
    publish_all(ch, "stack", MIXED)
    assert drain(ch, "stack") == [body for body, _ in reversed(MIXED)]
    conn.close()


def test_priority_then_lifo(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q", arguments={"x-queue-order": "priority,lifo"})
    publish_all(ch, "q", MIXED)
    # No x-max-priority: levels 0-9, so 200 counts as 9 and is the newest of the two at 9.
    assert drain(ch, "q") == ["p200", "p9", "p5-b", "p5-a", "p1", "p0", "none"]
    conn.close()


def test_drop_head_drops_the_oldest_whatever_its_priority(broker):
    conn, ch = connect(broker)
    ch.queue_declare("bounded", arguments={"x-max-priority": 5, "x-max-length": 2})
    publish_all(ch, "bounded", [("old-high", 5), ("mid-low", 1), ("new-low", 1)])
    assert drain(ch, "bounded") == ["mid-low", "new-low"]
    conn.close()


@pytest.mark.parametrize(
    "order, why",
    [
        ("random", "unknown ordering key"),
        ("lifo,priority", "nothing can follow 'lifo'"),
        ("time", "not supported yet"),
        ("priority,expiration", "not supported yet"),
    ],
)
def test_bad_queue_order_is_406(broker, order, why):
    conn, ch = connect(broker)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("q", arguments={"x-queue-order": order})
    assert err.value.reply_code == 406
    assert "x-queue-order" in err.value.reply_text and why in err.value.reply_text
    conn.close()


def test_max_priority_above_255_is_406(broker):
    conn, ch = connect(broker)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("q", arguments={"x-max-priority": 256})
    assert err.value.reply_code == 406
    conn.close()

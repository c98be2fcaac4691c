"""Fair dispatch across queues (`x-weight`): a channel consuming several queues under one
channel-wide prefetch gets messages from each in proportion to its weight, and none starves."""
import pika
import pytest

from helpers import connect, pump_while


def test_weighted_round_robin_under_a_channel_wide_prefetch(broker):
    conn, ch = connect(broker)
    ch.queue_declare("light", arguments={"x-weight": 1})
    ch.queue_declare("heavy", arguments={"x-weight": 3})
    for n in range(60):
        ch.basic_publish("", "light", b"l")
        ch.basic_publish("", "heavy", b"h")
    ch.basic_qos(prefetch_count=1, global_qos=True)
    order = []

    def take(c, method, properties, body):
        order.append(body.decode())
        c.basic_ack(method.delivery_tag)

    # Light first: before fairness it would have had the channel to itself until empty.
    ch.basic_consume("light", take)
    ch.basic_consume("heavy", take)
    pump_while(conn, lambda: len(order) < 40, timeout=10)
    first = order[:40]
    assert 25 <= first.count("h") <= 35, "".join(first)
    assert first.count("l") >= 5, "the light queue is not starved"
    conn.close()


def test_bad_weights_are_406(broker):
    conn, _ = connect(broker)
    for weight in (0, 1001, "3"):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            conn.channel().queue_declare("q", arguments={"x-weight": weight})
        assert closed.value.reply_code == 406
    conn.close()

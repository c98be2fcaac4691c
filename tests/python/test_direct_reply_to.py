"""Direct reply-to (amq.rabbitmq.reply-to): RPC replies without a reply queue, as RabbitMQ."""
import pika
import pytest

from helpers import connect, depth

REPLY_TO = "amq.rabbitmq.reply-to"


def test_rpc_round_trip_through_direct_reply_to(broker):
    client, ch = connect(broker)
    ch.queue_declare("rpc")
    replies = []
    ch.basic_consume(REPLY_TO, lambda c, m, p, body: replies.append((p.correlation_id, body)), auto_ack=True)
    ch.basic_publish("", "rpc", b"2+3", pika.BasicProperties(reply_to=REPLY_TO, correlation_id="req-1"))

    server, sch = connect(broker)
    method, props, body = sch.basic_get("rpc", auto_ack=True)
    assert body == b"2+3"
    assert props.reply_to.startswith(REPLY_TO + "."), "the broker rewrote reply_to to the channel's address"
    assert sch.queue_declare(props.reply_to, passive=True).method.consumer_count == 1
    sch.basic_publish("", props.reply_to, b"5", pika.BasicProperties(correlation_id=props.correlation_id))

    client.process_data_events(time_limit=2)
    assert replies == [("req-1", b"5")]
    server.close()
    client.close()


def test_reply_consumer_must_not_ack(broker):
    conn, ch = connect(broker)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=False)
    assert err.value.reply_code == 406
    conn.close()


def test_reply_to_without_a_reply_consumer_is_406(broker):
    conn, ch = connect(broker)
    ch.queue_declare("rpc")
    ch.basic_publish("", "rpc", b"x", pika.BasicProperties(reply_to=REPLY_TO))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("rpc", passive=True)
    assert err.value.reply_code == 406
    assert "fast reply consumer does not exist" in err.value.reply_text
    conn.close()


def test_reply_to_a_gone_consumer_is_dropped(broker):
    conn, ch = connect(broker)
    tag = ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    ch.queue_declare("rpc")
    ch.basic_publish("", "rpc", b"q", pika.BasicProperties(reply_to=REPLY_TO))
    address = ch.basic_get("rpc", auto_ack=True)[1].reply_to
    ch.basic_cancel(tag)
    ch.basic_publish("", address, b"late reply")  # silently dropped, as RabbitMQ does
    assert depth(ch, "rpc") == 0, "the channel is still open: the publish was not refused"
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare(address, passive=True)
    assert err.value.reply_code == 404
    conn.close()

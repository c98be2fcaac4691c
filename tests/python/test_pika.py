"""pika against Weir: the first slice of AMQP as a Python application uses it."""
import pika
import pytest


def declare(ch, name, **kw):
    return ch.queue_declare(queue=name, **kw)


def test_publish_with_confirms_consume_and_survive_restart(broker):
    conn = pika.BlockingConnection(broker.params())
    ch = conn.channel()
    ch.confirm_delivery()
    declare(ch, "tasks", durable=True)
    for i in range(20):
        # With confirms on, basic_publish raises unless the broker acked (after fsync).
        ch.basic_publish("", "tasks", f"task-{i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert declare(ch, "tasks", passive=True).method.message_count == 20
    conn.close()

    broker.restart()

    conn = pika.BlockingConnection(broker.params())
    ch = conn.channel()
    ch.basic_qos(prefetch_count=5)
    got = []
    for method, props, body in ch.consume("tasks", inactivity_timeout=5):
        if method is None:
            break
        got.append(body.decode())
        assert props.delivery_mode == 2
        ch.basic_ack(method.delivery_tag)
        if len(got) == 20:
            break
    ch.cancel()
    assert got == [f"task-{i}" for i in range(20)]
    conn.close()


def test_basic_get_nack_reject_requeue(broker):
    conn = pika.BlockingConnection(broker.params())
    ch = conn.channel()
    declare(ch, "jobs")
    assert ch.basic_get("jobs") == (None, None, None)
    for body in (b"one", b"two"):
        ch.basic_publish("", "jobs", body)
    method, _, body = ch.basic_get("jobs")
    assert body == b"one" and not method.redelivered and method.message_count == 1
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, _, body = ch.basic_get("jobs")
    assert body == b"one" and method.redelivered
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, _, body = ch.basic_get("jobs", auto_ack=True)
    assert body == b"two"
    assert ch.basic_get("jobs") == (None, None, None)
    conn.close()


def test_passive_declare_of_missing_queue_closes_channel_with_404(broker):
    conn = pika.BlockingConnection(broker.params())
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("missing", passive=True)
    assert err.value.reply_code == 404
    assert "NOT_FOUND" in err.value.reply_text
    # The connection survives a channel error.
    ch2 = conn.channel()
    declare(ch2, "fine")
    conn.close()


def test_unknown_delivery_tag_is_406(broker):
    conn = pika.BlockingConnection(broker.params())
    ch = conn.channel()
    declare(ch, "q")
    ch.basic_ack(delivery_tag=42)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        declare(ch, "q")  # the next synchronous call sees the close
    assert err.value.reply_code == 406
    conn.close()


def test_wrong_password_is_refused_with_403(broker):
    params = broker.params()
    params.credentials = pika.PlainCredentials("guest", "wrong")
    params.connection_attempts = 1
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params)

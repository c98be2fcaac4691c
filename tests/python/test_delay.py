"""Delayed delivery: `x-delay` (ms from now) and `x-deliver-at` (epoch ms) message headers.

A delayed message is durable, invisible until its time (never delivered early), released to
its place by arrival, released at once after a restart if its time passed meanwhile, and can
expire while it waits."""
import time

import pika
import pytest

from helpers import connect, depth, drain


def delayed(ms=None, at=None, persistent=False, **extra):
    headers = {}
    if ms is not None:
        headers["x-delay"] = ms
    if at is not None:
        headers["x-deliver-at"] = at
    return pika.BasicProperties(headers=headers, delivery_mode=2 if persistent else 1, **extra)


def wait_for_get(ch, queue, timeout=10.0):
    """Poll basic.get until a message arrives; returns (body, seconds waited)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return body.decode(), time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"nothing arrived on {queue} within {timeout}s")


def test_delayed_message_is_invisible_until_its_time(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    sent = time.monotonic()
    ch.basic_publish("", "q", b"later", delayed(ms=700))
    ch.basic_publish("", "q", b"now")
    assert drain(ch, "q") == ["now"], "the delayed message is not ready yet"
    assert depth(ch, "q") == 0
    body, _ = wait_for_get(ch, "q")
    assert body == "later"
    assert time.monotonic() - sent >= 0.7, "never delivered before its time"
    conn.close()


def test_deliver_at_is_an_absolute_time(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    due = time.time() + 0.6
    ch.basic_publish("", "q", b"at", delayed(at=int(due * 1000)))
    ch.basic_publish("", "q", b"past", delayed(at=int((time.time() - 60) * 1000)))
    assert drain(ch, "q") == ["past"], "a time in the past means at once"
    body, _ = wait_for_get(ch, "q")
    assert body == "at" and time.time() >= due - 0.01
    conn.close()


def test_consumer_receives_a_delayed_message_when_it_is_due(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    got = []

    def on_message(channel, method, _props, body):
        got.append((body.decode(), time.monotonic()))
        channel.basic_ack(method.delivery_tag)
        channel.stop_consuming()

    ch.basic_consume("q", on_message)
    sent = time.monotonic()
    ch.basic_publish("", "q", b"tick", delayed(ms=500))
    conn.call_later(10, ch.stop_consuming)
    ch.start_consuming()
    assert [body for body, _ in got] == ["tick"]
    assert got[0][1] - sent >= 0.5
    conn.close()


def test_released_message_takes_its_place_by_arrival(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    ch.basic_publish("", "q", b"first-delayed", delayed(ms=400))
    ch.basic_publish("", "q", b"second")
    ch.basic_publish("", "q", b"third")
    assert ch.basic_get("q", auto_ack=True)[2] == b"second"
    time.sleep(0.6)
    assert drain(ch, "q") == ["first-delayed", "third"]
    conn.close()


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_delayed_message_survives_a_restart_and_waits_for_its_time(broker, stop):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True)
    sent = time.monotonic()
    ch.basic_publish("", "q", b"durable-later", delayed(ms=4000, persistent=True))
    conn.close()
    broker.kill9() if stop == "kill9" else broker.stop()
    broker.start()
    conn, ch = connect(broker)
    elapsed = time.monotonic() - sent
    assert elapsed < 3.5, f"the restart took {elapsed:.1f}s: too long to check the delay"
    assert drain(ch, "q") == [], "still delayed after the restart"
    body, _ = wait_for_get(ch, "q")
    assert body == "durable-later"
    assert time.monotonic() - sent >= 4.0
    conn.close()


def test_message_due_while_the_broker_was_down_goes_out_at_once(broker):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True)
    ch.basic_publish("", "q", b"overdue", delayed(ms=300, persistent=True))
    conn.close()
    broker.kill9()
    time.sleep(0.5)
    broker.start()
    conn, ch = connect(broker)
    body, _ = wait_for_get(ch, "q", timeout=2.0)
    assert body == "overdue"
    conn.close()


def test_delayed_message_can_expire_while_it_waits(broker):
    conn, ch = connect(broker)
    ch.exchange_declare("dlx", exchange_type="fanout")
    ch.queue_declare("dead")
    ch.queue_bind("dead", "dlx")
    ch.queue_declare("work", arguments={"x-dead-letter-exchange": "dlx"})
    ch.basic_publish("", "work", b"too-late", delayed(ms=5000, expiration="200"))
    method, props, body = None, None, None
    deadline = time.monotonic() + 5
    while method is None and time.monotonic() < deadline:
        method, props, body = ch.basic_get("dead", auto_ack=True)
        time.sleep(0.02)
    assert body == b"too-late"
    assert props.headers["x-death"][0]["reason"] == "expired"
    conn.close()


def test_purge_empties_delayed_messages_too(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    ch.basic_publish("", "q", b"a", delayed(ms=60000))
    ch.basic_publish("", "q", b"b")
    assert ch.queue_purge("q").method.message_count == 2
    conn.close()


@pytest.mark.parametrize(
    "headers",
    [{"x-delay": "soon"}, {"x-delay": True}, {"x-delay": 10, "x-deliver-at": 10}],
)
def test_invalid_delay_header_is_406(broker, headers):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    ch.basic_publish("", "q", b"x", pika.BasicProperties(headers=headers))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("q", passive=True)
    assert err.value.reply_code == 406
    conn.close()


def test_invalid_delay_header_in_a_transaction_is_406_at_publish(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    ch.tx_select()
    ch.basic_publish("", "q", b"x", pika.BasicProperties(headers={"x-delay": "soon"}))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.tx_commit()
    assert err.value.reply_code == 406
    # The broker is still there and the transaction left nothing behind.
    ch = conn.channel()
    assert depth(ch, "q") == 0
    conn.close()

"""Deduplication (`x-deduplication-window`) and recipient lists (`x-recipients`).

A publish whose message-id the queue took within its window is confirmed but not enqueued,
also after a crash; a publish with `x-recipients` reaches only the listed queues among those
the exchange routes to."""
import time

import pika
import pytest

from helpers import connect, depth, drain


def publish(ch, queue, body, message_id=None, **kw):
    ch.basic_publish("", queue, body, pika.BasicProperties(message_id=message_id, delivery_mode=2, **kw))


def test_a_second_publish_with_the_same_message_id_is_confirmed_and_not_enqueued(broker):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("orders", durable=True, arguments={"x-deduplication-window": 60000})
    ch.queue_declare("plain")
    publish(ch, "orders", b"first", "order-1")
    publish(ch, "orders", b"retry", "order-1")  # confirmed (no NackError), not enqueued
    publish(ch, "orders", b"other", "order-2")
    publish(ch, "orders", b"no id")
    publish(ch, "orders", b"no id again")
    publish(ch, "plain", b"a", "order-1")
    publish(ch, "plain", b"b", "order-1")  # no window: both stay
    assert drain(ch, "orders") == ["first", "other", "no id", "no id again"]
    assert drain(ch, "plain") == ["a", "b"]
    # Taken and gone: still a duplicate within the window.
    publish(ch, "orders", b"late retry", "order-1")
    assert depth(ch, "orders") == 0
    conn.close()


def test_the_window_passes(broker):
    conn, ch = connect(broker)
    ch.queue_declare("short", arguments={"x-deduplication-window": 300})
    publish(ch, "short", b"1", "same")
    publish(ch, "short", b"2", "same")
    time.sleep(0.4)
    publish(ch, "short", b"3", "same")
    assert drain(ch, "short") == ["1", "3"]
    conn.close()


def test_a_message_refused_by_a_full_queue_can_be_retried(broker):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("small", arguments={"x-deduplication-window": 60000, "x-max-length": 1,
                                         "x-overflow": "reject-publish"})
    publish(ch, "small", b"filler", "f")
    with pytest.raises(pika.exceptions.NackError):
        publish(ch, "small", b"wanted", "w")
    drain(ch, "small")
    publish(ch, "small", b"wanted", "w")
    assert drain(ch, "small") == ["wanted"], "the refused message was not remembered"
    conn.close()


@pytest.mark.parametrize("restart", ["clean", "kill9"])
def test_deduplication_survives_a_restart(broker, restart):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("orders", durable=True, arguments={"x-deduplication-window": 600000})
    publish(ch, "orders", b"first", "order-1")
    publish(ch, "orders", b"taken", "order-2")
    assert ch.basic_get("orders", auto_ack=True)[2] == b"first"
    # The get's removal is logged in its turn but answered before the fsync (as an ack is);
    # a durable declare answered after it shows it is on disk before the crash.
    ch.queue_declare("after-the-get", durable=True)
    if restart == "clean":
        broker.restart()
    else:
        broker.kill9()
        broker.start()
    conn, ch = connect(broker)
    ch.confirm_delivery()
    # The producer never saw its confirms and sends both again.
    publish(ch, "orders", b"first again", "order-1")
    publish(ch, "orders", b"taken again", "order-2")
    publish(ch, "orders", b"new", "order-3")
    assert drain(ch, "orders") == ["taken", "new"]
    conn.close()


def test_recipient_list_narrows_a_fanout(broker):
    conn, ch = connect(broker)
    ch.exchange_declare("news", "fanout")
    for name in ["alice", "bob", "carol"]:
        ch.queue_declare(name)
        ch.queue_bind(name, "news")
    ch.basic_publish("news", "", b"to all")
    ch.basic_publish("news", "", b"to two", pika.BasicProperties(headers={"x-recipients": ["alice", "carol", "nobody"]}))
    ch.basic_publish("news", "", b"to none", pika.BasicProperties(headers={"x-recipients": []}))
    assert drain(ch, "alice") == ["to all", "to two"]
    assert drain(ch, "bob") == ["to all"]
    assert drain(ch, "carol") == ["to all", "to two"]
    conn.close()


def test_a_bad_recipient_list_is_406(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    ch.basic_publish("", "q", b"x", pika.BasicProperties(headers={"x-recipients": "q"}))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.queue_declare("q", passive=True)
    assert closed.value.reply_code == 406
    conn.close()

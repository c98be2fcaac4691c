"""AMQP transactions (tx.select/commit/rollback) through pika."""
import pika
import pytest

from helpers import connect, depth


def test_publishes_wait_for_commit_and_rollback_forgets_them(broker):
    conn, ch = connect(broker)
    ch.queue_declare("orders", durable=True)
    ch.queue_declare("audit", durable=True)
    ch.tx_select()
    for i in range(3):
        ch.basic_publish("", "orders", f"rolled-back-{i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert depth(ch, "orders") == 0, "nothing is visible before the commit"
    ch.tx_rollback()
    assert depth(ch, "orders") == 0
    ch.basic_publish("", "orders", b"order-1", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", "audit", b"audit-1", pika.BasicProperties(delivery_mode=2))
    ch.tx_commit()
    assert depth(ch, "orders") == 1 and depth(ch, "audit") == 1
    conn.close()
    broker.restart()
    conn, ch = connect(broker)
    assert ch.basic_get("orders", auto_ack=True)[2] == b"order-1"
    assert ch.basic_get("audit", auto_ack=True)[2] == b"audit-1"
    conn.close()


def test_acks_wait_for_commit_and_rolled_back_acks_leave_messages_unacked(broker):
    conn, ch = connect(broker)
    ch.queue_declare("work", durable=True)
    for body in (b"a", b"b"):
        ch.basic_publish("", "work", body, pika.BasicProperties(delivery_mode=2))
    ch.tx_select()
    a, _, _ = ch.basic_get("work")
    b, _, _ = ch.basic_get("work")
    ch.basic_ack(a.delivery_tag)
    ch.tx_rollback()
    ch.basic_ack(b.delivery_tag)
    ch.tx_commit()
    ch.close()
    # b's ack was committed; a's was rolled back, so a comes back when the channel closes.
    ch = conn.channel()
    method, _, body = ch.basic_get("work", auto_ack=True)
    assert body == b"a" and method.redelivered
    assert ch.basic_get("work") == (None, None, None)
    conn.close()


def test_confirm_and_tx_do_not_mix(broker):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.tx_select()
    assert err.value.reply_code == 406
    ch = conn.channel()
    ch.tx_select()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.confirm_delivery()
    assert err.value.reply_code == 406
    conn.close()


def test_commit_without_select_is_406(broker):
    conn, ch = connect(broker)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.tx_commit()
    assert err.value.reply_code == 406
    conn.close()

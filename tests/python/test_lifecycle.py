"""Message TTL, dead-lettering, length limits and unused-queue expiry, as RabbitMQ does them."""
import time

import pika
import pytest

from helpers import connect, depth


def dead_letter_setup(ch, **extra):
    ch.exchange_declare("dlx", exchange_type="fanout")
    ch.queue_declare("dead")
    ch.queue_bind("dead", "dlx")
    ch.queue_declare("work", arguments={"x-dead-letter-exchange": "dlx", **extra})


def test_queue_ttl_expires_messages(broker):
    conn, ch = connect(broker)
    ch.queue_declare("short", arguments={"x-message-ttl": 200})
    ch.basic_publish("", "short", b"soon gone")
    assert depth(ch, "short") == 1
    time.sleep(0.5)
    assert depth(ch, "short") == 0
    assert ch.basic_get("short") == (None, None, None)
    conn.close()


def test_per_message_expiration_expires_behind_a_long_lived_head(broker):
    conn, ch = connect(broker)
    ch.queue_declare("mixed")
    ch.basic_publish("", "mixed", b"lives", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", "mixed", b"dies", pika.BasicProperties(expiration="100"))
    ch.basic_publish("", "mixed", b"forever")
    time.sleep(0.4)
    assert depth(ch, "mixed") == 2, "the short-lived message expired in the middle of the queue"
    assert ch.basic_get("mixed", auto_ack=True)[2] == b"lives"
    assert ch.basic_get("mixed", auto_ack=True)[2] == b"forever"
    conn.close()


def test_invalid_expiration_is_406(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    ch.basic_publish("", "q", b"x", pika.BasicProperties(expiration="soon"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("q", passive=True)
    assert err.value.reply_code == 406
    conn.close()


def test_rejected_message_is_dead_lettered_with_x_death(broker):
    conn, ch = connect(broker)
    dead_letter_setup(ch)
    ch.basic_publish("", "work", b"bad input", pika.BasicProperties(headers={"job": 7}))
    method, _, _ = ch.basic_get("work")
    ch.basic_nack(method.delivery_tag, requeue=False)
    method, props, body = ch.basic_get("dead", auto_ack=True)
    assert body == b"bad input"
    assert method.exchange == "dlx" and method.routing_key == "work"
    death = props.headers["x-death"][0]
    assert death["reason"] == "rejected" and death["queue"] == "work" and death["count"] == 1
    assert death["exchange"] == "" and death["routing-keys"] == ["work"]
    assert props.headers["x-first-death-reason"] == "rejected"
    assert props.headers["x-first-death-queue"] == "work"
    assert props.headers["job"] == 7, "the original headers are kept"
    conn.close()


def test_expired_message_is_dead_lettered_with_reason_expired(broker):
    conn, ch = connect(broker)
    dead_letter_setup(ch, **{"x-dead-letter-routing-key": "expired-work"})
    ch.basic_publish("", "work", b"late", pika.BasicProperties(expiration="100"))
    time.sleep(0.4)
    method, props, body = ch.basic_get("dead", auto_ack=True)
    assert body == b"late" and method.routing_key == "expired-work"
    death = props.headers["x-death"][0]
    assert death["reason"] == "expired" and death["original-expiration"] == "100"
    assert props.expiration is None, "the per-message TTL does not follow the dead letter"
    conn.close()


def test_max_length_drops_the_oldest_to_the_dead_letter_exchange(broker):
    conn, ch = connect(broker)
    dead_letter_setup(ch, **{"x-max-length": 2})
    for body in (b"1", b"2", b"3"):
        ch.basic_publish("", "work", body)
    assert depth(ch, "work") == 2
    assert ch.basic_get("work", auto_ack=True)[2] == b"2"
    method, props, body = ch.basic_get("dead", auto_ack=True)
    assert body == b"1" and props.headers["x-death"][0]["reason"] == "maxlen"
    conn.close()


def test_reject_publish_nacks_under_confirms(broker):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("bounded", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", "bounded", b"fits")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "bounded", b"refused")
    assert depth(ch, "bounded") == 1
    conn.close()


def test_unused_queue_expires(broker):
    conn, ch = connect(broker)
    ch.queue_declare("ephemeral", arguments={"x-expires": 300})
    time.sleep(0.8)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("ephemeral", passive=True)
    assert err.value.reply_code == 404
    conn.close()


@pytest.mark.parametrize("arguments", [
    {"x-max-priority": 1000},
    {"x-message-ttl": -1},
    {"x-overflow": "drop-everything"},
    {"x-expires": 0},
])
def test_invalid_queue_arguments_are_406(broker, arguments):
    conn, ch = connect(broker)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("bad-args", arguments=arguments)
    assert err.value.reply_code == 406
    assert "invalid arg" in err.value.reply_text
    conn.close()


def test_ttl_survives_a_restart(broker):
    conn, ch = connect(broker)
    ttl_ms = 4000
    ch.queue_declare("durable-ttl", durable=True, arguments={"x-message-ttl": ttl_ms})
    published = time.monotonic()
    ch.basic_publish("", "durable-ttl", b"a", pika.BasicProperties(delivery_mode=2))
    conn.close()
    broker.restart()
    conn, ch = connect(broker)
    elapsed = time.monotonic() - published
    assert elapsed < ttl_ms / 1000 - 0.5, f"the restart took {elapsed:.1f}s: too long to check the TTL"
    assert depth(ch, "durable-ttl") == 1, "still within its TTL after the restart"
    time.sleep(max(0.0, published + ttl_ms / 1000 + 0.3 - time.monotonic()))
    assert depth(ch, "durable-ttl") == 0, "and it expires on time after the restart"
    conn.close()

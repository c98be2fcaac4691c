"""Failed deliveries: `x-delivery-limit`, `x-retry-delay` with fixed or exponential backoff and
`x-retry-delay-max`, and where a message goes when it runs out of deliveries: its
`x-failure-queue` header, else the queue's dead-letter exchange, else the vhost's error queue
`weir.error`. Counts and waits survive a crash (kill -9)."""
import time

import pika
import pytest

from helpers import Api, connect, depth, drain


def fail(ch, queue, times):
    """Take the message `times` times and nack it back each time; returns the bodies seen."""
    seen = []
    for _ in range(times):
        method, _, body = ch.basic_get(queue, auto_ack=False)
        assert method is not None, f"nothing to take after {len(seen)} failures"
        seen.append((body.decode(), method.redelivered))
        ch.basic_nack(method.delivery_tag, requeue=True)
    return seen


def death(properties):
    [first, *_] = properties.headers["x-death"]
    return first


def test_delivery_limit_sends_the_message_to_the_dead_letter_exchange(broker):
    conn, ch = connect(broker)
    ch.queue_declare("dead")
    ch.queue_declare("work", arguments={"x-delivery-limit": 3, "x-dead-letter-exchange": "",
                                        "x-dead-letter-routing-key": "dead"})
    ch.basic_publish("", "work", b"poison")
    ch.basic_publish("", "work", b"fine")
    assert fail(ch, "work", 1) == [("poison", False)]
    assert fail(ch, "work", 2) == [("poison", True), ("poison", True)]
    assert drain(ch, "work") == ["fine"], "three deliveries used: gone from the queue"
    method, properties, body = ch.basic_get("dead", auto_ack=True)
    assert body == b"poison"
    assert death(properties)["reason"] == "delivery_limit"
    assert death(properties)["queue"] == "work"
    assert properties.headers["x-first-death-reason"] == "delivery_limit"
    conn.close()


def test_failure_queue_header_wins_and_the_error_queue_is_the_last_resort(broker):
    conn, ch = connect(broker)
    ch.queue_declare("failures")
    ch.queue_declare("work", arguments={"x-delivery-limit": 1})
    ch.basic_publish("", "work", b"to-failures", pika.BasicProperties(headers={"x-failure-queue": "failures"}))
    ch.basic_publish("", "work", b"to-error", pika.BasicProperties(headers={"x-failure-queue": "no-such-queue"}))
    ch.basic_publish("", "work", b"plain")
    fail(ch, "work", 3)
    assert drain(ch, "work") == []
    assert drain(ch, "failures") == ["to-failures"]
    assert drain(ch, "weir.error") == ["to-error", "plain"]
    # The error queue is durable and an ordinary queue.
    assert ch.queue_declare("weir.error", durable=True, passive=True).method.message_count == 0
    conn.close()


def test_a_dropped_connection_counts_as_a_failed_delivery(broker):
    conn, ch = connect(broker)
    ch.queue_declare("work", arguments={"x-delivery-limit": 2})
    ch.basic_publish("", "work", b"m")
    for _ in range(2):
        other_conn, other = connect(broker)
        method, _, _ = other.basic_get("work", auto_ack=False)
        assert method is not None
        other_conn.close()  # unacked: back in the queue as a failed delivery
    assert drain(ch, "work") == []
    assert drain(ch, "weir.error") == ["m"]
    conn.close()


def test_retry_waits_double_up_to_the_maximum_and_count_as_delayed(broker):
    conn, ch = connect(broker)
    ch.queue_declare("slow", arguments={"x-retry-delay": 300, "x-retry-backoff": "exponential",
                                        "x-retry-delay-max": 450})
    ch.basic_publish("", "slow", b"m")
    api = Api(broker)
    method, _, _ = ch.basic_get("slow", auto_ack=False)
    waits = []
    for _ in range(3):
        ch.basic_nack(method.delivery_tag, requeue=True)
        failed_at = time.monotonic()
        shown = api.get("/api/queues/%2F/slow").json()
        assert (shown["messages_ready"], shown["messages_delayed"]) == (0, 1), "waiting, counted as delayed"
        while (method := ch.basic_get("slow", auto_ack=False)[0]) is None:
            time.sleep(0.01)
        assert method.redelivered
        waits.append(time.monotonic() - failed_at)
    # 300 ms, then doubled (600) but capped at 450, then capped again (not 1200).
    assert 0.28 <= waits[0] < 1.0, waits
    assert 0.43 <= waits[1] < 1.0, waits
    assert 0.43 <= waits[2] < 1.0, waits
    conn.close()


@pytest.mark.parametrize("arguments", [
    {"x-delivery-limit": 0},
    {"x-delivery-limit": "3"},
    {"x-retry-delay": -1},
    {"x-retry-backoff": "linear"},
    {"x-retry-delay-max": "1s"},
])
def test_bad_retry_arguments_are_406(broker, arguments):
    conn, ch = connect(broker)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.queue_declare("q", arguments=arguments)
    assert closed.value.reply_code == 406
    conn.close()


def test_counts_and_waits_survive_kill_9(broker):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("durable-work", durable=True, arguments={"x-delivery-limit": 3, "x-retry-delay": 60000})
    ch.queue_declare("limited", durable=True, arguments={"x-delivery-limit": 3})
    persistent = pika.BasicProperties(delivery_mode=2)
    ch.basic_publish("", "durable-work", b"waiting", persistent)
    ch.basic_publish("", "limited", b"twice-failed", persistent)
    fail(ch, "durable-work", 1)
    fail(ch, "limited", 2)
    assert depth(ch, "durable-work") == 0, "waiting out its retry delay"
    # Something durable after the failures, so the test knows they reached the log.
    ch.basic_publish("", "limited", b"marker", persistent)
    broker.kill9()
    broker.start()
    conn, ch = connect(broker)
    shown = Api(broker).get("/api/queues/%2F/durable-work").json()
    assert (shown["messages_ready"], shown["messages_delayed"]) == (0, 1), "still waiting after the crash"
    method, _, body = ch.basic_get("limited", auto_ack=False)
    assert body == b"twice-failed" and method.redelivered
    ch.basic_nack(method.delivery_tag, requeue=True)  # the third failure: out of deliveries
    assert drain(ch, "limited") == ["marker"]
    assert drain(ch, "weir.error") == ["twice-failed"]
    conn.close()

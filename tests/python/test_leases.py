"""Leases (`x-lease-ms` consumer argument): a delivery left unacked past its lease is taken
back as a failed delivery; the late ack of the consumer that lost it changes nothing and does
not close its channel."""
import time

import pika
import pytest

from helpers import Api, connect, drain


def test_an_unacked_delivery_is_taken_back_when_its_lease_runs_out(broker):
    slow_conn, slow = connect(broker)
    slow.queue_declare("jobs")
    slow.basic_qos(prefetch_count=1)
    held = []
    slow.basic_consume("jobs", lambda c, m, p, b: held.append(m), auto_ack=False, arguments={"x-lease-ms": 300})
    slow.basic_publish("", "jobs", b"job")
    deadline = time.monotonic() + 5
    while not held and time.monotonic() < deadline:
        slow_conn.process_data_events(time_limit=0.05)
    assert len(held) == 1
    taken_at = time.monotonic()

    other_conn, other = connect(broker)
    while (got := other.basic_get("jobs", auto_ack=False))[0] is None:
        assert time.monotonic() - taken_at < 5, "the lease never ran out"
        time.sleep(0.02)
    method, _, body = got
    assert body == b"job" and method.redelivered
    assert time.monotonic() - taken_at >= 0.28, "not before the lease ran out"

    # The slow consumer's late ack removes nothing and keeps its channel open.
    slow.basic_ack(held[0].delivery_tag)
    slow_conn.process_data_events(time_limit=0.2)
    assert slow.is_open
    assert slow.queue_declare("jobs", passive=True).method.message_count == 0
    # The message is still the other consumer's: its nack puts it back, and the slow consumer,
    # whose prefetch slot the late ack freed, gets it again.
    other.basic_nack(method.delivery_tag, requeue=True)
    deadline = time.monotonic() + 5
    while len(held) < 2 and time.monotonic() < deadline:
        slow_conn.process_data_events(time_limit=0.05)
    assert len(held) == 2 and held[1].redelivered
    slow.basic_ack(held[1].delivery_tag)
    assert drain(other, "jobs") == []
    other_conn.close()
    slow_conn.close()


def test_a_lapsed_lease_counts_against_the_delivery_limit(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("once", arguments={"x-delivery-limit": 1})
    ch.basic_publish("", "once", b"poison")
    held = []
    ch.basic_consume("once", lambda c, m, p, b: held.append(m), auto_ack=False, arguments={"x-lease-ms": 200})
    deadline = time.monotonic() + 5
    while True:
        conn.process_data_events(time_limit=0.05)
        shown = api.call("GET", "/api/queues/%2F/weir.error")
        if shown.status_code == 200 and shown.json()["messages_ready"] == 1:
            break
        assert time.monotonic() < deadline, "the lapsed message never reached the error queue"
    assert len(held) == 1
    assert drain(conn.channel(), "weir.error") == ["poison"]
    conn.close()


@pytest.mark.parametrize("lease", [0, -5, "300", 7 * 24 * 3600 * 1000 + 1])
def test_bad_leases_are_406(broker, lease):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.basic_consume("q", lambda *a: None, arguments={"x-lease-ms": lease})
    assert closed.value.reply_code == 406
    conn.close()

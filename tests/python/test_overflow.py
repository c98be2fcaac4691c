"""Overflow policies beyond RabbitMQ's: `drop-new` (the arriving message goes, the publisher
still gets an ack), `drop-oldest` (the longest-lived by `timestamp`), `drop-lowest-priority`
(the lowest priority present, oldest first). Dropped messages are dead-lettered with reason
`maxlen` where the queue has a dead-letter exchange."""
import json

import pika
import pytest

from helpers import connect, drain


def test_drop_new_turns_the_arriving_message_away_with_an_ack(broker):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("dead")
    ch.queue_declare("q", arguments={"x-max-length": 2, "x-overflow": "drop-new",
                                     "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    for n in range(4):
        ch.basic_publish("", "q", f"m{n}".encode())  # every publish is acked: no NackError
    assert drain(ch, "q") == ["m0", "m1"]
    method, properties, body = ch.basic_get("dead", auto_ack=True)
    assert body == b"m2" and properties.headers["x-first-death-reason"] == "maxlen"
    assert drain(ch, "dead") == ["m3"]
    conn.close()


def test_drop_lowest_priority_keeps_the_urgent_messages(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q", arguments={"x-max-priority": 9, "x-max-length": 3, "x-overflow": "drop-lowest-priority"})
    for body, priority in [("p5", 5), ("p1-old", 1), ("p9", 9), ("p1-new", 1), ("p7", 7)]:
        ch.basic_publish("", "q", body.encode(), pika.BasicProperties(priority=priority))
    # p1-new pushed p1-old out (oldest of the lowest); p7 pushed p1-new out.
    assert drain(ch, "q") == ["p9", "p7", "p5"]
    conn.close()


def test_drop_oldest_goes_by_timestamp(broker):
    conn, ch = connect(broker)
    ch.queue_declare("q", arguments={"x-max-length": 2, "x-overflow": "drop-oldest"})
    ch.basic_publish("", "q", b"born 300", pika.BasicProperties(timestamp=300))
    ch.basic_publish("", "q", b"born 100", pika.BasicProperties(timestamp=100))
    ch.basic_publish("", "q", b"no timestamp")
    ch.basic_publish("", "q", b"born 200", pika.BasicProperties(timestamp=200))
    # Over the limit twice: first "born 100" goes; then of 300, 200 and the one without a
    # timestamp (the newest), "born 200" is the longest-lived, though it arrived last.
    assert drain(ch, "q") == ["born 300", "no timestamp"]
    conn.close()


def test_capacity_watermarks_publish_one_event_per_crossing(broker):
    conn, ch = connect(broker)
    # Confirms: each publish's engine turn, capacity check included, is over when it returns.
    ch.confirm_delivery()
    ch.queue_declare("watch")
    ch.queue_bind("watch", "weir.events", "queue.capacity.#")
    ch.queue_declare("q", arguments={"x-max-length": 10, "x-capacity-high": 80, "x-capacity-low": 20})
    events = lambda: [(m["event"], m["percent"]) for m in map(json.loads, drain(ch, "watch"))]
    for n in range(7):
        ch.basic_publish("", "q", f"m{n}".encode())
    assert events() == []
    ch.basic_publish("", "q", b"m7")  # 8 of 10: 80%
    ch.basic_publish("", "q", b"m8")
    assert events() == [("queue.capacity.high", 80)]
    for _ in range(6):
        ch.basic_get("q", auto_ack=True)  # down to 3 (30%): not yet drained
    assert events() == []
    ch.basic_get("q", auto_ack=True)  # 2 of 10: 20%
    assert events() == [("queue.capacity.low", 20)]
    ch.basic_publish("", "q", b"again")
    assert events() == []
    conn.close()
    # The events exchange is the broker's: it cannot be deleted.
    conn, ch = connect(broker)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.exchange_delete("weir.events")
    assert closed.value.reply_code == 403
    conn.close()


def test_watermarks_need_a_limit(broker):
    conn, ch = connect(broker)
    for arguments in ({"x-capacity-high": 80}, {"x-max-length": 5, "x-capacity-low": 10},
                      {"x-max-length": 5, "x-capacity-high": 50, "x-capacity-low": 60}):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            conn.channel().queue_declare("bad", arguments=arguments)
        assert closed.value.reply_code == 406
    conn.close()

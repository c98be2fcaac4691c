"""Dequeue by message-id, correlation-id and selector, and browsing, over AMQP (pika) and HTTP.

Consumer arguments `x-message-id`, `x-correlation-id`, `x-selector` choose which ready
messages a consumer takes; `x-browse: true` hands out copies and leaves the queue as it was.
The HTTP get takes the same filters, and `GET …/messages` pages through a queue by state."""
import time

import pika
import pytest

from helpers import Api, connect, depth, drain, pump_while


def props(priority=None, message_id=None, correlation_id=None, **headers):
    return pika.BasicProperties(priority=priority, message_id=message_id, correlation_id=correlation_id, headers=headers or None)


def consume_all(conn, ch, queue, arguments, expected, auto_ack=True, timeout=5.0):
    """Bodies delivered to a consumer with `arguments` until `expected` arrived (or the timeout)."""
    got = []
    tag = ch.basic_consume(queue, lambda c, m, p, b: got.append((m, b.decode())), auto_ack=auto_ack, arguments=arguments)
    pump_while(conn, lambda: len(got) < expected, timeout=timeout)
    # Give a wrong extra delivery the chance to show up.
    conn.process_data_events(time_limit=0.2)
    ch.basic_cancel(tag)
    return got


def test_selector_consumer_takes_only_matching_messages_in_order(broker):
    conn, ch = connect(broker)
    ch.queue_declare("orders")
    for n, (priority, region) in enumerate([(7, "eu"), (2, "eu"), (9, "asia"), (6, "us"), (8, "eu")]):
        ch.basic_publish("", "orders", f"m{n}".encode(), props(priority=priority, region=region))
    got = consume_all(conn, ch, "orders", {"x-selector": "priority > 5 AND region IN ('eu','us')"}, expected=3)
    assert [body for _, body in got] == ["m0", "m3", "m4"]
    assert drain(ch, "orders") == ["m1", "m2"], "the others stay, in order"
    conn.close()


def test_selector_consumer_waits_for_a_match_that_arrives_later(broker):
    conn, ch = connect(broker)
    ch.queue_declare("later")
    got = []
    ch.basic_consume("later", lambda c, m, p, b: got.append(b.decode()), auto_ack=True,
                     arguments={"x-selector": "\"x-kind\" = 'wanted'"})
    ch.basic_publish("", "later", b"no", props(**{"x-kind": "other"}))
    conn.process_data_events(time_limit=0.2)
    assert got == []
    ch.basic_publish("", "later", b"yes", props(**{"x-kind": "wanted"}))
    pump_while(conn, lambda: not got)
    assert got == ["yes"]
    assert depth(ch, "later") == 1
    conn.close()


def test_message_id_and_correlation_id_consumers(broker):
    conn, ch = connect(broker)
    ch.queue_declare("replies")
    for n in range(5):
        ch.basic_publish("", "replies", f"r{n}".encode(), props(message_id=f"id-{n}", correlation_id=f"req-{n % 2}"))
    got = consume_all(conn, ch, "replies", {"x-message-id": "id-3"}, expected=1)
    assert [body for _, body in got] == ["r3"]
    got = consume_all(conn, ch, "replies", {"x-correlation-id": "req-0"}, expected=3, auto_ack=False)
    assert [body for _, body in got] == ["r0", "r2", "r4"]
    for method, _ in got:
        ch.basic_ack(method.delivery_tag)
    assert drain(ch, "replies") == ["r1"]
    conn.close()


def test_requeued_message_is_seen_again_by_a_filtered_consumer(broker):
    """A filtered consumer remembers what it looked at; a requeue must make it look again."""
    conn, ch = connect(broker)
    ch.queue_declare("again")
    ch.basic_publish("", "again", b"a", props(**{"k": 1}))
    ch.basic_publish("", "again", b"b", props(**{"k": 2}))  # looked at, and not wanted
    other_conn, other = connect(broker)
    method, _, body = other.basic_get("again", auto_ack=False)
    assert body == b"a"
    got = []
    ch.basic_consume("again", lambda c, m, p, b: got.append(b.decode()), auto_ack=True, arguments={"x-selector": "k = 1"})
    conn.process_data_events(time_limit=0.2)
    assert got == []
    other.basic_nack(method.delivery_tag, requeue=True)
    pump_while(conn, lambda: not got)
    assert got == ["a"]
    assert drain(ch, "again") == ["b"]
    other_conn.close()
    conn.close()


def test_filtered_consumer_on_a_priority_queue_sees_every_later_arrival(broker):
    """What a filtered consumer remembers having judged is per priority level: a matching
    message that arrives later at any level, above or below what it judged, is found."""
    conn, ch = connect(broker)
    ch.queue_declare("prio", arguments={"x-max-priority": 9})
    # Two waiting before the consumer comes: the higher goes first, the lower must follow.
    ch.basic_publish("", "prio", b"early-low-yes", props(priority=2, k=1))
    ch.basic_publish("", "prio", b"early-high-yes", props(priority=8, k=1))
    got = []
    ch.basic_consume("prio", lambda c, m, p, b: got.append(b.decode()), auto_ack=True, arguments={"x-selector": "k = 1"})
    for body, priority, k in [("low-no", 1, 2), ("high-no", 9, 2), ("high-yes", 9, 1), ("mid-yes", 5, 1),
                              ("low-yes", 1, 1), ("top-no", 9, 2), ("top-yes", 9, 1)]:
        ch.basic_publish("", "prio", body.encode(), props(priority=priority, k=k))
        conn.process_data_events(time_limit=0.05)
    pump_while(conn, lambda: len(got) < 6)
    assert got == ["early-high-yes", "early-low-yes", "high-yes", "mid-yes", "low-yes", "top-yes"]
    assert drain(ch, "prio") == ["high-no", "top-no", "low-no"]
    conn.close()


def test_a_browser_never_takes_the_single_active_consumers_place(broker):
    conn, ch = connect(broker)
    ch.queue_declare("single", arguments={"x-single-active-consumer": True})
    copies, taken = [], []
    ch.basic_consume("single", lambda c, m, p, b: copies.append(b.decode()), auto_ack=True, arguments={"x-browse": True})
    ch.basic_consume("single", lambda c, m, p, b: taken.append(b.decode()), auto_ack=True)
    ch.basic_publish("", "single", b"one")
    pump_while(conn, lambda: not taken or not copies)
    assert taken == ["one"], "the browser that came first did not become the active consumer"
    assert copies == ["one"], "and it still browses"
    conn.close()


def test_browse_consumer_sees_copies_and_leaves_the_queue_alone(broker):
    conn, ch = connect(broker)
    ch.queue_declare("shelf", arguments={"x-max-priority": 9})
    for body, priority in [("low", 1), ("high", 8), ("mid", 5)]:
        ch.basic_publish("", "shelf", body.encode(), props(priority=priority))
    got = consume_all(conn, ch, "shelf", {"x-browse": True}, expected=3)
    assert [body for _, body in got] == ["high", "mid", "low"], "delivery order"
    # Manual acks pace a browser; acking a browsed copy removes nothing.
    ch.basic_qos(prefetch_count=1)
    got = consume_all(conn, ch, "shelf", {"x-browse": True, "x-selector": "priority < 8"}, expected=1, auto_ack=False)
    assert [body for _, body in got] == ["mid"], "prefetch 1 and no ack: one copy"
    ch.basic_ack(got[0][0].delivery_tag)
    assert depth(ch, "shelf") == 3
    # A new message behind the cursor reaches a browser that is still there.
    seen = []
    ch.basic_consume("shelf", lambda c, m, p, b: seen.append(b.decode()), auto_ack=True, arguments={"x-browse": True})
    conn.process_data_events(time_limit=0.3)
    ch.basic_publish("", "shelf", b"late", props(priority=0))
    pump_while(conn, lambda: len(seen) < 4)
    assert seen == ["high", "mid", "low", "late"]
    assert drain(ch, "shelf") == ["high", "mid", "low", "late"]
    conn.close()


def test_closing_a_browsers_channel_requeues_nothing_twice(broker):
    """A browsed copy held unacked must not requeue the real message another consumer holds."""
    conn, ch = connect(broker)
    ch.queue_declare("held")
    ch.basic_publish("", "held", b"x")
    browser = conn.channel()
    copies = []
    browser.basic_consume("held", lambda c, m, p, b: copies.append(b), auto_ack=False, arguments={"x-browse": True})
    conn.process_data_events(time_limit=0.3)
    assert copies == [b"x"]
    method, _, _ = ch.basic_get("held", auto_ack=False)
    assert method is not None
    browser.close()
    conn.process_data_events(time_limit=0.2)
    assert depth(ch, "held") == 0, "still unacked by the getter"
    ch.basic_ack(method.delivery_tag)
    assert drain(ch, "held") == []
    conn.close()


@pytest.mark.parametrize("arguments", [
    {"x-selector": "priority >"},
    {"x-selector": "a LIKE 5"},
    {"x-selector": "(" * 500 + "a = 1" + ")" * 500},
    {"x-message-id": 5},
    {"x-browse": "yes"},
])
def test_bad_consumer_filters_are_refused_with_406(broker, arguments):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.basic_consume("q", lambda *a: None, arguments=arguments)
    assert closed.value.reply_code == 406
    # The connection goes on.
    ch = conn.channel()
    assert depth(ch, "q") == 0
    conn.close()


def test_http_get_by_id_correlation_and_selector(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("jobs")
    for n in range(6):
        ch.basic_publish("", "jobs", f"j{n}".encode(), props(priority=n, message_id=f"id-{n}", correlation_id=f"c-{n % 3}"))
    got = api.post("/api/queues/%2F/jobs/get", json={"message_id": "id-4"}).json()
    assert [m["payload"] for m in got] == ["j4"]
    got = api.post("/api/queues/%2F/jobs/get", json={"correlation_id": "c-0", "count": 10, "ackmode": "requeue"}).json()
    assert [m["payload"] for m in got] == ["j0", "j3"]
    got = api.post("/api/queues/%2F/jobs/get", json={"selector": "priority >= 2 AND priority <= 3", "count": 10}).json()
    assert [m["payload"] for m in got] == ["j2", "j3"]
    got = api.post("/api/queues/%2F/jobs/get", json={"selector": "priority > 0", "count": 10, "ackmode": "browse"}).json()
    assert [m["payload"] for m in got] == ["j1", "j5"]
    assert [m["state"] for m in got] == ["ready", "ready"]
    assert drain(ch, "jobs") == ["j0", "j1", "j5"]
    bad = api.post("/api/queues/%2F/jobs/get", json={"selector": "priority >"}, expect=400).json()
    assert "selector error at character 11" in bad["message"]
    api.post("/api/queues/%2F/jobs/get", json={"ackmode": "browse", "wait_ms": 10}, expect=400)
    conn.close()


def test_http_get_with_a_filter_waits_for_a_matching_message(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("w")
    ch.basic_publish("", "w", b"other", props(correlation_id="x"))
    import threading
    threading.Timer(0.3, lambda: Api(broker).post("/api/queues/%2F/w/publish", json={
        "payload": "mine", "properties": {"correlation_id": "me"}})).start()
    start = time.monotonic()
    got = api.post("/api/queues/%2F/w/get", json={"correlation_id": "me", "wait_ms": 5000}).json()
    assert [m["payload"] for m in got] == ["mine"]
    assert time.monotonic() - start < 4
    assert drain(ch, "w") == ["other"]
    conn.close()


def test_http_browse_pages_by_state_with_a_cursor(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("pages")
    for n in range(7):
        ch.basic_publish("", "pages", f"p{n}".encode(), props(n=n))
    ch.basic_publish("", "pages", b"later", pika.BasicProperties(headers={"x-delay": 60000}))
    held, _, _ = ch.basic_get("pages", auto_ack=False)  # p0 is now unacked

    def walk(state, limit, **filters):
        pages, after = [], None
        while True:
            params = {"state": state, "limit": limit, **filters}
            if after:
                params["after"] = after
            page = api.get("/api/queues/%2F/pages/messages", params=params).json()
            pages.append([(m["payload"], m["state"]) for m in page["messages"]])
            after = page["next"]
            if after is None:
                return pages

    pages = walk("ready", 2)
    assert [body for page in pages for body, _ in page] == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert all(len(page) <= 2 for page in pages)
    everything = [m for page in walk("all", 3) for m in page]
    assert everything == [(f"p{n}", "ready") for n in range(1, 7)] + [("later", "delayed"), ("p0", "unacked")]
    assert [m for page in walk("delayed", 10) for m in page] == [("later", "delayed")]
    assert [m for page in walk("unacked", 10) for m in page] == [("p0", "unacked")]
    odd = [body for page in walk("all", 2, selector="n IN (1, 3, 5)") for body, _ in page]
    assert odd == ["p1", "p3", "p5"]
    first = api.get("/api/queues/%2F/pages/messages", params={"limit": 1}).json()["messages"][0]
    assert (first["delivery_count"], first["redelivered"], first["priority"]) == (0, False, 0)
    assert depth(ch, "pages") == 6, "browsing took nothing"
    unacked = api.get("/api/queues/%2F/pages/messages", params={"state": "unacked"}).json()["messages"]
    assert [(m["payload"], m["delivery_count"], m["redelivered"]) for m in unacked] == [("p0", 1, False)]
    ch.basic_ack(held.delivery_tag)
    for params in [{"after": "zz"}, {"after": "r.1"}, {"limit": 0}, {"state": "gone"}, {"selector": "a ="},
                   {"state": "ready", "after": "d.5"}, {"state": "unacked", "after": "r.0.1"}]:
        api.get("/api/queues/%2F/pages/messages", params=params, expect=400)
    api.get("/api/queues/%2F/missing/messages", expect=404)
    conn.close()


def test_browse_and_filtered_get_need_read_permission(broker):
    api = Api(broker)
    api.put("/api/users/writer", json={"password": "pw", "tags": []}, expect=201)
    api.put("/api/permissions/%2F/writer", 201, json={"configure": ".*", "write": ".*", "read": "^$"})
    conn, ch = connect(broker)
    ch.queue_declare("secret")
    ch.basic_publish("", "secret", b"s")
    writer = Api(broker, auth=("writer", "pw"))
    writer.get("/api/queues/%2F/secret/messages", expect=403)
    writer.post("/api/queues/%2F/secret/get", json={"ackmode": "browse"}, expect=403)
    writer.post("/api/queues/%2F/secret/get", json={"selector": "true"}, expect=403)
    assert depth(ch, "secret") == 1
    conn.close()

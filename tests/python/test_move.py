"""Moving messages between queues and redriving dead letters (`POST /api/queues/{vhost}/{q}/move`):
order and properties kept, each message moved atomically (kill -9 neither loses nor
duplicates one), a full target stops the move, redrive goes by `x-first-death-queue`."""
import pika

from helpers import Api, connect, depth, drain


def test_move_keeps_order_and_properties(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("from")
    ch.queue_declare("to")
    ch.basic_publish("", "to", b"already there")
    for n in range(5):
        ch.basic_publish("", "from", f"m{n}".encode(), pika.BasicProperties(message_id=f"id-{n}", headers={"n": n}))
    result = api.post("/api/queues/%2F/from/move", json={"target": "to", "count": 3}).json()
    assert result == {"moved": 3, "skipped": 0, "done": False, "target_full": False}
    result = api.post("/api/queues/%2F/from/move", json={"target": "to", "count": 100}).json()
    assert result == {"moved": 2, "skipped": 0, "done": True, "target_full": False}
    assert depth(ch, "from") == 0
    got = []
    while True:
        method, properties, body = ch.basic_get("to", auto_ack=True)
        if method is None:
            break
        got.append((body.decode(), properties.message_id, (properties.headers or {}).get("n"), method.redelivered))
    assert got == [("already there", None, None, False)] + [(f"m{n}", f"id-{n}", n, False) for n in range(5)]
    conn.close()


def test_move_with_a_selector_moves_only_matching_messages(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("mixed")
    ch.queue_declare("eu")
    for n, region in enumerate(["eu", "us", "eu", "asia"]):
        ch.basic_publish("", "mixed", f"m{n}".encode(), pika.BasicProperties(headers={"region": region}))
    result = api.post("/api/queues/%2F/mixed/move", json={"target": "eu", "count": 10, "selector": "region = 'eu'"}).json()
    assert result["moved"] == 2 and result["done"]
    assert drain(ch, "eu") == ["m0", "m2"]
    assert drain(ch, "mixed") == ["m1", "m3"]
    conn.close()


def test_redrive_sends_dead_letters_back_to_where_they_came_from(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("dlq")
    for name in ["orders", "invoices"]:
        ch.queue_declare(name, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
        ch.basic_publish("", name, f"{name}-1".encode())
        method, _, _ = ch.basic_get(name, auto_ack=False)
        ch.basic_reject(method.delivery_tag, requeue=False)
    ch.basic_publish("", "dlq", b"never dead-lettered")
    assert depth(ch, "dlq") == 3
    result = api.post("/api/queues/%2F/dlq/move", json={"count": 10}).json()
    assert result == {"moved": 2, "skipped": 1, "done": True, "target_full": False}
    assert drain(ch, "orders") == ["orders-1"]
    assert drain(ch, "invoices") == ["invoices-1"]
    assert drain(ch, "dlq") == ["never dead-lettered"]
    conn.close()


def test_a_full_target_stops_the_move(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("src")
    ch.queue_declare("small", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    for n in range(5):
        ch.basic_publish("", "src", f"m{n}".encode())
    result = api.post("/api/queues/%2F/src/move", json={"target": "small", "count": 10}).json()
    assert result == {"moved": 2, "skipped": 0, "done": False, "target_full": True}
    assert drain(ch, "small") == ["m0", "m1"]
    assert drain(ch, "src") == ["m2", "m3", "m4"], "nothing lost, order kept"
    conn.close()


def test_move_mistakes_are_4xx(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("q")
    api.post("/api/queues/%2F/q/move", json={"target": "missing"}, expect=404)
    api.post("/api/queues/%2F/missing/move", json={"target": "q"}, expect=404)
    assert api.post("/api/queues/%2F/q/move", json={"target": "q"}, expect=409).json()["code"] == "precondition_failed"
    api.post("/api/queues/%2F/q/move", json={"target": "q", "count": 0}, expect=400)
    api.post("/api/queues/%2F/q/move", json={"target": "q", "selector": "a ="}, expect=400)
    api.put("/api/users/reader", json={"password": "pw", "tags": []}, expect=201)
    api.put("/api/permissions/%2F/reader", 201, json={"configure": "", "write": "", "read": ".*"})
    Api(broker, auth=("reader", "pw")).post("/api/queues/%2F/q/move", json={"target": "q"}, expect=403)
    conn.close()


def test_a_move_is_atomic_across_kill_9(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("src", durable=True)
    ch.queue_declare("dst", durable=True)
    for n in range(300):
        ch.basic_publish("", "src", f"m{n}".encode(), pika.BasicProperties(delivery_mode=2))
    assert api.post("/api/queues/%2F/src/move", json={"target": "dst", "count": 120}).json()["moved"] == 120
    # The HTTP answer came after the move's records; a confirmed publish after it is durable.
    ch.basic_publish("", "src", b"marker", pika.BasicProperties(delivery_mode=2))
    broker.kill9()
    broker.start()
    conn, ch = connect(broker)
    moved, left = drain(ch, "dst"), drain(ch, "src")
    assert moved == [f"m{n}" for n in range(120)]
    assert left == [f"m{n}" for n in range(120, 300)] + ["marker"]
    conn.close()


def test_delete_chosen_messages_and_cancel_a_scheduled_one(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("box", durable=True)
    persistent = dict(delivery_mode=2)
    for n in range(4):
        ch.basic_publish("", "box", f"m{n}".encode(), pika.BasicProperties(message_id=f"id-{n}", **persistent))
    ch.basic_publish("", "box", b"reminder", pika.BasicProperties(
        message_id="later", headers={"x-delay": 600000}, **persistent))
    url = "/api/queues/%2F/box/messages"
    assert api.delete(url, params={"message_id": "id-2"}).json() == {"messages": 1}
    assert api.delete(url, params={"message_id": "id-2"}).json() == {"messages": 0}
    assert api.delete(url, params={"message_id": "later"}).json() == {"messages": 1}, "a delayed one too"
    assert api.delete(url, params={"selector": "message_id IN ('id-0', 'id-3')", "count": 10}).json() == {"messages": 2}
    api.delete(url, expect=400)
    api.delete(url, params={"message_id": "id-1", "count": 0}, expect=400)
    api.delete("/api/queues/%2F/missing/messages", params={"message_id": "x"}, expect=404)
    # The deletions were durable when answered.
    broker.kill9()
    broker.start()
    conn, ch = connect(broker)
    shown = Api(broker).get("/api/queues/%2F/box").json()
    assert (shown["messages_ready"], shown["messages_delayed"]) == (1, 0)
    assert drain(ch, "box") == ["m1"]
    conn.close()


def test_redrive_into_a_queue_with_a_dedup_window_arrives(broker):
    """The broker's own republish is not a producer's retry: the redriven copy must arrive
    (and the dead letter must not be removed unless it did)."""
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("dlq")
    ch.queue_declare("orders", arguments={"x-deduplication-window": 3600000, "x-dead-letter-exchange": "",
                                          "x-dead-letter-routing-key": "dlq"})
    ch.basic_publish("", "orders", b"o-1", pika.BasicProperties(message_id="o-1"))
    method, _, _ = ch.basic_get("orders", auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    assert api.post("/api/queues/%2F/dlq/move", json={"count": 10}).json()["moved"] == 1
    assert drain(ch, "orders") == ["o-1"]
    assert drain(ch, "dlq") == []
    conn.close()


def test_queues_that_dead_letter_into_each_other_do_not_loop(broker):
    conn, ch = connect(broker)
    for name, other in [("ping", "pong"), ("pong", "ping")]:
        ch.queue_declare(name, arguments={"x-max-length": 1, "x-dead-letter-exchange": "",
                                          "x-dead-letter-routing-key": other})
    for name, other in [("ttl-a", "ttl-b"), ("ttl-b", "ttl-a")]:
        ch.queue_declare(name, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                          "x-dead-letter-routing-key": other})
    for n in range(50):
        ch.basic_publish("", "ping", f"m{n}".encode())
        ch.basic_publish("", "pong", f"n{n}".encode())
    ch.basic_publish("", "ttl-a", b"bounce")
    # The broker is alive and the queues are within their limits.
    assert depth(ch, "ping") <= 1 and depth(ch, "pong") <= 1
    assert depth(ch, "ttl-a") == 0 and depth(ch, "ttl-b") == 0
    conn.close()

"""Leases (`x-lease-ms` consumer argument): a delivery left unacked past its lease is taken
back as a failed delivery; the late ack of the consumer that lost it changes nothing and does
not close its channel."""
import time

import pika
import pytest

from helpers import Api, connect, depth, drain, pump_while


def test_an_unacked_delivery_is_taken_back_when_its_lease_runs_out(broker):
    slow_conn, slow = connect(broker)
    slow.queue_declare("jobs")
    slow.basic_qos(prefetch_count=1)
    held = []
    slow.basic_consume("jobs", lambda c, m, p, b: held.append(m), auto_ack=False, arguments={"x-lease-ms": 300})
    slow.basic_publish("", "jobs", b"job")
    pump_while(slow_conn, lambda: not held)
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
    pump_while(slow_conn, lambda: len(held) < 2)
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


def test_http_lease_then_ack_renew_and_expiry(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("tasks")
    for n in range(3):
        ch.basic_publish("", "tasks", f"t{n}".encode())
    got = api.post("/api/queues/%2F/tasks/get", json={"count": 3, "ackmode": "lease", "lease_ms": 400}).json()
    assert [m["payload"] for m in got] == ["t0", "t1", "t2"]
    tokens = [m["lease"]["token"] for m in got]
    assert len(set(tokens)) == 3 and all(m["lease"]["until_ms"] > 0 for m in got)
    shown = api.get("/api/queues/%2F/tasks").json()
    assert (shown["messages_ready"], shown["messages_unacknowledged"]) == (0, 3), "held, not ready"
    # t0 is acked, t1 renewed, t2 left to run out.
    assert api.post(f"/api/leases/%2F/{tokens[0]}", json={"action": "ack"}).json()["until_ms"] == 0
    renewed = api.post(f"/api/leases/%2F/{tokens[1]}", json={"action": "renew", "lease_ms": 5000}).json()
    assert renewed["until_ms"] > got[1]["lease"]["until_ms"]
    deadline = time.monotonic() + 5
    while (method := ch.basic_get("tasks", auto_ack=True)[0]) is None:
        assert time.monotonic() < deadline, "the lease never ran out"
        time.sleep(0.02)
    assert method.redelivered, "t2 came back as a failed delivery"
    assert depth(ch, "tasks") == 0, "t1 is still held"
    api.post(f"/api/leases/%2F/{tokens[2]}", json={"action": "ack"}, expect=404)
    api.post(f"/api/leases/%2F/{tokens[0]}", json={"action": "ack"}, expect=404)
    # Settling needs read permission on the queue.
    api.put("/api/users/writer", json={"password": "pw", "tags": []}, expect=201)
    api.put("/api/permissions/%2F/writer", 201, json={"configure": ".*", "write": ".*", "read": "^$"})
    Api(broker, auth=("writer", "pw")).post(f"/api/leases/%2F/{tokens[1]}", json={"action": "ack"}, expect=403)
    # Give t1 back: ready again.
    api.post(f"/api/leases/%2F/{tokens[1]}", json={"action": "requeue"})
    assert drain(ch, "tasks") == ["t1"]
    api.post("/api/leases/%2F/99", json={"action": "ack"}, expect=404)
    api.post("/api/leases/%2F/notanumber", json={"action": "ack"}, expect=404)
    api.post(f"/api/leases/%2F/{tokens[1]}", json={"action": "explode"}, expect=400)
    conn.close()


def test_http_lease_reject_dead_letters(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("dead")
    ch.queue_declare("src", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    ch.basic_publish("", "src", b"bad")
    [message] = api.post("/api/queues/%2F/src/get", json={"ackmode": "lease"}).json()
    api.post(f"/api/leases/%2F/{message['lease']['token']}", json={"action": "reject"})
    assert drain(ch, "dead") == ["bad"]
    assert depth(ch, "src") == 0
    conn.close()


def test_lease_tokens_of_an_earlier_run_name_nothing(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("kept", durable=True)
    ch.basic_publish("", "kept", b"one", pika.BasicProperties(delivery_mode=2))
    [old] = api.post("/api/queues/%2F/kept/get", json={"ackmode": "lease"}).json()
    broker.restart()
    api = Api(broker)
    [new] = api.post("/api/queues/%2F/kept/get", json={"ackmode": "lease"}).json()
    assert new["payload"] == "one"
    assert new["lease"]["token"] != old["lease"]["token"]
    api.post(f"/api/leases/%2F/{old['lease']['token']}", json={"action": "ack"}, expect=404)
    api.post(f"/api/leases/%2F/{new['lease']['token']}", json={"action": "ack"})


def test_clients_cannot_publish_broker_events(broker):
    conn, ch = connect(broker)
    ch.basic_publish("weir.events", "queue.capacity.high", b"{}")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.queue_declare("q")
    assert closed.value.reply_code == 403
    conn.close()

"""The HTTP API over real HTTP against the real broker: every endpoint, its error cases, login,
and how it meets AMQP clients (pika) on the same queues. docs/HTTP.md describes the API."""
import base64
import threading
import time

import pika
import pytest
import requests

from helpers import GUEST, Api, connect

@pytest.fixture
def api(broker):
    return Api(broker)


def error_code(response):
    return response.json()["code"]


def test_overview_and_vhosts(api):
    overview = api.get("/api/overview").json()
    assert overview["vhosts"] == 1 and overview["queues"] == 0
    assert overview["log"]["read_only"] is None
    assert api.get("/api/vhosts").json() == [{"name": "/", "limits": {}}]
    assert api.get("/api/vhosts/%2F").json() == {"name": "/", "limits": {}}
    assert error_code(api.get("/api/vhosts/nope", 404)) == "vhost_not_found"


def test_login_is_required_and_checked(broker, api):
    response = requests.get(broker.http + "/api/overview", timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json()["code"] == "unauthorized"
    Api(broker, ("guest", "wrong")).get("/api/queues", 401)
    Api(broker, ("nobody", "guest")).get("/api/queues", 401)
    # The console's own calls get no browser password dialog.
    quiet = requests.get(broker.http + "/api/overview", headers={"X-Requested-With": "XMLHttpRequest"}, timeout=10)
    assert quiet.status_code == 401 and "WWW-Authenticate" not in quiet.headers
    # The document and the metrics need no login.
    assert requests.get(broker.http + "/api/openapi.json", timeout=10).status_code == 200
    assert requests.get(broker.http + "/metrics", timeout=10).status_code == 200


def test_unknown_routes_and_methods_are_json_errors(api):
    assert error_code(api.get("/api/nothing-here", 404)) == "no_route"
    assert error_code(api.call("PATCH", "/api/queues/%2F/q", 405)) == "method_not_allowed"


def test_queue_create_show_list_and_idempotence(api):
    settings = {"arguments": {"x-max-priority": 5, "x-message-ttl": 60000}}
    created = api.put("/api/queues/%2F/jobs", json=settings).json()
    assert created["name"] == "jobs" and created["durable"] is True and created["messages"] == 0
    assert created["arguments"] == {"x-max-priority": 5, "x-message-ttl": 60000}
    # The same settings again: fine. Different ones: refused, as queue.declare.
    api.put("/api/queues/%2F/jobs", json=settings)
    refused = api.put("/api/queues/%2F/jobs", 409, json={"durable": False})
    assert error_code(refused) == "precondition_failed"
    api.put("/api/queues/%2F/scratch", json={"durable": False, "auto_delete": True})
    names = [q["name"] for q in api.get("/api/queues").json()]
    assert names == ["jobs", "scratch"]
    assert [q["name"] for q in api.get("/api/queues/%2F").json()] == names
    assert api.get("/api/queues/%2F/scratch").json()["durable"] is False
    assert error_code(api.get("/api/queues/%2F/missing", 404)) == "not_found"
    assert error_code(api.get("/api/queues/nope", 404)) == "vhost_not_found"
    assert error_code(api.get("/api/queues/nope/jobs", 404)) == "vhost_not_found"


@pytest.mark.parametrize(
    "path, body, status, code",
    [
        ("/api/queues/%2F/amq.reserved", {}, 403, "access_refused"),
        ("/api/queues/%2F/" + "x" * 256, {}, 400, "bad_request"),
        ("/api/queues/%2F/q", {"durable": "yes"}, 400, "bad_request"),
        ("/api/queues/%2F/q", {"unknown": 1}, 400, "bad_request"),
        ("/api/queues/%2F/q", {"arguments": {"x-max-priority": "high"}}, 400, "invalid_argument"),
        ("/api/queues/%2F/q", {"arguments": {"x-max-priority": 1000}}, 400, "invalid_argument"),
        ("/api/queues/%2F/q", {"arguments": {"x-queue-order": "sideways"}}, 400, "invalid_argument"),
        ("/api/queues/%2F/q", {"arguments": {"x-nested": {"a": 1}}}, 400, "bad_request"),
        ("/api/queues/nope/q", {}, 404, "vhost_not_found"),
    ],
)
def test_bad_queue_declarations_are_4xx(api, path, body, status, code):
    assert error_code(api.put(path, status, json=body)) == code


def test_bad_json_is_400(api):
    assert error_code(api.put("/api/queues/%2F/q", 400, data="{not json")) == "bad_request"
    assert error_code(api.post("/api/queues/%2F/q/get", 400, data="[1, 2]")) == "bad_request"


def test_publish_get_remove_and_requeue(api):
    api.put("/api/queues/%2F/work")
    properties = {"headers": {"n": 7, "tags": ["a", "b"], "nested": {"ok": True}}, "correlation_id": "c-1"}
    assert api.post("/api/queues/%2F/work/publish", json={"payload": "one", "properties": properties}).json() == {
        "routed": True
    }
    api.post("/api/queues/%2F/work/publish", json={"payload": base64.b64encode(b"\xff\x00").decode(), "payload_encoding": "base64"})
    queue = api.get("/api/queues/%2F/work").json()
    assert queue["messages_ready"] == 2 and queue["counters"]["published"] == 2

    looked = api.post("/api/queues/%2F/work/get", json={"count": 10, "ackmode": "requeue"}).json()
    assert [m["redelivered"] for m in looked] == [False, False]
    assert looked[0]["payload"] == "one" and looked[0]["payload_encoding"] == "string"
    assert looked[0]["properties"]["headers"] == properties["headers"]
    assert looked[0]["properties"]["correlation_id"] == "c-1"
    assert looked[0]["properties"]["delivery_mode"] == 2, "HTTP publishes are persistent by default"
    assert looked[1]["payload_encoding"] == "base64" and base64.b64decode(looked[1]["payload"]) == b"\xff\x00"
    assert api.get("/api/queues/%2F/work").json()["messages_ready"] == 2, "requeue puts them back"

    taken = api.post("/api/queues/%2F/work/get", json={"count": 1}).json()
    assert len(taken) == 1 and taken[0]["payload"] == "one" and taken[0]["redelivered"] is True
    assert taken[0]["message_count"] == 1
    rest = api.post("/api/queues/%2F/work/get", json={"count": 5, "encoding": "base64"}).json()
    assert [base64.b64decode(m["payload"]) for m in rest] == [b"\xff\x00"]
    assert api.post("/api/queues/%2F/work/get", json={"count": 2.0}).json() == [], "2.0 is a whole number"
    counters = api.get("/api/queues/%2F/work").json()["counters"]
    assert counters["acked"] == 2 and counters["delivered"] == 4 and counters["redelivered"] == 2


@pytest.mark.parametrize(
    "body, code",
    [
        ({"payload": "x", "payload_encoding": "base64"}, "bad_request"),
        ({"payload": "x", "properties": {"delivery_mode": 3}}, "bad_request"),
        ({"payload": "x", "properties": {"expiration": "soon"}}, "invalid_argument"),
        ({"payload": "x", "properties": {"priority": 2.5}}, "bad_request"),
        ({"payload": "x", "properties": {"colour": "red"}}, "bad_request"),
        ({"payload": "x", "routing_key": "other"}, "bad_request"),
        ({"payload": "x", "properties": {"message_id": "m" * 256}}, "bad_request"),
    ],
)
def test_bad_publishes_are_400(api, body, code):
    api.put("/api/queues/%2F/q")
    assert error_code(api.post("/api/queues/%2F/q/publish", 400, json=body)) == code
    assert api.get("/api/queues/%2F/q").json()["messages"] == 0


def test_publish_to_a_missing_queue_is_404(api):
    assert error_code(api.post("/api/queues/%2F/missing/publish", 404, json={"payload": "x"})) == "not_found"


@pytest.mark.parametrize(
    "body", [{"count": 0}, {"count": 1001}, {"count": -1}, {"count": 1.5}, {"wait_ms": 60001}, {"ackmode": "keep"}]
)
def test_bad_gets_are_400(api, body):
    api.put("/api/queues/%2F/q")
    assert error_code(api.post("/api/queues/%2F/q/get", 400, json=body)) == "bad_request"


def test_get_from_a_missing_queue_is_404(api):
    assert error_code(api.post("/api/queues/%2F/missing/get", 404, json={})) == "not_found"


def test_get_waits_for_a_message_published_by_an_amqp_client(broker, api):
    api.put("/api/queues/%2F/later")

    def publish_soon():
        time.sleep(0.5)
        conn, ch = connect(broker)  # its own connection: pika's are not shared across threads
        ch.basic_publish("", "later", b"arrived", pika.BasicProperties(priority=1))
        conn.close()

    publisher = threading.Thread(target=publish_soon)
    publisher.start()
    started = time.monotonic()
    messages = api.post("/api/queues/%2F/later/get", json={"wait_ms": 10000, "count": 3}).json()
    elapsed = time.monotonic() - started
    publisher.join(10)
    assert [m["payload"] for m in messages] == ["arrived"]
    assert 0.4 < elapsed < 9, f"answers when the message arrives, not at the deadline ({elapsed:.2f}s)"
    assert api.get("/api/queues/%2F/later").json()["messages"] == 0


def test_get_wait_times_out_empty_and_leaves_no_consumer(api):
    api.put("/api/queues/%2F/quiet")
    started = time.monotonic()
    assert api.post("/api/queues/%2F/quiet/get", json={"wait_ms": 300}).json() == []
    assert time.monotonic() - started >= 0.29
    queue = api.get("/api/queues/%2F/quiet").json()
    assert queue["consumers"] == 0
    # A message published now is not swallowed by a leftover HTTP consumer.
    api.post("/api/queues/%2F/quiet/publish", json={"payload": "x"})
    assert api.get("/api/queues/%2F/quiet").json()["messages_ready"] == 1


def test_messages_cross_between_http_and_amqp(broker, api):
    api.put("/api/queues/%2F/bridge")
    api.post(
        "/api/queues/%2F/bridge/publish",
        json={"payload": "from http", "properties": {"headers": {"k": "v"}, "priority": 4, "reply_to": "answers"}},
    )
    conn, ch = connect(broker)
    method, props, body = ch.basic_get("bridge", auto_ack=True)
    assert body == b"from http"
    assert props.headers in ({"k": b"v"}, {"k": "v"})
    assert props.priority == 4 and props.reply_to == "answers" and props.delivery_mode == 2
    ch.basic_publish("", "bridge", b"from amqp", pika.BasicProperties(headers={"n": 1}, content_type="text/plain"))
    conn.close()
    [message] = api.post("/api/queues/%2F/bridge/get", json={}).json()
    assert message["payload"] == "from amqp"
    assert message["properties"] == {"headers": {"n": 1}, "content_type": "text/plain"}


def test_http_publishes_survive_a_crash(broker, api):
    api.put("/api/queues/%2F/durable")
    for i in range(20):
        api.post("/api/queues/%2F/durable/publish", json={"payload": f"m{i}"})
    broker.kill9()
    broker.start()
    api = Api(broker)
    taken = api.post("/api/queues/%2F/durable/get", json={"count": 100}).json()
    assert [m["payload"] for m in taken] == [f"m{i}" for i in range(20)]


def test_purge_and_delete(api):
    api.put("/api/queues/%2F/full")
    for _ in range(3):
        api.post("/api/queues/%2F/full/publish", json={"payload": "x"})
    refused = api.delete("/api/queues/%2F/full?if_empty=true", 409)
    assert error_code(refused) == "precondition_failed"
    assert api.delete("/api/queues/%2F/full/contents").json() == {"messages": 3}
    assert api.get("/api/queues/%2F/full").json()["messages"] == 0
    api.post("/api/queues/%2F/full/publish", json={"payload": "x"})
    assert api.delete("/api/queues/%2F/full").json() == {"messages": 1}
    assert error_code(api.get("/api/queues/%2F/full", 404)) == "not_found"
    assert error_code(api.delete("/api/queues/%2F/full", 404)) == "not_found"
    assert error_code(api.delete("/api/queues/%2F/full/contents", 404)) == "not_found"
    assert error_code(api.delete("/api/queues/%2F/x?if_empty=maybe", 400)) == "bad_request"


def test_exchanges_bindings_and_routing(api):
    names = {e["name"] for e in api.get("/api/exchanges/%2F").json()}
    assert {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} <= names
    assert api.get("/api/exchanges/%2F/amq.default").json()["type"] == "direct"
    created = api.put("/api/exchanges/%2F/events", json={"type": "topic"}).json()
    assert created == {
        "vhost": "/", "name": "events", "type": "topic", "durable": True,
        "auto_delete": False, "internal": False, "arguments": {},
    }
    assert error_code(api.put("/api/exchanges/%2F/events", 409, json={"type": "fanout"})) == "precondition_failed"
    assert error_code(api.put("/api/exchanges/%2F/odd", 400, json={"type": "x-unknown"})) == "bad_request"
    assert error_code(api.put("/api/exchanges/%2F/odd", 400, json={})) == "bad_request"
    assert error_code(api.put("/api/exchanges/%2F/amq.mine", 403, json={"type": "direct"})) == "access_refused"

    api.put("/api/queues/%2F/orders")
    api.post("/api/bindings/%2F/e/events/q/orders", 201, json={"routing_key": "order.*"})
    api.put("/api/exchanges/%2F/audit", json={"type": "fanout"})
    api.post("/api/bindings/%2F/e/events/e/audit", 201, json={"routing_key": "#"})
    bindings = api.get("/api/bindings/%2F").json()
    assert {"vhost": "/", "source": "events", "destination": "orders", "destination_type": "queue",
            "routing_key": "order.*", "arguments": {}} in bindings
    assert any(b["destination"] == "audit" and b["destination_type"] == "exchange" for b in bindings)
    assert api.get("/api/bindings").json() == bindings

    assert api.post("/api/exchanges/%2F/events/publish", json={"routing_key": "order.new", "payload": "o"}).json() == {
        "routed": True
    }
    assert api.post("/api/exchanges/%2F/events/publish", json={"routing_key": "other", "payload": "o"}).json() == {
        "routed": False
    }
    assert api.get("/api/queues/%2F/orders").json()["messages"] == 1
    assert error_code(api.post("/api/exchanges/%2F/nope/publish", 404, json={"payload": "x"})) == "not_found"

    api.delete("/api/bindings/%2F/e/events/q/orders?routing_key=order.*", 204)
    assert error_code(api.delete("/api/bindings/%2F/e/events/q/orders?routing_key=order.*", 404)) == "not_found"
    assert error_code(api.post("/api/bindings/%2F/e/events/x/orders", 400, json={})) == "bad_request"
    assert error_code(api.post("/api/bindings/%2F/e/events/q/missing", 404, json={})) == "not_found"
    assert error_code(api.delete("/api/exchanges/%2F/events?if_unused=true", 409)) == "precondition_failed"
    api.delete("/api/exchanges/%2F/events", 204)
    assert error_code(api.get("/api/exchanges/%2F/events", 404)) == "not_found"
    assert error_code(api.delete("/api/exchanges/%2F/amq.default", 403)) == "access_refused"


def test_connections_are_listed_and_can_be_closed(broker, api):
    assert api.get("/api/connections").json() == [], "the API's own engine connections are not listed"
    conn, ch = connect(broker)
    ch.queue_declare("held")
    [listed] = api.get("/api/connections").json()
    assert listed["user"] == "guest" and listed["vhost"] == "/" and listed["channels"] == 1
    assert listed["peer"].startswith("127.0.0.1:") and "pika" in listed["client"].lower()
    api.delete(f"/api/connections/{listed['id']}", 204)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        for _ in range(100):
            conn.process_data_events(0.05)
    assert closed.value.reply_code == 320
    deadline = time.monotonic() + 10
    while api.get("/api/connections").json() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.get("/api/connections").json() == []
    assert error_code(api.delete(f"/api/connections/{listed['id']}", 404)) == "not_found"
    assert error_code(api.delete("/api/connections/not-a-number", 400)) == "bad_request"


def test_metrics(api, broker):
    api.put("/api/queues/%2F/measured")
    api.post("/api/queues/%2F/measured/publish", json={"payload": "12345"})
    text = requests.get(broker.http + "/metrics", timeout=10).text
    assert 'weir_queue_messages{vhost="/",queue="measured",state="ready"} 1' in text
    assert 'weir_queue_bytes{vhost="/",queue="measured",state="ready"} 5' in text
    assert 'weir_queue_published_total{vhost="/",queue="measured"} 1' in text
    assert "# TYPE weir_log_commit_seconds histogram" in text
    count = next(line for line in text.splitlines() if line.startswith("weir_log_commit_seconds_count"))
    assert int(count.split()[1]) >= 1, "the persistent publish was committed to the log"


def test_openapi_document_lists_what_the_server_serves(broker, api):
    doc = requests.get(broker.http + "/api/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    assert len(doc["paths"]) >= 20
    for path, item in doc["paths"].items():
        concrete = path.replace("{vhost}", "%2F").replace("{kind}", "q").replace("{id}", "1")
        for placeholder in ("{name}", "{source}", "{destination}", "{user}"):
            concrete = concrete.replace(placeholder, "doc-probe")
        for method in item:
            response = requests.request(method.upper(), broker.http + concrete, auth=GUEST, json={}, timeout=10)
            # Each route exists: whatever it answers, it is not the router's "no such endpoint".
            if response.status_code == 404:
                assert response.json()["code"] != "no_route", (method, path)
            assert response.status_code != 405, (method, path, "documented but not served")
            assert response.status_code < 500, (method, path, response.text)


def test_schemathesis_finds_no_server_errors_or_schema_drift(broker, tmp_path):
    """Property-based: schemathesis generates requests from /api/openapi.json (valid and
    invalid ones, and stateful sequences) and checks every answer: no 5xx, status codes and
    bodies as documented, invalid input refused, valid input accepted. Fixed seed, bounded."""
    import subprocess
    import sys
    from pathlib import Path

    schemathesis = Path(sys.executable).with_name("schemathesis")
    command = [
        str(schemathesis), "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
        "run", broker.http + "/api/openapi.json",
        "--auth", "guest:guest", "--max-examples", "40", "--seed", "7",
        "--request-timeout", "20", "--generation-codec", "ascii",
        "--suppress-health-check", "filter_too_much", "--generation-database", "none",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout


def test_a_message_over_the_size_limit_is_413(api):
    # The test broker's 16 MiB segments cap a message just under 16 MiB; the request body limit
    # is a third larger (for base64), so this body reaches the handler and is refused there.
    api.put("/api/queues/%2F/big")
    too_big = "x" * (16 << 20)
    assert error_code(api.post("/api/queues/%2F/big/publish", 413, json={"payload": too_big})) == "too_large"
    assert api.get("/api/queues/%2F/big").json()["messages"] == 0


def test_a_full_reject_publish_queue_refuses_with_409(api):
    api.put("/api/queues/%2F/capped", json={"arguments": {"x-max-length": 1, "x-overflow": "reject-publish"}})
    api.post("/api/queues/%2F/capped/publish", json={"payload": "first"})
    refused = api.post("/api/queues/%2F/capped/publish", 409, json={"payload": "second"})
    assert error_code(refused) == "rejected"
    assert [m["payload"] for m in api.post("/api/queues/%2F/capped/get", json={"count": 5}).json()] == ["first"]


def test_counters_say_where_messages_went_and_totals_never_go_down(api):
    # A dead-letter exchange that does not exist: expired messages are dropped, not dead-lettered.
    api.put("/api/queues/%2F/nowhere", json={"arguments": {"x-dead-letter-exchange": "missing"}})
    api.post("/api/queues/%2F/nowhere/publish", json={"payload": "x", "properties": {"expiration": "1"}})
    deadline = time.monotonic() + 10
    while api.get("/api/queues/%2F/nowhere").json()["counters"]["expired"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    counters = api.get("/api/queues/%2F/nowhere").json()["counters"]
    assert (counters["expired"], counters["dropped"], counters["dead_lettered"]) == (1, 1, 0)
    before = api.get("/api/overview").json()["counters"]
    assert before["published"] >= 1
    api.delete("/api/queues/%2F/nowhere")
    assert api.get("/api/overview").json()["counters"] == before, "a deleted queue's history stays in the totals"

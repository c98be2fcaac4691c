"""Changing a queue's settings after declaration (`PUT /api/queues/{vhost}/{name}/settings`,
`weir queue set`): settings override the declared arguments without changing them, apply at
once, and survive a clean restart (checkpoint) and kill -9 (log record)."""
import json
import os
import subprocess

import pika
import pytest

from conftest import WEIR_BIN
from helpers import Api, connect, depth, drain


def test_settings_override_the_declared_arguments_at_once(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True, arguments={"x-max-length": 5})
    for n in range(5):
        ch.basic_publish("", "q", f"m{n}".encode())
    shown = api.put("/api/queues/%2F/q/settings", json={"settings": {"x-max-length": 2}}).json()
    assert shown["arguments"] == {"x-max-length": 5} and shown["settings"] == {"x-max-length": 2}
    assert depth(ch, "q") == 2, "the new limit drops the oldest at once"
    # The application's own declare is still equivalent.
    ch.queue_declare("q", durable=True, arguments={"x-max-length": 5})
    api.put("/api/queues/%2F/q/settings", json={"settings": {"x-max-length": 2, "x-overflow": "reject-publish"}})
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "q", b"refused")
    # Back to the declared arguments.
    api.put("/api/queues/%2F/q/settings", json={"settings": {}})
    for n in range(3):
        ch.basic_publish("", "q", f"more{n}".encode())
    assert drain(ch, "q") == ["m3", "m4", "more0", "more1", "more2"]
    conn.close()


def test_a_retry_policy_set_later_applies_to_the_next_failure(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("work")
    ch.basic_publish("", "work", b"poison")
    api.put("/api/queues/%2F/work/settings", json={"settings": {"x-delivery-limit": 1}})
    method, _, _ = ch.basic_get("work", auto_ack=False)
    ch.basic_nack(method.delivery_tag, requeue=True)
    assert drain(ch, "work") == []
    assert drain(ch, "weir.error") == ["poison"]
    conn.close()


@pytest.mark.parametrize("restart", ["clean", "kill9"])
def test_settings_survive_restarts(broker, restart):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.queue_declare("kept", durable=True)
    api.put("/api/queues/%2F/kept/settings", json={"settings": {"x-max-length": 1, "x-overflow": "reject-publish"}})
    ch.basic_publish("", "kept", b"one", pika.BasicProperties(delivery_mode=2))
    if restart == "clean":
        broker.restart()
    else:
        broker.kill9()
        broker.start()
    api = Api(broker)
    assert api.get("/api/queues/%2F/kept").json()["settings"] == {"x-max-length": 1, "x-overflow": "reject-publish"}
    conn, ch = connect(broker)
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "kept", b"two", pika.BasicProperties(delivery_mode=2))
    conn.close()


def test_settings_mistakes_are_4xx(broker):
    api = Api(broker)
    conn, ch = connect(broker)
    ch.queue_declare("q", arguments={"x-max-priority": 5})
    for settings in ({"x-max-priority": 9}, {"x-queue-order": "lifo"}, {"x-max-length": -1},
                     {"x-overflow": "sideways"}, {"x-dead-letter-routing-key": "k"}):
        api.put("/api/queues/%2F/q/settings", json={"settings": settings}, expect=400)
    api.put("/api/queues/%2F/q/settings", json={}, expect=400)
    api.put("/api/queues/%2F/missing/settings", json={"settings": {}}, expect=404)
    api.put("/api/users/reader", json={"password": "pw", "tags": []}, expect=201)
    api.put("/api/permissions/%2F/reader", 201, json={"configure": "", "write": ".*", "read": ".*"})
    Api(broker, auth=("reader", "pw")).put("/api/queues/%2F/q/settings", json={"settings": {}}, expect=403)
    assert api.get("/api/queues/%2F/q").json()["settings"] == {}
    conn.close()


def test_weir_queue_set(broker):
    env = dict(os.environ, WEIR_SERVER=broker.http)

    def weir(*args, expect=0):
        run = subprocess.run([WEIR_BIN, *args], capture_output=True, env=env, timeout=60)
        assert run.returncode == expect, (args, run.stdout, run.stderr)
        return run.stdout.decode()

    weir("queue", "create", "jobs", "--arg", "x-message-ttl=60000")
    assert weir("queue", "set", "jobs", "--arg", "x-max-length=100", "--arg", "x-overflow=reject-publish") == \
        "queue 'jobs' settings: x-max-length=100 x-overflow=reject-publish\n"
    assert weir("queue", "set", "jobs", "--unset", "x-overflow") == "queue 'jobs' settings: x-max-length=100\n"
    shown = json.loads(weir("queue", "show", "jobs", "--json"))
    assert shown["arguments"] == {"x-message-ttl": 60000} and shown["settings"] == {"x-max-length": 100}
    assert weir("queue", "set", "jobs", "--clear") == "queue 'jobs' has no settings: its declared arguments apply\n"
    weir("queue", "set", "jobs", "--arg", "x-max-priority=3", expect=1)
    weir("queue", "set", "missing", "--arg", "x-max-length=1", expect=3)

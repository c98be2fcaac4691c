"""Small helpers shared by the tests: pika connections and an HTTP API client."""
import time

import pika
import requests


def connect(broker):
    conn = pika.BlockingConnection(broker.params())
    return conn, conn.channel()


def pump_while(conn, waiting, timeout=5.0):
    """Let pika deliver to the callbacks while `waiting()` holds, for at most `timeout` seconds
    (the caller asserts what it expected afterwards)."""
    deadline = time.monotonic() + timeout
    while waiting() and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)


def depth(ch, queue):
    """Ready messages in `queue` (passive queue.declare)."""
    return ch.queue_declare(queue, passive=True).method.message_count


def drain(ch, queue):
    """Every ready message's body, in delivery order, taken with auto-ack `basic.get`."""
    bodies = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body.decode())


GUEST = ("guest", "guest")


class Api:
    """requests with the broker's base URL and the guest login."""

    def __init__(self, broker, auth=GUEST):
        self.base = broker.http
        self.auth = auth

    def call(self, method, path, expect=None, **kwargs):
        response = requests.request(method, self.base + path, auth=self.auth, timeout=30, **kwargs)
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"code", "message"}, body
        return response

    def get(self, path, expect=200, **kw):
        return self.call("GET", path, expect, **kw)

    def put(self, path, expect=200, **kw):
        return self.call("PUT", path, expect, **kw)

    def post(self, path, expect=200, **kw):
        return self.call("POST", path, expect, **kw)

    def delete(self, path, expect=200, **kw):
        return self.call("DELETE", path, expect, **kw)

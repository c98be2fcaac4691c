"""Users, permissions and vhosts (docs/SECURITY.md), end to end: an administrator manages them
over the HTTP API, and real clients (pika, and HTTP requests as the users themselves) find
every rule enforced, at once and after a restart."""
import pika
import pytest
import requests

from helpers import Api, drain

ALICE = ("alice", "wonderland")


@pytest.fixture
def admin(broker):
    return Api(broker)


def amqp(broker, user, password, vhost="/"):
    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=broker.port,
        virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password),
        connection_attempts=1,
    )
    conn = pika.BlockingConnection(params)
    return conn, conn.channel()


def make_alice(admin, configure="^alice-", write="^alice-|^amq\\.default$", read="^alice-", vhost="%2F"):
    admin.put("/api/users/alice", 201, json={"password": ALICE[1], "tags": ""})
    admin.put(f"/api/permissions/{vhost}/alice", 201, json={"configure": configure, "write": write, "read": read})


def refused(code, action):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        action()
    assert caught.value.reply_code == code, caught.value
    return caught.value.reply_text


def test_new_store_has_guest_as_administrator(admin):
    users = admin.get("/api/users").json()
    assert [(u["name"], u["tags"], u["administrator"]) for u in users] == [("guest", ["administrator"], True)]
    assert users[0]["password_hash"].startswith("$argon2id$"), "hashed, never in clear"
    assert admin.get("/api/whoami").json() == {"name": "guest", "tags": ["administrator"], "administrator": True}
    assert admin.get("/api/permissions").json() == [
        {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    ]


def test_passwords_are_checked_over_amqp_and_http(broker, admin):
    make_alice(admin)
    conn, _ = amqp(broker, *ALICE)
    conn.close()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(broker, "alice", "not-her-password")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(broker, "mallory", "wonderland")
    assert Api(broker, ALICE).get("/api/whoami").json()["name"] == "alice"
    Api(broker, ("alice", "nope")).get("/api/whoami", 401)
    # A changed password takes effect at once, for both protocols.
    admin.put("/api/users/alice", 204, json={"password": "looking-glass"})
    Api(broker, ALICE).get("/api/whoami", 401)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(broker, *ALICE)
    conn, _ = amqp(broker, "alice", "looking-glass")
    conn.close()


def test_each_amqp_operation_checks_its_permission(broker, admin):
    make_alice(admin)
    _, guest = amqp(broker, "guest", "guest")
    guest.queue_declare("shared")
    guest.exchange_declare("events", "topic")
    conn, ch = amqp(broker, *ALICE)
    ch.confirm_delivery()
    ch.queue_declare("alice-jobs")
    ch.basic_publish("", "alice-jobs", b"mine")
    assert ch.basic_get("alice-jobs", auto_ack=True)[2] == b"mine"
    text = refused(403, lambda: ch.queue_declare("shared"))
    assert text == "ACCESS_REFUSED - access to queue 'shared' in vhost '/' refused for user 'alice'"
    checks = [
        lambda c: c.basic_get("shared"),  # read
        lambda c: c.basic_consume("shared", lambda *a: None),  # read
        lambda c: c.queue_purge("shared"),  # read
        lambda c: c.queue_delete("shared"),  # configure
        lambda c: c.exchange_declare("alice-x", "direct", arguments={"alternate-exchange": "events"}),  # write on AE
        lambda c: c.queue_bind("alice-jobs", "events", "#"),  # read on the source exchange
        lambda c: c.queue_declare("alice-dl", arguments={"x-dead-letter-exchange": "events"}),  # write on DLX
        lambda c: (c.confirm_delivery(), c.basic_publish("events", "k", b"x")),  # write
    ]
    for check in checks:
        refused(403, lambda: check(conn.channel()))
    # Passive declares need no permission, as in RabbitMQ.
    assert conn.channel().queue_declare("shared", passive=True).method.queue == "shared"
    conn.close()


def test_a_permission_change_reaches_open_connections(broker, admin):
    make_alice(admin)
    conn, ch = amqp(broker, *ALICE)
    ch.queue_declare("alice-q")
    admin.put("/api/permissions/%2F/alice", 204, json={"configure": "^alice-", "write": "", "read": ""})
    refused(403, lambda: ch.basic_get("alice-q"))
    admin.delete("/api/permissions/%2F/alice", 204)
    refused(403, lambda: conn.channel().queue_declare("alice-q2"))
    conn.close()
    with pytest.raises(pika.exceptions.AMQPConnectionError) as caught:
        amqp(broker, *ALICE)
    assert "530" in str(caught.value) or "NOT_ALLOWED" in str(caught.value), caught.value


def test_vhosts_are_created_used_and_deleted(broker, admin):
    make_alice(admin)
    admin.put("/api/vhosts/billing", 201)
    admin.put("/api/vhosts/billing", 204)
    assert {v["name"] for v in admin.get("/api/vhosts").json()} == {"/", "billing"}
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(broker, *ALICE, vhost="billing")  # no permission there
    admin.put("/api/permissions/billing/alice", 201, json={"configure": ".*", "write": ".*", "read": ".*"})
    conn, ch = amqp(broker, *ALICE, vhost="billing")
    ch.queue_declare("invoices", durable=True)
    ch.basic_publish("", "invoices", b"inv-1", pika.BasicProperties(delivery_mode=2))
    assert [q["name"] for q in admin.get("/api/queues/billing").json()] == ["invoices"]
    # Deleting the vhost closes its connections (320) and takes its queues and permissions.
    admin.delete("/api/vhosts/billing", 204)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
        conn.channel()
    assert caught.value.reply_code == 320
    admin.get("/api/queues/billing", 404)
    assert [p["vhost"] for p in admin.get("/api/permissions").json() if p["user"] == "alice"] == ["/"]
    assert admin.delete("/api/vhosts/%2F", 409).json()["code"] == "precondition_failed"
    admin.delete("/api/vhosts/billing", 404)


def test_vhost_limits_cap_queues_and_connections(broker, admin):
    limits = {"max-queues": 1, "max-connections": 1}
    admin.put("/api/vhosts/small", 201, json={"limits": limits})
    admin.put("/api/permissions/small/guest", 201, json={"configure": ".*", "write": ".*", "read": ".*"})
    assert admin.get("/api/vhosts/small").json() == {"name": "small", "limits": limits}
    conn, ch = amqp(broker, "guest", "guest", vhost="small")
    ch.queue_declare("only")
    text = refused(406, lambda: conn.channel().queue_declare("second"))
    assert text == "PRECONDITION_FAILED - cannot declare queue 'second': queue limit in vhost 'small' (1) is reached"
    with pytest.raises(pika.exceptions.AMQPConnectionError) as caught:
        amqp(broker, "guest", "guest", vhost="small")
    assert "connection limit (1) is reached" in str(caught.value)
    # The HTTP API's own sessions are not client connections: they still work.
    admin.post("/api/queues/small/only/publish", json={"payload": "x"})
    conn.close()
    conn, _ = amqp(broker, "guest", "guest", vhost="small")  # the slot is free again
    conn.close()
    # Limits survive a restart, change with PUT, and are checked.
    broker.restart()
    admin = Api(broker)
    assert admin.get("/api/vhosts/small").json()["limits"] == limits
    admin.put("/api/vhosts/small", 204, json={})  # without limits: kept
    assert admin.get("/api/vhosts/small").json()["limits"] == limits
    admin.put("/api/vhosts/small", 204, json={"limits": {"max-queues": 2}})
    _, ch = amqp(broker, "guest", "guest", vhost="small")
    ch.queue_declare("second")
    for bad in ({"max-queues": -1}, {"max-bananas": 1}, {"max-queues": "many"}):
        assert admin.put("/api/vhosts/small", 400, json={"limits": bad}).json()["code"] in ("invalid_argument", "bad_request")


def test_vhost_quotas_refuse_publishes_over_messages_or_bytes(broker, admin):
    admin.put("/api/vhosts/quota", 201, json={"limits": {"max-messages": 3, "max-bytes": 1000}})
    admin.put("/api/permissions/quota/guest", 201, json={"configure": ".*", "write": ".*", "read": ".*"})
    conn, ch = amqp(broker, "guest", "guest", vhost="quota")
    ch.confirm_delivery()
    ch.queue_declare("a")
    ch.queue_declare("b")
    ch.basic_publish("", "a", b"1")
    ch.basic_publish("", "b", b"2")
    ch.basic_publish("", "a", b"3")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "b", b"4")  # a fourth message in the vhost
    assert admin.post("/api/queues/quota/a/publish", 409, json={"payload": "x"}).json()["code"] == "rejected"
    # Unacked messages count too; once one is acked there is room again.
    method, _, _ = ch.basic_get("a", auto_ack=False)
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "b", b"4")
    ch.basic_ack(method.delivery_tag)
    ch.basic_publish("", "b", b"4")
    # Bytes: 3 small messages and room for 997 more bytes.
    drain(ch, "a")
    drain(ch, "b")
    ch.basic_publish("", "a", b"x" * 1000)
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "a", b"y")
    conn.close()


def test_http_enforces_the_same_rules(broker, admin):
    make_alice(admin)
    admin.put("/api/vhosts/private", 201)
    admin.put("/api/queues/%2F/shared", json={})
    alice = Api(broker, ALICE)
    # Management is for administrators.
    for method, path, body in [
        ("GET", "/api/users", None),
        ("PUT", "/api/users/bob", {"password": "x"}),
        ("DELETE", "/api/users/guest", None),
        ("PUT", "/api/vhosts/mine", {}),
        ("DELETE", "/api/vhosts/private", None),
        ("PUT", "/api/permissions/%2F/alice", {"configure": ".*", "write": ".*", "read": ".*"}),
    ]:
        assert alice.call(method, path, 403, json=body).json()["code"] == "access_refused"
    # Reads show only what the user may see.
    assert [v["name"] for v in alice.get("/api/vhosts").json()] == ["/"]
    alice.get("/api/queues/private", 403)
    me = alice.get("/api/users/alice").json()
    assert me["name"] == "alice" and me["password_hash"] == "", "the hash is for administrators only"
    alice.get("/api/users/guest", 403)
    assert [p["user"] for p in alice.get("/api/permissions").json()] == ["alice"]
    # Queue operations go through the same permission checks as AMQP.
    alice.put("/api/queues/%2F/alice-inbox", json={})
    alice.put("/api/queues/%2F/other", 403, json={})
    alice.post("/api/queues/%2F/alice-inbox/publish", json={"payload": "hi"})
    assert alice.post("/api/queues/%2F/alice-inbox/get", json={}).json()[0]["payload"] == "hi"
    alice.post("/api/queues/%2F/shared/get", 403, json={})
    alice.post("/api/exchanges/%2F/amq.topic/publish", 403, json={"routing_key": "k", "payload": "x"})
    alice.put("/api/queues/private/q", 403, json={})
    # Connections: administrators see all, users their own.
    conn, _ = amqp(broker, *ALICE)
    guest_conn, _ = amqp(broker, "guest", "guest")
    assert {c["user"] for c in admin.get("/api/connections").json()} == {"alice", "guest"}
    mine = alice.get("/api/connections").json()
    assert [c["user"] for c in mine] == ["alice"]
    guest_id = next(c["id"] for c in admin.get("/api/connections").json() if c["user"] == "guest")
    alice.delete(f"/api/connections/{guest_id}", 404)
    alice.delete(f"/api/connections/{mine[0]['id']}", 204)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
        conn.channel()
    guest_conn.close()


def test_deleting_a_user_closes_its_connections(broker, admin):
    make_alice(admin)
    conn, _ = amqp(broker, *ALICE)
    admin.delete("/api/users/alice", 204)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
        conn.channel()
    assert caught.value.reply_code == 320
    assert [u["name"] for u in admin.get("/api/users").json()] == ["guest"]
    assert admin.get("/api/permissions").json()[0]["user"] == "guest", "her permissions went with her"
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(broker, *ALICE)


def test_bad_requests_are_clear_4xx(admin):
    assert admin.delete("/api/users/guest", 409).json()["code"] == "precondition_failed", "the last administrator"
    assert admin.put("/api/users/guest", 409, json={"tags": ""}).json()["code"] == "precondition_failed"
    # Nor may the last administrator lose the means to log in.
    assert admin.put("/api/users/guest", 409, json={"password_hash": ""}).json()["code"] == "precondition_failed"
    admin.put("/api/users/alice", 201, json={})  # no password: cannot log in yet
    bad = admin.put("/api/permissions/%2F/alice", 400, json={"configure": "(", "write": "", "read": ""})
    assert bad.json()["code"] == "invalid_argument" and "configure pattern" in bad.json()["message"]
    admin.put("/api/permissions/%2F/nobody", 404, json={"configure": "", "write": "", "read": ""})
    admin.put("/api/permissions/nowhere/alice", 404, json={"configure": "", "write": "", "read": ""})
    assert admin.put("/api/users/bob", 400, json={"password": "a", "password_hash": ""}).json()["code"] == "bad_request"
    hash_error = admin.put("/api/users/bob", 400, json={"password_hash": "$5$rounds=5000$salt$hash"}).json()
    assert hash_error["code"] == "invalid_argument"
    admin.put("/api/users/bob", 400, json={"tags": None})
    admin.delete("/api/users/nobody", 404)
    admin.delete("/api/permissions/%2F/alice", 404)


def test_a_password_hash_can_be_imported(broker, admin):
    admin.put("/api/users/alice", 201, json={"password": ALICE[1]})
    exported = admin.get("/api/users/alice").json()["password_hash"]
    admin.put("/api/users/alice2", 201, json={"password_hash": exported, "tags": ["administrator", "ops"]})
    admin.put("/api/permissions/%2F/alice2", 201, json={"configure": "", "write": "", "read": ".*"})
    me = Api(broker, ("alice2", ALICE[1])).get("/api/whoami").json()
    assert me == {"name": "alice2", "tags": ["administrator", "ops"], "administrator": True}


def test_users_permissions_and_vhosts_survive_restarts(broker, admin):
    make_alice(admin)
    admin.put("/api/vhosts/billing", 201)
    admin.put("/api/permissions/billing/alice", 201, json={"configure": ".*", "write": ".*", "read": ".*"})
    admin.put("/api/users/ops", 201, json={"password": "ops-pass", "tags": "administrator"})
    admin.delete("/api/users/guest", 204)
    broker.restart()
    ops = Api(broker, ("ops", "ops-pass"))  # the ports change with each start
    assert sorted(u["name"] for u in ops.get("/api/users").json()) == ["alice", "ops"], "guest stays deleted"
    assert {v["name"] for v in ops.get("/api/vhosts").json()} == {"/", "billing"}
    conn, ch = amqp(broker, *ALICE, vhost="billing")
    ch.queue_declare("anything")
    conn.close()
    conn, ch = amqp(broker, *ALICE)
    refused(403, lambda: ch.queue_declare("not-hers"))
    conn.close()
    Api(broker).get("/api/whoami", 401)
    # After a crash too (what is replayed from the log, not only from the last checkpoint).
    ops.put("/api/users/carol", 201, json={"password": "c"})
    broker.kill9()
    broker.start()
    ops = Api(broker, ("ops", "ops-pass"))
    assert sorted(u["name"] for u in ops.get("/api/users").json()) == ["alice", "carol", "ops"]

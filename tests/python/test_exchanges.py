"""Exchanges and bindings through pika, the way the RabbitMQ tutorials use them."""
import pika
import pytest

from helpers import connect, drain


def private_queue(ch):
    return ch.queue_declare("", exclusive=True).method.queue


def test_fanout_publish_subscribe(broker):
    conn, ch = connect(broker)
    ch.exchange_declare("logs", exchange_type="fanout")
    q1, q2 = private_queue(ch), private_queue(ch)
    assert q1.startswith("amq.gen-") and q1 != q2
    ch.queue_bind(q1, "logs")
    ch.queue_bind(q2, "logs")
    ch.basic_publish("logs", "", b"hello")
    assert drain(ch, q1) == ["hello"]
    assert drain(ch, q2) == ["hello"]
    conn.close()


def test_direct_routing(broker):
    conn, ch = connect(broker)
    ch.exchange_declare("direct_logs", exchange_type="direct")
    errors, everything = private_queue(ch), private_queue(ch)
    ch.queue_bind(errors, "direct_logs", routing_key="error")
    for severity in ("info", "warning", "error"):
        ch.queue_bind(everything, "direct_logs", routing_key=severity)
    for severity in ("info", "error", "debug"):
        ch.basic_publish("direct_logs", severity, severity.encode())
    assert drain(ch, errors) == ["error"]
    assert drain(ch, everything) == ["info", "error"]
    conn.close()


def test_topic_routing(broker):
    conn, ch = connect(broker)
    ch.exchange_declare("topic_logs", exchange_type="topic")
    q1, q2 = private_queue(ch), private_queue(ch)
    ch.queue_bind(q1, "topic_logs", routing_key="*.orange.*")
    ch.queue_bind(q2, "topic_logs", routing_key="*.*.rabbit")
    ch.queue_bind(q2, "topic_logs", routing_key="lazy.#")
    for key in ("quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
                "lazy.brown.fox", "lazy.pink.rabbit", "quick.brown.fox", "orange",
                "quick.orange.male.rabbit", "lazy.orange.male.rabbit"):
        ch.basic_publish("topic_logs", key, key.encode())
    assert drain(ch, q1) == ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]
    # lazy.pink.rabbit matches both of q2's bindings and arrives once.
    assert drain(ch, q2) == ["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
                             "lazy.pink.rabbit", "lazy.orange.male.rabbit"]
    conn.close()


def test_headers_exchange(broker):
    conn, ch = connect(broker)
    ch.exchange_declare("reports", exchange_type="headers")
    all_q, any_q = private_queue(ch), private_queue(ch)
    ch.queue_bind(all_q, "reports", arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind(any_q, "reports", arguments={"x-match": "any", "format": "pdf", "type": "log"})
    ch.basic_publish("reports", "", b"pdf-report", pika.BasicProperties(headers={"format": "pdf", "type": "report"}))
    ch.basic_publish("reports", "", b"zip-log", pika.BasicProperties(headers={"format": "zip", "type": "log"}))
    ch.basic_publish("reports", "", b"none")
    assert drain(ch, all_q) == ["pdf-report"]
    assert drain(ch, any_q) == ["pdf-report", "zip-log"]
    # The predeclared amq.match is a headers exchange too.
    ch.queue_bind(all_q, "amq.match", arguments={"k": 1})
    ch.basic_publish("amq.match", "", b"int-match", pika.BasicProperties(headers={"k": 1}))
    assert drain(ch, all_q) == ["int-match"]
    conn.close()


def test_exchange_to_exchange_alternate_and_internal(broker):
    conn, ch = connect(broker)
    ch.exchange_declare("unrouted", exchange_type="fanout")
    ch.exchange_declare("front", exchange_type="direct", arguments={"alternate-exchange": "unrouted"})
    ch.exchange_declare("inner", exchange_type="fanout", internal=True)
    ch.exchange_bind(destination="inner", source="front", routing_key="in")
    q_inner, q_ae = private_queue(ch), private_queue(ch)
    ch.queue_bind(q_inner, "inner")
    ch.queue_bind(q_ae, "unrouted")
    ch.basic_publish("front", "in", b"through")
    ch.basic_publish("front", "elsewhere", b"alternate")
    assert drain(ch, q_inner) == ["through"]
    assert drain(ch, q_ae) == ["alternate"]
    ch.exchange_unbind(destination="inner", source="front", routing_key="in")
    ch.basic_publish("front", "in", b"after-unbind")
    assert drain(ch, q_inner) == []
    assert drain(ch, q_ae) == ["after-unbind"]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.basic_publish("inner", "", b"x")
        ch.queue_declare("", exclusive=True)  # the next synchronous call sees the close
    assert err.value.reply_code == 403
    conn.close()


def test_mandatory_publish_with_no_binding_comes_back(broker):
    conn, ch = connect(broker)
    ch.confirm_delivery()
    ch.exchange_declare("nowhere", exchange_type="direct")
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("nowhere", "key", b"lost?", mandatory=True)
    conn.close()


def test_durable_exchanges_and_bindings_survive_restart(broker):
    conn, ch = connect(broker)
    ch.exchange_declare("events", exchange_type="topic", durable=True)
    ch.exchange_declare("scratch", exchange_type="fanout", durable=False)
    ch.queue_declare("audit", durable=True)
    ch.queue_bind("audit", "events", routing_key="order.*")
    ch.queue_bind("audit", "amq.direct", routing_key="audit")
    conn.close()
    broker.restart()
    conn, ch = connect(broker)
    ch.exchange_declare("events", exchange_type="topic", durable=True, passive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.exchange_declare("scratch", exchange_type="fanout", passive=True)
    assert err.value.reply_code == 404
    ch = conn.channel()
    ch.basic_publish("events", "order.created", b"one")
    ch.basic_publish("events", "user.created", b"not bound")
    ch.basic_publish("amq.direct", "audit", b"two")
    assert drain(ch, "audit") == ["one", "two"]
    conn.close()


@pytest.mark.parametrize("action, code", [
    (lambda ch: ch.exchange_declare("amq.custom", exchange_type="direct"), 403),
    (lambda ch: ch.exchange_delete("amq.direct"), 403),
    (lambda ch: ch.queue_bind("q", ""), 403),
    (lambda ch: ch.queue_bind("q", "missing-exchange"), 404),
    (lambda ch: ch.queue_bind("missing-queue", "amq.direct"), 404),
    (lambda ch: ch.exchange_declare("typed", exchange_type="fanout"), 406),
    (lambda ch: ch.exchange_declare("missing", exchange_type="direct", passive=True), 404),
])
def test_exchange_mistakes_close_the_channel(broker, action, code):
    conn, ch = connect(broker)
    ch.queue_declare("q")
    ch.exchange_declare("typed", exchange_type="direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        action(ch)
    assert err.value.reply_code == code, err.value.reply_text
    assert conn.channel().is_open, "the connection survives"
    conn.close()


def test_unknown_exchange_type_closes_the_connection_with_503(broker):
    conn, ch = connect(broker)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as err:
        ch.exchange_declare("odd", exchange_type="no-such-type")
    assert err.value.reply_code == 503


def test_unused_exchange_delete_and_auto_delete(broker):
    conn, ch = connect(broker)
    ch.exchange_declare("busy", exchange_type="fanout")
    q = private_queue(ch)
    ch.queue_bind(q, "busy")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.exchange_delete("busy", if_unused=True)
    assert err.value.reply_code == 406
    ch = conn.channel()
    ch.exchange_declare("temp", exchange_type="fanout", auto_delete=True)
    ch.queue_bind(q, "temp")
    ch.queue_unbind(q, "temp")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.exchange_declare("temp", exchange_type="fanout", passive=True)
    assert err.value.reply_code == 404, "the auto-delete exchange went with its last binding"
    conn.close()


def test_cc_and_bcc_headers_add_routing_keys_and_bcc_is_hidden(broker):
    conn, ch = connect(broker)
    ch.exchange_declare("news", exchange_type="direct")
    for name in ("sport", "weather", "audit"):
        ch.queue_declare(name)
        ch.queue_bind(name, "news", routing_key=name)
    ch.basic_publish(
        "news",
        "sport",
        b"match report",
        pika.BasicProperties(headers={"CC": ["weather"], "BCC": ["audit"], "kept": "yes"}),
    )
    for name in ("sport", "weather", "audit"):
        method, props, body = ch.basic_get(name, auto_ack=True)
        assert body == b"match report", name
        assert "BCC" not in props.headers, "BCC never reaches a receiver"
        assert props.headers["CC"] == ["weather"] and props.headers["kept"] == "yes"
    # On the default exchange CC keys name queues directly.
    ch.basic_publish("", "sport", b"direct", pika.BasicProperties(headers={"CC": ["audit"]}))
    assert ch.basic_get("sport", auto_ack=True)[2] == b"direct"
    assert ch.basic_get("audit", auto_ack=True)[2] == b"direct"
    conn.close()


def test_cc_cannot_reach_another_connections_exclusive_queue(broker):
    """The default exchange's 405 for another connection's exclusive queue holds for CC keys too."""
    owner_conn, owner = connect(broker)
    private = private_queue(owner)
    conn, ch = connect(broker)
    ch.queue_declare("open")
    ch.basic_publish("", "open", b"sneaky", pika.BasicProperties(headers={"CC": [private]}))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.queue_declare("open", passive=True)  # the next synchronous call sees the close
    assert closed.value.reply_code == 405
    assert owner.basic_get(private, auto_ack=True)[0] is None, "nothing reached the exclusive queue"
    conn.close()
    owner_conn.close()

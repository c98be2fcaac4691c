"""The `weir` CLI as a user runs it, against a real broker through its HTTP API: a whole
session, the --json output, and the exit codes scripts rely on."""
import json
import os
import subprocess
import threading
import time

import pika

from conftest import WEIR_BIN


def weir(broker, *args, input=None, env=None, expect=0):
    environment = dict(os.environ, WEIR_SERVER=broker.http)
    environment.pop("WEIR_USER", None)
    environment.pop("WEIR_PASSWORD", None)
    environment.update(env or {})
    run = subprocess.run(
        [WEIR_BIN, *args], input=input, capture_output=True, env=environment, timeout=120
    )
    assert run.returncode == expect, (args, run.returncode, run.stdout, run.stderr)
    return run.stdout.decode(), run.stderr.decode()


def test_a_whole_session(broker):
    # A work queue whose expired or rejected messages go to a dead-letter queue.
    weir(broker, "queue", "create", "dead")
    out, _ = weir(
        broker, "queue", "create", "work",
        "--arg", "x-dead-letter-exchange=", "--arg", "x-dead-letter-routing-key=dead",
        "--arg", "x-max-priority=9",
    )
    assert "work" in out
    listed, _ = weir(broker, "queue", "list")
    lines = listed.splitlines()
    assert lines[0].split() == ["vhost", "name", "messages", "ready", "unacked", "delayed", "consumers"]
    assert [line.split()[1] for line in lines[1:]] == ["dead", "work"]

    weir(broker, "send", "work", "low")
    weir(broker, "send", "work", "high", "--priority", "7", "--header", "attempt=1", "--correlation-id", "c-9")
    weir(broker, "send", "work", input=b"from stdin\n")
    weir(broker, "send", "work", "short-lived", "--expiration", "50")
    time.sleep(0.3)
    shown = json.loads(weir(broker, "queue", "show", "work", "--json")[0])
    assert shown["messages_ready"] == 3 and shown["arguments"]["x-max-priority"] == 9
    assert shown["counters"]["dead_lettered"] == 1

    # Highest priority first; bodies one per line (a body's own newline is not doubled).
    out, _ = weir(broker, "recv", "work", "--count", "10")
    assert out == "high\nlow\nfrom stdin\n"
    out, _ = weir(broker, "recv", "dead", "--json")
    [dead] = json.loads(out)
    assert dead["payload"] == "short-lived"
    assert dead["properties"]["headers"]["x-first-death-reason"] == "expired"

    # recv --wait answers when a message arrives.
    def send_soon():
        time.sleep(0.5)
        weir(broker, "send", "work", "arrived")

    sender = threading.Thread(target=send_soon)
    sender.start()
    started = time.monotonic()
    out, _ = weir(broker, "recv", "work", "--wait", "10")
    sender.join()
    assert out == "arrived\n" and time.monotonic() - started < 9
    out, _ = weir(broker, "recv", "work", "--wait", "0.2")
    assert out == "", "nothing there: no output, and still success"

    # --requeue looks without taking.
    weir(broker, "send", "work", "keep me")
    assert weir(broker, "recv", "work", "--requeue")[0] == "keep me\n"
    assert json.loads(weir(broker, "queue", "show", "work", "--json")[0])["messages_ready"] == 1
    assert "purged 1 messages" in weir(broker, "queue", "purge", "work")[0]

    status, _ = weir(broker, "status")
    rows = dict(line.split(None, 1) for line in status.splitlines())
    assert rows["queues"] == "2" and rows["messages_ready"] == "0" and rows["log"].endswith("bytes")
    assert json.loads(weir(broker, "status", "--json")[0])["queues"] == 2
    assert weir(broker, "vhost", "list")[0].split() == ["name", "/"]

    weir(broker, "queue", "delete", "work")
    weir(broker, "queue", "delete", "dead")
    assert json.loads(weir(broker, "queue", "list", "--json")[0]) == []


def test_browse_and_selective_recv(broker):
    weir(broker, "queue", "create", "orders", "--arg", "x-max-priority=9")
    for n, (region, priority) in enumerate([("eu", 1), ("us", 8), ("eu", 6), ("asia", 9)]):
        weir(broker, "send", "orders", f"order {n}", "--header", f"region={region}", "--priority", str(priority),
             "--message-id", f"o-{n}", "--correlation-id", f"batch-{n % 2}")
    weir(broker, "send", "orders", "tomorrow", "--delay", "600000")

    table = weir(broker, "browse", "orders")[0].splitlines()
    assert table[0].split() == ["seq", "state", "priority", "deliveries", "message_id", "correlation_id", "body"]
    assert [line.split()[4] for line in table[1:]] == ["o-3", "o-1", "o-2", "o-0"], "delivery order"
    listed = json.loads(weir(broker, "browse", "orders", "--state", "all", "--json")[0])
    assert [(m["payload"], m["state"]) for m in listed][-1] == ("tomorrow", "delayed")
    assert len(json.loads(weir(broker, "browse", "orders", "--count", "2", "--json")[0])) == 2
    eu = json.loads(weir(broker, "browse", "orders", "--selector", "region = 'eu'", "--json")[0])
    assert [m["payload"] for m in eu] == ["order 2", "order 0"]

    assert weir(broker, "recv", "orders", "--selector", "region = 'eu' AND priority > 2")[0] == "order 2\n"
    assert weir(broker, "recv", "orders", "--message-id", "o-1")[0] == "order 1\n"
    assert weir(broker, "recv", "orders", "--correlation-id", "batch-1", "--count", "5")[0] == "order 3\n"
    assert weir(broker, "recv", "orders", "--count", "5")[0] == "order 0\n"
    assert json.loads(weir(broker, "queue", "show", "orders", "--json")[0])["messages_delayed"] == 1


def test_retry_policy_dead_letters_and_redrive(broker):
    """The issue's session: a queue with a retry policy and a dead-letter target; send;
    receive with wait; browse; move the dead letters back; delete."""
    weir(broker, "queue", "create", "work.dlq")
    weir(broker, "queue", "create", "work", "--arg", "x-delivery-limit=2", "--arg", "x-dead-letter-exchange=",
         "--arg", "x-dead-letter-routing-key=work.dlq")
    weir(broker, "send", "work", "job 1")
    weir(broker, "send", "work", "job 2")
    # Look twice without taking (each look is a delivery): job 1 uses up its two deliveries.
    assert weir(broker, "recv", "work", "--requeue")[0] == "job 1\n"
    assert weir(broker, "recv", "work", "--requeue")[0] == "job 1\n"
    assert weir(broker, "recv", "work", "--wait", "5")[0] == "job 2\n"
    dead = json.loads(weir(broker, "browse", "work.dlq", "--json")[0])
    assert [m["payload"] for m in dead] == ["job 1"]
    assert dead[0]["properties"]["headers"]["x-first-death-reason"] == "delivery_limit"

    out, _ = weir(broker, "move", "work.dlq")
    assert out == "moved 1 messages from 'work.dlq' back to their source queues\n"
    assert json.loads(weir(broker, "queue", "show", "work.dlq", "--json")[0])["messages"] == 0
    assert weir(broker, "recv", "work", "--wait", "5")[0] == "job 1\n"

    # A bigger move goes in batches of 1000 (a progress bar when stderr is a terminal).
    conn = pika.BlockingConnection(broker.params())
    ch = conn.channel()
    for n in range(2500):
        ch.basic_publish("", "work.dlq", f"bulk {n}".encode())
    conn.close()
    moved = json.loads(weir(broker, "move", "work.dlq", "work", "--count", "2", "--json")[0])
    assert moved == {"moved": 2, "skipped": 0, "target_full": False}
    out, _ = weir(broker, "move", "work.dlq", "work")
    assert out == "moved 2498 messages from 'work.dlq' to 'work'\n"
    shown = json.loads(weir(broker, "queue", "show", "work", "--json")[0])
    assert shown["messages_ready"] == 2500
    first = json.loads(weir(broker, "browse", "work", "--count", "3", "--json")[0])
    assert [m["payload"] for m in first] == ["bulk 0", "bulk 1", "bulk 2"], "order kept across batches"
    weir(broker, "move", "work.dlq", "missing", expect=3)
    weir(broker, "queue", "delete", "work")
    weir(broker, "queue", "delete", "work.dlq")


def test_binary_bodies_round_trip(broker):
    weir(broker, "queue", "create", "bin")
    body = bytes(range(256))
    weir(broker, "send", "bin", input=body)
    out = subprocess.run(
        [WEIR_BIN, "recv", "bin"], capture_output=True, env=dict(os.environ, WEIR_SERVER=broker.http), timeout=60
    ).stdout
    assert out == body + b"\n"


def test_exit_codes(broker):
    _, err = weir(broker, "queue", "show", "missing", expect=3)
    assert "no queue 'missing'" in err
    weir(broker, "send", "missing", "x", expect=3)
    _, err = weir(broker, "status", env={"WEIR_PASSWORD": "wrong"}, expect=4)
    assert "unauthorized" in err
    weir(broker, "status", env={"WEIR_SERVER": "http://127.0.0.1:1"}, expect=4)
    weir(broker, "queue", "create", "q", "--arg", "x-max-priority=lots", expect=1)
    weir(broker, "queue", "create", "q", "--arg", "novalue", expect=2)
    weir(broker, "queue", "bogus", expect=2)
    weir(broker, "browse", "q", "--state", "sideways", expect=2)
    weir(broker, "queue", "create", "q")
    _, err = weir(broker, "recv", "q", "--selector", "a =", expect=1)
    assert "selector error at character 4" in err and "invalid_argument" in err
    weir(broker, "send", "q", "x")
    _, err = weir(broker, "queue", "delete", "q", "--if-empty", expect=1)
    assert "precondition_failed" in err


def test_users_permissions_and_vhosts(broker):
    weir(broker, "vhost", "create", "billing", "--max-queues", "5")
    assert weir(broker, "vhost", "list")[0].split() == ["name", "/", "billing"]
    listed = json.loads(weir(broker, "vhost", "list", "--json")[0])
    assert listed[1] == {"name": "billing", "limits": {"max-queues": 5}}
    weir(broker, "vhost", "create", "quota", "--max-messages", "10", "--max-bytes", "4096")
    listed = json.loads(weir(broker, "vhost", "list", "--json")[0])
    assert listed[2] == {"name": "quota", "limits": {"max-bytes": 4096, "max-messages": 10}}
    weir(broker, "vhost", "delete", "quota")
    weir(broker, "user", "add", "alice", "--new-password", "s3cret")
    _, err = weir(broker, "user", "add", "alice", "--new-password", "x", expect=1)
    assert "exists" in err
    weir(broker, "user", "permit", "alice", "^alice-", "^alice-|^amq\\.default$", "^alice-", "--vhost", "billing")
    users = weir(broker, "user", "list")[0].splitlines()
    assert [line.split() for line in users] == [["name", "tags"], ["alice"], ["guest", "administrator"]]
    perms = json.loads(weir(broker, "user", "permissions", "--json")[0])
    assert {(p["user"], p["vhost"]) for p in perms} == {("alice", "billing"), ("guest", "/")}

    alice = {"WEIR_USER": "alice", "WEIR_PASSWORD": "s3cret"}
    assert weir(broker, "user", "whoami", env=alice)[0] == "alice []\n"
    weir(broker, "queue", "create", "alice-in", "--vhost", "billing", env=alice)
    weir(broker, "send", "alice-in", "paid", "--vhost", "billing", env=alice)
    assert weir(broker, "recv", "alice-in", "--vhost", "billing", env=alice)[0] == "paid\n"
    _, err = weir(broker, "queue", "create", "other", "--vhost", "billing", env=alice, expect=1)
    assert "access_refused" in err
    _, err = weir(broker, "user", "list", env=alice, expect=1)
    assert "not an administrator" in err
    weir(broker, "queue", "list", "--vhost", "/", env=alice, expect=1)

    weir(broker, "user", "set", "alice", "--new-password", "n3w")
    weir(broker, "user", "whoami", env=alice, expect=4)
    weir(broker, "user", "set", "nobody", "--tags", "x", expect=3)
    weir(broker, "user", "revoke", "alice", "--vhost", "billing")
    weir(broker, "user", "revoke", "alice", "--vhost", "billing", expect=3)
    weir(broker, "user", "delete", "alice")
    weir(broker, "vhost", "delete", "billing")
    weir(broker, "vhost", "delete", "billing", expect=3)
    _, err = weir(broker, "user", "delete", "guest", expect=1)
    assert "last administrator" in err


def test_every_command_has_help_with_examples():
    for command in (["queue", "create"], ["queue", "list"], ["queue", "show"], ["queue", "purge"],
                    ["queue", "delete"], ["send"], ["recv"], ["status"], ["serve"],
                    ["vhost", "create"], ["vhost", "delete"], ["user", "add"], ["user", "set"],
                    ["user", "delete"], ["user", "permit"], ["user", "revoke"]):
        run = subprocess.run([WEIR_BIN, *command, "--help"], capture_output=True, timeout=30)
        assert run.returncode == 0
        assert "Example" in run.stdout.decode(), command

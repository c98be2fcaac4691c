"""Celery (kombu + py-amqp) against Weir: a worker runs a task and answers a broadcast ping.

What this exercises on the broker is listed in ../shared/AMQP-NOTES.md section 2.7: durable
direct, topic and fanout exchanges; an rpc:// result queue (durable, auto-delete, x-expires);
exclusive auto-delete pidbox and event queues with x-expires and x-message-ttl; basic.qos,
basic.consume with and without no_ack, acks and cancels.

kombu picks global qos only when the server's product is "RabbitMQ" 3.3-3.x; Weir says "Weir",
so the worker sends basic.qos(prefetch_count=N, global=False) before creating its consumer,
and that per-consumer limit is what Weir applies (docs/INTEROP.md, "Celery").

Every step is bounded: the worker must be ready within 60 s, the task answer within 30 s,
`celery inspect ping` within 60 s, and the worker must stop within 30 s of SIGTERM.
"""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
CELERY = [sys.executable, "-m", "celery", "-A", "weir_celery_app"]
WORKER_NAME = "weir-smoke@localhost"
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


def celery_env(broker):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["WEIR_CELERY_BROKER_URL"] = broker_url(broker)
    return env


def broker_url(broker):
    return f"amqp://guest:guest@127.0.0.1:{broker.port}//"


class Worker:
    def __init__(self, broker, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            CELERY + ["worker", "--pool=solo", "--loglevel=info", "--hostname", WORKER_NAME],
            env=celery_env(broker),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=HERE,
        )

    def output(self):
        return self.log_path.read_text(errors="replace")

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if f"{WORKER_NAME} ready." in self.output():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"celery worker not ready within {READY_TIMEOUT_S} s:\n{self.output()}")

    def stop(self):
        """Warm shutdown (SIGTERM); returns the exit status, or None if it had to be killed."""
        status = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                status = self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        else:
            status = self.process.returncode
        self.log.close()
        return status


@pytest.fixture
def worker(broker, tmp_path):
    w = Worker(broker, tmp_path / "worker.log")
    yield w
    w.stop()


@pytest.fixture
def celery_app(broker):
    sys.path.insert(0, str(HERE))
    try:
        from weir_celery_app import add, app

        app.conf.broker_url = broker_url(broker)
        yield app, add
        app.close()
    finally:
        sys.path.remove(str(HERE))


def test_celery_worker_runs_a_task_and_answers_ping(broker, worker, celery_app):
    app, add = celery_app
    worker.wait_ready()

    result = add.delay(2, 3)
    assert result.get(timeout=30) == 5
    assert "Task weir_celery_app.add[" in worker.output()

    ping = subprocess.run(
        CELERY + ["inspect", "ping", "--destination", WORKER_NAME, "--timeout", "10"],
        env=celery_env(broker),
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert f"{WORKER_NAME}: OK" in ping.stdout, ping.stdout + ping.stderr
    assert "pong" in ping.stdout

    status = worker.stop()
    output = worker.output()
    assert status == 0, f"worker exit status {status}:\n{output}"
    assert "Traceback" not in output, output
    # Weir is not RabbitMQ, so kombu chose per-consumer prefetch (see the module docstring).
    with app.connection_for_write() as connection:
        connection.connect()
        assert connection.connection.server_properties["product"] == "Weir"
        assert connection.qos_semantics_matches_spec is True

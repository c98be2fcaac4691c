"""Fixtures: a real `weir serve` on ephemeral loopback ports (AMQP and HTTP), in a temporary data dir.

The binary comes from WEIR_BIN (scripts/test sets it) or target/debug/weir.
"""
import os
import pathlib
import signal
import subprocess
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WEIR_BIN = os.environ.get("WEIR_BIN", str(ROOT / "target" / "debug" / "weir"))


class Broker:
    def __init__(self, data_dir: pathlib.Path, extra_args=()):
        self.data_dir = data_dir
        self.log_path = data_dir.with_suffix(".log")
        self.extra_args = list(extra_args)
        self.process = None
        self.port = None
        self.http_port = None
        # With TLS (extra_args with --tls-cert): the AMQPS and HTTPS ports.
        self.tls_ports = {}

    def start(self):
        self.port = self.http_port = None
        self.tls_ports = {}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [WEIR_BIN, "serve", "--data-dir", str(self.data_dir), "--amqp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             # Small segments: each test's broker preallocates (zero-fills) its segment files.
             "--segment-size-bytes", str(16 << 20), *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        found = threading.Event()

        def read():
            for raw in self.process.stdout:
                line = raw.decode().strip()
                if line.startswith("http listening on "):
                    self.http_port = int(line.rsplit(":", 1)[1])
                elif line.startswith("amqp listening on "):
                    self.port = int(line.rsplit(":", 1)[1])
                elif line.startswith(("amqps listening on ", "https listening on ")):
                    self.tls_ports[line.split()[0]] = int(line.rsplit(":", 1)[1])
                tls_ready = "--tls-cert" not in self.extra_args or len(self.tls_ports) == 2
                if self.port and self.http_port and tls_ready:
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60):
            self.process.kill()
            raise RuntimeError("weir did not start:\n" + self.log_path.read_text())
        return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(30) == 0, self.log_path.read_text()

    def kill9(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def restart(self):
        self.stop()
        return self.start()

    @property
    def http(self):
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.http_port}"

    def params(self):
        import pika

        return pika.ConnectionParameters(
            host="127.0.0.1",
            port=self.port,
            credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=3,
            retry_delay=0.2,
        )


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data").start()
    yield b
    b.kill9()

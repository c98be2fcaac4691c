"""Raw-frame reproductions of the close-handling bugs B1-B5 in docs/INTEROP.md.

Run by scripts/test since the fixes landed (all five hold); by hand:

    .venv/bin/python tests/interop/close_races.py     # exit 0 when all five hold

Each check speaks AMQP frame by frame (pika's codec over a plain socket), so the timing that
real clients hit only sometimes is forced: frames a client would send back to back are sent in
one write. B4 and B5 are races inside the broker; they are tried many times and the check
fails if any try shows the bug. Every socket read has a 3 s deadline; the broker is started on
an ephemeral loopback port in a temporary directory and stopped with SIGTERM.
"""
import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading

import pika.frame as frame
import pika.spec as spec

ROOT = pathlib.Path(__file__).resolve().parents[2]
WEIR_BIN = os.environ.get("WEIR_BIN", str(ROOT / "target" / "debug" / "weir"))
READ_TIMEOUT_S = 3
RACE_TRIES = 200


class Conn:
    """One AMQP connection, logged in as guest, read and written one frame at a time."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S)
        self.buffer = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(spec.Connection.Start)
        self.send(0, spec.Connection.StartOk(client_properties={}, mechanism="PLAIN", response=b"\0guest\0guest"))
        self.expect(spec.Connection.Tune)
        self.send(0, spec.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
        self.send(0, spec.Connection.Open(virtual_host="/"))
        self.expect(spec.Connection.OpenOk)

    def close(self):
        self.sock.close()

    def send(self, channel, *methods):
        self.sock.sendall(b"".join(frame.Method(channel, m).marshal() for m in methods))

    def publish(self, channel, exchange, body):
        self.sock.sendall(
            frame.Method(channel, spec.Basic.Publish(exchange=exchange, routing_key="k")).marshal()
            + frame.Header(channel, len(body), spec.BasicProperties()).marshal()
            + (frame.Body(channel, body).marshal() if body else b"")
        )

    def recv(self):
        """The next frame, or "EOF", or "TIMEOUT"."""
        while True:
            consumed, decoded = frame.decode_frame(self.buffer)
            if decoded:
                self.buffer = self.buffer[consumed:]
                return decoded
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return "TIMEOUT"
            if not data:
                return "EOF"
            self.buffer += data

    def expect(self, method_class):
        got = self.recv()
        assert is_method(got, method_class), f"expected {method_class.NAME}, got {describe(got)}"
        return got.method

    def open_channel(self, channel):
        self.send(channel, spec.Channel.Open())
        self.expect(spec.Channel.OpenOk)


def is_method(got, method_class):
    return isinstance(got, frame.Method) and isinstance(got.method, method_class)


def describe(got):
    if isinstance(got, frame.Method):
        return f"channel {got.channel_number}: {got.method}"
    return repr(got)


def b1_socket_stays_open_after_close_ok(port):
    """After connection.close-ok the client closes the socket, not the server."""
    c = Conn(port)
    c.send(0, spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    c.expect(spec.Connection.CloseOk)
    c.sock.settimeout(0.5)
    got = c.recv()
    c.close()
    return got == "TIMEOUT", f"after close-ok the server sent {describe(got)}"


def b2_crossing_channel_close(port):
    """A channel.close crossing the server's is answered; the client's close-ok then ends it."""
    c = Conn(port)
    c.open_channel(1)
    c.publish(1, "no-such-exchange", b"")
    c.expect(spec.Channel.Close)
    c.send(1, spec.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    c.expect(spec.Channel.CloseOk)
    c.send(1, spec.Channel.CloseOk())
    c.open_channel(2)  # any answer on the connection proves it survived
    c.close()
    return True, ""


def b3_content_discarded_while_closing(port):
    """Whole publishes (method, header, body) after the server's channel.close are dropped."""
    c = Conn(port)
    c.open_channel(1)
    c.publish(1, "no-such-exchange", b"x")
    c.expect(spec.Channel.Close)
    c.publish(1, "no-such-exchange", b"x")
    c.send(1, spec.Channel.CloseOk())
    c.open_channel(2)
    c.close()
    return True, ""


def b4_close_ok_after_cleanup(port):
    """Once close-ok arrives, the connection's exclusive consumer is gone."""
    for i in range(RACE_TRIES):
        first, second = Conn(port), Conn(port)
        first.open_channel(1)
        second.open_channel(1)
        first.send(1, spec.Queue.Declare(queue=f"b4-{i}", auto_delete=False))
        first.expect(spec.Queue.DeclareOk)
        first.send(1, spec.Basic.Consume(queue=f"b4-{i}", consumer_tag="first", exclusive=True))
        first.expect(spec.Basic.ConsumeOk)
        first.send(0, spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        first.expect(spec.Connection.CloseOk)
        second.send(1, spec.Basic.Consume(queue=f"b4-{i}", consumer_tag="second", exclusive=True))
        got = second.recv()
        first.close()
        second.close()
        if not is_method(got, spec.Basic.ConsumeOk):
            return False, f"try {i + 1} of {RACE_TRIES}: consume after the owner's close-ok got {describe(got)}"
    return True, ""


def b5_channel_number_reusable_after_close_ok(port):
    """A channel number is free again as soon as the client's channel.close-ok is read."""
    c = Conn(port)
    for i in range(RACE_TRIES):
        c.open_channel(1)
        c.send(1, spec.Queue.Declare(queue="no-such-queue", passive=True))
        c.expect(spec.Channel.Close)
        c.send(1, spec.Channel.CloseOk(), spec.Channel.Open())  # one write, as pika does
        got = c.recv()
        if not is_method(got, spec.Channel.OpenOk):
            c.close()
            return False, f"try {i + 1} of {RACE_TRIES}: channel.open right after close-ok got {describe(got)}"
        c.send(1, spec.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        c.expect(spec.Channel.CloseOk)
    c.close()
    return True, ""


def start_broker(data_dir):
    process = subprocess.Popen(
        [WEIR_BIN, "serve", "--data-dir", str(data_dir), "--amqp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    found = queue.Queue()

    def read():
        for raw in process.stdout:  # ends at EOF if the broker exits
            line = raw.decode().strip()
            if line.startswith("amqp listening on "):
                found.put(int(line.rsplit(":", 1)[1]))
                return
        found.put(None)

    # A broker that hangs before listening must not hang this script: wait 60 s at most.
    threading.Thread(target=read, daemon=True).start()
    try:
        port = found.get(timeout=60)
    except queue.Empty:
        port = None
    if port is None:
        process.kill()
        raise SystemExit("weir did not start")
    return process, port


def main():
    checks = [
        b1_socket_stays_open_after_close_ok,
        b2_crossing_channel_close,
        b3_content_discarded_while_closing,
        b4_close_ok_after_cleanup,
        b5_channel_number_reusable_after_close_ok,
    ]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="weir-close-races-") as tmp:
        process, port = start_broker(pathlib.Path(tmp) / "data")
        try:
            for check in checks:
                try:
                    ok, detail = check(port)
                except (AssertionError, OSError) as error:
                    ok, detail = False, str(error)
                failed += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {check.__name__}" + (f": {detail}" if detail else ""))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

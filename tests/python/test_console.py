"""The web console in a real browser: headless Chromium (Debian's `chromium`, installed by
scripts/test) driven over the DevTools protocol. It logs in, sees a queue's depth change after
a publish from pika, publishes from the page, browses page by page and with a selector, and
moves messages to another queue."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time

import pika
import pytest
import requests
import websocket

from helpers import connect


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Just enough of the DevTools protocol: navigate, evaluate, screenshot."""

    def __init__(self, profile):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        assert binary, "scripts/test installs Debian's chromium"
        port = free_port()
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--window-size=1280,900", f"--remote-debugging-port={port}",
             "--remote-allow-origins=*", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
                page = next(t for t in targets if t["type"] == "page")
                break
            except (requests.RequestException, StopIteration):
                assert time.monotonic() < deadline, "chromium did not start"
                time.sleep(0.2)
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression, what, seconds=20):
        deadline = time.monotonic() + seconds
        while not self.js(expression):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def goto(self, url):
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", "the page to load")

    def screenshot(self, path):
        import base64

        data = self.call("Page.captureScreenshot", format="png")["data"]
        pathlib.Path(path).write_bytes(base64.b64decode(data))

    def close(self):
        self.ws.close()
        self.process.terminate()
        self.process.wait(20)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def test_console_logs_in_shows_live_depth_publishes_and_browses(broker, browser, tmp_path):
    _, ch = connect(broker)
    ch.queue_declare("orders", durable=True)
    browser.goto(broker.http + "/")
    assert browser.js("document.getElementById('login').hidden") is False, "the login form shows first"

    # A wrong password is refused on the page, without a browser password dialog.
    browser.js("""(() => { const f = document.getElementById('login-form');
        f.user.value = 'guest'; f.password.value = 'wrong'; f.requestSubmit(); })()""")
    browser.wait_for("document.getElementById('login-error').textContent.length > 0", "the login error")
    browser.js("""(() => { const f = document.getElementById('login-form');
        f.user.value = 'guest'; f.password.value = 'guest'; f.requestSubmit(); })()""")
    browser.wait_for("!document.getElementById('queues').hidden", "the queue list")
    ready = "(() => { const c = document.querySelector('tr[data-queue=\"orders\"] td[data-field=\"ready\"]'); " \
            "return c ? c.textContent : null; })()"
    browser.wait_for(f"{ready} === '0'", "the orders queue at depth 0")

    # Depth changes live after a publish from another client.
    for i in range(3):
        ch.basic_publish("", "orders", f"from pika {i}".encode(), pika.BasicProperties(delivery_mode=2))
    browser.wait_for(f"{ready} === '3'", "the depth to reach 3 without a reload")
    if os.environ.get("WEIR_CONSOLE_SCREENSHOT"):
        time.sleep(4.5)  # a few more chart points for the README's picture
        browser.screenshot(os.environ["WEIR_CONSOLE_SCREENSHOT"])
    browser.screenshot(tmp_path / "queues.png")

    # The queue page: publish from the page, then browse (get and put back).
    browser.js("document.querySelector('tr[data-queue=\"orders\"] a').click()")
    browser.wait_for("!document.getElementById('queue').hidden", "the queue page")
    browser.js("""(() => { const f = document.getElementById('publish-form');
        f.payload.value = 'from the console'; f.correlation_id.value = 'c-42'; f.requestSubmit(); })()""")
    browser.wait_for("document.getElementById('publish-status').textContent.startsWith('Published')", "the publish")
    browser.wait_for("document.querySelector('dd[data-field=\"ready\"]').textContent === '4'", "depth 4")
    # Browse in pages of 3: the first page, then the next.
    rows = "[...document.querySelectorAll('#message-rows tr td:nth-child(2)')].map(td => td.textContent)"
    browser.js("""(() => { const f = document.getElementById('browse-form');
        f.limit.value = '3'; f.requestSubmit(); })()""")
    browser.wait_for("document.querySelectorAll('#message-rows tr').length === 3", "a first page of three")
    assert browser.js(rows) == ["from pika 0", "from pika 1", "from pika 2"]
    browser.wait_for("!document.getElementById('browse-next').disabled", "a next page")
    browser.js("document.getElementById('browse-next').click()")
    browser.wait_for("document.querySelectorAll('#message-rows tr').length === 1", "the second page")
    assert browser.js(rows) == ["from the console"]
    assert "c-42" in browser.js("document.querySelector('#message-rows tr:last-child td:nth-child(3)').textContent")
    # A selector narrows the browse.
    browser.js("""(() => { const f = document.getElementById('browse-form');
        f.limit.value = '20'; f.selector.value = "correlation_id = 'c-42'"; f.requestSubmit(); })()""")
    browser.wait_for("document.querySelectorAll('#message-rows tr').length === 1", "one selected message")
    assert browser.js(rows) == ["from the console"]
    # Browsing took nothing and marked nothing.
    assert ch.queue_declare("orders", passive=True).method.message_count == 4
    method, _, _ = ch.basic_get("orders", auto_ack=True)
    assert not method.redelivered

    # Move (redrive) from the page: the rest goes to another queue.
    ch.queue_declare("archive")
    browser.js("""(() => { const f = document.getElementById('get-form');
        f.count.value = '10'; f.target.value = 'archive'; document.getElementById('move').click(); })()""")
    browser.wait_for("document.getElementById('get-status').textContent.startsWith('Moved 3')", "the move")
    assert ch.queue_declare("archive", passive=True).method.message_count == 3


def test_console_files_are_served_with_a_strict_policy(broker):
    page = requests.get(broker.http + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script" in page.text and "inline" not in page.headers["Content-Security-Policy"]
    for path, kind in [("/console.js", "text/javascript"), ("/console.css", "text/css")]:
        response = requests.get(broker.http + path, timeout=10)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith(kind)

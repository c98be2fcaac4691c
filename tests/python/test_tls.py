"""TLS: AMQPS and HTTPS with a certificate from PEM files, beside plain AMQP and HTTP
(docs/SECURITY.md). Real clients: pika over ssl, requests over https, and a plaintext client
knocking on the TLS port."""
import shutil
import socket
import ssl
import subprocess

import pika
import pytest
import requests

from conftest import WEIR_BIN, Broker


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for localhost and 127.0.0.1 (openssl from the system)."""
    assert shutil.which("openssl"), "scripts/test installs openssl"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_broker(tmp_path, certificate):
    cert, key = certificate
    broker = Broker(tmp_path / "data", ["--tls-cert", str(cert), "--tls-key", str(key),
                                        "--amqps-listen", "127.0.0.1:0", "--https-listen", "127.0.0.1:0"]).start()
    yield broker
    broker.kill9()


def test_amqps_and_https_serve_beside_plain(tls_broker, certificate):
    cert, _ = certificate
    context = ssl.create_default_context(cafile=str(cert))
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=tls_broker.tls_ports["amqps"], credentials=pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(context, "localhost"), connection_attempts=1,
    )
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("secure", durable=True)
    ch.basic_publish("", "secure", b"over tls", pika.BasicProperties(delivery_mode=2))
    conn.close()

    https = f"https://127.0.0.1:{tls_broker.tls_ports['https']}"
    got = requests.post(https + "/api/queues/%2F/secure/get", json={}, auth=("guest", "guest"), verify=str(cert),
                        timeout=30)
    assert got.status_code == 200 and got.json()[0]["payload"] == "over tls"
    # Plain HTTP and AMQP still serve on their own ports.
    assert requests.get(tls_broker.http + "/api/whoami", auth=("guest", "guest"), timeout=30).status_code == 200
    plain = pika.BlockingConnection(tls_broker.params())
    plain.close()
    # A client that does not trust the certificate is refused by its own TLS check.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(https + "/api/whoami", auth=("guest", "guest"), timeout=30)


def test_plaintext_on_the_tls_port_is_dropped_and_others_go_on(tls_broker, certificate):
    cert, _ = certificate
    for port, hello in [(tls_broker.tls_ports["amqps"], b"AMQP\x00\x00\x09\x01"),
                        (tls_broker.tls_ports["https"], b"GET /api/whoami HTTP/1.1\r\nHost: x\r\n\r\n")]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(hello)
            received = b""
            while chunk := raw.recv(4096):  # the server closes (a timeout here fails the test)
                received += chunk
            # At most a TLS alert record (content type 21), never an AMQP or HTTP answer.
            assert received[:1] in (b"", b"\x15"), received[:40]
    context = ssl.create_default_context(cafile=str(cert))
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=tls_broker.tls_ports["amqps"], credentials=pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(context, "localhost"), connection_attempts=1,
    )
    pika.BlockingConnection(params).close()


def test_bad_tls_settings_stop_the_start_with_a_clear_error(tmp_path, certificate):
    cert, key = certificate
    cases = [
        (["--tls-cert", str(cert)], "tls-key"),
        (["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(key)], "cannot read the TLS certificate"),
        (["--tls-cert", str(key), "--tls-key", str(key)], "no certificate"),
        (["--amqps-listen", "127.0.0.1:0"], "need --tls-cert"),
    ]
    for args, expected in cases:
        run = subprocess.run(
            [WEIR_BIN, "serve", "--data-dir", str(tmp_path / "d"), "--amqp-listen", "127.0.0.1:0",
             "--http-listen", "127.0.0.1:0", *args],
            capture_output=True, timeout=60,
        )
        assert run.returncode != 0 and expected in run.stderr.decode(), (args, run.stderr)

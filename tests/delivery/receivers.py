"""Webhook receivers for delivery tests, all listening on 127.0.0.1.

`Receiver` replies to each request with the next scripted `Reply` and records
arrival times and how many requests it held open at once. `HangingReceiver`
accepts connections and never responds. `make_certificates` builds a test CA
and a server certificate for TLS receivers.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook

from tests.support import REPO, Gateway, start_gateway

TEST_SECRET = "test-receiver-secret"


@dataclass
class Reply:
    """The response to one request: status, headers, body, and a delay before it."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


@dataclass
class Arrival:
    headers: dict[str, str]
    body: bytes
    received_at: float

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    def verifies_with(self, secret: str) -> bool:
        """Check the Standard Webhooks signature with the `standardwebhooks` package."""
        try:
            Webhook(secret).verify(self.body, self.headers)
        except Exception:
            return False
        return True


class Receiver:
    """An HTTP(S) server that replies with scripted replies, then with `default`."""

    def __init__(
        self,
        replies: list[Reply] | None = None,
        default: Reply | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.replies = list(replies or [])
        self.default = default or Reply()
        self.arrivals: list[Arrival] = []
        self.open_requests = 0
        self.max_open_requests = 0
        self._lock = threading.Lock()
        self._tls = tls
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self._tls is not None:
            self._server.socket = self._tls.wrap_socket(
                self._server.socket, server_side=True
            )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("content-length", 0))
        body = request.rfile.read(length)
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            reply = self.replies.pop(0) if self.replies else self.default
            self.arrivals.append(Arrival(headers, body, time.time()))
            self.open_requests += 1
            self.max_open_requests = max(self.max_open_requests, self.open_requests)
        try:
            time.sleep(reply.delay)
            request.send_response(reply.status)
            for name, value in reply.headers.items():
                request.send_header(name, value)
            request.send_header("content-length", str(len(reply.body)))
            request.end_headers()
            request.wfile.write(reply.body)
        except OSError:
            pass  # the gateway gave up on this request, as tests intend
        finally:
            with self._lock:
                self.open_requests -= 1

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Arrival]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.arrivals) >= count:
                return list(self.arrivals)
            time.sleep(0.05)
        raise AssertionError(
            f"receiver got {len(self.arrivals)} requests, expected {count}"
            f" within {timeout}s"
        )

    def webhook_ids(self) -> list[str]:
        return [arrival.headers["webhook-id"] for arrival in self.arrivals]


class HangingReceiver:
    """A TCP listener that accepts connections and never sends a byte back."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self._connections: list[socket.socket] = []
        self._running = True
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}/hooks"

    @property
    def connections(self) -> int:
        return len(self._connections)

    def _accept(self) -> None:
        while self._running:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            self._connections.append(connection)

    def stop(self) -> None:
        self._running = False
        for connection in self._connections:
            connection.close()
        self._socket.close()


def make_certificates(folder: Path, host: str) -> tuple[Path, Path, Path]:
    """Write a CA and a server certificate for `host` signed by it; return the paths.

    The paths are the CA certificate, the server certificate and its key.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mfo test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def server_tls(certificate: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    return context


# A gateway on a small config of its own: one route whose events are typed by
# the payload, so a test can emit any event type it needs.
PROVIDERS_YAML = """\
providers:
  test:
    routes:
      events:
        path: /webhooks/test
        verify: {type: header_secret, header: X-Test-Secret, secret: SECRET}
        idempotency_key: "{{ payload.id }}"
        events:
          - type: "{{ payload.type }}"
            data: "{{ payload.data }}"
""".replace("SECRET", TEST_SECRET)


def write_config(
    root: Path, subscriptions: str = "subscriptions: {}\n", pipelines: str = ""
) -> Path:
    """Write a config directory with the test route, and return its path."""
    config_dir = root / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "providers.yaml").write_text(PROVIDERS_YAML + pipelines)
    (config_dir / "subscriptions.yaml").write_text(subscriptions)
    return config_dir


def send_event(gateway: Gateway, event_type: str, data: Any = None) -> str:
    """POST one event to the test route and return its event id."""
    body = {"id": str(uuid.uuid4()), "type": event_type, "data": data or {}}
    response = gateway.post(
        "/webhooks/test",
        json.dumps(body).encode(),
        {"content-type": "application/json", "x-test-secret": TEST_SECRET},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["event_id"])


FAST_SWEEP = {"MFO_SWEEP_INTERVAL": "1s", "MFO_SWEEP_GRACE": "2s"}


def start_test_gateway(
    root: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    subscriptions: str = "subscriptions: {}\n",
    pipelines: str = "",
) -> Gateway:
    """Start `mfo serve` on the test config with a fast sweep."""
    config_dir = write_config(root, subscriptions, pipelines)
    return start_gateway(config_dir, root / "data", {**FAST_SWEEP, **(env or {})}, args)


def delivery_of(
    gateway: Gateway, event_id: str, subscription_id: str | None = None
) -> dict[str, Any]:
    """Return the one delivery of an event (to a subscription), with its attempts."""
    event = gateway.api("GET", f"/api/events/{event_id}").json()
    rows = [
        row
        for row in event["deliveries"]
        if subscription_id in (None, row["subscription_id"])
    ]
    assert len(rows) == 1, event["deliveries"]
    return dict(gateway.api("GET", f"/api/deliveries/{rows[0]['id']}").json())


def wait_delivery(
    gateway: Gateway,
    event_id: str,
    status: str,
    timeout: float = 20.0,
    subscription_id: str | None = None,
) -> dict[str, Any]:
    """Poll until the event's delivery has `status`, and return it."""
    deadline = time.monotonic() + timeout
    delivery = delivery_of(gateway, event_id, subscription_id)
    while time.monotonic() < deadline:
        if delivery["status"] == status:
            return delivery
        time.sleep(0.1)
        delivery = delivery_of(gateway, event_id, subscription_id)
    raise AssertionError(
        f"delivery of {event_id} is {delivery['status']}, not {status}: {delivery}"
    )


def run_cli(gateway: Gateway, *args: str, timeout: float = 60) -> Any:
    """Run `mfo ARGS --url <gateway>` and return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=gateway.env,
        timeout=timeout,
    )


def subscribe(gateway: Gateway, url: str, events: list[str], **extra: Any) -> Any:
    """Create a subscription over the API and return it."""
    response = gateway.api(
        "POST",
        "/api/notifications/subscribe",
        json={"url": url, "events": events, **extra},
    )
    assert response.status_code == 201, response.text
    return response.json()


def events_of(receiver: Receiver, event_type: str) -> list[Arrival]:
    return [a for a in receiver.arrivals if a.payload.get("type") == event_type]

"""Real parts for tests: a running `mfo serve` process and webhook subscribers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("MFO_CORPUS_DIR", REPO.parent / "shared" / "corpus"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    """One request a subscriber received, with the verdict of the signature check."""

    headers: dict[str, str]
    body: bytes
    payload: Any
    signature_valid: bool
    received_at: float


@dataclass
class Subscriber:
    """An HTTP server on 127.0.0.1 that records webhooks and checks their signatures.

    `responses` decides the status of each request in turn; once it runs out,
    every request gets 200.
    """

    secret: str | None = None
    responses: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    extra_headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def start(self) -> Subscriber:
        subscriber = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with lock:
                    status = (
                        subscriber.responses.pop(0) if subscriber.responses else 200
                    )
                    delay = subscriber.delays.pop(0) if subscriber.delays else 0.0
                    subscriber.received.append(subscriber._check(headers, body))
                time.sleep(delay)
                self.send_response(status)
                for name, value in subscriber.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def _check(self, headers: dict[str, str], body: bytes) -> Received:
        valid = False
        payload: Any = None
        if self.secret:
            try:
                payload = Webhook(self.secret).verify(body, headers)
                valid = True
            except Exception:
                valid = False
        if payload is None:
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
        return Received(headers, body, payload, valid, time.time())

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return list(self.received)
            time.sleep(0.05)
        raise AssertionError(
            f"subscriber got {len(self.received)} webhooks, expected {count}"
            f" within {timeout}s"
        )

    def types(self) -> list[str]:
        return [
            r.payload.get("type") for r in self.received if isinstance(r.payload, dict)
        ]


@dataclass
class Gateway:
    """A `mfo serve` process started for a test, and clients for it."""

    base_url: str
    token: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return httpx.request(
            method, self.base_url + path, headers=headers, timeout=30, **kwargs
        )

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(
            self.base_url + path, content=body, headers=headers, timeout=30
        )

    def subscribe(
        self, subscriber: Subscriber, events: list[str], **extra: Any
    ) -> dict[str, Any]:
        response = self.api(
            "POST",
            "/api/notifications/subscribe",
            json={"url": subscriber.url, "events": events, **extra},
        )
        assert response.status_code == 201, response.text
        subscription: dict[str, Any] = response.json()
        subscriber.secret = subscription["secret"]
        return subscription

    def unsubscribe(self, subscription: dict[str, Any]) -> None:
        self.api("DELETE", f"/api/notifications/subscriptions/{subscription['id']}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_gateway(
    config_dir: Path,
    data_dir: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Gateway:
    """Start `mfo serve` on a free port and wait until /readyz answers 200."""
    port = free_port()
    token = "test-token-" + os.urandom(8).hex()
    full_env = {
        **os.environ,
        "MFO_DATA_DIR": str(data_dir),
        "MFO_API_TOKEN": token,
        "MFO_ALLOW_PRIVATE_NETWORKS": "1",
        **(env or {}),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"serve-{port}.log"
    command = [
        sys.executable,
        "-m",
        "cli.main",
        "serve",
        "--config-dir",
        str(config_dir),
        "--port",
        str(port),
        *args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=full_env, stdout=log, stderr=log, cwd=REPO
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", token, process, log_path, full_env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"mfo serve exited with {process.returncode}:\n{gateway.log()}"
            )
        try:
            if httpx.get(gateway.base_url + "/readyz", timeout=2).status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    gateway.stop()
    raise AssertionError(f"mfo serve did not become ready:\n{gateway.log()}")

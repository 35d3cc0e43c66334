"""Log lines: JSON off a terminal, readable on one, one per request and attempt,
and never a secret, a signature or a whole body."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from cli.logs import configure_logging
from tests.conftest import _drop_database, backend_env
from tests.support import REPO, Gateway, Subscriber, start_gateway


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_logs_json_off_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a terminal each record is one JSON object on one line."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("INFO")
    logging.getLogger("gateway.test").info("delivery %s attempt %d", "msg_1", 2)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["message"] == "delivery msg_1 attempt 2"
    assert entry["level"] == "info"
    assert entry["logger"] == "gateway.test"
    assert entry["time"].endswith("+00:00")


@pytest.mark.usefixtures("restore_logging")
def test_logs_readable_on_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal each record is a plain line with level, logger and message."""
    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("INFO")
    logging.getLogger("gateway.test").warning("retry in %.1fs", 5.0)
    line = stream.getvalue().strip()
    assert not line.startswith("{")
    assert re.search(r"WARNING +gateway\.test: retry in 5\.0s$", line)


# A gateway with known secrets, for scanning what it logs.

GITHUB_SECRET = "gh-secret-" + uuid.uuid4().hex
UNIPILE_SECRET = "unipile-secret-" + uuid.uuid4().hex
SUBSCRIPTION_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
BODY_MARKER = "body-marker-" + uuid.uuid4().hex


def github_headers(body: bytes, secret: str) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "content-type": "application/json",
        "x-github-event": "issues",
        "x-github-delivery": str(uuid.uuid4()),
        "x-hub-signature-256": f"sha256={signature}",
    }


@pytest.fixture(scope="module")
def logged_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env, database = backend_env("postgres")
    env.update(
        {
            "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
            "UNIPILE_WEBHOOK_SECRET": UNIPILE_SECRET,
        }
    )
    running = start_gateway(REPO / "config", tmp_path_factory.mktemp("logs"), env)
    try:
        yield running
    finally:
        running.stop()
        if database:
            _drop_database(database)


def send_traffic(gateway: Gateway, subscriber: Subscriber) -> tuple[int, list[str]]:
    """Send accepted and rejected webhooks; return the request count and signatures."""
    gateway.subscribe(
        subscriber,
        ["github.*", "unipile.email.sent"],
        secret=SUBSCRIPTION_SECRET,
        retry={"schedule": ["100ms"], "jitter": 0},
    )
    body = json.dumps(
        {"action": "opened", "issue": {"title": BODY_MARKER, "number": 7}}
    ).encode()
    good = github_headers(body, GITHUB_SECRET)
    bad = github_headers(body, "wrong-" + GITHUB_SECRET)
    unipile = json.dumps(
        {
            "email_id": uuid.uuid4().hex,
            "account_id": "acc",
            "event": "mail_sent",
            "subject": BODY_MARKER,
        }
    ).encode()
    unipile_headers = {
        "content-type": "application/json",
        "unipile-auth": UNIPILE_SECRET,
    }
    wrong_unipile = {**unipile_headers, "unipile-auth": "x" + UNIPILE_SECRET}
    statuses = [
        gateway.post("/webhooks/github", body, good).status_code,
        gateway.post("/webhooks/github", body, bad).status_code,
        gateway.post("/webhooks/unipile/notify", unipile, unipile_headers).status_code,
        gateway.post("/webhooks/unipile/notify", unipile, wrong_unipile).status_code,
        gateway.post("/webhooks/unipile/notify", b"{", unipile_headers).status_code,
    ]
    assert statuses == [202, 401, 202, 401, 400]
    signatures = [good["x-hub-signature-256"], bad["x-hub-signature-256"]]
    return len(statuses), signatures


@pytest.mark.server
def test_logs_one_line_per_request_and_attempt(logged_gateway: Gateway) -> None:
    """Each provider request and each attempt logs one JSON line, and no secret."""
    subscriber = Subscriber(responses=[500]).start()
    try:
        requests, signatures = send_traffic(logged_gateway, subscriber)
        received = subscriber.wait_for(3)
        rejected = httpx.post(
            logged_gateway.base_url + "/ui/login",
            data={"token": "guess-" + logged_gateway.token, "next": "/ui"},
            timeout=10,
        )
        assert rejected.status_code == 401
        time.sleep(0.5)
    finally:
        subscriber.stop()
    signatures += [r.headers["webhook-signature"] for r in received]

    entries = [json.loads(line) for line in logged_gateway.log().splitlines() if line]
    messages = [entry["message"] for entry in entries]
    ingress = [m for m in messages if m.startswith("ingress ")]
    assert len(ingress) == requests
    accepted = [m for m in ingress if " 202 " in m]
    assert len(accepted) == 2
    assert all("request=req_" in m and "duration_ms=" in m for m in accepted)
    attempt = re.compile(r"delivery msg_\w+ attempt \d+ subscription=")
    attempts = [m for m in messages if attempt.match(m)]
    assert len(attempts) == 3
    assert all("status=" in m and "duration_ms=" in m for m in attempts)
    assert all("subscription=sub_" in m and "event=evt_" in m for m in attempts)

    text = logged_gateway.log()
    secrets = [
        GITHUB_SECRET,
        UNIPILE_SECRET,
        SUBSCRIPTION_SECRET,
        SUBSCRIPTION_SECRET.removeprefix("whsec_"),
        logged_gateway.token,
        BODY_MARKER,
        *signatures,
    ]
    for secret in secrets:
        assert secret not in text, f"log contains {secret[:12]}..."
    for signature in signatures:
        for part in signature.split():
            digest = part.removeprefix("sha256=").split(",")[-1]
            assert digest
            assert digest not in text

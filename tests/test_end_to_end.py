"""Provider payloads through the shipped config to real subscribers, per backend."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SECRETS
from tests.support import CORPUS, Gateway, Subscriber

UNIPILE_PATH = "/webhooks/unipile/notify"
GITHUB_PATH = "/webhooks/github"
UNIPILE_HEADERS = {
    "content-type": "application/json",
    "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
}


@pytest.fixture
def subscriber() -> Any:
    running = Subscriber().start()
    yield running
    running.stop()


def unipile_files() -> list[Path]:
    files = sorted((CORPUS / "unipile").glob("*.json"))
    if not files:
        pytest.skip(f"no Unipile corpus in {CORPUS}")
    return files


def github_examples() -> list[tuple[str, Path]]:
    root = CORPUS / "github" / "payload-examples" / "api.github.com"
    examples = sorted((p.parent.name, p) for p in root.glob("*/*.json"))
    if not examples:
        pytest.skip(f"no GitHub corpus in {root}")
    return examples


def github_headers(event: str, body: bytes, secret: str) -> dict[str, str]:
    """Sign a body the way GitHub documents: HMAC SHA-256 of the raw bytes, hex."""
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": str(uuid.uuid4()),
        "x-hub-signature-256": f"sha256={signature}",
        "user-agent": "GitHub-Hookshot/test",
    }


def expected_github_type(event: str, payload: Any) -> str:
    action = payload.get("action") if isinstance(payload, dict) else None
    return f"github.{event}.{action}" if isinstance(action, str) else f"github.{event}"


def wait_for_run(
    gateway: Gateway, event_id: str, timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = gateway.api("GET", f"/api/events/{event_id}").json()["runs"]
        if runs and runs[0]["status"] in ("succeeded", "failed"):
            return gateway.api("GET", f"/api/jobs/{runs[0]['id']}").json()
        time.sleep(0.1)
    raise AssertionError(f"no finished pipeline run for event {event_id}")


def test_unipile_corpus_reaches_subscriber(
    gateway: Gateway, subscriber: Subscriber
) -> None:
    """Each Unipile payload is delivered, and received mail also yields email.processed."""
    subscription = gateway.subscribe(subscriber, ["unipile.email.*", "email.processed"])
    sent: dict[str, dict[str, Any]] = {}
    received_events = []
    for path in unipile_files():
        body = path.read_bytes()
        response = gateway.post(UNIPILE_PATH, body, UNIPILE_HEADERS)
        assert response.status_code == 202, response.text
        payload = json.loads(body)
        sent[payload["email_id"]] = payload
        if payload["event"] == "mail_received":
            received_events.append(response.json()["event_id"])

    expected = len(sent) + len(received_events)
    deliveries = subscriber.wait_for(expected)
    time.sleep(0.5)
    gateway.unsubscribe(subscription)

    assert len(subscriber.received) == expected
    assert all(d.signature_valid for d in deliveries)
    types = Counter(subscriber.types())
    assert types["unipile.email.received"] == len(received_events)
    assert types["unipile.email.sent"] == len(sent) - len(received_events)
    assert types["email.processed"] == len(received_events)
    for delivery in deliveries:
        data = delivery.payload["data"]
        assert delivery.headers["webhook-id"].startswith("msg_")
        assert delivery.payload["timestamp"]
        if delivery.payload["type"].startswith("unipile."):
            assert data == sent[data["email_id"]]
        else:
            original = sent[data["email_id"]]
            assert data["account_id"] == original["account_id"]
            assert data["subject"] == original["subject"]
            assert data["draft"]["subject"].startswith("Re: ")
            assert original["subject"] in data["draft"]["body"]


def test_pipeline_run_is_visible(gateway: Gateway, subscriber: Subscriber) -> None:
    """GET /api/jobs/ID shows the run's state and each step's output."""
    payload = json.loads((CORPUS / "unipile" / "mail_received.json").read_bytes())
    payload["email_id"] = f"run-{uuid.uuid4()}"
    response = gateway.post(UNIPILE_PATH, json.dumps(payload).encode(), UNIPILE_HEADERS)
    assert response.status_code == 202, response.text

    run = wait_for_run(gateway, response.json()["event_id"])

    assert run["status"] == "succeeded"
    assert run["pipeline"] == "draft_reply"
    assert [step["name"] for step in run["steps"]] == ["draft", "announce"]
    assert run["steps"][0]["output"]["subject"] == f"Re: {payload['subject']}"
    assert run["steps"][1]["output"]["type"] == "email.processed"


def test_github_corpus_delivered_with_types(
    gateway: Gateway, subscriber: Subscriber
) -> None:
    """All GitHub examples, signed as GitHub signs them, arrive with their event types."""
    subscription = gateway.subscribe(subscriber, ["github.*"])
    examples = github_examples()
    assert len(examples) == 273
    expected: Counter[tuple[str, str]] = Counter()
    with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
        for event, path in examples:
            body = path.read_bytes()
            headers = github_headers(event, body, SECRETS["GITHUB_WEBHOOK_SECRET"])
            response = client.post(GITHUB_PATH, content=body, headers=headers)
            assert response.status_code == 202, f"{path}: {response.text}"
            payload = json.loads(body)
            expected[
                (
                    expected_github_type(event, payload),
                    json.dumps(payload, sort_keys=True),
                )
            ] += 1

    deliveries = subscriber.wait_for(len(examples), timeout=120)
    gateway.unsubscribe(subscription)

    assert all(d.signature_valid for d in deliveries)
    got = Counter(
        (d.payload["type"], json.dumps(d.payload["data"], sort_keys=True))
        for d in deliveries
    )
    assert got == expected


def test_duplicate_is_answered_once(gateway: Gateway, subscriber: Subscriber) -> None:
    """A repeated idempotency key gets 200 with the first event id and no delivery."""
    subscription = gateway.subscribe(subscriber, ["unipile.email.sent"])
    payload = json.loads((CORPUS / "unipile" / "mail_sent.json").read_bytes())
    payload["email_id"] = f"dup-{uuid.uuid4()}"
    body = json.dumps(payload).encode()

    first = gateway.post(UNIPILE_PATH, body, UNIPILE_HEADERS)
    second = gateway.post(UNIPILE_PATH, body, UNIPILE_HEADERS)
    subscriber.wait_for(1)
    time.sleep(1.0)
    gateway.unsubscribe(subscription)

    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["event_id"] == first.json()["event_id"]
    assert second.json()["duplicate"] is True
    assert len(subscriber.received) == 1


def test_rejected_requests_cause_nothing(
    gateway: Gateway, subscriber: Subscriber
) -> None:
    """A wrong secret, an invalid payload and hostile bodies get 4xx and no delivery."""
    subscription = gateway.subscribe(subscriber, ["*"])
    payload = json.loads((CORPUS / "unipile" / "mail_sent.json").read_bytes())
    payload["email_id"] = f"bad-{uuid.uuid4()}"
    body = json.dumps(payload).encode()
    invalid = json.dumps({**payload, "email_id": 42, "event": None}).encode()

    wrong_secret = gateway.post(
        UNIPILE_PATH, body, {**UNIPILE_HEADERS, "unipile-auth": "nope"}
    )
    no_secret = gateway.post(UNIPILE_PATH, body, {"content-type": "application/json"})
    bad_schema = gateway.post(UNIPILE_PATH, invalid, UNIPILE_HEADERS)
    not_json = gateway.post(UNIPILE_PATH, b"{not json", UNIPILE_HEADERS)
    nan = gateway.post(UNIPILE_PATH, b'{"email_id": NaN}', UNIPILE_HEADERS)
    bad_type = gateway.post(
        UNIPILE_PATH, body, {**UNIPILE_HEADERS, "content-type": "image/png"}
    )
    too_big = gateway.post(
        UNIPILE_PATH, b"[" + b"1," * 600_000 + b"1]", UNIPILE_HEADERS
    )
    github_forged = gateway.post(
        GITHUB_PATH, body, github_headers("push", body, "not-the-secret")
    )
    time.sleep(1.5)
    gateway.unsubscribe(subscription)

    assert wrong_secret.status_code == 401
    assert no_secret.status_code == 401
    assert bad_schema.status_code == 400
    pointers = {error["pointer"] for error in bad_schema.json()["errors"]}
    assert pointers == {"/email_id", "/event"}
    assert not_json.status_code == 400
    assert nan.status_code == 400
    assert bad_type.status_code == 415
    assert too_big.status_code == 413
    assert github_forged.status_code == 401
    assert subscriber.received == []


def test_openapi_documents_provider_routes(gateway: Gateway) -> None:
    """The OpenAPI document lists each provider route with its payload schema."""
    document = httpx.get(gateway.base_url + "/schema/openapi.json", timeout=30).json()
    unipile = document["paths"][UNIPILE_PATH]["post"]
    github = document["paths"][GITHUB_PATH]["post"]
    schema = unipile["requestBody"]["content"]["application/json"]["schema"]

    assert schema["required"] == ["email_id", "account_id", "event"]
    assert "unipile.email.received" in unipile["description"]
    assert "hmac" in github["description"]
    assert "/api/notifications/subscribe" in document["paths"]

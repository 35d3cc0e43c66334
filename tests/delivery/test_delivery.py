"""Retries, dead letters, 410, redirects and timeouts against real subscribers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from tests.conftest import SECRETS
from tests.support import CORPUS, REPO, Gateway, Subscriber

FAST_RETRY = {"schedule": ["200ms", "200ms"], "jitter": 0}


@pytest.fixture
def subscriber() -> Any:
    running = Subscriber().start()
    yield running
    running.stop()


def send_mail(gateway: Gateway) -> str:
    payload = json.loads((CORPUS / "unipile" / "mail_sent.json").read_bytes())
    payload["email_id"] = f"delivery-{uuid.uuid4()}"
    headers = {
        "content-type": "application/json",
        "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
    }
    response = gateway.post(
        "/webhooks/unipile/notify", json.dumps(payload).encode(), headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["event_id"])


def delivery_of(gateway: Gateway, event_id: str) -> dict[str, Any]:
    event = gateway.api("GET", f"/api/events/{event_id}").json()
    assert len(event["deliveries"]) == 1
    return gateway.api("GET", f"/api/deliveries/{event['deliveries'][0]['id']}").json()


def wait_status(
    gateway: Gateway, event_id: str, status: str, timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery = delivery_of(gateway, event_id)
        if delivery["status"] == status:
            return delivery
        time.sleep(0.1)
    raise AssertionError(
        f"delivery for {event_id} is {delivery['status']}, not {status}"
    )


def test_retry_until_success(gateway: Gateway, subscriber: Subscriber) -> None:
    """A receiver failing twice gets three attempts with one webhook-id."""
    subscriber.responses = [500, 503]
    subscription = gateway.subscribe(
        subscriber, ["unipile.email.sent"], retry=FAST_RETRY
    )
    event_id = send_mail(gateway)

    received = subscriber.wait_for(3)
    delivery = wait_status(gateway, event_id, "succeeded")
    gateway.unsubscribe(subscription)

    assert len({r.headers["webhook-id"] for r in received}) == 1
    assert all(r.signature_valid for r in received)
    assert [a["status_code"] for a in delivery["attempts_log"]] == [500, 503, 200]
    assert delivery["attempts"] == 3


def test_dead_letter_then_cli_retry(gateway: Gateway, subscriber: Subscriber) -> None:
    """A spent schedule fails the delivery; `mfo deliveries retry` sends it again."""
    subscriber.responses = [500, 500, 500]
    subscription = gateway.subscribe(
        subscriber, ["unipile.email.sent"], retry=FAST_RETRY
    )
    event_id = send_mail(gateway)
    failed = wait_status(gateway, event_id, "failed")
    assert failed["attempts"] == 3
    assert failed["last_error"] == "HTTP 500"

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "deliveries",
            "retry",
            "--status",
            "failed",
            "--subscription",
            subscription["id"],
            "--url",
            gateway.base_url,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=gateway.env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "1 of 1 deliveries queued again" in result.stdout
    delivered = wait_status(gateway, event_id, "succeeded")
    gateway.unsubscribe(subscription)

    assert [a["status_code"] for a in delivered["attempts_log"]] == [500, 500, 500, 200]
    assert len({r.headers["webhook-id"] for r in subscriber.received}) == 1


def test_gone_disables_subscription(gateway: Gateway, subscriber: Subscriber) -> None:
    """410 fails the delivery at once and disables the subscription with a reason."""
    subscriber.responses = [410]
    subscription = gateway.subscribe(
        subscriber, ["unipile.email.sent"], retry=FAST_RETRY
    )
    event_id = send_mail(gateway)
    wait_status(gateway, event_id, "failed")
    stored = gateway.api(
        "GET", f"/api/notifications/subscriptions/{subscription['id']}"
    ).json()
    gateway.unsubscribe(subscription)

    assert len(subscriber.received) == 1
    assert stored["status"] == "disabled"
    assert "410" in stored["status_reason"]


def test_redirect_not_followed(gateway: Gateway, subscriber: Subscriber) -> None:
    """A 3xx counts as a failure and its Location is never requested."""
    subscriber.responses = [302, 302, 302]
    subscriber.extra_headers = {"location": subscriber.url + "/elsewhere"}
    subscription = gateway.subscribe(
        subscriber, ["unipile.email.sent"], retry=FAST_RETRY
    )
    event_id = send_mail(gateway)
    failed = wait_status(gateway, event_id, "failed")
    gateway.unsubscribe(subscription)

    assert len(subscriber.received) == 3
    assert "not followed" in failed["last_error"]


def test_timeout_is_retried(gateway: Gateway, subscriber: Subscriber) -> None:
    """A receiver slower than the timeout gets another attempt."""
    subscriber.delays = [2.0]
    subscription = gateway.subscribe(
        subscriber, ["unipile.email.sent"], retry=FAST_RETRY, timeout="500ms"
    )
    event_id = send_mail(gateway)
    delivered = wait_status(gateway, event_id, "succeeded")
    gateway.unsubscribe(subscription)

    first, second = delivered["attempts_log"]
    assert first["status_code"] is None
    assert "timed out" in first["error"]
    assert second["status_code"] == 200


def test_filter_selects_events(gateway: Gateway, subscriber: Subscriber) -> None:
    """A subscription filter expression drops events it does not accept."""
    subscription = gateway.subscribe(
        subscriber,
        ["unipile.email.*"],
        filter="event.data.email_id.startswith('keep-')",
    )
    payload = json.loads((CORPUS / "unipile" / "mail_sent.json").read_bytes())
    headers = {
        "content-type": "application/json",
        "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
    }
    for prefix in ("drop-", "keep-"):
        payload["email_id"] = f"{prefix}{uuid.uuid4()}"
        gateway.post("/webhooks/unipile/notify", json.dumps(payload).encode(), headers)
    subscriber.wait_for(1)
    time.sleep(1.0)
    gateway.unsubscribe(subscription)

    assert len(subscriber.received) == 1
    assert subscriber.received[0].payload["data"]["email_id"].startswith("keep-")


def test_template_shapes_body(gateway: Gateway, subscriber: Subscriber) -> None:
    """A subscription template replaces the envelope; the body is still signed."""
    subscription = gateway.subscribe(
        subscriber,
        ["unipile.email.sent"],
        template={
            "kind": "{{ event.type }}",
            "id": "{{ event.data.email_id }}",
            "attendees": "{{ event.data.to_attendees | length }}",
        },
    )
    event_id = send_mail(gateway)
    received = subscriber.wait_for(1)
    gateway.unsubscribe(subscription)

    assert received[0].signature_valid
    assert received[0].payload["kind"] == "unipile.email.sent"
    assert received[0].payload["id"].startswith("delivery-")
    assert received[0].payload["attendees"] == 1
    assert event_id


@pytest.mark.parametrize(
    "body, field",
    [
        ({"events": ["*"]}, "url"),
        ({"url": "ftp://x", "events": ["*"]}, "url"),
        ({"url": "https://a.example", "events": []}, "events"),
        ({"url": "https://a.example", "events": ["*"], "secret": "plain"}, "secret"),
        ({"url": "https://a.example", "events": ["*"], "filter": "a =="}, "filter"),
        (
            {"url": "https://a.example", "events": ["*"], "retry": {"schedule": ["x"]}},
            "retry.schedule",
        ),
        ({"url": "https://a.example", "events": ["*"], "colour": "red"}, "colour"),
        ({"url": "http://a.example:99999/x", "events": ["*"]}, "url"),
        ({"url": "http://a.example:abc/x", "events": ["*"]}, "url"),
        ({"url": "http://a.exa\r\nmple/x", "events": ["*"]}, "url"),
        (
            {"url": "https://a.example", "events": ["*"], "headers": {"Host": "b"}},
            "headers",
        ),
        (
            {
                "url": "https://a.example",
                "events": ["*"],
                "headers": {"X-A": "1\r\nB: 2"},
            },
            "headers",
        ),
    ],
)
def test_subscribe_rejects_bad_input(
    gateway: Gateway, body: dict[str, Any], field: str
) -> None:
    response = gateway.api("POST", "/api/notifications/subscribe", json=body)
    assert response.status_code == 400
    assert field in [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize("body", [b'{"url": ', b'{"url": x}', b"\xff\xfe"])
def test_subscribe_rejects_invalid_json(gateway: Gateway, body: bytes) -> None:
    response = gateway.api(
        "POST",
        "/api/notifications/subscribe",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("the request body is not valid JSON")


def test_api_requires_token(gateway: Gateway) -> None:
    import httpx

    anonymous = httpx.get(gateway.base_url + "/api/deliveries")
    wrong = httpx.get(
        gateway.base_url + "/api/deliveries", headers={"authorization": "Bearer x"}
    )
    assert anonymous.status_code == 401
    assert wrong.status_code == 401

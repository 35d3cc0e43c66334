"""Provider schemes, handshakes, limits and responses over HTTP on a real server."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier as SlackVerifier
from standardwebhooks import Webhook
from twilio.request_validator import RequestValidator

from tests.ingress.live import LIVE_SECRETS, LiveGateway, live_gateway

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    with live_gateway(tmp_path_factory.mktemp("live")) as running:
        yield running


def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers, timeout=30)


def event_type(live: LiveGateway, response: httpx.Response) -> str:
    event = live.server.api("GET", f"/api/events/{response.json()['event_id']}")
    assert event.status_code == 200, event.text
    return str(event.json()["type"])


# Shipped providers, signed by their own libraries or documented algorithms


def test_stripe_event_accepted(live: LiveGateway) -> None:
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": "invoice.paid",
            "created": int(time.time()),
            "data": {"object": {"id": "in_1", "amount_paid": 1200}},
        },
        indent=1,
    ).encode()
    timestamp = int(time.time())
    secret = LIVE_SECRETS["STRIPE_WEBHOOK_SECRET"].encode()
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    headers = {**JSON, "stripe-signature": f"t={timestamp},v1={digest.hexdigest()}"}

    accepted = post(live.url("stripe/events"), body, headers)
    forged = post(live.url("stripe/events"), body + b" ", headers)

    assert accepted.status_code == 202, accepted.text
    assert event_type(live, accepted) == "stripe.invoice.paid"
    assert forged.status_code == 401


def slack_headers(body: bytes) -> dict[str, str]:
    verifier = SlackVerifier(LIVE_SECRETS["SLACK_SIGNING_SECRET"])
    timestamp = str(int(time.time()))
    signature = verifier.generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    return {"x-slack-request-timestamp": timestamp, "x-slack-signature": signature}


def test_slack_event_accepted(live: LiveGateway) -> None:
    body = json.dumps(
        {
            "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex}",
            "event": {"type": "app_mention", "text": "caf\u00e9 \U0001f600"},
        }
    ).encode()
    response = post(live.url("slack/events"), body, {**JSON, **slack_headers(body)})
    assert response.status_code == 202, response.text
    assert event_type(live, response) == "slack.app_mention"


def test_slack_url_verification_echoed(live: LiveGateway) -> None:
    """The challenge comes back before any event exists, and only when signed."""
    before = live.stored_requests("slack/events")
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps(
        {"token": "t", "challenge": challenge, "type": "url_verification"}
    ).encode()
    signed = post(live.url("slack/events"), body, {**JSON, **slack_headers(body)})
    unsigned = post(live.url("slack/events"), body, JSON)

    assert signed.status_code == 200
    assert signed.text == challenge
    assert signed.headers["content-type"] == "text/plain; charset=utf-8"
    assert signed.headers["x-content-type-options"] == "nosniff"
    assert unsigned.status_code == 401
    assert live.stored_requests("slack/events") == before


@pytest.mark.parametrize("challenge", [None, {"a": 1}, ["x"], 7])
def test_slack_url_verification_bad_challenge(
    live: LiveGateway, challenge: Any
) -> None:
    """A url_verification without a text challenge gets a 400, not an empty echo."""
    before = live.stored_requests("slack/events")
    fields = {"token": "t", "type": "url_verification"}
    if challenge is not None:
        fields["challenge"] = challenge
    body = json.dumps(fields).encode()
    response = post(live.url("slack/events"), body, {**JSON, **slack_headers(body)})

    assert response.status_code == 400, response.text
    assert live.stored_requests("slack/events") == before


def test_slack_interaction_form_json(live: LiveGateway) -> None:
    interaction = {"type": "block_actions", "trigger_id": "1.2", "user": {"id": "U1"}}
    body = urlencode({"payload": json.dumps(interaction)}).encode()
    response = post(
        live.url("slack/interactions"), body, {**FORM, **slack_headers(body)}
    )
    assert response.status_code == 200
    assert response.content == b""


def test_shopify_webhook_accepted(live: LiveGateway) -> None:
    body = b'{"id": 820982911946154508, "email": "jon@example.com", "note": null}'
    secret = LIVE_SECRETS["SHOPIFY_WEBHOOK_SECRET"].encode()
    digest = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest())
    headers = {
        **JSON,
        "X-Shopify-Hmac-Sha256": digest.decode(),
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
    }
    response = post(live.url("shopify/webhooks"), body, headers)
    assert response.status_code == 202, response.text
    assert event_type(live, response) == "shopify.orders.create"


def test_twilio_message_answered_with_twiml(live: LiveGateway) -> None:
    url = live.url("twilio/messages")
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": "AC" + uuid.uuid4().hex,
        "From": "+15559870000",
        "To": "+15551230000",
        "Body": "Hello \u00e9",
        "SmsStatus": "received",
    }
    signature = RequestValidator(LIVE_SECRETS["TWILIO_AUTH_TOKEN"]).compute_signature(
        url, params
    )
    body = urlencode(params).encode()
    headers = {**FORM, "x-twilio-signature": signature}

    accepted = post(url, body, headers)
    wrong_url = post(url + "?extra=1", body, headers)

    assert accepted.status_code == 200, accepted.text
    assert accepted.headers["content-type"].startswith("text/xml")
    assert accepted.text.endswith("<Response></Response>")
    assert wrong_url.status_code == 401


def test_acme_standard_webhook_and_duplicate(live: LiveGateway) -> None:
    body = (
        b'{"type": "invoice.paid", "timestamp": "2026-01-02T03:04:05Z",'
        b' "data": {"id": 1}}'
    )
    webhook_id = f"msg_{uuid.uuid4().hex}"
    signature = Webhook(LIVE_SECRETS["ACME_WEBHOOK_SECRET"]).sign(
        webhook_id, datetime.now(UTC), body
    )
    headers = {
        **JSON,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": signature,
    }
    first = post(live.url("acme/events"), body, headers)
    again = post(live.url("acme/events"), body, headers)

    assert first.status_code == 202, first.text
    assert event_type(live, first) == "acme.invoice.paid"
    assert again.status_code == 200
    assert again.json()["event_id"] == first.json()["event_id"]


@pytest.mark.parametrize(
    "route",
    [
        "unipile/notify",
        "github/events",
        "stripe/events",
        "slack/events",
        "shopify/webhooks",
        "twilio/messages",
        "acme/events",
    ],
)
def test_shipped_route_rejects_unsigned(live: LiveGateway, route: str) -> None:
    before = live.stored_requests(route)
    response = post(live.url(route), b'{"type": "x"}', JSON)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert live.stored_requests(route) == before


# Handshakes


def test_meta_get_challenge(live: LiveGateway) -> None:
    before = live.stored_requests("meta/events")
    query = {
        "hub.mode": "subscribe",
        "hub.challenge": "1158201444",
        "hub.verify_token": LIVE_SECRETS["META_VERIFY_TOKEN"],
    }
    url = live.url("meta/events")
    answered = httpx.get(url, params=query, timeout=30)
    wrong_token = httpx.get(url, params={**query, "hub.verify_token": "x"}, timeout=30)
    no_mode = httpx.get(url, params={"hub.challenge": "1"}, timeout=30)

    assert answered.status_code == 200
    assert answered.text == "1158201444"
    assert wrong_token.status_code == 403
    assert no_mode.status_code == 400
    assert live.stored_requests("meta/events") == before


def test_graph_validation_token_echoed(live: LiveGateway) -> None:
    token = "Validation: Testing client application reachability"
    response = post(
        live.url("graph/notifications", urlencode({"validationToken": token})),
        b"",
        {"content-type": "text/plain"},
    )
    assert response.status_code == 200
    assert response.text == token
    assert response.headers["content-type"].startswith("text/plain")


def zoom_headers(body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    message = f"v0:{timestamp}:".encode() + body
    secret = LIVE_SECRETS["ZOOM_SECRET_TOKEN"].encode()
    signature = hmac.new(secret, message, hashlib.sha256).hexdigest()
    return {
        **JSON,
        "x-zm-request-timestamp": timestamp,
        "x-zm-signature": f"v0={signature}",
    }


def test_zoom_challenge_response(live: LiveGateway) -> None:
    body = (
        b'{"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"},'
        b' "event": "endpoint.url_validation"}'
    )
    signed = post(live.url("zoom/events"), body, zoom_headers(body))
    unsigned = post(live.url("zoom/events"), body, JSON)

    secret = LIVE_SECRETS["ZOOM_SECRET_TOKEN"].encode()
    expected = hmac.new(secret, b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert signed.status_code == 200
    assert signed.json() == {
        "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
        "encryptedToken": expected,
    }
    assert unsigned.status_code == 401


def test_zoom_event_after_handshake(live: LiveGateway) -> None:
    body = b'{"event": "meeting.started", "payload": {"object": {"id": 1}}}'
    response = post(live.url("zoom/events"), body, zoom_headers(body))
    assert response.status_code == 202, response.text
    assert event_type(live, response) == "zoom.meeting.started"


# Secrets sent as they are, and source addresses


def test_basic_auth_challenge(live: LiveGateway) -> None:
    missing = post(live.url("lab/basic"), b"{}", JSON)
    rotated = post(
        live.url("lab/basic"),
        b"{}",
        {
            **JSON,
            "authorization": "Basic " + base64.b64encode(b"acme:old-pass").decode(),
        },
    )
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Basic realm="mfo"'
    assert rotated.status_code == 202


def test_query_key_redacted(live: LiveGateway) -> None:
    accepted = post(live.url("lab/query_key", "key=query-secret&x=1"), b"{}", JSON)
    wrong = post(live.url("lab/query_key", "key=guess"), b"{}", JSON)

    event = live.server.api("GET", f"/api/events/{accepted.json()['event_id']}").json()
    assert accepted.status_code == 202
    assert event["data"] == {"key": "[redacted]", "x": "1"}
    assert wrong.status_code == 401


def test_allowlist_behind_trusted_proxy(live: LiveGateway) -> None:
    url = live.url("lab/proxied")
    token = {"x-token": "proxied-token", **JSON}
    allowed = post(url, b"{}", {**token, "x-forwarded-for": "192.0.2.44"})
    direct = post(url, b"{}", token)
    spoofed = post(url, b"{}", {**token, "x-forwarded-for": "192.0.2.44, 198.51.100.7"})
    no_token = post(url, b"{}", {**JSON, "x-forwarded-for": "192.0.2.44"})

    assert allowed.status_code == 202, allowed.text
    assert direct.status_code == 403
    assert spoofed.status_code == 403
    assert no_token.status_code == 401


# Size limits and decoding


def chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


@pytest.mark.parametrize("route, size", [("lab/small", 2048), ("lab/open", 70_000)])
def test_limit_with_content_length(live: LiveGateway, route: str, size: int) -> None:
    body = b"[" + b" " * size + b"]"
    response = post(live.url(route), body, JSON)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


@pytest.mark.parametrize("route, size", [("lab/small", 2048), ("lab/open", 70_000)])
def test_limit_without_content_length(live: LiveGateway, route: str, size: int) -> None:
    """A chunked body is counted as it arrives."""
    with httpx.Client(timeout=30) as client:
        response = client.post(live.url(route), content=chunks(size), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


def test_global_limit_leaves_room(live: LiveGateway) -> None:
    body = json.dumps({"pad": "x" * 20_000}).encode()
    response = post(live.url("lab/open"), body, {**JSON, "x-id": str(uuid.uuid4())})
    assert response.status_code == 202, response.text


def test_gzip_body_decoded(live: LiveGateway) -> None:
    body = gzip.compress(b'{"a": [1, 2, 3]}')
    headers = {**JSON, "content-encoding": "gzip", "x-id": str(uuid.uuid4())}
    response = post(live.url("lab/open"), body, headers)
    event = live.server.api("GET", f"/api/events/{response.json()['event_id']}").json()
    assert response.status_code == 202
    assert event["data"]["payload"] == {"a": [1, 2, 3]}


@pytest.mark.parametrize(
    "body, headers, status",
    [
        (
            gzip.compress(b"[" + b"0," * 100_000 + b"0]"),
            {"content-encoding": "gzip"},
            413,
        ),
        (b"{}", {"content-encoding": "br"}, 415),
        (b"not gzip", {"content-encoding": "gzip"}, 400),
        (b'{"a": 1, "a": 2}', {}, 400),
        (b'{"a": NaN}', {}, 400),
        (b'{"a": 1e999}', {}, 400),
        (b'{"a": "\\u0000"}', {}, 400),
        (b'{"a": "\\udc00"}', {}, 400),
        (b'{"a": "\xff"}', {}, 400),
        (b"{}", {"content-type": "application/json; charset=klingon"}, 415),
        (b"{}", {"content-type": "application/pdf"}, 415),
        (b"a=%ZZ&b", {"content-type": "application/x-www-form-urlencoded"}, 202),
        (b"42", {}, 202),
        (b'"text"', {}, 202),
        (b"[1, {}]", {}, 202),
    ],
)
def test_decoding_outcome(
    live: LiveGateway, body: bytes, headers: dict[str, str], status: int
) -> None:
    before = live.stored_requests("lab/open")
    response = post(
        live.url("lab/open"), body, {**JSON, "x-id": str(uuid.uuid4()), **headers}
    )
    assert response.status_code == status, response.text
    assert live.stored_requests("lab/open") == before + (status == 202)


def test_depth_limit_per_route(live: LiveGateway) -> None:
    shallow = post(live.url("lab/shallow"), b"[[[[1]]]]", JSON)
    deep = post(live.url("lab/shallow"), b"[[[[[1]]]]]", JSON)
    assert shallow.status_code == 202
    assert deep.status_code == 400
    assert "4 levels" in deep.json()["message"]


def test_top_level_array_judged_by_schema(live: LiveGateway) -> None:
    body = b"[1, 2]"
    webhook_id = f"msg_{uuid.uuid4().hex}"
    signature = Webhook(LIVE_SECRETS["ACME_WEBHOOK_SECRET"]).sign(
        webhook_id, datetime.now(UTC), body
    )
    headers = {
        **JSON,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": signature,
    }
    response = post(live.url("acme/events"), body, headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["pointer"] == ""


def test_unstorable_query_text_rejected(live: LiveGateway) -> None:
    """A NUL from the query reaches event data through a template: 422, not 500."""
    url = live.url("lab/open", "q=%00")
    response = post(url, b"{}", {**JSON, "x-id": str(uuid.uuid4())})
    assert response.status_code == 422
    assert "U+0000" in response.json()["message"]


def test_template_made_nan_rejected(live: LiveGateway) -> None:
    """Event data a template turns into NaN cannot be stored: 422, not 500."""
    fine = post(live.url("lab/numbers"), b'{"x": "1.5"}', JSON)
    nan = post(live.url("lab/numbers"), b'{"x": "nan"}', JSON)
    assert fine.status_code == 202
    assert nan.status_code == 422
    assert "nan" in nan.json()["message"]


# Templated responses


def test_response_templates(live: LiveGateway) -> None:
    body = json.dumps({"id": str(uuid.uuid4())}).encode()
    first = post(live.url("lab/reply"), body, JSON)
    again = post(live.url("lab/reply"), body, JSON)

    event_id = first.headers["x-event-id"]
    assert first.status_code == 201
    assert event_id.startswith("evt_")
    assert first.json() == {"received": event_id, "again": False}
    assert again.status_code == 200
    assert again.json() == {"received": event_id, "again": True}


# Idempotency under concurrent duplicates


def test_concurrent_duplicates_make_one_event(live: LiveGateway) -> None:
    copies = 40
    body = json.dumps(
        {"email_id": f"race-{uuid.uuid4()}", "account_id": "a1", "event": "mail_sent"}
    ).encode()
    headers = {**JSON, "unipile-auth": LIVE_SECRETS["UNIPILE_WEBHOOK_SECRET"]}
    url = live.url("unipile/notify")

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=copies)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            sends = [
                client.post(url, content=body, headers=headers) for _ in range(copies)
            ]
            return list(await asyncio.gather(*sends))

    responses = asyncio.run(fire())
    statuses = sorted(response.status_code for response in responses)
    event_ids = {response.json()["event_id"] for response in responses}
    assert statuses == [200] * (copies - 1) + [202]
    assert len(event_ids) == 1
    assert all(r.json().get("duplicate") for r in responses if r.status_code == 200)


SEND_BODIES = {
    "stripe/events": (
        b'{"id": "evt_send", "object": "event", "type": "a.b", "created": 1,'
        b' "data": {"object": {}}}'
    ),
    "slack/events": (
        b'{"type": "event_callback", "event_id": "Ev_send",'
        b' "event": {"type": "message"}}'
    ),
    "shopify/webhooks": b'{"id": 1}',
    "acme/events": (
        b'{"type": "a.b", "timestamp": "2026-01-02T03:04:05Z", "data": {}}'
    ),
    "github/events": b'{"zen": "x"}',
    "unipile/notify": b'{"email_id": "send", "account_id": "a", "event": "mail_sent"}',
}


@pytest.mark.parametrize("route", sorted(SEND_BODIES))
def test_signed_by_route_verifier(live: LiveGateway, route: str) -> None:
    """What `mfo send` signs with the route's verifier is accepted."""
    extra = {"x-github-event": "ping", "x-github-delivery": str(uuid.uuid4())}
    url, headers = live.sign(route, SEND_BODIES[route], {**JSON, **extra})
    response = post(url, SEND_BODIES[route], headers)
    assert response.status_code in (200, 202), response.text


def test_signed_twilio_form_by_route_verifier(live: LiveGateway) -> None:
    form = {"MessageSid": "SM" + "0" * 32, "AccountSid": "AC" + "0" * 32}
    body = urlencode(form).encode()
    url, headers = live.sign("twilio/messages", body, FORM)
    response = post(url, body, headers)
    assert response.status_code == 200, response.text

"""The dashboard over HTTP: sign-in, CSRF, pages, buttons and hostile input."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import SECRETS, _drop_database, backend_env
from tests.support import REPO, Gateway, Subscriber, start_gateway

pytestmark = pytest.mark.server

UNIPILE = "/webhooks/unipile/notify"
HEADERS = {
    "content-type": "application/json",
    "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
}
FAST_RETRY = {"schedule": ["100ms"], "jitter": 0}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env, database = backend_env("postgres")
    env.update(SECRETS)
    running = start_gateway(REPO / "config", tmp_path_factory.mktemp("ui"), env)
    try:
        yield running
    finally:
        running.stop()
        if database:
            _drop_database(database)


def sign_in(gateway: Gateway) -> httpx.Client:
    client = httpx.Client(base_url=gateway.base_url, timeout=30)
    response = client.post("/ui/login", data={"token": gateway.token, "next": "/ui"})
    assert response.status_code == 303
    # httpx keeps Secure cookies for https only, and the test server is plain http.
    client.cookies.set("mfo_ui_session", response.cookies["mfo_ui_session"])
    return client


def csrf_of(client: httpx.Client) -> str:
    page = client.get("/ui").text
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    assert match is not None
    return match.group(1)


def send_email(gateway: Gateway, event: str = "mail_sent") -> str:
    body = json.dumps(
        {
            "email_id": uuid.uuid4().hex,
            "account_id": "acc",
            "event": event,
            "subject": "Quarterly numbers",
        }
    ).encode()
    response = gateway.post(UNIPILE, body, HEADERS)
    assert response.status_code == 202
    return str(response.json()["event_id"])


def wait_for_status(gateway: Gateway, query: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = gateway.api("GET", f"/api/deliveries?{query}").json()["deliveries"]
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"{len(rows)} deliveries match {query}, expected {count}")


def test_ui_redirects_to_sign_in(gateway: Gateway) -> None:
    """A browser without a session is sent to the sign-in page, keeping its target."""
    response = httpx.get(gateway.base_url + "/ui/deliveries?status=failed")
    assert response.status_code == 302
    assert response.headers["location"] == (
        "/ui/login?next=%2Fui%2Fdeliveries%3Fstatus%3Dfailed"
    )


def test_ui_rejects_wrong_token(gateway: Gateway) -> None:
    """A wrong token gets 401 and no session cookie."""
    response = httpx.post(
        gateway.base_url + "/ui/login", data={"token": "mfo_wrong", "next": "/ui"}
    )
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


def test_ui_session_cookie_is_locked_down(gateway: Gateway) -> None:
    """The session cookie is Secure, HttpOnly, SameSite=Strict and not the token."""
    response = httpx.post(
        gateway.base_url + "/ui/login",
        data={"token": gateway.token, "next": "//evil.example/"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui"
    cookie = response.headers["set-cookie"]
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/ui" in cookie
    assert gateway.token not in cookie


def test_ui_rejects_forged_session(gateway: Gateway) -> None:
    """A cookie not signed with the token counts as signed out."""
    client = httpx.Client(base_url=gateway.base_url)
    client.cookies.set("mfo_ui_session", "9999999999." + "0" * 64)
    assert client.get("/ui").status_code == 302


def test_ui_rejects_post_without_csrf(gateway: Gateway) -> None:
    """A POST needs the session's CSRF token and, when sent, a same-site Origin."""
    client = sign_in(gateway)
    token = csrf_of(client)
    path = "/ui/subscriptions/nope/pause"
    assert client.post(path, data={}).status_code == 403
    assert client.post(path, data={"csrf_token": "0" * 64}).status_code == 403
    foreign = client.post(
        path,
        data={"csrf_token": token},
        headers={"origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    assert client.post(path, data={"csrf_token": token}).status_code == 303


def test_ui_pages_send_security_headers(gateway: Gateway) -> None:
    """Pages forbid framing and foreign scripts, and are not cached."""
    response = sign_in(gateway).get("/ui/events")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


HOSTILE = [
    "/ui/events?before=%00",
    "/ui/events?before=2026-01-01T00:00:00%7C",
    "/ui/events?before=2026-01-01T00:00:00%7Cevt_1",
    "/ui/events?before=9999-99-99%7Cx",
    "/ui/events?since=99999999999d",
    "/ui/events?since=-5h",
    "/ui/events?until=not-a-time",
    "/ui/events?status=%3Cscript%3E",
    "/ui/events?type=%25%5C_",
    "/ui/events?type=" + "x" * 5000,
    "/ui/events?provider=%00",
    "/ui/events/%00",
    "/ui/events/" + "e" * 3000,
    "/ui/deliveries?subscription=%27%20OR%201%3D1--",
    "/ui/deliveries?event_id=%00",
    "/ui/deliveries?status=failed&since=1e400h",
    "/ui/deliveries/%00",
    "/ui/deliveries/msg_missing",
    "/ui/runs?status=nope",
    "/ui/runs/%00",
    "/ui/static/..%2F..%2Fapp.py",
    "/ui/static/style.css%00",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_ui_hostile_input_never_500(gateway: Gateway, path: str) -> None:
    """Odd or hostile query strings and ids get a page or a 4xx, never a 500."""
    response = sign_in(gateway).get(path)
    assert response.status_code in (200, 400, 404), response.text[:300]


def test_ui_hostile_posts_never_500(gateway: Gateway) -> None:
    """Buttons with odd ids or filters get a 4xx page or a notice, never a 500."""
    client = sign_in(gateway)
    token = csrf_of(client)
    posts = [
        ("/ui/deliveries/%00/retry", {}),
        ("/ui/deliveries/msg_missing/retry", {}),
        ("/ui/deliveries/retry", {"status": "pending"}),
        ("/ui/deliveries/retry", {"status": "failed", "since": "nonsense"}),
        ("/ui/subscriptions/%00/pause", {}),
        ("/ui/subscriptions/x/explode", {}),
    ]
    for path, data in posts:
        response = client.post(path, data={"csrf_token": token, **data})
        assert response.status_code < 500, (path, response.text[:300])


def test_ui_event_page_shows_payload_route_and_deliveries(gateway: Gateway) -> None:
    """An event's page shows its payload, its route and each delivery."""
    subscriber = Subscriber().start()
    try:
        gateway.subscribe(subscriber, ["unipile.email.sent"])
        event_id = send_email(gateway)
        subscriber.wait_for(1)
        page = sign_in(gateway).get(f"/ui/events/{event_id}").text
    finally:
        subscriber.stop()
    assert "Quarterly numbers" in page
    assert "unipile / notify" in page
    assert "POST /webhooks/unipile/notify" in page
    assert re.search(r"/ui/deliveries/msg_\w+", page)


def test_ui_bulk_retry_sends_filtered_set(gateway: Gateway) -> None:
    """Bulk retry resends the failed deliveries of one subscription, not others."""
    failing = Subscriber(responses=[500] * 6).start()
    other = Subscriber(responses=[500] * 6).start()
    try:
        target = gateway.subscribe(failing, ["unipile.email.sent"], retry=FAST_RETRY)
        bystander = gateway.subscribe(other, ["unipile.email.sent"], retry=FAST_RETRY)
        for _ in range(3):
            send_email(gateway)
        wait_for_status(gateway, f"status=failed&subscription={target['id']}", 3)
        wait_for_status(gateway, f"status=failed&subscription={bystander['id']}", 3)
        client = sign_in(gateway)
        listing = client.get(
            f"/ui/deliveries?status=failed&subscription={target['id']}"
        ).text
        assert "3 failed deliveries match this filter." in listing
        response = client.post(
            "/ui/deliveries/retry",
            data={
                "csrf_token": csrf_of(client),
                "status": "failed",
                "subscription": target["id"],
            },
        )
        assert response.status_code == 303
        assert "3+deliveries+queued+again" in response.headers["location"]
        wait_for_status(gateway, f"status=succeeded&subscription={target['id']}", 3)
    finally:
        failing.stop()
        other.stop()
        gateway.unsubscribe(target)
        gateway.unsubscribe(bystander)
    failed = gateway.api(
        "GET", f"/api/deliveries?status=failed&subscription={bystander['id']}"
    ).json()["deliveries"]
    assert len(failed) == 3


def test_ui_subscription_buttons(gateway: Gateway) -> None:
    """Pause, resume and rotate change the subscription as the API would."""
    subscriber = Subscriber().start()
    try:
        created = gateway.subscribe(subscriber, ["nothing.matches"])
        client = sign_in(gateway)
        token = csrf_of(client)
        base = f"/ui/subscriptions/{created['id']}"
        path = f"/api/notifications/subscriptions/{created['id']}"

        client.post(base + "/pause", data={"csrf_token": token})
        assert gateway.api("GET", path).json()["status"] == "paused"
        client.post(base + "/resume", data={"csrf_token": token})
        assert gateway.api("GET", path).json()["status"] == "active"
        rotated = client.post(base + "/rotate-secret", data={"csrf_token": token})
        assert rotated.status_code == 200
        stored = gateway.api("GET", path).json()
        assert stored["secret"] != created["secret"]
        assert stored["secret"] in rotated.text
        assert stored["previous_secret_expires_at"] is not None
        listing = client.get("/ui/subscriptions").text
        assert stored["secret"] not in listing
    finally:
        subscriber.stop()


def test_ui_counters_and_overview(gateway: Gateway) -> None:
    """The overview shows the config version and the last hour's counters."""
    send_email(gateway)
    client = sign_in(gateway)
    overview = client.get("/ui").text
    version = gateway.api("GET", "/admin/config").json()["version"]
    assert version in overview
    fragment = client.get("/ui/counters").text
    received = re.search(
        r'<span class="number">(\d+)</span><span class="label">'
        r"requests received",
        fragment,
    )
    assert received is not None
    assert int(received.group(1)) >= 1

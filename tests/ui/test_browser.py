"""The dashboard in headless Chromium: sign in, find a failed delivery, retry it.

Chromium is Debian's package at /usr/bin/chromium, driven by Playwright.
With MFO_SCREENSHOTS set to a folder, the test also saves a screenshot of
each main page there; docs/screenshots contains the ones made that way.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRETS, _drop_database, backend_env
from tests.support import REPO, Gateway, Subscriber, start_gateway

pytestmark = pytest.mark.server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEADERS = {
    "content-type": "application/json",
    "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
}
# Page loads and clicks wait at most this long, in milliseconds.
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env, database = backend_env("postgres")
    env.update(SECRETS)
    running = start_gateway(REPO / "config", tmp_path_factory.mktemp("browser"), env)
    try:
        yield running
    finally:
        running.stop()
        if database:
            _drop_database(database)


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    """A Chromium page with a fresh profile, closed after the module."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing; apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1360, "height": 860},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def send_email(gateway: Gateway, event: str, subject: str) -> str:
    body = json.dumps(
        {
            "email_id": uuid.uuid4().hex,
            "account_id": "acc-42",
            "event": event,
            "subject": subject,
            "from": "ada@example.com",
        }
    ).encode()
    response = gateway.post("/webhooks/unipile/notify", body, HEADERS)
    assert response.status_code == 202, response.text
    return str(response.json()["event_id"])


def wait_for_failed(gateway: Gateway, subscription_id: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = gateway.api(
            "GET", f"/api/deliveries?status=failed&subscription={subscription_id}"
        ).json()["deliveries"]
        if rows:
            return str(rows[0]["id"])
        time.sleep(0.1)
    raise AssertionError("no delivery failed within 30s")


def save(page: Any, name: str) -> None:
    folder = os.environ.get("MFO_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_browser_retries_failed_delivery(gateway: Gateway, page: Any) -> None:
    """Sign in, filter failed deliveries, open one, retry it and see it succeed."""
    receiver = Subscriber(responses=[503, 503]).start()
    healthy = Subscriber().start()
    try:
        crm = gateway.subscribe(
            receiver,
            ["unipile.email.received"],
            retry={"schedule": ["100ms"], "jitter": 0},
            description="CRM inbox sync",
        )
        gateway.subscribe(healthy, ["unipile.email.*", "email.processed"])
        send_email(gateway, "mail_sent", "Invoice 1042 sent")
        send_email(gateway, "mail_received", "Quarterly numbers")
        failed_id = wait_for_failed(gateway, crm["id"])
        healthy.wait_for(3)

        base = gateway.base_url
        page.goto(base + "/ui/deliveries")
        assert "/ui/login" in page.url
        save(page, "sign-in")
        page.fill("#token", gateway.token)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/ui/deliveries$"))

        page.select_option("#status", "failed")
        page.click("form.filters button[type=submit]")
        page.wait_for_url(re.compile(r"status=failed"))
        assert page.locator("text=1 failed deliveries match this filter.").count() == 1
        save(page, "deliveries-failed")
        page.click(f"a[href='/ui/deliveries/{failed_id}']")
        page.wait_for_url(re.compile(failed_id))
        assert page.locator("h1 .badge.failed").inner_text() == "failed"
        assert page.locator("table.attempts tbody tr").count() == 2
        save(page, "delivery-failed")

        page.click("text=Retry this delivery")
        page.wait_for_url(re.compile(r"notice=Retry\+queued"))
        for _ in range(50):
            if page.locator("h1 .badge.succeeded").count():
                break
            time.sleep(0.2)
            page.reload()
        assert page.locator("h1 .badge.succeeded").inner_text() == "succeeded"
        assert page.locator("table.attempts tbody tr").count() == 3
        save(page, "delivery-retried")
        assert len(receiver.received) == 3

        take_overview_screenshots(page, base, crm["id"])
    finally:
        receiver.stop()
        healthy.stop()


def take_overview_screenshots(page: Any, base: str, subscription_id: str) -> None:
    """Visit the other main pages; each must render without an error."""
    for path, name in (
        ("/ui", "overview"),
        ("/ui/events", "events"),
        ("/ui/subscriptions", "subscriptions"),
        ("/ui/runs", "runs"),
    ):
        response = page.goto(base + path)
        assert response is not None
        assert response.status == 200
        save(page, name)
    page.goto(base + "/ui/events?type=unipile.email.received")
    page.click("table tbody tr td a")
    assert page.locator("pre.json").count() == 1
    assert "Quarterly numbers" in page.locator("pre.json").inner_text()
    save(page, "event")
    page.goto(base + "/ui/runs")
    page.click("table tbody tr td:last-child a")
    assert page.locator("section.step").count() >= 1
    save(page, "run")

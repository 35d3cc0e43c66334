"""Scrape /metrics after known traffic and check every count."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SECRETS, _drop_database, backend_env
from tests.support import REPO, Gateway, Subscriber, start_gateway

pytestmark = pytest.mark.server

UNIPILE = "/webhooks/unipile/notify"
HEADERS = {
    "content-type": "application/json",
    "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
}
FAST_RETRY = {"schedule": ["100ms"], "jitter": 0}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    content_type = response.headers["content-type"]
    assert content_type.count("charset") == 1, content_type
    text = response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def email(event: str) -> bytes:
    return json.dumps(
        {
            "email_id": f"e-{uuid.uuid4().hex}",
            "account_id": "acc-1",
            "event": event,
            "subject": "Quarterly numbers",
        }
    ).encode()


def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics-config")
    shutil.copytree(REPO / "config", root / "config")
    shutil.copytree(REPO / "schemas", root / "schemas")
    return root / "config"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, config_dir: Path
) -> Iterator[Gateway]:
    env, database = backend_env("postgres")
    env.update(SECRETS)
    running = start_gateway(config_dir, tmp_path_factory.mktemp("metrics"), env)
    try:
        yield running
    finally:
        running.stop()
        if database:
            _drop_database(database)


def test_metrics_count_known_traffic(gateway: Gateway) -> None:
    """Ingress, events, attempts, dead letters and histograms match what was sent."""
    flaky = Subscriber(responses=[500]).start()
    broken = Subscriber(responses=[500] * 10).start()
    try:
        gateway.subscribe(flaky, ["unipile.email.received"], retry=FAST_RETRY)
        gateway.subscribe(broken, ["unipile.email.sent"], retry=FAST_RETRY)
        first = email("mail_received")
        for body in (first, email("mail_received"), email("mail_received")):
            assert gateway.post(UNIPILE, body, HEADERS).status_code == 202
        assert gateway.post(UNIPILE, first, HEADERS).status_code == 200
        assert gateway.post(UNIPILE, email("mail_sent"), HEADERS).status_code == 202
        wrong = {**HEADERS, "unipile-auth": "not-the-secret"}
        assert gateway.post(UNIPILE, email("mail_sent"), wrong).status_code == 401
        assert gateway.post(UNIPILE, b"{", HEADERS).status_code == 400

        flaky.wait_for(4)
        broken.wait_for(2)
        url = gateway.base_url + "/metrics"
        wait_until(
            lambda: value(scrape(url), "mfo_deliveries_total", outcome="failed") == 1
        )
        wait_until(
            lambda: value(scrape(url), "mfo_events_total", type="delivery.failed") == 1
        )
        samples = scrape(url)
    finally:
        flaky.stop()
        broken.stop()

    def ingress(status: str) -> float:
        return value(
            samples,
            "mfo_ingress_requests_total",
            provider="unipile",
            route="notify",
            status=status,
        )

    assert ingress("202") == 4
    assert ingress("200") == 1
    assert ingress("401") == 1
    assert ingress("400") == 1
    events = "mfo_events_total"
    assert value(samples, events, type="unipile.email.received") == 3
    assert value(samples, events, type="unipile.email.sent") == 1
    assert value(samples, events, type="email.processed") == 3
    assert value(samples, events, type="delivery.failed") == 1
    attempts = "mfo_delivery_attempts_total"
    assert value(samples, attempts, outcome="succeeded") == 3
    assert value(samples, attempts, outcome="failed") == 3
    assert value(samples, "mfo_deliveries_total", outcome="succeeded") == 3
    assert value(samples, "mfo_deliveries_total", outcome="failed") == 1
    assert value(samples, "mfo_delivery_attempt_duration_seconds_count") == 6
    assert value(samples, "mfo_delivery_latency_seconds_count") == 3
    duration = value(
        samples,
        "mfo_ingress_request_duration_seconds_count",
        provider="unipile",
        route="notify",
    )
    assert duration == 7
    assert ("mfo_queue_jobs", frozenset({("state", "queued")})) in samples
    assert value(samples, "mfo_config_reloads_total") == 0
    assert value(samples, "mfo_config_reload_errors_total") == 0


def test_metrics_count_reload_errors(gateway: Gateway, config_dir: Path) -> None:
    """A rejected reload counts as a reload error and keeps the running version."""
    url = gateway.base_url + "/metrics"
    before = scrape(url)
    versions = [key for key in before if key[0] == "mfo_config_info"]
    subscriptions = config_dir / "subscriptions.yaml"
    original = subscriptions.read_text()
    subscriptions.write_text("subscriptions:\n  broken:\n    url: not a url\n")
    try:
        wait_until(lambda: value(scrape(url), "mfo_config_reload_errors_total") >= 1)
    finally:
        subscriptions.write_text(original)
    after = scrape(url)
    assert value(after, "mfo_config_reloads_total") == 0
    assert [key for key in after if key[0] == "mfo_config_info"] == versions
    assert len(versions) == 1


def test_metrics_skip_unmatched_paths(gateway: Gateway) -> None:
    """Requests outside provider routes are not counted as ingress."""
    before = scrape(gateway.base_url + "/metrics")
    assert httpx.get(gateway.base_url + "/nowhere", timeout=10).status_code == 404
    assert httpx.get(gateway.base_url + "/healthz", timeout=10).status_code == 200
    after = scrape(gateway.base_url + "/metrics")
    ingress = [key for key in after if key[0] == "mfo_ingress_requests_total"]
    assert sum(after[key] for key in ingress) == sum(
        before.get(key, 0.0) for key in ingress
    )

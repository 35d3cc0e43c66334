"""Delivery rules against a real gateway and real receivers on 127.0.0.1.

Every test emits its own event type, so the tests share one gateway without
seeing each other's deliveries.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from tests.delivery.receivers import (
    HangingReceiver,
    Receiver,
    Reply,
    delivery_of,
    events_of,
    make_certificates,
    run_cli,
    send_event,
    server_tls,
    start_test_gateway,
    subscribe,
    wait_delivery,
)
from tests.support import Gateway, free_port

FAST = {"schedule": ["200ms"], "jitter": 0}
OPERATIONAL = ["delivery.failed", "delivery.recovered", "subscription.disabled"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    running = start_test_gateway(tmp_path_factory.mktemp("rules"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def alerts(gateway: Gateway) -> Iterator[Receiver]:
    """A receiver subscribed to the operational events."""
    receiver = Receiver().start()
    subscribe(gateway, receiver.url, OPERATIONAL, retry=FAST)
    yield receiver
    receiver.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def wait_alert(
    alerts: Receiver, event_type: str, key: str, value: str, timeout: float = 15
) -> dict[str, Any]:
    """Wait for an operational event whose data has `key` equal to `value`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for arrival in events_of(alerts, event_type):
            if arrival.payload["data"].get(key) == value:
                return dict(arrival.payload["data"])
        time.sleep(0.1)
    raise AssertionError(f"no {event_type} event with {key}={value}")


def gap(first: Any, second: Any) -> float:
    return float(second.received_at - first.received_at)


def test_attempts_resigned_with_one_id(gateway: Gateway, receiver: Receiver) -> None:
    """Each attempt carries its own timestamp and signature and the same webhook-id."""
    receiver.replies = [Reply(429, {"retry-after": "1"}), Reply(500)]
    sub = subscribe(
        gateway,
        receiver.url,
        ["test.resign"],
        retry=FAST | {"schedule": ["200ms", "200ms"]},
    )
    event_id = send_event(gateway, "test.resign")
    first, second, third = receiver.wait_for(3)
    delivery = wait_delivery(gateway, event_id, "succeeded")

    assert len(set(receiver.webhook_ids())) == 1
    assert receiver.webhook_ids()[0] == delivery["id"]
    assert int(second.headers["webhook-timestamp"]) > int(
        first.headers["webhook-timestamp"]
    )
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    assert all(a.verifies_with(sub["secret"]) for a in (first, second, third))
    assert gap(first, second) >= 0.9
    assert [a["status_code"] for a in delivery["attempts_log"]] == [429, 500, 200]


def test_retry_after_http_date(gateway: Gateway, receiver: Receiver) -> None:
    """A Retry-After HTTP date delays the next attempt until then."""
    later = formatdate(time.time() + 3, usegmt=True)
    receiver.replies = [Reply(503, {"retry-after": later})]
    subscribe(gateway, receiver.url, ["test.retry-date"], retry=FAST)
    send_event(gateway, "test.retry-date")
    first, second = receiver.wait_for(2, timeout=15)

    assert gap(first, second) >= 1.5


def test_retry_after_zero_clamped(gateway: Gateway, receiver: Receiver) -> None:
    """Retry-After: 0 still waits the one-second minimum."""
    receiver.replies = [Reply(429, {"retry-after": "0"})]
    subscribe(gateway, receiver.url, ["test.retry-zero"], retry=FAST)
    send_event(gateway, "test.retry-zero")
    first, second = receiver.wait_for(2)

    assert gap(first, second) >= 0.9


def test_event_type_schedule_override(gateway: Gateway, receiver: Receiver) -> None:
    """A by_event_type entry gives matching events their own schedule."""
    receiver.default = Reply(500)
    retry = {
        "schedule": ["200ms"],
        "jitter": 0,
        "by_event_type": {"test.override.long": {"schedule": ["200ms"] * 3}},
    }
    subscribe(gateway, receiver.url, ["test.override.*"], retry=retry)
    long_id = send_event(gateway, "test.override.long")
    short_id = send_event(gateway, "test.override.short")
    long = wait_delivery(gateway, long_id, "failed")
    short = wait_delivery(gateway, short_id, "failed")

    assert long["attempts"] == 4
    assert short["attempts"] == 2


def test_attempt_records_response(gateway: Gateway, receiver: Receiver) -> None:
    """An attempt stores status, duration, headers and the first 4 KB of the body."""
    receiver.replies = [Reply(500, {"x-trace": "abc123"}, b"x" * 10_000)]
    subscribe(gateway, receiver.url, ["test.record"], retry=FAST)
    event_id = send_event(gateway, "test.record")
    delivery = wait_delivery(gateway, event_id, "succeeded")
    failed = delivery["attempts_log"][0]

    assert failed["status_code"] == 500
    assert failed["duration_ms"] > 0
    assert failed["response_headers"]["x-trace"] == "abc123"
    assert len(failed["response_body"]) == 4096
    assert failed["error"] == "HTTP 500"


def test_hung_connection_times_out(gateway: Gateway) -> None:
    """A receiver that accepts and never responds is timed out and retried."""
    hanging = HangingReceiver()
    try:
        subscribe(
            gateway,
            hanging.url,
            ["test.hung"],
            retry=FAST,
            timeout="300ms",
            connect_timeout="1s",
        )
        event_id = send_event(gateway, "test.hung")
        delivery = wait_delivery(gateway, event_id, "failed")
    finally:
        hanging.stop()

    errors = [a["error"] for a in delivery["attempts_log"]]
    assert errors == ["timed out after 0.3s waiting for the response"] * 2
    assert hanging.connections == 2


def test_refused_connection_retried(gateway: Gateway) -> None:
    """A closed port is a connection error, retried on the schedule."""
    url = f"http://127.0.0.1:{free_port()}/hooks"
    subscribe(gateway, url, ["test.refused"], retry=FAST)
    event_id = send_event(gateway, "test.refused")
    delivery = wait_delivery(gateway, event_id, "failed")

    assert delivery["attempts"] == 2
    assert delivery["last_error"].startswith("connection failed")


def test_untrusted_certificate_retried(gateway: Gateway, tmp_path: Path) -> None:
    """A certificate from an unknown CA is a TLS error, retried on the schedule."""
    _, certificate, key = make_certificates(tmp_path, "127.0.0.1")
    receiver = Receiver(tls=server_tls(certificate, key)).start()
    try:
        subscribe(gateway, receiver.url, ["test.tls"], retry=FAST)
        event_id = send_event(gateway, "test.tls")
        delivery = wait_delivery(gateway, event_id, "failed")
    finally:
        receiver.stop()

    assert delivery["attempts"] == 2
    assert "TLS handshake failed" in delivery["last_error"]
    assert "CERTIFICATE_VERIFY_FAILED" in delivery["last_error"]
    assert receiver.arrivals == []


def test_dead_letter_then_recovered(
    gateway: Gateway, receiver: Receiver, alerts: Receiver
) -> None:
    """A spent schedule logs an ERROR and emits delivery.failed; a retry recovers it."""
    receiver.replies = [Reply(500), Reply(500)]
    subscribe(gateway, receiver.url, ["test.dead"], retry=FAST)
    event_id = send_event(gateway, "test.dead")
    failed = wait_delivery(gateway, event_id, "failed")
    alert = wait_alert(alerts, "delivery.failed", "delivery_id", failed["id"])

    assert alert["attempts"] == 2
    assert alert["last_status"] == 500
    assert alert["event_id"] == event_id
    assert f"delivery {failed['id']} of event {event_id}" in gateway.log()
    assert failed["dead_lettered_at"] is not None

    result = run_cli(
        gateway, "deliveries", "retry", failed["id"], "--url", gateway.base_url
    )
    assert result.returncode == 0, result.stderr
    recovered = wait_delivery(gateway, event_id, "succeeded")
    alert = wait_alert(alerts, "delivery.recovered", "delivery_id", failed["id"])

    assert [a["status_code"] for a in recovered["attempts_log"]] == [500, 500, 200]
    assert alert["attempts"] == 3
    assert len(set(receiver.webhook_ids())) == 1


def test_retry_of_deleted_subscription_rejected(
    gateway: Gateway, receiver: Receiver
) -> None:
    """A failed delivery whose subscription is gone is not put back to pending."""
    receiver.replies = [Reply(500), Reply(500)]
    sub = subscribe(gateway, receiver.url, ["test.deleted"], retry=FAST)
    event_id = send_event(gateway, "test.deleted")
    failed = wait_delivery(gateway, event_id, "failed")
    gateway.unsubscribe(sub)

    single = gateway.api("POST", f"/api/deliveries/{failed['id']}/retry")
    bulk = gateway.api("POST", "/api/deliveries/retry", json={"ids": [failed["id"]]})

    cli = run_cli(
        gateway, "deliveries", "retry", failed["id"], "--url", gateway.base_url
    )
    dry = run_cli(
        gateway,
        "deliveries",
        "retry",
        "--event-type",
        "test.deleted",
        "--dry-run",
        "--url",
        gateway.base_url,
    )

    assert single.status_code == 409, single.text
    assert sub["id"] in single.json()["detail"]
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["retried"] == 0
    assert cli.returncode == 1
    assert f"{failed['id']}: not retried" in cli.stderr
    assert "is deleted" in cli.stderr
    assert "0 deliveries would be retried" in dry.stdout
    assert delivery_of(gateway, event_id)["status"] == "failed"


def test_deleting_subscription_fails_pending(
    gateway: Gateway, receiver: Receiver
) -> None:
    """Deliveries waiting to retry fail when their subscription is deleted."""
    receiver.replies = [Reply(500)]
    slow = {"schedule": ["1h"], "jitter": 0}
    sub = subscribe(gateway, receiver.url, ["test.deleting"], retry=slow)
    event_id = send_event(gateway, "test.deleting")
    receiver.wait_for(1)
    waiting = wait_delivery(gateway, event_id, "pending")
    deadline = time.monotonic() + 20
    while waiting["attempts"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        waiting = delivery_of(gateway, event_id)
    gateway.unsubscribe(sub)
    done = delivery_of(gateway, event_id)

    assert waiting["attempts"] == 1
    assert done["status"] == "failed"
    assert done["last_error"] == "subscription was deleted"
    assert done["next_attempt_at"] is None


def test_wildcard_skips_operational_events(
    gateway: Gateway, receiver: Receiver, alerts: Receiver
) -> None:
    """A bare `*` subscription does not receive the gateway's operational events."""
    everything = Receiver().start()
    wildcard = subscribe(gateway, everything.url, ["*"])
    try:
        receiver.replies = [Reply(500)]
        sub = subscribe(
            gateway, receiver.url, ["test.wildcard"], retry={"schedule": []}
        )
        event_id = send_event(gateway, "test.wildcard")
        failed = wait_delivery(gateway, event_id, "failed", subscription_id=sub["id"])
        wait_alert(alerts, "delivery.failed", "delivery_id", failed["id"])
        everything.wait_for(1)
        time.sleep(1.0)
    finally:
        gateway.api("DELETE", f"/api/notifications/subscriptions/{wildcard['id']}")
        everything.stop()

    types = {arrival.payload["type"] for arrival in everything.arrivals}
    assert "test.wildcard" in types
    assert types.isdisjoint(OPERATIONAL)


def test_gone_disables_with_event(
    gateway: Gateway, receiver: Receiver, alerts: Receiver
) -> None:
    """410 disables the subscription with a reason and emits subscription.disabled."""
    receiver.replies = [Reply(410)]
    sub = subscribe(gateway, receiver.url, ["test.gone"], retry=FAST)
    send_event(gateway, "test.gone")
    alert = wait_alert(alerts, "subscription.disabled", "subscription_id", sub["id"])
    stored = gateway.api("GET", f"/api/notifications/subscriptions/{sub['id']}").json()

    assert stored["status"] == "disabled"
    assert "410" in stored["status_reason"]
    assert "410" in alert["reason"]
    assert len(receiver.arrivals) == 1


def test_failure_window_disables(
    gateway: Gateway, receiver: Receiver, alerts: Receiver
) -> None:
    """Failing past disable_after disables the subscription; resume sends the rest."""
    receiver.replies = [Reply(500)] * 4
    retry = {"schedule": ["400ms"] * 6, "jitter": 0}
    sub = subscribe(
        gateway, receiver.url, ["test.window"], retry=retry, disable_after="1s"
    )
    event_id = send_event(gateway, "test.window")
    alert = wait_alert(alerts, "subscription.disabled", "subscription_id", sub["id"])
    held = delivery_of(gateway, event_id)
    arrivals = len(receiver.arrivals)
    time.sleep(1.5)

    assert "every attempt failed" in alert["reason"]
    assert held["status"] == "pending"
    assert len(receiver.arrivals) == arrivals

    resumed = gateway.api(
        "POST", f"/api/notifications/subscriptions/{sub['id']}/resume"
    ).json()
    # NOTE: when the retry job fires while the subscription is disabled, the
    # delivery can wait for the sweep (15 s interval, 30 s grace) after resume.
    delivered = wait_delivery(gateway, event_id, "succeeded", timeout=75)

    assert resumed["status"] == "active"
    assert resumed["failing_since"] is None
    assert delivered["attempts_log"][-1]["status_code"] == 200


def test_pause_holds_until_resume(gateway: Gateway, receiver: Receiver) -> None:
    """Deliveries due while paused are held, then sent on resume."""
    sub = subscribe(gateway, receiver.url, ["test.pause"])
    paused = run_cli(
        gateway, "subscriptions", "pause", sub["id"], "--url", gateway.base_url
    )
    assert paused.returncode == 0, paused.stderr
    first = send_event(gateway, "test.pause")
    second = send_event(gateway, "test.pause")
    time.sleep(2.5)

    listed = run_cli(
        gateway,
        "deliveries",
        "list",
        "--event-type",
        "test.pause",
        "--url",
        gateway.base_url,
    )

    assert receiver.arrivals == []
    assert delivery_of(gateway, first)["status"] == "pending"
    assert delivery_of(gateway, first)["held"] is True
    assert listed.stdout.count(" held ") == 2

    resumed = run_cli(
        gateway, "subscriptions", "resume", sub["id"], "--url", gateway.base_url
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "2 held deliveries queued" in resumed.stdout
    receiver.wait_for(2)
    wait_delivery(gateway, second, "succeeded")

    assert delivery_of(gateway, first)["attempts"] == 1
    assert delivery_of(gateway, first)["held"] is False


def test_rotation_signs_with_both(gateway: Gateway, receiver: Receiver) -> None:
    """During the grace period both secrets sign; after it only the new one."""
    sub = subscribe(gateway, receiver.url, ["test.rotate"])
    path = f"/api/notifications/subscriptions/{sub['id']}/rotate-secret"
    rotated = gateway.api("POST", path, json={"grace": "1h"}).json()
    send_event(gateway, "test.rotate")
    (during,) = receiver.wait_for(1)

    assert rotated["secret"] != sub["secret"]
    assert during.verifies_with(sub["secret"])
    assert during.verifies_with(rotated["secret"])
    assert len(during.headers["webhook-signature"].split()) == 2

    final = gateway.api("POST", path, json={"grace": "0s"}).json()
    send_event(gateway, "test.rotate")
    _, after = receiver.wait_for(2)

    assert after.verifies_with(final["secret"])
    assert not after.verifies_with(rotated["secret"])
    assert len(after.headers["webhook-signature"].split()) == 1


def test_replay_reaches_current_subscriptions(gateway: Gateway) -> None:
    """Replay sends a stored event to the subscriptions matching now, with new ids."""
    first, second, third = (Receiver().start() for _ in range(3))
    try:
        subscribe(gateway, first.url, ["test.replay"])
        event_id = send_event(gateway, "test.replay")
        first.wait_for(1)
        subscribe(gateway, second.url, ["test.replay"])
        result = run_cli(
            gateway, "events", "replay", event_id, "--url", gateway.base_url
        )
        assert result.returncode == 0, result.stderr
        first.wait_for(2)
        second.wait_for(1)
        subscribe(gateway, third.url, ["test.replay"])
        missing = gateway.api(
            "POST", f"/api/events/{event_id}/replay", json={"missing_only": True}
        ).json()
        third.wait_for(1)
        time.sleep(0.5)
    finally:
        for receiver in (first, second, third):
            receiver.stop()

    assert len(set(first.webhook_ids())) == 2
    assert len(second.arrivals) == 1
    assert len(missing["deliveries"]) == 1
    assert len(third.arrivals) == 1
    assert len(first.arrivals) == 2


def test_bulk_retry_in_batches(gateway: Gateway, receiver: Receiver) -> None:
    """A filtered retry counts, runs in batches, and resumes after an interruption."""
    receiver.replies = [Reply(500)] * 3
    sub = subscribe(gateway, receiver.url, ["test.bulk"], retry={"schedule": []})
    events = [send_event(gateway, "test.bulk") for _ in range(3)]
    for event_id in events:
        wait_delivery(gateway, event_id, "failed")
    base = (
        "deliveries",
        "retry",
        "--subscription",
        sub["id"],
        "--url",
        gateway.base_url,
    )

    counted = run_cli(gateway, *base, "--dry-run")
    assert counted.stdout.strip() == "3 deliveries would be retried"
    old_only = run_cli(gateway, *base, "--until", "1h", "--dry-run")
    assert old_only.stdout.strip() == "0 deliveries would be retried"

    # One page retried through the API stands for a run stopped after a batch.
    page = gateway.api(
        "POST", "/api/deliveries/retry", json={"subscription": sub["id"], "limit": 1}
    ).json()
    assert page["retried"] == 1
    assert page["next_after"] is not None
    wait_delivery(gateway, events[0], "succeeded")

    rest = run_cli(gateway, *base, "--batch-size", "1")
    assert rest.returncode == 0, rest.stderr
    assert "2 of 2 deliveries queued again" in rest.stdout
    assert "retrying deliveries" in rest.stderr
    for event_id in events:
        delivered = wait_delivery(gateway, event_id, "succeeded")
        assert delivered["attempts"] == 2
    assert len(receiver.arrivals) == 6


@pytest.mark.parametrize(
    "body, message",
    [
        ({"subscription": "x", "colour": "red"}, "unknown fields colour"),
        ({"status": "pending", "subscription": "x"}, "already queued"),
        ({"dry_run": True}, "give ids or at least one filter"),
        ({"ids": "msg_1"}, "ids must be a list"),
        ({"subscription": "x", "limit": 0}, "limit must be between"),
        ({"subscription": "x", "since": "yesterday"}, "invalid since"),
    ],
)
def test_bulk_retry_rejects_bad_input(
    gateway: Gateway, body: dict[str, Any], message: str
) -> None:
    response = gateway.api("POST", "/api/deliveries/retry", json=body)

    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_fan_out_sends_each_delivery_once(gateway: Gateway) -> None:
    """One event to 70 subscriptions: each gets it once, failures retry alone.

    The first attempts of deliveries created together share queue jobs, so
    this crosses job boundaries and mixes failures into shared jobs.
    """
    failures = 5
    receiver = Receiver(replies=[Reply(status=500)] * failures).start()
    try:
        subs = [
            subscribe(gateway, f"{receiver.url}/{index}", ["test.fanout"], retry=FAST)
            for index in range(70)
        ]
        event_id = send_event(gateway, "test.fanout")
        receiver.wait_for(70 + failures)
        rows = [
            wait_delivery(gateway, event_id, "succeeded", subscription_id=sub["id"])
            for sub in subs
        ]
        time.sleep(0.5)
    finally:
        receiver.stop()

    assert len(receiver.arrivals) == 70 + failures
    assert sorted(row["attempts"] for row in rows) == [1] * 65 + [2] * failures
    webhook_ids = receiver.webhook_ids()
    assert len(set(webhook_ids)) == 70


def test_in_flight_limit_keeps_others_moving(gateway: Gateway) -> None:
    """A slow receiver gets at most max_in_flight requests; others are not held up."""
    slow = Receiver(default=Reply(delay=1.0)).start()
    fast = Receiver().start()
    try:
        subscribe(gateway, slow.url, ["test.slow"], max_in_flight=2)
        subscribe(gateway, fast.url, ["test.fast"])
        slow_events = [send_event(gateway, "test.slow") for _ in range(6)]
        started = time.monotonic()
        for _ in range(3):
            send_event(gateway, "test.fast")
        fast.wait_for(3, timeout=10)
        fast_done = time.monotonic() - started
        slow.wait_for(6, timeout=30)
        for event_id in slow_events:
            wait_delivery(gateway, event_id, "succeeded")
    finally:
        slow.stop()
        fast.stop()

    assert slow.max_open_requests == 2
    assert fast_done < 2.0


def test_rate_limit_spaces_sends(gateway: Gateway, receiver: Receiver) -> None:
    """rate_limit 5/s sends one request every 200 ms at most."""
    subscribe(gateway, receiver.url, ["test.rate"], rate_limit="5/s")
    for _ in range(6):
        send_event(gateway, "test.rate")
    arrivals = receiver.wait_for(6, timeout=20)
    times = sorted(arrival.received_at for arrival in arrivals)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]

    assert times[-1] - times[0] >= 0.9
    assert min(gaps) >= 0.15


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"disable_after": "soon"}, "disable_after"),
        ({"connect_timeout": "10m"}, "connect_timeout"),
        ({"retry": {"by_event_type": ["x"]}}, "retry.by_event_type"),
        (
            {"retry": {"by_event_type": {"x.*": {"tries": 3}}}},
            "retry.by_event_type.x.*.tries",
        ),
        ({"retry": {"jitter": 2}}, "retry.jitter"),
    ],
)
def test_subscribe_rejects_bad_settings(
    gateway: Gateway, extra: dict[str, Any], field: str
) -> None:
    body = {"url": "https://receiver.example/hooks", "events": ["x"], **extra}
    response = gateway.api("POST", "/api/notifications/subscribe", json=body)

    assert response.status_code == 400
    assert field in [error["field"] for error in response.json()["errors"]]


def test_subscription_shows_settings(gateway: Gateway) -> None:
    """A subscription created with settings returns them, and no old secret."""
    created = subscribe(
        gateway,
        "https://receiver.example/hooks",
        ["test.settings"],
        rate_limit="120/m",
        max_in_flight=3,
        disable_after="2d",
        connect_timeout="2s",
        retry={"schedule": ["1s", "1m"], "by_event_type": {"a.*": {"jitter": 0}}},
    )

    assert created["rate_limit"] == 2.0
    assert created["max_in_flight"] == 3
    assert created["disable_after"] == 172800.0
    assert created["connect_timeout"] == 2.0
    assert created["retry"]["schedule"] == [1.0, 60.0]
    assert created["retry"]["by_event_type"]["a.*"] == {
        "schedule": [1.0, 60.0],
        "jitter": 0.0,
    }
    assert "previous_secret" not in created


def test_subscription_actions_edge_cases(gateway: Gateway) -> None:
    """Actions on unknown ids are 404s; a body-less rotation generates a secret."""
    created = subscribe(gateway, "https://receiver.example/hooks", ["test.edges"])
    base = f"/api/notifications/subscriptions/{created['id']}"
    rotated = gateway.api("POST", f"{base}/rotate-secret")
    paused = gateway.api("POST", f"{base}/pause")
    paused_again = gateway.api("POST", f"{base}/pause")
    resumed = gateway.api("POST", f"{base}/resume")
    resumed_again = gateway.api("POST", f"{base}/resume")
    long_grace = gateway.api("POST", f"{base}/rotate-secret", json={"grace": "90d"})
    unknown = [
        gateway.api("POST", "/api/notifications/subscriptions/sub_nope/pause"),
        gateway.api("POST", "/api/notifications/subscriptions/sub_nope/resume"),
        gateway.api("POST", "/api/notifications/subscriptions/sub_nope/rotate-secret"),
        gateway.api("POST", "/api/events/evt_nope/replay"),
    ]
    bad_replay = gateway.api("POST", "/api/events/evt_nope/replay", json={"all": 1})

    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]
    assert paused.json()["status"] == "paused"
    assert paused_again.status_code == 200
    assert resumed.json()["status"] == "active"
    assert resumed_again.json()["resumed_deliveries"] == 0
    assert long_grace.status_code == 400
    assert [response.status_code for response in unknown] == [404] * 4
    assert bad_replay.status_code == 400


ODD_BODIES: list[Any] = [
    [],
    "text",
    7,
    None,
    {"url": "http://[::1", "events": ["x"]},
    {"url": 5, "events": ["x"]},
    {"url": "https://a.example", "events": ["x"], "retry": "often"},
    {"url": "https://a.example", "events": ["x"], "retry": {"schedule": "5s"}},
    {"url": "https://a.example", "events": ["x"], "timeout": []},
    {"url": "https://a.example", "events": ["x"], "headers": []},
    {"url": "https://a.example", "events": ["x"], "max_in_flight": 1e20},
    {"url": "https://a.example", "events": ["x"], "rate_limit": "1e9"},
    {"ids": [1, 2]},
    {"subscription": ["x"]},
    {"subscription": "x", "since": "99999999999d"},
    {"subscription": "x", "limit": True},
    {"grace": -5},
    {"secret": "whsec_short"},
    {"missing_only": "yes"},
]


@pytest.mark.parametrize(
    "path",
    [
        "/api/notifications/subscribe",
        "/api/deliveries/retry",
        "/api/notifications/subscriptions/{sub}/rotate-secret",
        "/api/events/{event}/replay",
    ],
)
def test_odd_bodies_never_500(gateway: Gateway, path: str) -> None:
    """No body a client can send to the delivery endpoints produces a 500."""
    sub = subscribe(gateway, "https://receiver.example/hooks", ["test.odd"])
    event_id = send_event(gateway, "test.odd")
    target = path.format(sub=sub["id"], event=event_id)
    statuses = [
        gateway.api("POST", target, json=body).status_code for body in ODD_BODIES
    ]

    assert all(status < 500 for status in statuses), statuses

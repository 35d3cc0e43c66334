"""Retry timing, Retry-After parsing and delivery settings, without processes."""

from __future__ import annotations

import random
from email.utils import formatdate
from pathlib import Path

import pytest

from gateway.config.loader import check_config, load_config
from gateway.config.model import DEFAULT_RETRY_SCHEDULE, RetryPolicy
from gateway.config.subscriptions import parse_rate_limit
from gateway.delivery.policy import next_delay, retry_for_event_type
from gateway.delivery.sender import parse_retry_after
from tests.delivery.receivers import write_config


def test_default_schedule_matches_documented() -> None:
    """At once, then 5s, 5m, 30m, 2h, 5h, 10h, 10h, spread by ±20%."""
    policy = RetryPolicy()

    assert policy.schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert policy.jitter == 0.2
    assert DEFAULT_RETRY_SCHEDULE == policy.schedule


def test_jitter_stays_within_bounds() -> None:
    retry = RetryPolicy().as_dict()
    random.seed(7)
    delays = [next_delay(retry, "any", 2, None) for _ in range(500)]

    assert all(d is not None and 240 <= d <= 360 for d in delays)
    assert max(d for d in delays if d) - min(d for d in delays if d) > 60


def test_spent_schedule_has_no_delay() -> None:
    """After the last scheduled retry nothing follows, even with a Retry-After."""
    retry = {"schedule": [1.0, 2.0], "jitter": 0}

    assert next_delay(retry, "any", 1, None) == 1.0
    assert next_delay(retry, "any", 2, 30.0) == 30.0
    assert next_delay(retry, "any", 3, None) is None
    assert next_delay(retry, "any", 3, 30.0) is None


def test_event_type_entry_precedence() -> None:
    """An exact type beats the longest pattern, which beats the base schedule."""
    retry = {
        "schedule": [1.0],
        "jitter": 0.1,
        "by_event_type": {
            "billing.*": {"schedule": [2.0], "jitter": 0},
            "billing.invoice.*": {"schedule": [3.0], "jitter": 0},
            "billing.invoice.paid": {"schedule": [4.0], "jitter": 0},
        },
    }

    assert retry_for_event_type(retry, "billing.invoice.paid") == ([4.0], 0.0)
    assert retry_for_event_type(retry, "billing.invoice.voided") == ([3.0], 0.0)
    assert retry_for_event_type(retry, "billing.refund") == ([2.0], 0.0)
    assert retry_for_event_type(retry, "email.sent") == ([1.0], 0.1)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("7", 7.0),
        ("0", 1.0),
        ("-3", 1.0),
        ("999999999", 86400.0),
        ("soon", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_clamped(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, 1_000_000.0) == expected


def test_retry_after_http_dates() -> None:
    now = 1_800_000_000.0
    ahead = parse_retry_after(formatdate(now + 120, usegmt=True), now)
    past = parse_retry_after(formatdate(now - 120, usegmt=True), now)

    assert ahead == pytest.approx(120.0)
    assert past == 1.0


@pytest.mark.parametrize(
    "value, expected",
    [(10, 10.0), ("2.5", 2.5), ("10/s", 10.0), ("600/m", 10.0), ("36/h", 0.01)],
)
def test_rate_limit_units(value: object, expected: float) -> None:
    assert parse_rate_limit(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["fast", "0", "-1/s", "1/d", True, "1/2h"])
def test_rate_limit_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_rate_limit(value)


SETTINGS_YAML = """\
defaults:
  connect_timeout: 2s
  max_in_flight: 4
  rate_limit: 600/m
  disable_after: 2d
  retry:
    schedule: [5s, 5m]
    by_event_type:
      "billing.*": {schedule: [1s]}
subscriptions:
  inherits:
    url: https://a.example/hooks
    events: ["*"]
    retry: {jitter: 0.1, by_event_type: {"x.y": {schedule: [2s]}}}
  replaces:
    url: https://b.example/hooks
    events: ["*"]
    max_in_flight: null
    disable_after: never
    retry: {schedule: [1s]}
"""


def test_yaml_settings_inherit(tmp_path: Path) -> None:
    """Subscriptions inherit defaults; an own schedule drops inherited overrides."""
    config = load_config(write_config(tmp_path, SETTINGS_YAML))
    inherits, replaces = config.subscriptions

    assert inherits.connect_timeout == 2.0
    assert inherits.max_in_flight == 4
    assert inherits.rate_limit == 10.0
    assert inherits.disable_after == 172800.0
    assert inherits.retry.as_dict() == {
        "schedule": [5.0, 300.0],
        "jitter": 0.1,
        "by_event_type": {
            "billing.*": {"schedule": [1.0], "jitter": 0.2},
            "x.y": {"schedule": [2.0], "jitter": 0.1},
        },
    }
    assert replaces.max_in_flight is None
    assert replaces.disable_after is None
    assert replaces.retry.as_dict() == {"schedule": [1.0], "jitter": 0.2}


BAD_YAML = """\
subscriptions:
  broken:
    url: https://a.example/hooks
    events: ["*"]
    max_in_flight: 0
    rate_limit: lots
    retry:
      schedule: [1s, never]
      by_event_type:
        "a.*": {tries: 3}
"""


def test_yaml_settings_errors_located(tmp_path: Path) -> None:
    config, problems = check_config(write_config(tmp_path, BAD_YAML))
    found = {(p.line, p.message.split(":")[0]) for p in problems}

    assert config is None
    assert (5, "subscription 'broken'.max_in_flight") in found
    assert (6, "subscription 'broken'.rate_limit") in found
    assert (8, "subscription 'broken'.retry.schedule") in found
    assert (10, "subscription 'broken'.retry.by_event_type.a.*.tries") in found

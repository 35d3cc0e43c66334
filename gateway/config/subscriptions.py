"""Compile subscriptions.yaml: delivery defaults and subscriptions.

The parsers of delivery settings (timeouts, retry policy, limits) are shared
with the subscription API, so a setting means the same in YAML and in JSON.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gateway.config.checks import header_problem, parse_duration
from gateway.config.model import DeliveryDefaults, RetryPolicy, SubscriptionConfig
from gateway.config.sections import SectionCompiler
from gateway.config.source import LoadedFile, Location, YList, YMap

MAX_TIMEOUT = 300.0
MAX_RETRY_DELAY = 30 * 86400.0
MAX_SCHEDULE_LENGTH = 50
MAX_IN_FLIGHT_LIMIT = 1000
MIN_RATE_LIMIT = 1 / 3600
_RATE = re.compile(r"^\s*(?P<count>\d+(?:\.\d+)?)\s*(?:/\s*(?P<unit>s|m|h))?\s*$")
_RATE_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_RETRY_KEYS = ("schedule", "jitter", "by_event_type")
_OVERRIDE_KEYS = ("schedule", "jitter")
_SETTING_KEYS = (
    "timeout",
    "connect_timeout",
    "retry",
    "max_in_flight",
    "rate_limit",
    "disable_after",
)

# Called with the dotted path of a bad value, a message, and the container and
# key that hold the value, so YAML problems can point at its line.
Report = Callable[[str, str, Any, "str | int"], None]


def parse_timeout(value: Any) -> float:
    """Parse a timeout such as `10s`; it must lie between 1ms and 5m."""
    seconds = parse_duration(value)
    if not 0.001 <= seconds <= MAX_TIMEOUT:
        raise ValueError(f"timeout {value!r} must be between 1ms and 5m")
    return seconds


def parse_rate_limit(value: Any) -> float | None:
    """Parse sends per second from `10`, `10/s`, `600/m` or `100/h` (None: no limit)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"invalid rate limit {value!r}")
    match = _RATE.match(str(value))
    if not match or float(match.group("count")) <= 0:
        raise ValueError(
            f"invalid rate limit {value!r}: write a positive number of sends per"
            " second, or a count per unit such as 600/m"
        )
    rate = float(match.group("count")) / _RATE_UNIT_SECONDS[match.group("unit")]
    if rate < MIN_RATE_LIMIT:
        raise ValueError(f"rate limit {value!r} is below the minimum of 1/h")
    return rate


def parse_max_in_flight(value: Any) -> int | None:
    """Parse how many attempts a subscription may have open at once (None: no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid max_in_flight {value!r}: write a whole number")
    if not 1 <= value <= MAX_IN_FLIGHT_LIMIT:
        raise ValueError(
            f"max_in_flight {value} must be between 1 and {MAX_IN_FLIGHT_LIMIT}"
        )
    return value


def parse_disable_after(value: Any) -> float | None:
    """Parse how long failure may last before disabling; `never` or None is never."""
    if value is None or value == "never":
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"disable_after {value!r} must be longer than 0s, or never")
    return seconds


def _parse_schedule(
    container: Any, key: str | int, path: str, report: Report
) -> tuple[float, ...] | None:
    items = container[key]
    if not isinstance(items, list):
        report(path, "must be a list of durations, such as [5s, 5m]", container, key)
        return None
    if len(items) > MAX_SCHEDULE_LENGTH:
        message = f"has {len(items)} delays; the limit is {MAX_SCHEDULE_LENGTH}"
        report(path, message, container, key)
        return None
    schedule = []
    for index, item in enumerate(items):
        try:
            delay = parse_duration(item)
        except ValueError as exc:
            report(path, f"item {index}: {exc}", items, index)
            return None
        if delay > MAX_RETRY_DELAY:
            report(path, f"item {index}: {item!r} is longer than 30d", items, index)
            return None
        schedule.append(delay)
    return tuple(schedule)


def _parse_jitter(
    container: Any, key: str | int, path: str, report: Report
) -> float | None:
    value = container[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        report(path, "must be a number from 0 to 1", container, key)
        return None
    if not 0 <= value <= 1:
        report(path, f"is {value}; expected a number from 0 to 1", container, key)
        return None
    return float(value)


def _parse_policy(
    raw: Mapping[str, Any],
    allowed: tuple[str, ...],
    base: RetryPolicy,
    path: str,
    report: Report,
) -> RetryPolicy:
    """Read `schedule` and `jitter` from a mapping; `base` fills in what is missing."""
    for key in sorted(set(raw) - set(allowed)):
        report(
            f"{path}.{key}", f"unknown key (allowed: {', '.join(allowed)})", raw, key
        )
    schedule, jitter = base.schedule, base.jitter
    if "schedule" in raw:
        parsed = _parse_schedule(raw, "schedule", f"{path}.schedule", report)
        schedule = parsed if parsed is not None else schedule
    if "jitter" in raw:
        number = _parse_jitter(raw, "jitter", f"{path}.jitter", report)
        jitter = number if number is not None else jitter
    return RetryPolicy(schedule, jitter)


def build_retry_policy(
    container: Any, key: str, default: RetryPolicy, path: str, report: Report
) -> RetryPolicy:
    """Build the retry policy in `container[key]`, inheriting what it leaves out.

    A policy that sets its own `schedule` drops the default's per-event-type
    entries, so the more specific setting wins. Entries of its own
    `by_event_type` replace inherited entries with the same pattern.
    """
    raw = container[key]
    if not isinstance(raw, Mapping):
        message = "must be a mapping such as {schedule: [5s, 5m], jitter: 0.2}"
        report(path, message, container, key)
        return default
    base = _parse_policy(raw, _RETRY_KEYS, default, path, report)
    overrides = dict(() if "schedule" in raw else default.by_event_type)
    if raw.get("by_event_type") is not None:
        overrides.update(_parse_overrides(raw, base, f"{path}.by_event_type", report))
    return RetryPolicy(base.schedule, base.jitter, tuple(overrides.items()))


def _parse_overrides(
    parent: Mapping[str, Any], base: RetryPolicy, path: str, report: Report
) -> dict[str, RetryPolicy]:
    raw = parent["by_event_type"]
    if not isinstance(raw, Mapping):
        message = "must map event type patterns to {schedule, jitter}"
        report(path, message, parent, "by_event_type")
        return {}
    overrides = {}
    for pattern, value in raw.items():
        entry = f"{path}.{pattern}"
        if not isinstance(value, Mapping) or not value:
            message = "must be a mapping with schedule, jitter or both"
            report(entry, message, raw, pattern)
            continue
        policy = _parse_policy(value, _OVERRIDE_KEYS, base, entry, report)
        overrides[str(pattern)] = policy
    return overrides


class SubscriptionCompiler(SectionCompiler):
    def compile_subscriptions(
        self, loaded: LoadedFile | None
    ) -> tuple[tuple[SubscriptionConfig, ...], DeliveryDefaults]:
        if loaded is None or loaded.root is None:
            return (), DeliveryDefaults()
        root = self.check.mapping(loaded.root, Location(loaded.path, 1, 1), loaded.path)
        if root is None:
            return (), DeliveryDefaults()
        self.check.keys(root, loaded.path, ("defaults", "subscriptions"))
        defaults = DeliveryDefaults()
        if "defaults" in root:
            node = self.check.mapping(
                root["defaults"], root.value_at("defaults"), "defaults"
            )
            if node is not None:
                self.check.keys(node, "defaults", _SETTING_KEYS)
                defaults = self._settings(node, "defaults", defaults)
        subscriptions = []
        node = None
        if "subscriptions" in root:
            node = self.check.mapping(
                root["subscriptions"], root.value_at("subscriptions"), "subscriptions"
            )
        for name, value in (node or {}).items():
            assert node is not None
            if not self._valid_name(name, node.key_at(name), "subscription"):
                continue
            sub = self._compile_subscription(name, value, node.value_at(name), defaults)
            if sub is not None:
                subscriptions.append(sub)
        return tuple(subscriptions), defaults

    def _settings(
        self, node: YMap, what: str, inherited: DeliveryDefaults
    ) -> DeliveryDefaults:
        """Read the delivery settings of `defaults` or of one subscription."""
        return DeliveryDefaults(
            timeout=self.check.parsed(
                node, "timeout", what, parse_timeout, inherited.timeout
            ),
            connect_timeout=self.check.parsed(
                node, "connect_timeout", what, parse_timeout, inherited.connect_timeout
            ),
            retry=self._retry(node, what, inherited.retry),
            max_in_flight=self.check.parsed(
                node,
                "max_in_flight",
                what,
                parse_max_in_flight,
                inherited.max_in_flight,
            ),
            rate_limit=self.check.parsed(
                node, "rate_limit", what, parse_rate_limit, inherited.rate_limit
            ),
            disable_after=self.check.parsed(
                node,
                "disable_after",
                what,
                parse_disable_after,
                inherited.disable_after,
            ),
        )

    def _retry(self, node: YMap, what: str, default: RetryPolicy) -> RetryPolicy:
        if "retry" not in node:
            return default

        def report(path: str, message: str, container: Any, key: str | int) -> None:
            if isinstance(container, YMap) and isinstance(key, str):
                location = container.value_at(key)
            elif isinstance(container, YList) and isinstance(key, int):
                location = container.item_at(key)
            else:
                location = node.value_at("retry")
            self.check.error(location, f"{path}: {message}")

        return build_retry_policy(node, "retry", default, f"{what}.retry", report)

    def _compile_subscription(
        self, name: str, value: Any, location: Location, defaults: DeliveryDefaults
    ) -> SubscriptionConfig | None:
        what = f"subscription {name!r}"
        node = self.check.mapping(value, location, what)
        if node is None:
            return None
        allowed = (
            "url",
            "events",
            "secret",
            "filter",
            "template",
            "headers",
            "description",
            *_SETTING_KEYS,
        )
        self.check.keys(node, what, allowed, required=("url", "events"))
        url = self.check.url(node, "url", what)
        events = self.check.string_list(node, "events", what)
        secret = self.check.string(node, "secret", what)
        if secret is not None and not secret.startswith("whsec_"):
            self.check.error(
                node.value_at("secret"),
                f"{what}.secret must be a Standard Webhooks secret starting with"
                " 'whsec_'; leave it out to have one generated",
            )
        filter_expression = self.check.expression(node, "filter", what)
        self.check.tree(node, "template", what)
        headers = self._headers(node, what)
        settings = self._settings(node, what, defaults)
        if url is None or not events:
            return None
        return SubscriptionConfig(
            name=name,
            url=url,
            events=events,
            secret=secret,
            filter=filter_expression.source if filter_expression else None,
            template=_plain(node.get("template")),
            headers=headers,
            timeout=settings.timeout,
            retry=settings.retry,
            description=self.check.string(node, "description", what) or "",
            location=location,
            defaulted_variables=self.defaults_used(node, "secret"),
            connect_timeout=settings.connect_timeout,
            max_in_flight=settings.max_in_flight,
            rate_limit=settings.rate_limit,
            disable_after=settings.disable_after,
        )

    def _headers(self, node: YMap, what: str) -> dict[str, str]:
        if "headers" not in node:
            return {}
        headers = self.check.mapping(node["headers"], node.value_at("headers"), what)
        result = {}
        for key, value in (headers or {}).items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                self.check.error(
                    headers.value_at(key), f"{what}.headers.{key} must be a string"
                )
                continue
            problem = header_problem(key, str(value))
            if problem is not None:
                self.check.error(headers.key_at(key), f"{what}.headers: {problem}")
                continue
            result[key] = str(value)
        return result


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value

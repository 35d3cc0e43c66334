"""The compiled configuration: immutable objects the rest of the gateway reads."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.config.schemas import CompiledSchema
from gateway.config.source import Location
from gateway.config.templates import Expression, TextTemplate, TreeTemplate

DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_CONNECT_TIMEOUT = 5.0
# Half of a worker's default concurrency of 16, so one receiver cannot take all.
DEFAULT_MAX_IN_FLIGHT = 8
# Five days of unbroken failure disable a subscription.
DEFAULT_DISABLE_AFTER = 5 * 86400.0


@dataclass(frozen=True)
class VerifySpec:
    """How a route checks that a request comes from its provider."""

    type: str
    header: str | None = None
    secrets: tuple[str, ...] = ()
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    defaulted_variables: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventRule:
    """Map a payload to one event when `when` holds."""

    type: TextTemplate
    when: Expression | None
    data: TreeTemplate | None
    location: Location


@dataclass(frozen=True)
class RouteConfig:
    """One provider route, ready to be mounted."""

    provider: str
    name: str
    path: str
    method: str
    verify: VerifySpec
    schema: CompiledSchema | None
    idempotency_key: TextTemplate | None
    events: tuple[EventRule, ...]
    max_body_bytes: int
    location: Location

    @property
    def qualified_name(self) -> str:
        return f"{self.provider}/{self.name}"


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    description: str
    routes: tuple[RouteConfig, ...]


@dataclass(frozen=True)
class HttpStep:
    method: str
    url: TextTemplate
    headers: TreeTemplate | None
    json: TreeTemplate | None
    body: TextTemplate | None
    timeout: float


@dataclass(frozen=True)
class EmitStep:
    type: TextTemplate
    data: TreeTemplate | None


@dataclass(frozen=True)
class PythonStep:
    target: str
    args: TreeTemplate | None


@dataclass(frozen=True)
class StepConfig:
    """One pipeline step: `kind` is transform, emit, http or python."""

    name: str
    kind: str
    action: TreeTemplate | EmitStep | HttpStep | PythonStep
    when: Expression | None
    location: Location


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    on: tuple[str, ...]
    when: Expression | None
    steps: tuple[StepConfig, ...]
    location: Location

    def matches(self, event_type: str) -> bool:
        return any(match_event_type(pattern, event_type) for pattern in self.on)


@dataclass(frozen=True)
class RetryPolicy:
    """Delays between attempts, in seconds, after the first attempt fails.

    `by_event_type` pairs event type patterns with the complete policy that
    replaces this one for matching events; `jitter` spreads each delay by up
    to that fraction either way.
    """

    schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    jitter: float = 0.2
    by_event_type: tuple[tuple[str, RetryPolicy], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "schedule": list(self.schedule),
            "jitter": self.jitter,
        }
        if self.by_event_type:
            result["by_event_type"] = {
                pattern: {"schedule": list(policy.schedule), "jitter": policy.jitter}
                for pattern, policy in self.by_event_type
            }
        return result


@dataclass(frozen=True)
class SubscriptionConfig:
    """A subscription declared in subscriptions.yaml.

    `timeout` bounds the wait for the response and `connect_timeout` the TCP
    and TLS setup, both in seconds. `max_in_flight` and `rate_limit` (sends
    per second) are None when unlimited; `disable_after` is how many seconds
    of continuous failure disable the subscription, None for never.
    """

    name: str
    url: str
    events: tuple[str, ...]
    secret: str | None
    filter: str | None
    template: Any
    headers: dict[str, str]
    timeout: float
    retry: RetryPolicy
    description: str
    location: Location
    defaulted_variables: tuple[str, ...] = ()
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT
    rate_limit: float | None = None
    disable_after: float | None = DEFAULT_DISABLE_AFTER


@dataclass(frozen=True)
class DeliveryDefaults:
    """The delivery settings a subscription gets when it does not set its own."""

    timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT
    rate_limit: float | None = None
    disable_after: float | None = DEFAULT_DISABLE_AFTER


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the config directory declares, compiled."""

    config_dir: Path
    base_dir: Path
    version: str
    providers: tuple[ProviderConfig, ...]
    pipelines: tuple[PipelineConfig, ...]
    subscriptions: tuple[SubscriptionConfig, ...]
    defaults: DeliveryDefaults
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @property
    def routes(self) -> tuple[RouteConfig, ...]:
        return tuple(route for p in self.providers for route in p.routes)

    def route(self, provider: str, name: str) -> RouteConfig | None:
        for route in self.routes:
            if route.provider == provider and route.name == name:
                return route
        return None

    def pipelines_for(self, event_type: str) -> list[PipelineConfig]:
        return [p for p in self.pipelines if p.matches(event_type)]


@lru_cache(maxsize=4096)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace("\\*", ".*"))


def match_event_type(pattern: str, event_type: str) -> bool:
    """Tell whether `event_type` matches a pattern where `*` matches any text."""
    if pattern == "*" or pattern == event_type:
        return True
    if "*" not in pattern:
        return False
    return _pattern_regex(pattern).fullmatch(event_type) is not None

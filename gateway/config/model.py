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
DEFAULT_MAX_JSON_DEPTH = 128
# Stripe, Slack and the Standard Webhooks libraries all default to five minutes.
DEFAULT_TIMESTAMP_TOLERANCE = 300.0


@dataclass(frozen=True)
class VerifySpec:
    """The check that proves a route's requests come from its provider.

    `type` names the scheme, and each scheme reads only the fields it documents
    in `gateway/config/verify.py`. Type `all` is a list of schemes in
    `parts`, every one of which must pass.
    """

    type: str
    header: str | None = None
    secrets: tuple[str, ...] = ()
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    signed_content: TextTemplate | None = None
    timestamp_header: str | None = None
    timestamp_unit: str = "s"
    tolerance: float = DEFAULT_TIMESTAMP_TOLERANCE
    public_keys: tuple[str, ...] = ()
    signing_key: str | None = None
    query: str | None = None
    public_url: str | None = None
    realm: str = "mfo"
    allow: tuple[str, ...] = ()
    proxy_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    parts: tuple[VerifySpec, ...] = ()
    defaulted_variables: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecodeConfig:
    """The decoding rules of a route, beyond what Content-Type selects.

    `max_decompressed_bytes` None means the route's body size limit.
    """

    form_json_fields: tuple[str, ...] = ()
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_decompressed_bytes: int | None = None


@dataclass(frozen=True)
class ResponseConfig:
    """The status, headers and body of a route's or handshake's response.

    `status` is a number or a template that renders one; `body` is a text
    template (sent as text) or a tree (sent as JSON), or None for no body.
    """

    status: int | TextTemplate | None
    headers: tuple[tuple[str, TextTemplate], ...]
    body: TextTemplate | TreeTemplate | None
    location: Location


@dataclass(frozen=True)
class HandshakeConfig:
    """A provider request that proves the route is theirs; it gets no events."""

    name: str
    method: str
    when: Expression
    verify: bool
    token: TextTemplate | None
    secrets: tuple[str, ...]
    response: ResponseConfig
    location: Location
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
    handshakes: tuple[HandshakeConfig, ...] = ()
    response: ResponseConfig | None = None
    decode: DecodeConfig = DecodeConfig()

    @property
    def qualified_name(self) -> str:
        return f"{self.provider}/{self.name}"

    @property
    def methods(self) -> tuple[str, ...]:
        """Return the route's method and every handshake method, without repeats."""
        extra = [h.method for h in self.handshakes if h.method != self.method]
        return tuple(dict.fromkeys([self.method, *extra]))

    @property
    def defaulted_variables(self) -> tuple[str, ...]:
        """Name every secret variable of the route that fell back to its default."""
        names = list(self.verify.defaulted_variables)
        for handshake in self.handshakes:
            names.extend(handshake.defaulted_variables)
        return tuple(dict.fromkeys(names))


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

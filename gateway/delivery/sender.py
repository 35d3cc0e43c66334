"""Render, sign and POST one delivery attempt, and classify the response."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

import httpx

from gateway.config.templates import TreeTemplate, compile_tree
from gateway.delivery.signing import signature_headers
from gateway.exceptions import EgressRejected

logger = logging.getLogger(__name__)

RESPONSE_EXCERPT_BYTES = 4096
USER_AGENT = "mfo-webhooks/0.1"
# A Retry-After below one second would let a receiver ask to be hammered, and
# one above a day would park a delivery longer than any default delay.
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 24 * 3600.0


@dataclass
class AttemptOutcome:
    """The outcome of one POST to a subscriber."""

    started_at: datetime
    duration_ms: float
    status_code: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


@lru_cache(maxsize=512)
def _compiled_template(source: str) -> TreeTemplate:
    return compile_tree(json.loads(source))


def render_body(
    event_id: str,
    event_type: str,
    created_at: datetime,
    data: Any,
    template: Any,
) -> bytes:
    """Render the Standard Webhooks envelope, or the subscription's template."""
    timestamp = created_at.isoformat().replace("+00:00", "Z")
    if template is None:
        payload: Any = {"type": event_type, "timestamp": timestamp, "data": data}
    else:
        context = {
            "event": {
                "id": event_id,
                "type": event_type,
                "timestamp": timestamp,
                "data": data,
            }
        }
        compiled = _compiled_template(json.dumps(template, sort_keys=True))
        payload = compiled.render(context)
        if isinstance(payload, str):
            return payload.encode()
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Read Retry-After as seconds or an HTTP date, clamped to 1s..24h."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


async def send_attempt(
    client: httpx.AsyncClient,
    *,
    url: str,
    body: bytes,
    message_id: str,
    secrets: list[str],
    extra_headers: dict[str, str],
    timeout: float,
    connect_timeout: float,
) -> AttemptOutcome:
    """POST one signed attempt; never raise for network or HTTP failures.

    Every attempt is signed with its own timestamp. `connect_timeout` bounds
    DNS, TCP and TLS setup, and `timeout` each wait for the response. Getting
    the status line may take at most their sum, and reading the body excerpt
    at most `timeout` more.
    """
    started_at = datetime.now().astimezone()
    clock = time.perf_counter()
    headers = {
        **extra_headers,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **signature_headers(secrets, message_id, int(time.time()), body),
    }
    try:
        request = client.build_request(
            "POST",
            url,
            content=body,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
        )
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        # A subscription stored before its URL or headers were checked as
        # strictly as now; the attempt fails instead of the job.
        return _failed(started_at, clock, f"invalid request: {exc}")
    try:
        async with asyncio.timeout(connect_timeout + timeout):
            response = await client.send(request, stream=True, follow_redirects=False)
    except EgressRejected as exc:
        return _failed(started_at, clock, f"rejected target: {exc}")
    except TimeoutError:
        total = connect_timeout + timeout
        return _failed(started_at, clock, f"timed out after {total:g}s in total")
    except httpx.HTTPError as exc:
        error = _describe_error(exc, timeout, connect_timeout)
        return _failed(started_at, clock, error)
    try:
        excerpt = await _read_excerpt(response, timeout)
    finally:
        await response.aclose()
    outcome = AttemptOutcome(
        started_at=started_at,
        duration_ms=(time.perf_counter() - clock) * 1000,
        status_code=response.status_code,
        response_headers=dict(response.headers),
        response_body=excerpt,
    )
    if response.status_code in (429, 503):
        outcome.retry_after = parse_retry_after(
            response.headers.get("retry-after"), time.time()
        )
    if 300 <= response.status_code < 400:
        location = response.headers.get("location", "")
        outcome.error = f"redirect to {location!r} not followed"
    elif not outcome.succeeded:
        outcome.error = f"HTTP {response.status_code}"
    return outcome


def _describe_error(exc: httpx.HTTPError, timeout: float, connect: float) -> str:
    """Name a network failure in the words an operator searches for."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timed out after {connect:g}s: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {timeout:g}s waiting for the response"
    if _caused_by(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc}"
    if isinstance(exc, httpx.ConnectError) and str(exc).startswith("DNS lookup"):
        return str(exc)
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _read_excerpt(response: httpx.Response, limit: float) -> str:
    """Read at most the first 4 KB of a response body within `limit` seconds.

    The status line already decided the outcome, so a body that stalls or
    breaks off only shortens the excerpt.
    """
    received = bytearray()
    try:
        async with asyncio.timeout(limit):
            async for chunk in response.aiter_raw():
                received += chunk
                if len(received) >= RESPONSE_EXCERPT_BYTES:
                    break
    except (TimeoutError, httpx.HTTPError):
        pass
    return bytes(received[:RESPONSE_EXCERPT_BYTES]).decode("utf-8", "replace")


def _failed(started_at: datetime, clock: float, error: str) -> AttemptOutcome:
    return AttemptOutcome(
        started_at=started_at,
        duration_ms=(time.perf_counter() - clock) * 1000,
        error=error,
    )

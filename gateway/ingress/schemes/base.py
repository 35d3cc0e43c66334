"""The interface every verification scheme implements, and the checks they share."""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from gateway.exceptions import Unauthorized
from gateway.ingress.request import WebhookRequest

Clock = Callable[[], float]
_DIGITS = re.compile(r"^[0-9]{1,20}$")


class SignatureVerifier(Protocol):
    """Prove that a request comes from its provider, and sign as that provider.

    `verify_request` raises an `IngressError` (401 or 403) when the request
    is not genuine. `sign_request` returns the request with the headers the
    provider would send, and with the URL it would call for query-string
    keys. It raises `SigningUnavailable` when the configuration lacks a key
    or URL to sign with. `verify` and `sign` do the same over the body and
    headers alone.
    """

    def verify_request(self, request: WebhookRequest) -> None: ...

    def sign_request(self, request: WebhookRequest) -> WebhookRequest: ...

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None: ...

    def sign(self, body: bytes) -> dict[str, str]: ...


class Scheme:
    """Base of the schemes: derives `verify` and `sign` from the request methods."""

    def verify_request(self, request: WebhookRequest) -> None:
        raise NotImplementedError

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        raise NotImplementedError

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        lowered = {name.lower(): value for name, value in headers.items()}
        self.verify_request(WebhookRequest(body, lowered))

    def sign(self, body: bytes) -> dict[str, str]:
        return dict(self.sign_request(WebhookRequest(body)).headers)


def required_header(request: WebhookRequest, name: str) -> str:
    value = request.header(name)
    if value is None:
        raise Unauthorized(f"missing header {name.lower()!r}")
    return value


def header_bytes(value: str) -> bytes:
    """Return the bytes a header value was sent as.

    ASGI servers pass header bytes, and Litestar decodes them as Latin-1, so
    encoding back to Latin-1 restores them. Values that did not come off the
    wire (tests, `mfo send`) may hold other characters, which go as UTF-8.
    """
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def matches_any(expected: Iterable[bytes], given: Iterable[bytes]) -> bool:
    """Compare every pair in constant time, so timing reveals no matching secret."""
    given = list(given)
    matched = False
    for known in expected:
        for candidate in given:
            matched |= hmac.compare_digest(known, candidate)
    return matched


def check_timestamp(
    value: str, where: str, tolerance: float, clock: Clock, unit: str = "s"
) -> int:
    """Parse a Unix timestamp (seconds or milliseconds); reject it outside tolerance.

    Return the timestamp as sent, in its own unit.
    """
    text = value.strip()
    if not _DIGITS.match(text):
        raise Unauthorized(f"{where} is {value[:40]!r}; expected a Unix timestamp")
    timestamp = int(text)
    seconds = timestamp / 1000 if unit == "ms" else float(timestamp)
    skew = seconds - clock()
    if skew < -tolerance:
        raise Unauthorized(
            f"{where} is {-skew:.0f} s in the past; requests older than"
            f" {tolerance:g} s are rejected as replays"
        )
    if skew > tolerance:
        raise Unauthorized(
            f"{where} is {skew:.0f} s in the future; check the sender's clock and"
            f" unit (expected {'milliseconds' if unit == 'ms' else 'seconds'})"
        )
    return timestamp


def now_timestamp(clock: Clock = time.time, unit: str = "s") -> str:
    seconds = clock()
    return str(int(seconds * 1000) if unit == "ms" else int(seconds))

"""HMAC signatures over the raw body, alone or with a timestamp: generic, Slack,
Shopify and Stripe."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config.templates import RenderError, TextTemplate
from gateway.exceptions import Unauthorized
from gateway.ingress.request import WebhookRequest
from gateway.ingress.schemes.base import (
    Clock,
    Scheme,
    check_timestamp,
    matches_any,
    now_timestamp,
    required_header,
)

ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
# Slack documents `v0:TIMESTAMP:BODY` signed with HMAC-SHA256, sent as `v0=<hex>`.
SLACK_VERSION = "v0"


@dataclass(frozen=True)
class TimestampRule:
    """The header, unit and allowed drift of a scheme's timestamp."""

    header: str
    tolerance: float
    unit: str = "s"

    def read(self, request: WebhookRequest, clock: Clock) -> str:
        value = required_header(request, self.header)
        check_timestamp(
            value, f"header {self.header!r}", self.tolerance, clock, self.unit
        )
        return value.strip()


ContentBuilder = Callable[[WebhookRequest, str], bytes]


def body_only(request: WebhookRequest, timestamp: str) -> bytes:
    return request.body


def template_content(template: TextTemplate) -> ContentBuilder:
    """Build the signed bytes by rendering a template over the request.

    The body enters the template as text decoded with surrogateescape and the
    result is encoded the same way, so every byte of the body is signed as
    received, valid UTF-8 or not.
    """

    def build(request: WebhookRequest, timestamp: str) -> bytes:
        context = {
            "body": request.body.decode("utf-8", "surrogateescape"),
            "timestamp": timestamp,
            "headers": dict(request.headers),
            "method": request.method,
            "url": request.url,
        }
        try:
            return template.render(context).encode("utf-8", "surrogateescape")
        except RenderError as exc:
            raise Unauthorized(
                f"the signed content could not be built: {exc}"
            ) from None

    return build


def slack_content(request: WebhookRequest, timestamp: str) -> bytes:
    return f"{SLACK_VERSION}:{timestamp}:".encode() + request.body


class HmacSignature(Scheme):
    """Check an HMAC in a header, hex or base64 after an optional prefix.

    The signed bytes are the body, or what `content` builds from the request
    and its timestamp. The header may list several signatures separated by
    commas or spaces; any one matching any secret is enough.
    """

    def __init__(
        self,
        header: str,
        secrets: tuple[str, ...],
        algorithm: str = "sha256",
        encoding: str = "hex",
        prefix: str = "",
        content: ContentBuilder = body_only,
        timestamp: TimestampRule | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.header = header.lower()
        self.secrets = tuple(secret.encode() for secret in secrets)
        self.digest = ALGORITHMS[algorithm]
        self.encoding = encoding
        self.prefix = prefix
        self.content = content
        self.timestamp = timestamp
        self.clock = clock

    def _expected(self, message: bytes) -> list[bytes]:
        return [
            hmac.new(secret, message, self.digest).digest() for secret in self.secrets
        ]

    def _candidates(self, value: str) -> list[bytes]:
        """Decode every signature in a header that may list several."""
        decoded = []
        for part in value.replace(",", " ").split():
            if self.prefix:
                if not part.lower().startswith(self.prefix.lower()):
                    continue
                part = part[len(self.prefix) :]
            try:
                if self.encoding == "hex":
                    decoded.append(bytes.fromhex(part))
                else:
                    decoded.append(base64.b64decode(part, validate=True))
            except (ValueError, binascii.Error):
                continue
        return decoded

    def verify_request(self, request: WebhookRequest) -> None:
        given = request.header(self.header)
        if given is None:
            raise Unauthorized(f"missing signature header {self.header!r}")
        candidates = self._candidates(given)
        if not candidates:
            raise Unauthorized(
                f"header {self.header!r} contains no {self.encoding} signature"
                + (f" with prefix {self.prefix!r}" if self.prefix else "")
            )
        timestamp = self.timestamp.read(request, self.clock) if self.timestamp else ""
        expected = self._expected(self.content(request, timestamp))
        if not matches_any(expected, candidates):
            raise Unauthorized(f"signature in {self.header!r} does not match the body")

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        timestamp = ""
        if self.timestamp is not None:
            timestamp = now_timestamp(self.clock, self.timestamp.unit)
            request = request.with_headers({self.timestamp.header: timestamp})
        digest = self._expected(self.content(request, timestamp))[0]
        text = (
            digest.hex()
            if self.encoding == "hex"
            else base64.b64encode(digest).decode()
        )
        return request.with_headers({self.header: f"{self.prefix}{text}"})


def slack_signature(
    secrets: tuple[str, ...], tolerance: float, clock: Clock = time.time
) -> HmacSignature:
    """Check Slack's request signature.

    Slack documents the scheme under "Verifying requests from Slack":
    HMAC-SHA256 of `v0:TIMESTAMP:BODY` with the app's signing secret, sent
    as `X-Slack-Signature: v0=<hex>` beside `X-Slack-Request-Timestamp`.
    """
    return HmacSignature(
        "X-Slack-Signature",
        secrets,
        prefix=f"{SLACK_VERSION}=",
        content=slack_content,
        timestamp=TimestampRule("X-Slack-Request-Timestamp", tolerance),
        clock=clock,
    )


def shopify_signature(secrets: tuple[str, ...]) -> HmacSignature:
    """Check Shopify's webhook HMAC.

    Shopify's webhook documentation ("Verify webhooks") sends the base64
    HMAC-SHA256 of the raw body, keyed with the app's client secret, in
    `X-Shopify-Hmac-Sha256`. The request carries no signed timestamp.
    """
    return HmacSignature("X-Shopify-Hmac-Sha256", secrets, encoding="base64")


class StripeSignature(Scheme):
    """Check `Stripe-Signature: t=TIMESTAMP,v1=HEX[,v1=HEX...]`.

    Stripe's "Verify webhook signatures" guide signs `TIMESTAMP.BODY` with
    HMAC-SHA256, keyed with the endpoint secret exactly as shown (prefix
    `whsec_` included), and lists one `v1` entry per active secret while a
    secret is being rolled. Other schemes such as the test-mode `v0` are
    ignored.
    """

    header = "stripe-signature"

    def __init__(
        self, secrets: tuple[str, ...], tolerance: float, clock: Clock = time.time
    ) -> None:
        self.secrets = tuple(secret.encode() for secret in secrets)
        self.tolerance = tolerance
        self.clock = clock

    def _parse(self, value: str) -> tuple[str, list[bytes]]:
        timestamps, signatures = [], []
        for item in value.split(","):
            name, _, text = item.strip().partition("=")
            if name == "t":
                timestamps.append(text)
            elif name == "v1":
                try:
                    signatures.append(bytes.fromhex(text))
                except ValueError:
                    continue
        if len(timestamps) != 1:
            raise Unauthorized("header 'stripe-signature' needs exactly one t= entry")
        if not signatures:
            raise Unauthorized("header 'stripe-signature' contains no v1= signature")
        return timestamps[0], signatures

    def _expected(self, timestamp: str, body: bytes) -> list[bytes]:
        message = f"{timestamp}.".encode() + body
        return [hmac.new(key, message, hashlib.sha256).digest() for key in self.secrets]

    def verify_request(self, request: WebhookRequest) -> None:
        timestamp, signatures = self._parse(required_header(request, self.header))
        check_timestamp(timestamp, "the t= timestamp", self.tolerance, self.clock)
        if not matches_any(self._expected(timestamp, request.body), signatures):
            raise Unauthorized("no v1 signature in 'stripe-signature' matches the body")

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        timestamp = now_timestamp(self.clock)
        digest = self._expected(timestamp, request.body)[0].hex()
        return request.with_headers({self.header: f"t={timestamp},v1={digest}"})

"""Signature and secret schemes that prove a request came from its provider.

Every scheme works on the exact bytes received, compares in constant time,
and accepts any of several secrets or keys so that one can be rotated
without dropping requests. Schemes that carry a timestamp reject requests
outside a tolerance, in the past and in the future. Each scheme can also
sign a request, which `mfo send` uses to act as the provider.
"""

from __future__ import annotations

from gateway.config.model import VerifySpec
from gateway.ingress.request import WebhookRequest
from gateway.ingress.schemes.base import Scheme, SignatureVerifier
from gateway.ingress.schemes.hmac import (
    ContentBuilder,
    HmacSignature,
    StripeSignature,
    TimestampRule,
    body_only,
    shopify_signature,
    slack_signature,
    template_content,
)
from gateway.ingress.schemes.network import SourceAllowlist
from gateway.ingress.schemes.secrets import ApiKey, BasicAuth, BearerToken, HeaderSecret
from gateway.ingress.schemes.standard import StandardWebhooks
from gateway.ingress.schemes.twilio import TwilioSignature

__all__ = [
    "AllOf",
    "ApiKey",
    "BasicAuth",
    "BearerToken",
    "HeaderSecret",
    "HmacSignature",
    "NoVerification",
    "SignatureVerifier",
    "SourceAllowlist",
    "StandardWebhooks",
    "StripeSignature",
    "TwilioSignature",
    "build_verifier",
]


class NoVerification(Scheme):
    """Accept every request; for providers that sign nothing."""

    def verify_request(self, request: WebhookRequest) -> None:
        return None

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        return request


class AllOf(Scheme):
    """Require every scheme to pass, in order, such as an allowlist and a signature."""

    def __init__(self, schemes: list[SignatureVerifier]) -> None:
        self.schemes = schemes

    def verify_request(self, request: WebhookRequest) -> None:
        for scheme in self.schemes:
            scheme.verify_request(request)

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        for scheme in self.schemes:
            request = scheme.sign_request(request)
        return request


def _build_hmac(spec: VerifySpec) -> HmacSignature:
    assert spec.header is not None
    timestamp = None
    if spec.timestamp_header is not None:
        timestamp = TimestampRule(
            spec.timestamp_header, spec.tolerance, spec.timestamp_unit
        )
    content: ContentBuilder = body_only
    if spec.signed_content is not None:
        content = template_content(spec.signed_content)
    return HmacSignature(
        spec.header,
        spec.secrets,
        spec.algorithm,
        spec.encoding,
        spec.prefix,
        content=content,
        timestamp=timestamp,
    )


def build_verifier(spec: VerifySpec) -> SignatureVerifier:
    """Create the verifier a route's `verify:` section describes."""
    if spec.type == "all":
        return AllOf([build_verifier(part) for part in spec.parts])
    if spec.type == "header_secret":
        assert spec.header is not None
        return HeaderSecret(spec.header, spec.secrets)
    if spec.type == "bearer":
        return BearerToken(spec.secrets)
    if spec.type == "api_key":
        return ApiKey(spec.secrets, spec.header, spec.query)
    if spec.type == "basic_auth":
        return BasicAuth(spec.secrets, spec.realm)
    if spec.type == "hmac":
        return _build_hmac(spec)
    if spec.type == "standard_webhooks":
        return StandardWebhooks(
            spec.secrets, spec.public_keys, spec.signing_key, spec.tolerance
        )
    if spec.type == "stripe":
        return StripeSignature(spec.secrets, spec.tolerance)
    if spec.type == "slack":
        return slack_signature(spec.secrets, spec.tolerance)
    if spec.type == "shopify":
        return shopify_signature(spec.secrets)
    if spec.type == "twilio":
        return TwilioSignature(spec.secrets, spec.public_url, spec.algorithm)
    if spec.type == "ip_allowlist":
        return SourceAllowlist(spec.allow, spec.proxy_header, spec.trusted_proxies)
    if spec.type == "none":
        return NoVerification()
    raise ValueError(f"unknown verify type {spec.type!r}")

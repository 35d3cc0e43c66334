"""Build the verifier of a route; the schemes themselves live in `schemes/`."""

from __future__ import annotations

from gateway.ingress.schemes import (
    AllOf,
    ApiKey,
    BasicAuth,
    BearerToken,
    HeaderSecret,
    HmacSignature,
    NoVerification,
    SignatureVerifier,
    SourceAllowlist,
    StandardWebhooks,
    StripeSignature,
    TwilioSignature,
    build_verifier,
)

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

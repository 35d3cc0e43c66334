"""Standard Webhooks signatures: `v1` HMAC-SHA256 and `v1a` ed25519.

The specification (standardwebhooks.com, "Signature scheme") signs
`WEBHOOK_ID.TIMESTAMP.BODY`, where the id and the timestamp (Unix seconds)
come from the `webhook-id` and `webhook-timestamp` headers.
`webhook-signature` is a space-separated list of `VERSION,BASE64` entries so
that a sender can sign with an old and a new key while keys rotate.
Symmetric secrets are written `whsec_<base64>`, ed25519 public keys
`whpk_<base64>` and private keys `whsk_<base64>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.config.verify import (
    STANDARD_PUBLIC_KEY_PREFIX,
    STANDARD_SECRET_PREFIX,
    STANDARD_SIGNING_KEY_PREFIX,
    decode_standard_key,
)
from gateway.exceptions import SigningUnavailable, Unauthorized
from gateway.ingress.request import WebhookRequest
from gateway.ingress.schemes.base import (
    Clock,
    Scheme,
    check_timestamp,
    matches_any,
    now_timestamp,
    required_header,
)

_ED25519_SEED_BYTES = 32


class StandardWebhooks(Scheme):
    """Accept a request when any `v1` or `v1a` entry matches any configured key."""

    def __init__(
        self,
        secrets: tuple[str, ...],
        public_keys: tuple[str, ...],
        signing_key: str | None,
        tolerance: float,
        clock: Clock = time.time,
    ) -> None:
        self.secrets = tuple(
            decode_standard_key(s, STANDARD_SECRET_PREFIX) for s in secrets
        )
        self.public_keys = tuple(
            Ed25519PublicKey.from_public_bytes(
                decode_standard_key(key, STANDARD_PUBLIC_KEY_PREFIX)
            )
            for key in public_keys
        )
        self.signing_key = None
        if signing_key is not None:
            seed = decode_standard_key(signing_key, STANDARD_SIGNING_KEY_PREFIX)
            # A 64-byte key is the seed followed by its public key.
            self.signing_key = Ed25519PrivateKey.from_private_bytes(
                seed[:_ED25519_SEED_BYTES]
            )
        self.tolerance = tolerance
        self.clock = clock

    def _signatures(self, value: str) -> tuple[list[bytes], list[bytes]]:
        symmetric, asymmetric = [], []
        for entry in value.split():
            version, _, encoded = entry.partition(",")
            try:
                signature = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                continue
            if version == "v1":
                symmetric.append(signature)
            elif version == "v1a":
                asymmetric.append(signature)
        return symmetric, asymmetric

    def _content(self, webhook_id: str, timestamp: str, body: bytes) -> bytes:
        return f"{webhook_id}.{timestamp}.".encode("utf-8", "surrogateescape") + body

    def verify_request(self, request: WebhookRequest) -> None:
        webhook_id = required_header(request, "webhook-id")
        timestamp = required_header(request, "webhook-timestamp").strip()
        symmetric, asymmetric = self._signatures(
            required_header(request, "webhook-signature")
        )
        if not symmetric and not asymmetric:
            raise Unauthorized("header 'webhook-signature' holds no v1 or v1a entry")
        check_timestamp(
            timestamp, "header 'webhook-timestamp'", self.tolerance, self.clock
        )
        content = self._content(webhook_id, timestamp, request.body)
        expected = [
            hmac.new(secret, content, hashlib.sha256).digest()
            for secret in self.secrets
        ]
        matched = matches_any(expected, symmetric)
        for key in self.public_keys:
            for signature in asymmetric:
                matched |= _ed25519_valid(key, signature, content)
        if not matched:
            raise Unauthorized("no signature in 'webhook-signature' matches the body")

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        if not self.secrets and self.signing_key is None:
            raise SigningUnavailable(
                "this route only has public keys (whpk_); add signing_key (whsk_)"
                " to sign v1a requests"
            )
        webhook_id = request.header("webhook-id") or f"msg_{os.urandom(12).hex()}"
        timestamp = now_timestamp(self.clock)
        content = self._content(webhook_id, timestamp, request.body)
        entries = []
        if self.secrets:
            digest = hmac.new(self.secrets[0], content, hashlib.sha256).digest()
            entries.append(f"v1,{base64.b64encode(digest).decode()}")
        if self.signing_key is not None:
            signature = self.signing_key.sign(content)
            entries.append(f"v1a,{base64.b64encode(signature).decode()}")
        return request.with_headers(
            {
                "webhook-id": webhook_id,
                "webhook-timestamp": timestamp,
                "webhook-signature": " ".join(entries),
            }
        )


def _ed25519_valid(key: Ed25519PublicKey, signature: bytes, content: bytes) -> bool:
    try:
        key.verify(signature, content)
    except InvalidSignature:
        return False
    return True
